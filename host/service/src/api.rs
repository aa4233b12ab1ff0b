//! The HTTP side of the graph service (warp): the embedded web UI, the REST
//! endpoints, Prometheus metrics and the `/api/ws` WebSocket.
//!
//! WebSocket protocol (JSON text frames):
//! - client → server: `{"type":"subscribe", "map":"l4"|"l7", "group_by":
//!   "pod"|"namespace"|"node", "filter":"…", "mode":"cumulative"|"rate",
//!   "bandwidth":true, "include_request":true, "include_response":true}`;
//!   sending it again changes the subscription.
//!   The optional `"max_edges":N` bounds the edges shown (default 5,000).
//! - client → server: `{"type":"detail","id":"<edge id>"}` asks for one
//!   edge in full (RED metrics, latency, top calls), answered by
//!   `{"type":"detail","id":…,"edge":{…}|null}`.
//! - server → client: `{"type":"snapshot","seq":N,"map":{nodes,edges,legend,
//!   totals}}` after each (re)subscription, edges as summaries (`id`,
//!   `source`, `target`, `l4`|`protocol`, `weight`, `bytes`, `packets` |
//!   `requests`+`errors`); then `{"type":"delta","seq":N,"nodes_added":[…],
//!   "nodes_changed":[…],"nodes_removed":[ids],"edges_added":…,
//!   "edges_changed":[{id,weight,bytes,…}],"edges_removed":…,"pending":P?,
//!   "totals":…?,"legend":…?}` at most every [`TICK`];
//!   `{"type":"error","error":"…","position":P,"line":L,"column":C}` for a
//!   subscription that cannot be taken (the previous one stays).
//!
//! A slow client is never queued for: each tick diffs the map against what
//! the client last received (see [`super::view`]), and the next send waits
//! for the previous one, so a client that falls behind gets fewer,
//! coalesced deltas; changed edges beyond a delta's byte budget wait for
//! the next one.

use super::auth::{Access, Denied, Need, WS_PROTOCOL, offers_ws_protocol};
use super::protocol::{ClientMessage, ErrorMessage, ServerMessage};
use super::subscription::SpecError;
use super::view::CHANGE_BUDGET;
use super::{GraphState, SharedState, Subscription, SubscriptionSpec, lock};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use warp::http::StatusCode;
use warp::ws::{Message, WebSocket, Ws};
use warp::{Filter, Rejection, Reply};

/// Most often a subscriber gets an update (5 per second).
pub const TICK: Duration = Duration::from_millis(200);
/// Largest message a client may send: a subscription or a detail request
/// is a few hundred bytes.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// Most WebSocket subscribers at once; beyond, 503.
pub const MAX_SUBSCRIBERS: u64 = 256;
/// Client messages answered per second per connection; the rest are
/// refused with an error, and a client that keeps on is disconnected.
pub const MAX_CLIENT_MESSAGES_PER_SECOND: u32 = 20;

#[derive(rust_embed::RustEmbed)]
#[folder = "../../web/"]
struct Web;

/// The names a filter may use now. (A function of its own so the lock is
/// let go before the subscription reads the state: a guard held in a
/// `match` scrutinee lives to the end of the match.)
fn vocabulary(state: &SharedState) -> super::vocabulary::Vocabulary {
    lock(state).vocabulary()
}

/// Longest a filtered `GET /api/map` may spend on its filter.
pub const MAP_DEADLINE: Duration = Duration::from_secs(10);

/// `GET /api/map`: the whole map, a filtered L7 map read from the record
/// log in chunks, letting go of the lock between them; a filter too slow
/// to read the log within `deadline` is answered 503 with how far it got.
pub fn map_reply(
    spec: SubscriptionSpec,
    s: &SharedState,
    deadline: Duration,
) -> warp::reply::WithStatus<warp::reply::Json> {
    match map_value(spec, s, deadline) {
        Ok(v) => warp::reply::with_status(warp::reply::json(&v), StatusCode::OK),
        Err((status, body)) => warp::reply::with_status(warp::reply::json(&body), status),
    }
}

/// The map `GET /api/map` answers with (live, filtered or a window), or the
/// status and body of why not.
pub fn map_value(spec: SubscriptionSpec, s: &SharedState, deadline: Duration) -> Result<Value, (StatusCode, Value)> {
    if spec.from.is_some() || spec.to.is_some() {
        return window_answer(spec, s).map_err(|(status, msg)| (status, serde_json::to_value(msg).unwrap_or_default()));
    }
    let mut sub = match Subscription::checked(spec, &vocabulary(s)) {
        Ok(sub) => sub,
        Err(e) => return Err((StatusCode::BAD_REQUEST, serde_json::to_value(spec_error(&e)).unwrap_or_default())),
    };
    let began = std::time::Instant::now();
    loop {
        let st = lock(s);
        if sub.caught_up(&st) {
            break;
        }
        if began.elapsed() >= deadline {
            let (read, log) = sub.progress(&st);
            let error = format!(
                "filter too slow: it read {read} of {log} records in {} s; narrow it or use the live map",
                deadline.as_secs_f64()
            );
            let body = json!({"error": error, "records_read": read, "records_in_log": log});
            return Err((StatusCode::SERVICE_UNAVAILABLE, body));
        }
        sub.fold(&st);
    }
    let v = sub.snapshot(&lock(s));
    Ok(serde_json::to_value(v).unwrap_or_default())
}

/// A window's error as a status (400 for the request, 500 for the store)
/// and a message.
fn window_error(e: crate::window::WindowError) -> (StatusCode, ServerMessage) {
    use crate::window::WindowError;
    let status = match e {
        WindowError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    let msg = match &e {
        WindowError::Spec(spec) => spec_error(spec),
        other => ServerMessage::Error(ErrorMessage::new(other.to_string())),
    };
    (status, msg)
}

/// A window's map, or why not (400 for the request, 500 for the store).
fn window_answer(spec: SubscriptionSpec, s: &SharedState) -> Result<Value, (StatusCode, ServerMessage)> {
    use crate::window::{spec_window, window_map};
    let fail = window_error;
    let now = lock(s).now().as_nanos().div_ceil(1_000_000_000);
    let (from, to) = spec_window(&spec, now).map_err(fail)?.unwrap_or((0, now.max(1)));
    window_map(s, spec, from, to).map_err(fail)
}

/// `GET /api/diff`.
fn diff_reply(
    spec: SubscriptionSpec,
    q: &crate::window::DiffQuery,
    s: &SharedState,
) -> warp::reply::WithStatus<warp::reply::Json> {
    let (Some(before), Some(after)) = (&q.before, &q.after) else {
        let msg = ServerMessage::Error(ErrorMessage::new("a diff needs before=FROM,TO and after=FROM,TO"));
        return warp::reply::with_status(warp::reply::json(&msg), StatusCode::BAD_REQUEST);
    };
    match crate::window::diff_windows(s, spec, before, after, &q.thresholds()) {
        Ok(v) => warp::reply::with_status(warp::reply::json(&v), StatusCode::OK),
        Err(e) => {
            let (status, msg) = window_error(e);
            warp::reply::with_status(warp::reply::json(&msg), status)
        }
    }
}

fn spec_error(e: &SpecError) -> ServerMessage {
    ServerMessage::Error(e.into())
}

async fn static_file(tail: warp::path::Tail) -> Result<warp::reply::Response, Rejection> {
    let path = match tail.as_str() {
        "" => "index.html",
        p => p,
    };
    let file = Web::get(path).ok_or_else(warp::reject::not_found)?;
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    Ok(warp::reply::with_header(file.data.into_owned(), "content-type", mime.as_ref()).into_response())
}

fn plugins_json(state: &SharedState) -> Value {
    Value::Array(plugin_entries(&lock(state)))
}

/// Each plugin's status; on a hub, with its records, faults and
/// connections summed over the workers, each worker's own state under
/// `workers`, and the worst state on top (a plugin quarantined on one node
/// is quarantined).
pub(crate) fn plugin_entries(st: &GraphState) -> Vec<Value> {
    st.plugins
        .iter()
        .map(|p| {
            let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
            if let Some(pushed) = st.pushed_plugins().and_then(|h| h.get(&p.name)) {
                v["pushed"] = pushed.json();
            }
            if let Some(l) = st.legend.iter().find(|l| l.protocol == p.name) {
                v["abbreviation"] = json!(l.abbreviation);
                v["long_name"] = json!(l.long_name);
                v["color"] = json!(l.color);
            }
            let on_workers: Vec<(&String, &Value)> = st
                .workers
                .iter()
                .flat_map(|(id, w)| w.plugins.iter().filter(|x| x["name"] == p.name).map(move |x| (id, x)))
                .collect();
            if !on_workers.is_empty() {
                for field in [
                    "records",
                    "faults",
                    "live_connections",
                    "detached_connections",
                    "calls",
                    "bytes_in",
                    "probe_bytes",
                    "stream_bytes",
                    "skipped_bytes",
                ] {
                    v[field] = json!(on_workers.iter().map(|(_, x)| x[field].as_u64().unwrap_or(0)).sum::<u64>());
                }
                // A generation draining after a replacement is not trouble.
                let troubled = |x: &Value| !matches!(x["state"].as_str(), Some("active" | "draining" | "retired"));
                if let Some((id, bad)) = on_workers.iter().find(|(_, x)| troubled(x)) {
                    v["state"] = bad["state"].clone();
                    v["reason"] = json!(format!("on {id}: {}", bad["reason"].as_str().unwrap_or("")));
                }
                if let Some((_, e)) = on_workers.iter().find(|(_, x)| x["last_error"].is_string()) {
                    v["last_error"] = e["last_error"].clone();
                }
                v["workers"] = Value::Object(
                    on_workers
                        .iter()
                        .map(|(id, x)| {
                            let keep = ["state", "reason", "records", "faults", "last_error", "generation"];
                            let entry: serde_json::Map<String, Value> =
                                keep.iter().filter_map(|k| Some((k.to_string(), x.get(*k)?.clone()))).collect();
                            (id.to_string(), Value::Object(entry))
                        })
                        .collect(),
                );
            }
            v
        })
        .collect()
}

/// Counts a subscriber for as long as it is connected.
struct Subscriber(SharedState);

impl Subscriber {
    /// A place among the subscribers, if one is free: taken when the
    /// upgrade is answered (so the cap holds however many connect at
    /// once), given back when the connection ends or never upgrades.
    fn reserve(state: &SharedState) -> Option<Self> {
        let mut st = lock(state);
        if st.counters.subscribers >= MAX_SUBSCRIBERS {
            return None;
        }
        st.counters.subscribers += 1;
        Some(Subscriber(state.clone()))
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let mut st = lock(&self.0);
        st.counters.subscribers = st.counters.subscribers.saturating_sub(1);
    }
}

/// A client's message: a detail request, or a (new) subscription.
fn answer(text: &str, state: &SharedState, sub: &mut Option<Subscription>, seq: &mut u64) -> ServerMessage {
    let msg: ClientMessage = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => return ServerMessage::Error(ErrorMessage::new(format!("bad message: {e}"))),
    };
    match msg {
        ClientMessage::Detail { id } => {
            let edge = sub.as_mut().and_then(|s| s.edge_detail(&lock(state), &id));
            ServerMessage::Detail { id, edge }
        }
        // Every subscribe gets exactly one answer, right away: its
        // snapshot, or an error (and the previous subscription stays).
        // A past window: its map, once (the past does not change); the
        // live subscription before it stops, as a new one replaces it.
        ClientMessage::Subscribe(spec) if spec.from.is_some() || spec.to.is_some() => {
            match tokio::task::block_in_place(|| window_answer(spec, state)) {
                Ok(map) => {
                    *seq += 1;
                    *sub = None;
                    ServerMessage::Snapshot { seq: *seq, map }
                }
                Err((_, msg)) => msg,
            }
        }
        ClientMessage::Subscribe(spec) => match Subscription::checked(spec, &vocabulary(state)) {
            Ok(mut s) => {
                let map = { s.stream_snapshot(&lock(state)) };
                *seq += 1;
                *sub = Some(s);
                ServerMessage::Snapshot { seq: *seq, map }
            }
            Err(e) => spec_error(&e),
        },
    }
}

fn text(msg: &ServerMessage) -> Message {
    Message::text(serde_json::to_string(msg).unwrap_or_default())
}

async fn subscriber(ws: WebSocket, state: SharedState, _place: Subscriber) {
    let (mut tx, mut rx) = ws.split();
    let mut sub: Option<Subscription> = None;
    let mut seq: u64 = 0;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut second, mut this_second) = (tokio::time::Instant::now(), 0u32);
    loop {
        tokio::select! {
            msg = rx.next() => {
                let Some(Ok(msg)) = msg else { break };
                if msg.is_close() {
                    break;
                }
                let Ok(text) = msg.to_str() else { continue };
                let now = tokio::time::Instant::now();
                if now.duration_since(second) >= Duration::from_secs(1) {
                    (second, this_second) = (now, 0);
                }
                this_second += 1;
                if this_second > 5 * MAX_CLIENT_MESSAGES_PER_SECOND {
                    let why = format!("more than {} messages a second", 5 * MAX_CLIENT_MESSAGES_PER_SECOND);
                    close_gracefully(&mut tx, &mut rx, why).await;
                    break;
                }
                let reply = if this_second > MAX_CLIENT_MESSAGES_PER_SECOND {
                    ServerMessage::Error(ErrorMessage::new(format!(
                        "more than {MAX_CLIENT_MESSAGES_PER_SECOND} messages a second: this one is not answered"
                    )))
                } else {
                    answer(text, &state, &mut sub, &mut seq)
                };
                if !send_within(&mut tx, self::text(&reply)).await {
                    break;
                }
            }
            _ = tick.tick() => {
                let Some(s) = sub.as_mut() else { continue };
                // The lock is held only to diff the map, never across a send.
                let Some(Value::Object(changes)) = ({ s.stream_delta(&lock(&state), CHANGE_BUDGET) }) else { continue };
                seq += 1;
                if !send_within(&mut tx, text(&ServerMessage::Delta { seq, changes })).await {
                    break;
                }
            }
        }
    }
}

/// A subscriber that has not taken a message within this long is let go:
/// each holds at most one message in flight (a send waits until the socket
/// takes it), and a client that stops reading must not keep its place
/// among the subscribers, or its snapshot in memory, for ever.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one message, waiting at most [`SEND_TIMEOUT`]; false when the
/// subscriber is gone or too slow.
async fn send_within(tx: &mut futures_util::stream::SplitSink<WebSocket, Message>, msg: Message) -> bool {
    match tokio::time::timeout(SEND_TIMEOUT, tx.send(msg)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::warn!("a map subscriber took no message for 30 s; disconnected");
            false
        }
    }
}

/// How long a client told to go may take to answer the close.
const CLOSE_DRAIN: Duration = Duration::from_secs(5);

/// Ends a connection the WebSocket way: a close frame (1008, policy
/// violation) with the reason, then what the client still sends is read and
/// dropped until its close comes back. Dropping the socket with its
/// messages unread would make the kernel answer with a reset, and a reset
/// throws away the replies the client has not read yet, the refusals among
/// them.
async fn close_gracefully(
    tx: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    rx: &mut futures_util::stream::SplitStream<WebSocket>,
    why: String,
) {
    if !send_within(tx, Message::close_with(1008u16, why)).await {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_DRAIN, async {
        while let Some(Ok(msg)) = rx.next().await {
            if msg.is_close() {
                break;
            }
        }
    })
    .await;
}

/// An `Origin` (if any) naming the host the request was sent to.
pub(crate) fn same_origin(origin: Option<&str>, host: Option<&str>) -> bool {
    let Some(origin) = origin else { return true };
    let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest).trim_end_matches('/');
    host.is_some_and(|h| h.eq_ignore_ascii_case(authority))
}

pub(crate) fn with_state(
    state: SharedState,
) -> impl Filter<Extract = (SharedState,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// Passes a request that may do what it `need`s; otherwise rejects it
/// with [`Denied`], which [`refusal`] turns into 401 or 403.
pub(crate) fn guard(access: Arc<Access>, need: Need) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(warp::header::optional::<String>("sec-websocket-protocol"))
        .and(warp::header::optional::<String>("host"))
        .and_then(move |auth: Option<String>, protocols: Option<String>, host: Option<String>| {
            let checked = access.check(need, auth.as_deref(), protocols.as_deref(), host.as_deref());
            async move { checked.map_err(warp::reject::custom) }
        })
        .untuple_one()
}

/// A refused request's answer: its status, a reason naming no secret, and
/// (for 401) the scheme to authenticate with.
async fn refusal(err: Rejection) -> Result<warp::reply::Response, Rejection> {
    let Some(denied) = err.find::<Denied>() else { return Err(err) };
    let body = warp::reply::json(&json!({"error": denied.reason()}));
    let mut reply = warp::reply::with_status(body, denied.status()).into_response();
    if *denied == Denied::Unauthenticated {
        reply.headers_mut().insert("www-authenticate", warp::http::HeaderValue::from_static("Bearer realm=\"trawl\""));
    }
    Ok(reply)
}

/// Every route of the service, under `access`'s rules; `shutdown` ends
/// the MCP endpoint's open event streams.
pub fn routes(
    state: SharedState,
    access: Access,
    shutdown: tokio_util::sync::CancellationToken,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let listen = access.listen();
    let access = Arc::new(access);
    let mcp = warp::path!("api" / "mcp").and(guard(access.clone(), Need::Read)).and(trawl_mcp::route(
        in_process(api_routes(state.clone(), Arc::new(Access::loopback(listen))).boxed()),
        shutdown,
    ));
    api_routes(state, access).or(mcp).recover(refusal)
}

/// Reads this process's own API without a network hop: what the MCP
/// endpoint's tools call, once the caller was let in. The routes run on a
/// task of their own (warp keeps the route being served in a thread-local
/// while it polls, and one route cannot serve another inside it).
fn in_process(api: warp::filters::BoxedFilter<(warp::reply::Response,)>) -> trawl_mcp::Fetch {
    use http_body_util::BodyExt;
    use trawl_mcp::FetchError;
    let service = warp::service(api);
    Arc::new(move |path: String| {
        let mut service = service.clone();
        Box::pin(async move {
            let req = warp::http::Request::get(path)
                .body(http_body_util::Full::new(warp::hyper::body::Bytes::new()))
                .map_err(|e| FetchError::NotFound(e.to_string()))?;
            let call = tokio::spawn(async move {
                let resp = tower_service::Service::call(&mut service, req).await.unwrap_or_else(|e| match e {});
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                (status, body)
            });
            match call.await {
                Ok((status, Ok(body))) => trawl_mcp::source::decode(status, &body),
                Ok((_, Err(e))) => Err(FetchError::Unreachable(e.to_string())),
                Err(e) => Err(FetchError::Unreachable(e.to_string())),
            }
        })
    })
}

/// The API's routes without the MCP endpoint (which calls them).
fn api_routes(
    state: SharedState,
    access: Arc<Access>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let (state_for_push, access_for_push) = (state.clone(), access.clone());
    let read = guard(access.clone(), Need::Read);
    // Probes: open, and they say nothing about traffic.
    let healthz = warp::path!("healthz").map(|| "ok");
    let readyz = warp::path!("readyz").map(|| "ready");
    let whoami = warp::path!("api" / "whoami").and(read.clone()).map({
        let access = access.clone();
        move || warp::reply::json(&json!({"authenticated": access.has_tokens()}))
    });
    let health =
        warp::path!("api" / "health").and(read.clone()).and(with_state(state.clone())).map(|s: SharedState| {
            let st = lock(&s);
            warp::reply::json(&json!({
                "status": "ok",
                "version": env!("CARGO_PKG_VERSION"),
                "capture_time_ns": st.now.0,
                "counters": &st.counters,
                "live": &st.live,
                "workers": &st.workers,
                "capture_filters": st.capture_filter.to_json(),
                "history": st.history().map(|h| h.stats()),
            }))
        });
    let filters_get = warp::path!("api" / "capture-filters")
        .and(read.clone())
        .and(with_state(state.clone()))
        .map(|s: SharedState| warp::reply::json(&lock(&s).capture_filter.to_json()));
    let plugins = warp::path!("api" / "plugins")
        .and(read.clone())
        .and(with_state(state.clone()))
        .map(|s: SharedState| warp::reply::json(&plugins_json(&s)));
    let map = warp::path!("api" / "map")
        .and(read.clone())
        .and(warp::query::<SubscriptionSpec>())
        .and(with_state(state.clone()))
        .and_then(|spec: SubscriptionSpec, s: SharedState| async move {
            // Folding a filtered map, or reading history, is CPU and disk
            // work: keep it off the threads that answer every other request.
            let reply = tokio::task::spawn_blocking(move || map_reply(spec, &s, MAP_DEADLINE)).await;
            Ok::<_, Rejection>(reply.unwrap_or_else(|e| {
                let error = json!({"error": format!("the map could not be built: {e}")});
                warp::reply::with_status(warp::reply::json(&error), StatusCode::INTERNAL_SERVER_ERROR)
            }))
        });
    let diff = warp::path!("api" / "diff")
        .and(read.clone())
        .and(warp::query::<SubscriptionSpec>())
        .and(warp::query::<crate::window::DiffQuery>())
        .and(with_state(state.clone()))
        .and_then(|spec: SubscriptionSpec, q: crate::window::DiffQuery, s: SharedState| async move {
            let reply = tokio::task::spawn_blocking(move || diff_reply(spec, &q, &s)).await;
            Ok::<_, Rejection>(reply.unwrap_or_else(|e| {
                let error = json!({"error": format!("the diff could not be built: {e}")});
                warp::reply::with_status(warp::reply::json(&error), StatusCode::INTERNAL_SERVER_ERROR)
            }))
        });
    let metrics = warp::path!("metrics").and(read.clone()).and(with_state(state.clone())).map(|s: SharedState| {
        warp::reply::with_header(super::metrics::metrics_text(&s), "content-type", "text/plain; version=0.0.4")
    });
    let ws = warp::path!("api" / "ws")
        .and(read)
        .and(warp::ws())
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>("host"))
        .and(warp::header::optional::<String>("sec-websocket-protocol"))
        .and(with_state(state.clone()))
        .map(|ws: Ws, origin: Option<String>, host: Option<String>, protocols: Option<String>, s: SharedState| {
            // Browsers send Origin: only pages served by trawl itself may
            // read the map (another site open in the same browser may not).
            if !same_origin(origin.as_deref(), host.as_deref()) {
                return warp::reply::with_status("cross-origin WebSocket refused", StatusCode::FORBIDDEN)
                    .into_response();
            }
            let Some(place) = Subscriber::reserve(&s) else {
                return warp::reply::with_status("too many map subscribers", StatusCode::SERVICE_UNAVAILABLE)
                    .into_response();
            };
            let ws = ws.max_message_size(MAX_CLIENT_MESSAGE).max_frame_size(MAX_CLIENT_MESSAGE);
            let mut reply = ws.on_upgrade(move |socket| subscriber(socket, s, place)).into_response();
            // A browser that offered subprotocols (the token rides in one)
            // closes a connection whose answer names none.
            if offers_ws_protocol(protocols.as_deref()) {
                reply.headers_mut().insert("sec-websocket-protocol", warp::http::HeaderValue::from_static(WS_PROTOCOL));
            }
            reply
        });
    let statics = warp::path::tail().and_then(static_file);
    // Changing what is dissected: the admin token, and JSON only, which a
    // page on another site cannot send without the browser asking first
    // (and being refused).
    // Taking a plugin out of quarantine now, rather than at the end of its
    // wait: the admin token, and never from another site's page.
    let plugin_reset = warp::post()
        .and(warp::path!("api" / "plugins" / String / "reset"))
        .and(guard(access.clone(), Need::Admin))
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>("host"))
        .and(with_state(state.clone()))
        .map(|name: String, origin: Option<String>, host: Option<String>, s: SharedState| {
            if !same_origin(origin.as_deref(), host.as_deref()) {
                return warp::reply::with_status(
                    warp::reply::json(&json!({"error": "cross-origin request refused"})),
                    StatusCode::FORBIDDEN,
                );
            }
            let mut st = lock(&s);
            if !st.knows_plugin(&name) {
                return warp::reply::with_status(
                    warp::reply::json(&json!({"error": format!("no plugin named {name:?}")})),
                    StatusCode::NOT_FOUND,
                );
            }
            st.request_plugin_reset(&name);
            tracing::info!(plugin = %name, "plugin reset requested");
            warp::reply::with_status(warp::reply::json(&json!({"reset": name})), StatusCode::ACCEPTED)
        });
    let filters_put = warp::put()
        .and(warp::path!("api" / "capture-filters"))
        .and(guard(access, Need::Admin))
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>("host"))
        .and(warp::body::content_length_limit(64 * 1024))
        .and(warp::body::json())
        .and(with_state(state))
        .map(|origin: Option<String>, host: Option<String>, body: Value, s: SharedState| {
            if !same_origin(origin.as_deref(), host.as_deref()) {
                return warp::reply::with_status(
                    warp::reply::json(&json!({"error": "cross-origin request refused"})),
                    StatusCode::FORBIDDEN,
                );
            }
            match super::CaptureFilter::from_json(&body) {
                Ok(f) => {
                    let v = f.to_json();
                    lock(&s).capture_filter = f;
                    tracing::info!(filters = %v, "capture filters changed");
                    warp::reply::with_status(warp::reply::json(&v), StatusCode::OK)
                }
                Err(e) => warp::reply::with_status(warp::reply::json(&json!({"error": e})), StatusCode::BAD_REQUEST),
            }
        });
    warp::get()
        .or(warp::head())
        .unify()
        .and(
            healthz
                .or(readyz)
                .or(whoami)
                .or(health)
                .or(plugins)
                .or(filters_get)
                .or(map)
                .or(diff)
                .or(metrics)
                .or(ws)
                .or(statics),
        )
        .or(filters_put)
        .or(plugin_reset)
        .or(super::plugin_api::routes(state_for_push.clone(), access_for_push.clone()))
        .or(super::plugin_api::export_route(state_for_push.clone(), access_for_push.clone()))
        .or(super::plugin_api::nodegraph_routes(state_for_push.clone(), access_for_push.clone()))
        .or(super::records_api::route(state_for_push.clone(), access_for_push.clone()))
        .or(super::pcap_api::route(state_for_push, access_for_push))
        .map(Reply::into_response)
}

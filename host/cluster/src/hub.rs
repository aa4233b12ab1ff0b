//! `trawl hub`: merges what workers send into one graph service (how
//! nothing counts twice: [`super::merge`]), shows each worker's health, and
//! hands workers its capture filters.

use super::auth::{Refusal, WorkerAuth};
use super::merge::Merger;
use super::proto::{PROTOCOL_VERSION, ToHub, ToWorker, read_frame, read_frame_limited, write_frame};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use trawl_runtime::registry::PluginStatus;
use trawl_service::workers::WorkerHealth;
use trawl_service::{GraphState, SharedState, lock};

/// `InstallPlugin` frames by module hash, encoded once for every worker:
/// when a restarted hub's workers all reconnect, they share one copy of
/// each module rather than holding one (and its encoding) each.
fn install_frame(name: &str, sha256: &str, module: &[u8]) -> std::io::Result<Arc<Vec<u8>>> {
    static FRAMES: Mutex<Vec<(String, Arc<Vec<u8>>)>> = Mutex::new(Vec::new());
    let mut frames = FRAMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, f)) = frames.iter().find(|(h, _)| h == sha256) {
        return Ok(Arc::clone(f));
    }
    let msg = ToWorker::InstallPlugin { name: name.to_string(), sha256: sha256.to_string(), module: module.to_vec() };
    let frame = Arc::new(super::proto::encode_frame(&msg)?);
    // Only the newest few modules are kept (pushes replace one another).
    if frames.len() >= 4 {
        frames.remove(0);
    }
    frames.push((sha256.to_string(), Arc::clone(&frame)));
    Ok(frame)
}

/// A worker's entry in the service's health.
fn worker_health<'a>(st: &'a mut GraphState, id: &str, node: &str, worker_id: &str) -> &'a mut WorkerHealth {
    st.workers_mut().entry(id.to_string()).or_insert_with(|| WorkerHealth {
        node: node.to_string(),
        worker_id: worker_id.to_string(),
        ..WorkerHealth::default()
    })
}

/// One frame from worker `id` into the service (public for the fuzz
/// target, which feeds it whatever frames decode).
pub fn merge(msg: ToHub, st: &mut GraphState, merger: &Mutex<Merger>, id: &str, node: &str, epoch: &str) {
    let mut m = merger.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (mut newest, mut flows, mut records) = (0u64, 0usize, 0usize);
    match msg {
        ToHub::Flows(t) => {
            newest = t.iter().map(|f| f.last_ts).max().unwrap_or(0);
            flows = t.len();
            m.flows(node, epoch, &t, st);
        }
        ToHub::Closed(c) => m.closed(node, epoch, &c, st),
        ToHub::Unsampled(u) => m.unsampled(node, epoch, &u, st),
        ToHub::Records(r) => {
            records = r.len();
            m.records(node, epoch, r, st);
        }
        ToHub::Status(status) => {
            let plugins: Vec<serde_json::Value> =
                status.plugins.into_iter().filter_map(|p| serde_json::to_value(PluginStatus::from(p)).ok()).collect();
            // The hub's fault count is the workers': swap this one's old
            // sum for its new one.
            let before = st.workers().get(id).map_or(0, WorkerHealth::plugin_faults);
            let h = worker_health(st, id, node, "");
            h.counters = status.counters;
            h.plugins = plugins;
            let after = h.plugin_faults();
            let faults = st.counters().plugin_faults.saturating_sub(before) + after;
            st.counters_mut().plugin_faults = faults;
        }
        ToHub::Packets { id: asked, frames } => {
            st.pcap_fanout_mut().answer(asked, id, frames.into_iter().map(Into::into).collect());
        }
        ToHub::Hello { .. } => {}
    }
    m.seen(node, epoch, std::time::Instant::now());
    let (dup, open) = (m.duplicate_records, m.open_flows());
    let now = trawl_pipeline::live::wall_now().0;
    let h = worker_health(st, id, node, "");
    h.last_seen_ns = now;
    h.flows_received += flows as u64;
    h.records_received += records as u64;
    h.duplicate_records = dup;
    h.hub_open_flows = open as u64;
    if newest > 0 {
        h.newest_ts = Some(newest);
        // How far behind the wall clock the worker's newest packet is.
        h.lag_ms = Some(now.saturating_sub(newest) / 1_000_000);
    }
}

/// How the hub lets workers in: TLS (unless it stays on loopback) and
/// the credentials that prove a worker's node.
#[derive(Clone, Debug)]
pub struct WorkerAccess {
    pub tls: Option<Arc<super::tls::Reloading<rustls::ServerConfig>>>,
    pub auth: WorkerAuth,
}

/// Connections that have not proved themselves yet, at most: beyond, new
/// ones are closed at once (each holds a thread until its Hello is
/// checked, within [`HELLO_TIMEOUT`]).
const MAX_UNPROVEN: usize = 64;
/// A proven worker silent this long is taken for gone.
const WORKER_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// A connection must have sent its Hello within this long.
const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A `Hello` is small: a worker that sends more before proving itself is
/// refused before the hub allocates it.
const MAX_HELLO: usize = 64 * 1024;

/// One worker's connection: handshake, then frames until it goes.
/// Counts a connection among the unproven until it is dropped.
struct Unproven(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Unproven {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn worker_conn(
    stream: TcpStream,
    access: &WorkerAccess,
    state: &SharedState,
    merger: &Arc<Mutex<Merger>>,
    unproven: Unproven,
) -> std::io::Result<()> {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    // Until the worker has proved itself, every read has a deadline.
    stream.set_read_timeout(Some(HELLO_TIMEOUT))?;
    let socket = stream.try_clone()?;
    let (mut reader, mut writer) = match &access.tls {
        Some(config) => super::tls::accept(stream, config.get())?,
        None => super::tls::plain(stream)?,
    };
    let hello: ToHub = read_frame_limited(&mut reader, MAX_HELLO)?;
    let ToHub::Hello { version, node, worker_id, boot_id, epoch, token: theirs } = hello else {
        return Err(std::io::Error::other("the first frame was not Hello"));
    };
    let refuse = |why: String| ToWorker::Refused { reason: why };
    if version != PROTOCOL_VERSION {
        write_frame(&mut writer, &refuse(format!("protocol version {version}; this hub speaks {PROTOCOL_VERSION}")))?;
        return Ok(());
    }
    match access.auth.check(&node, &theirs) {
        Ok(()) => {}
        Err(Refusal::Final(why)) => {
            tracing::warn!(peer, node, reason = %why, "worker refused");
            write_frame(&mut writer, &refuse(why))?;
            return Ok(());
        }
        // Not the worker's fault (the API server did not answer): close,
        // and the worker tries again with backoff.
        Err(Refusal::Retry(why)) => {
            tracing::warn!(peer, node, reason = %why, "cannot check the worker now; it will retry");
            return Ok(());
        }
    }
    // A proven worker sends its status at least every few seconds; one
    // silent for this long is gone, and its thread is let go.
    socket.set_read_timeout(Some(WORKER_IDLE_TIMEOUT))?;
    drop(unproven);
    write_frame(&mut writer, &ToWorker::Welcome { version: PROTOCOL_VERSION })?;
    // Workers dissect what the hub's capture filters target, and follow
    // them when they change (PUT /api/capture-filters).
    // The filters are read under the lock and sent after it is let go: a
    // worker that does not read must never hold up ingest or the API.
    let mut filters_sent = String::new();
    // Plugin resets asked for before this worker connected are not its.
    let mut resets_from = lock(state).plugin_resets_since(u64::MAX).1;
    let mut pcap_from = lock(state).pcap_fanout().asked_since(u64::MAX).1;
    // Pushed plugins this worker has (name → sha256), and the list's
    // version they came from.
    let mut plugins_sent: (u64, std::collections::BTreeMap<String, String>) = (0, Default::default());
    let mut send_hub_updates = |state: &SharedState| -> std::io::Result<()> {
        let (now, (resets, next), pushed, (pcaps, pcap_next)) = {
            let st = lock(state);
            let pushed = st.pushed_plugins().filter(|h| h.version() != plugins_sent.0).map(|h| h.snapshot());
            let pcaps = st.pcap_fanout().asked_since(pcap_from);
            (st.capture_filter().to_json().to_string(), st.plugin_resets_since(resets_from), pushed, pcaps)
        };
        for (id, selection) in pcaps {
            write_frame(&mut writer, &ToWorker::PcapRequest { id, selection })?;
        }
        pcap_from = pcap_next;
        if now != filters_sent {
            write_frame(&mut writer, &ToWorker::CaptureFilters { json: now.clone() })?;
            filters_sent = now;
        }
        for name in resets {
            write_frame(&mut writer, &ToWorker::ResetPlugin { name })?;
        }
        resets_from = next;
        if let Some((version, list)) = pushed {
            for (name, sha256, module) in &list {
                if plugins_sent.1.get(name) != Some(sha256) {
                    super::proto::write_encoded(&mut writer, &install_frame(name, sha256, module)?)?;
                }
            }
            let names: Vec<(String, String)> = list.into_iter().map(|(n, h, _)| (n, h)).collect();
            write_frame(&mut writer, &ToWorker::PushedPlugins { plugins: names.clone() })?;
            plugins_sent = (version, names.into_iter().collect());
        }
        Ok(())
    };
    send_hub_updates(state)?;
    tracing::info!(peer, node, worker_id, boot_id, "worker connected");
    let id = format!("{node}/{worker_id}");
    {
        let (id, node, worker_id, boot_id, epoch) = (id.clone(), node.clone(), worker_id, boot_id, epoch.clone());
        state.update(move |st| {
            let h = worker_health(st, &id, &node, &worker_id);
            h.connected = true;
            h.boot_id = boot_id;
            h.epoch = epoch;
            h.connections += 1;
        });
    }
    let result = loop {
        let msg: ToHub = match read_frame(&mut reader) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(e),
        };
        if matches!(msg, ToHub::Hello { .. }) {
            break Err(std::io::Error::other("Hello again mid-connection"));
        }
        let status = matches!(msg, ToHub::Status(_));
        // Merged without waiting for the service's readers.
        let (merger, id, node, epoch) = (merger.clone(), id.clone(), node.clone(), epoch.clone());
        state.update(move |st| merge(msg, st, &merger, &id, &node, &epoch));
        if status && let Err(e) = send_hub_updates(state) {
            break Err(e);
        }
    };
    {
        let id = id.clone();
        state.update(move |st| {
            if let Some(h) = st.workers_mut().get_mut(&id) {
                h.connected = false;
            }
        });
    }
    tracing::info!(peer, node, "worker disconnected");
    result
}

/// Accepts workers on `listener` forever, a thread each; the state of
/// workers silent for `grace` is let go.
pub fn accept(listener: TcpListener, access: WorkerAccess, state: SharedState, grace: std::time::Duration) {
    let merger = Arc::new(Mutex::new(Merger::with_grace(grace)));
    {
        // On a timer, not on frames: a hub whose workers all went quiet
        // must still let go of them.
        let (merger, state) = (merger.clone(), state.clone());
        let _ = std::thread::Builder::new().name("hub-sweep".into()).spawn(move || {
            loop {
                std::thread::sleep(super::merge::SWEEP_EVERY);
                let gone =
                    merger.lock().unwrap_or_else(std::sync::PoisonError::into_inner).sweep(std::time::Instant::now());
                if gone.is_empty() {
                    continue;
                }
                // Workers gone as long leave the health list too.
                let grace = grace.as_nanos() as u64;
                state.update(move |st| {
                    st.prune_workers(trawl_pipeline::live::wall_now().0.saturating_sub(grace));
                });
            }
        });
    }
    let unproven = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut backoff = std::time::Duration::from_millis(10);
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => {
                backoff = std::time::Duration::from_millis(10);
                s
            }
            // Out of file descriptors (EMFILE) or memory: wait, rather
            // than spin on a listener that stays readable.
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a worker connection; backing off");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                continue;
            }
        };
        if unproven.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= MAX_UNPROVEN {
            unproven.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            tracing::warn!("too many connections still proving themselves; one closed");
            continue;
        }
        let (access, state, merger, unproven) = (access.clone(), state.clone(), merger.clone(), unproven.clone());
        let _ = std::thread::Builder::new().name("hub-worker".into()).spawn(move || {
            let proven = Unproven(unproven);
            if let Err(e) = worker_conn(stream, &access, &state, &merger, proven) {
                tracing::warn!(error = %e, "worker connection failed");
            }
        });
    }
}

/// What `trawl hub` needs.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// Where workers connect.
    pub workers: std::net::SocketAddr,
    pub access: WorkerAccess,
    /// Where the UI and API are served, and who may use them.
    pub api: trawl_service::auth::Access,
    /// Inventories, rate window and plugins (whose legend the map uses).
    pub replay: trawl_pipeline::replay::ReplayOptions,
    pub capture_filter: trawl_service::CaptureFilter,
    /// Also take identity from the Kubernetes API.
    pub kube: bool,
    /// How long a silent worker's state (its epoch's open flows and
    /// conversations, its entry in the health) is kept.
    pub worker_grace: std::time::Duration,
    /// How plugins are pushed to it (`PUT /api/plugins/NAME`).
    pub push: trawl_service::pushed::PushConfig,
}

/// Runs the hub until Ctrl-C or SIGTERM.
pub fn run(opts: HubOptions) -> anyhow::Result<()> {
    use anyhow::Context;
    let identity = trawl_pipeline::replay::load_identity(&opts.replay.inventories)?;
    // The packets are the workers': `/api/pcap` asks them.
    let replay = trawl_pipeline::replay::ReplayOptions { pcap_ring_bytes: 0, ..opts.replay.clone() };
    let state = trawl_pipeline::serve::new_state(&replay, Arc::new(identity), opts.capture_filter.clone())?;
    if opts.kube {
        trawl_pipeline::live::watch_kubernetes_into(
            state.clone(),
            trawl_pipeline::replay::load_identity(&opts.replay.inventories)?,
        )?;
    }
    // The hub dissects nothing; the plugins' metadata colours the legend.
    let (plugins, _, _) = trawl_pipeline::replay_l7::plugins_for(&opts.replay)?;
    {
        let mut st = lock(&state);
        let pipeline = trawl_pipeline::pipeline::Pipeline::new(&opts.replay, plugins, None, Default::default());
        st.set_legend(pipeline.legend());
        st.set_plugins(pipeline.report().plugins());
    }
    // Pushed plugins: the store's first, validated again (a key may have
    // been set since).
    let sandbox = trawl_runtime::wasm::WasmRuntime::new(trawl_runtime::wasm::SandboxLimits::default())?;
    let hub_plugins = trawl_service::pushed::HubPlugins::new(opts.push.clone(), sandbox);
    lock(&state).set_pushed_plugins(hub_plugins);
    let listener =
        TcpListener::bind(opts.workers).with_context(|| format!("cannot listen for workers on {}", opts.workers))?;
    let how = if opts.access.tls.is_some() { "TLS" } else { "plain TCP" };
    eprintln!("trawl hub: workers connect to {} ({how})", listener.local_addr()?);
    let (access, accept_state, grace) = (opts.access.clone(), state.clone(), opts.worker_grace);
    trawl_pipeline::serve::serve_state(state, opts.api.clone(), opts.replay.otlp.clone(), "hub-accept", move || {
        accept(listener, access, accept_state, grace)
    })
}

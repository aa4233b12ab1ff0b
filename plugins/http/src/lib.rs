//! HTTP/1.0 and HTTP/1.1 dissector for trawl.
//!
//! Heads are parsed by `httparse`; bodies by Content-Length, chunked
//! encoding (trailers included) or the connection close. Requests queue in
//! FIFO order so pipelined requests pair with their responses; interim 1xx
//! responses are noted on the request they belong to; a 101 reports the
//! upgrade and hands the connection over.
#![forbid(unsafe_code)]

mod h2;
mod message;
mod probe;

use message::{BodyState, Head, Step};
use std::collections::VecDeque;
use trawl_sdk::fields::Key;
use trawl_sdk::{Ctx, Dir, Dissector, Fields, L4, Output, PluginInfo, Probe, Progress, Record, Value, redact};

/// Heads larger than this are not HTTP (or not worth keeping).
pub const MAX_HEAD: usize = 64 * 1024;
/// Requests waiting for a response; beyond this the oldest is reported unanswered.
pub const MAX_PENDING: usize = 128;

/// The plugin.
#[derive(Debug, Default)]
pub struct Http;

/// A request waiting for (or reading) its response.
#[derive(Debug, Clone)]
struct Pending {
    id: u64,
    head: Head,
    body_wire: u64,
    body_len: u64,
    ts: u64,
    interim: Vec<i64>,
    /// Wire bytes of interim (1xx) responses sent for this request.
    interim_bytes: u64,
}

/// A response being read.
#[derive(Debug)]
struct Response {
    head: Head,
    body_wire: u64,
    body_len: u64,
    ts: u64,
    /// The request it answers, if one was seen.
    request: Option<Pending>,
}

/// What one direction is doing.
#[derive(Debug, Default)]
enum Phase {
    #[default]
    Head,
    Body(BodyState),
    /// Lost sync after a gap: looking for the next message start.
    Resync,
}

/// Per-connection state.
#[derive(Debug, Default)]
pub struct HttpConn {
    next_id: u64,
    pending: VecDeque<Pending>,
    req_phase: Phase,
    /// Request whose body is being read (it may already be answered).
    req_body_of: Option<u64>,
    resp_phase: Phase,
    response: Option<Response>,
    /// Capture time of the first byte of the head being read, per direction.
    head_ts: [Option<u64>; 2],
    /// Set once the connection speaks HTTP/2.
    h2: Option<h2::H2Conn>,
    /// Body bytes being skipped, per direction: they count once they have
    /// passed (the next call), so a capture that ends inside a body shows
    /// what was seen.
    skipping: [u64; 2],
}

/// The fields this plugin's records carry (`Dissector::fields`): what
/// the display filter knows before any record arrives.
pub const FIELDS: &[&str] = &[
    "goaway_code",
    "grpc_status",
    "headers_undecodable",
    "host",
    "http_version",
    "interim_status",
    "malformed_request",
    "method",
    "path",
    "query_string",
    "request_body_size",
    "request_header_size",
    "request_headers",
    "response_body_size",
    "response_header_size",
    "response_headers",
    "rst_stream_code",
    "status_code",
    "status_phrase",
    "stream_id",
    "upgrade",
    "url",
];

impl Dissector for Http {
    fn fields() -> Option<&'static [&'static str]> {
        Some(FIELDS)
    }

    type Conn = HttpConn;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "http".into(),
            // Builds for tests and staged rollouts can stamp their own version.
            version: option_env!("TRAWL_PLUGIN_VERSION").unwrap_or(env!("CARGO_PKG_VERSION")).into(),
            abbreviation: "HTTP".into(),
            long_name: "Hypertext Transfer Protocol".into(),
            color: "#205cf5".into(),
            tcp_ports: vec![80, 8000, 8008, 8080, 8081, 8088, 3000, 5000, 9000],
            udp_ports: vec![],
            priority: 10,
            probe_depth: 8 * 1024,
            accepts_gaps: true,
            max_buffer: (MAX_HEAD as u32) * 2,
        }
    }

    fn probe(l4: L4, dir: Dir, bytes: &[u8]) -> Probe {
        if l4 != L4::Tcp {
            return Probe::NoMatch;
        }
        probe::probe(dir, bytes)
    }

    fn data(&mut self, conn: &mut HttpConn, cx: &mut Ctx<'_>, bytes: &[u8]) -> Progress {
        let (dir, ts) = (cx.dir, cx.ts);
        if let Some(h2) = conn.h2.as_mut() {
            return h2.feed(dir, ts, bytes, cx.out, h2::record);
        }
        // HTTP/2 frames before any HTTP/1 message: joined mid-connection
        // (frames are binary; an HTTP/1 head never parses as two of them).
        let fresh = conn.next_id == 0 && conn.response.is_none();
        if fresh && trawl_h2::looks_like_frames(bytes) {
            conn.h2 = Some(h2::H2Conn::new());
            return self.data(conn, cx, bytes);
        }
        let progress = match dir {
            Dir::ToServer if trawl_h2::starts_preface(bytes) => {
                conn.h2 = Some(h2::H2Conn::new());
                return self.data(conn, cx, bytes);
            }
            Dir::ToServer => conn.request_data(ts, bytes, cx.out),
            Dir::ToClient => conn.response_data(ts, bytes, cx.out),
        };
        // Not HTTP/1 at the start of a message, but HTTP/2 frames: a
        // connection joined mid-stream.
        if progress == Progress::Desync && trawl_h2::looks_like_frames(bytes) {
            conn.h2 = Some(h2::H2Conn::new());
            return self.data(conn, cx, bytes);
        }
        progress
    }

    fn gap(&mut self, conn: &mut HttpConn, cx: &mut Ctx<'_>, len: u64) -> bool {
        let dir = cx.dir;
        if let Some(h2) = conn.h2.as_mut() {
            h2.gap(dir);
            return true;
        }
        let phase = match dir {
            Dir::ToServer => &mut conn.req_phase,
            Dir::ToClient => &mut conn.resp_phase,
        };
        let skipped = match phase {
            Phase::Body(body) => body.skip(len),
            _ => false,
        };
        if skipped {
            match dir {
                Dir::ToServer => {
                    if let Some(p) = conn.req_body_of.and_then(|id| conn.pending.iter_mut().find(|p| p.id == id)) {
                        p.body_wire += len;
                        p.body_len += len;
                    }
                }
                Dir::ToClient => {
                    if let Some(r) = conn.response.as_mut() {
                        r.body_wire += len;
                        r.body_len += len;
                    }
                }
            }
        } else {
            *phase = Phase::Resync;
        }
        true
    }

    fn fin(&mut self, conn: &mut HttpConn, cx: &mut Ctx<'_>, bytes: &[u8]) {
        let dir = cx.dir;
        let out = &mut *cx.out;
        if dir == Dir::ToClient
            && let Phase::Body(BodyState::UntilClose) = conn.resp_phase
        {
            if let Some(r) = conn.response.as_mut() {
                r.body_wire += bytes.len() as u64;
                r.body_len += bytes.len() as u64;
            }
            conn.finish_response(out);
            conn.resp_phase = Phase::Head;
        }
    }

    fn close(&mut self, mut conn: HttpConn, cx: &mut Ctx<'_>) {
        let out = &mut *cx.out;
        if let Some(h2) = conn.h2.as_mut() {
            h2.close_into(out, h2::record);
        }
        if conn.response.is_some() {
            conn.finish_response(out);
        }
        while let Some(p) = conn.pending.pop_front() {
            out.record(record(Some(p), None));
        }
    }
}

impl HttpConn {
    fn response_to_connect(&self) -> bool {
        self.response
            .as_ref()
            .and_then(|r| r.request.as_ref())
            .is_some_and(|p| p.head.method.eq_ignore_ascii_case("CONNECT"))
    }

    fn request_data(&mut self, ts: u64, bytes: &[u8], out: &mut Output) -> Progress {
        let skipped = std::mem::take(&mut self.skipping[0]);
        if let Some(p) = self.req_body_of.and_then(|id| self.pending.iter_mut().find(|p| p.id == id)) {
            p.body_wire += skipped;
            p.body_len += skipped;
        }
        match &mut self.req_phase {
            Phase::Resync => resync(&mut self.req_phase, Dir::ToServer, bytes),
            Phase::Body(body) => {
                let step = body.advance(bytes);
                let p = self.req_body_of.and_then(|id| self.pending.iter_mut().find(|p| p.id == id));
                let progress =
                    apply_body_step(step, p.map(|p| (&mut p.body_wire, &mut p.body_len)), &mut self.req_phase);
                if let Progress::Skip { skip, .. } = progress {
                    self.skipping[0] = skip;
                }
                if progress == (Progress::Done { consumed: 0 }) {
                    // The body ended exactly where the bytes begin.
                    return self.request_data(ts, bytes, out);
                }
                progress
            }
            Phase::Head => {
                self.head_ts[0].get_or_insert(ts);
                let parsed = match message::parse_request(bytes) {
                    Err(()) => message::parse_request_lenient(bytes),
                    other => other,
                };
                let head = match parsed {
                    Ok(Some(head)) => head,
                    Ok(None) if bytes.len() > MAX_HEAD => return Progress::Desync,
                    Ok(None) => {
                        return Progress::NeedMore { consumed: 0, needed: bytes.len() as u32 + 1 };
                    }
                    Err(()) => return Progress::Desync,
                };
                let consumed = head.size as u32;
                self.next_id += 1;
                let body = head.request_body();
                let pending = Pending {
                    id: self.next_id,
                    head,
                    body_wire: 0,
                    body_len: 0,
                    ts: self.head_ts[0].take().unwrap_or(ts),
                    interim: Vec::new(),
                    interim_bytes: 0,
                };
                if self.pending.len() >= MAX_PENDING
                    && let Some(old) = self.pending.pop_front()
                {
                    out.record(record(Some(old), None));
                }
                self.pending.push_back(pending);
                match body {
                    Some(body) => {
                        self.req_body_of = Some(self.next_id);
                        self.req_phase = Phase::Body(body);
                    }
                    None => self.req_body_of = None,
                }
                Progress::Done { consumed }
            }
        }
    }

    fn response_data(&mut self, ts: u64, bytes: &[u8], out: &mut Output) -> Progress {
        let skipped = std::mem::take(&mut self.skipping[1]);
        if let Some(r) = self.response.as_mut() {
            r.body_wire += skipped;
            r.body_len += skipped;
        }
        match &mut self.resp_phase {
            Phase::Resync => resync(&mut self.resp_phase, Dir::ToClient, bytes),
            Phase::Body(body) => {
                let step = body.advance(bytes);
                let target = self.response.as_mut().map(|r| (&mut r.body_wire, &mut r.body_len));
                let progress = apply_body_step(step, target, &mut self.resp_phase);
                if let Progress::Skip { skip, .. } = progress {
                    self.skipping[1] = skip;
                }
                if matches!(self.resp_phase, Phase::Head) {
                    self.finish_response(out);
                    if progress == (Progress::Done { consumed: 0 }) {
                        return self.response_data(ts, bytes, out);
                    }
                }
                progress
            }
            Phase::Head => {
                self.head_ts[1].get_or_insert(ts);
                let head = match message::parse_response(bytes) {
                    Ok(Some(head)) => head,
                    Ok(None) if bytes.len() > MAX_HEAD => return Progress::Desync,
                    Ok(None) => {
                        return Progress::NeedMore { consumed: 0, needed: bytes.len() as u32 + 1 };
                    }
                    Err(()) => return Progress::Desync,
                };
                let consumed = head.size as u32;
                let status = head.status.unwrap_or(0);
                let head_ts = self.head_ts[1].take().unwrap_or(ts);
                if (100..200).contains(&status) && status != 101 {
                    // Interim: the final response is still to come.
                    if let Some(p) = self.pending.front_mut() {
                        p.interim.push(status);
                        p.interim_bytes += consumed as u64;
                    }
                    return Progress::Done { consumed };
                }
                let request = self.pending.pop_front();
                let method = request.as_ref().map(|p| p.head.method.as_str()).unwrap_or("");
                let body = head.response_body(method);
                let upgrade = (status == 101).then(|| head.header("upgrade").unwrap_or("unknown").to_string());
                self.response = Some(Response { head, body_wire: 0, body_len: 0, ts: head_ts, request });
                if let Some(protocol) = upgrade {
                    let protocol = protocol.to_ascii_lowercase();
                    if protocol == "h2c" {
                        // RFC 7540 §3.2: the upgraded request is stream 1.
                        let stream1 = self.response.as_ref().and_then(|r| r.request.as_ref()).map(|p| {
                            let mut h = vec![
                                (":method".to_string(), p.head.method.clone()),
                                (":path".to_string(), p.head.target.clone()),
                            ];
                            if let Some(host) = p.head.header("host") {
                                h.push((":authority".to_string(), host.to_string()));
                            }
                            (h, p.head.size as u64 + p.body_wire, p.ts)
                        });
                        self.finish_response(out);
                        let (h, size, ts) = stream1.unwrap_or_default();
                        self.h2 = Some(h2::H2Conn::after_upgrade(h, size, ts));
                        return Progress::Done { consumed };
                    }
                    self.finish_response(out);
                    out.upgrade(&protocol);
                    return Progress::Handover { consumed };
                }
                let tunnel = status / 100 == 2 && self.response_to_connect();
                if tunnel {
                    // A CONNECT tunnel carries a connection of its own:
                    // whatever it is gets probed afresh.
                    self.finish_response(out);
                    out.upgrade("tunnel");
                    return Progress::Handover { consumed };
                }
                match body {
                    Some(body) => self.resp_phase = Phase::Body(body),
                    None => self.finish_response(out),
                }
                Progress::Done { consumed }
            }
        }
    }

    fn finish_response(&mut self, out: &mut Output) {
        if let Some(mut r) = self.response.take() {
            out.record(record(r.request.take(), Some(r)));
        }
    }
}

/// After lost bytes: skips to the next line that starts a message, keeping
/// a tail that may be the start of one.
fn resync(phase: &mut Phase, dir: Dir, bytes: &[u8]) -> Progress {
    if let Some(at) = probe::find_message_start(dir, bytes) {
        *phase = Phase::Head;
        return Progress::Done { consumed: at as u32 };
    }
    let keep = 32.min(bytes.len());
    let consumed = (bytes.len() - keep) as u32;
    Progress::NeedMore { consumed, needed: keep as u32 + 1 }
}

fn apply_body_step(step: Step, target: Option<(&mut u64, &mut u64)>, phase: &mut Phase) -> Progress {
    let (consumed, content) = match step {
        Step::Finished { consumed, content } => (consumed, content),
        Step::Skip { consumed, content, skip } => {
            // The skipped bytes count when they have passed (the caller
            // keeps them until the next call).
            if let Some((wire, len)) = target {
                *wire += consumed as u64;
                *len += content;
            }
            return Progress::Skip { consumed: consumed as u32, skip };
        }
        Step::NeedMore { consumed, content, needed } => {
            if let Some((wire, len)) = target {
                *wire += consumed as u64;
                *len += content;
            }
            return Progress::NeedMore { consumed: consumed as u32, needed: needed as u32 };
        }
        Step::Invalid => return Progress::Desync,
    };
    if let Some((wire, len)) = target {
        *wire += consumed as u64;
        *len += content;
    }
    if matches!(step, Step::Finished { .. }) {
        *phase = Phase::Head;
    }
    Progress::Done { consumed: consumed as u32 }
}

/// The header fields as a map, secrets redacted (`trawl_sdk::redact`). It
/// takes the parsed headers: their strings move into the record, where
/// copying them was a quarter of the plugin's allocations. A name sent
/// twice keeps one entry, its values joined by `, ` in the order sent.
fn headers_value(mut headers: Vec<(Key, String)>) -> Value {
    // Sorted once (stable, so repeats keep their order), rather than a
    // search per header: comparing names was a tenth of the plugin's time.
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let mut entries: Vec<(Key, Value)> = Vec::with_capacity(headers.len());
    // The policy is read once for the whole head, not once per header.
    redact::with_policy(|policy| {
        for (name, value) in headers {
            let value = match policy.header_value(&name, &value) {
                std::borrow::Cow::Borrowed(_) => value,
                std::borrow::Cow::Owned(r) => r,
            };
            match entries.last_mut() {
                Some((last, Value::Str(existing))) if *last == name => {
                    existing.push_str(", ");
                    existing.push_str(&value);
                }
                _ => entries.push((name, Value::Str(value))),
            }
        }
    });
    Value::Map(Fields::from_entries(entries))
}

/// Builds the record of a request and its response (either may be missing).
/// Fields go in in name order, so building them sorts nothing.
fn record(req: Option<Pending>, resp: Option<Response>) -> Record {
    let mut r = Record::default();
    let interim_bytes = req.as_ref().map_or(0, |p| p.interim_bytes);
    let mut f: Vec<(Key, Value)> = Vec::with_capacity(20);
    let push = |f: &mut Vec<(Key, Value)>, name: &'static str, value: Value| f.push((Key::Borrowed(name), value));
    let mut url = None;
    let answers_a_request = req.is_some();
    if let Some(p) = req {
        let target = redact::target(p.head.target.as_str()).into_owned();
        r.transaction_id = p.id;
        r.method = p.head.method.clone();
        r.request_size = p.head.size as u64 + p.body_wire;
        r.request_ts = Some(p.ts);
        if let Some(host) = p.head.header("host") {
            push(&mut f, "host", host.into());
        }
        push(&mut f, "http_version", p.head.version.as_str().into());
        if !p.interim.is_empty() {
            push(&mut f, "interim_status", Value::List(p.interim.iter().map(|s| Value::Int(*s)).collect()));
        }
        if p.head.malformed {
            push(&mut f, "malformed_request", Value::Bool(true));
        }
        push(&mut f, "method", p.head.method.as_str().into());
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        push(&mut f, "path", path.into());
        push(&mut f, "query_string", query.into());
        push(&mut f, "request_body_size", p.body_len.into());
        push(&mut f, "request_header_size", (p.head.size as u64).into());
        push(&mut f, "request_headers", headers_value(p.head.headers));
        r.summary = target.clone();
        url = Some(target);
    }
    if let Some(resp) = resp {
        let status = resp.head.status.unwrap_or(0);
        r.status_code = Some(status);
        r.error = status >= 400;
        // Interim 1xx responses were sent for this request too.
        r.response_size = interim_bytes + resp.head.size as u64 + resp.body_wire;
        r.response_ts = Some(resp.ts);
        if !answers_a_request {
            // Before `method`, where the request's version would be.
            f.insert(0, (Key::Borrowed("http_version"), resp.head.version.as_str().into()));
        }
        push(&mut f, "response_body_size", resp.body_len.into());
        push(&mut f, "response_header_size", (resp.head.size as u64).into());
        let upgrade = (status == 101).then(|| resp.head.header("upgrade").unwrap_or("").to_string());
        push(&mut f, "response_headers", headers_value(resp.head.headers));
        push(&mut f, "status_code", Value::Int(status));
        push(&mut f, "status_phrase", resp.head.reason.as_str().into());
        if let Some(u) = upgrade {
            push(&mut f, "upgrade", u.into());
        }
    }
    if let Some(u) = url {
        push(&mut f, "url", u.into());
    }
    r.fields = Fields::from_entries(f);
    r
}

trawl_sdk::export_dissector!(Http);

#[cfg(test)]
mod tests;

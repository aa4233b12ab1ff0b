//! HTTP/2 inside the http plugin: prior-knowledge h2c (the preface), h2c
//! after an HTTP/1.1 `Upgrade`, and connections joined mid-stream. One
//! record per stream, with `:method`, `:path`, `:authority` and `:status`;
//! RST_STREAM and GOAWAY end streams and their codes are kept.

use std::collections::BTreeMap;
use trawl_h2::frame::{self, Frame, Parsed};
use trawl_h2::hpack;
use trawl_sdk::{Dir, Output, Progress, Record, Value};

/// Streams tracked at once per connection.
const MAX_STREAMS: usize = 1024;
/// Largest header block (HEADERS + CONTINUATION) assembled.
const MAX_HEADER_BLOCK: usize = 256 * 1024;

#[derive(Debug, Default)]
struct Stream {
    request: Vec<(String, String)>,
    response: Vec<(String, String)>,
    trailers: Vec<(String, String)>,
    request_bytes: u64,
    response_bytes: u64,
    request_ts: Option<u64>,
    response_ts: Option<u64>,
    request_done: bool,
    response_done: bool,
    rst: Option<u32>,
    undecodable: bool,
}

/// A header block being assembled from HEADERS and CONTINUATION frames.
#[derive(Debug)]
struct Pending {
    stream: u32,
    block: Vec<u8>,
    end_stream: bool,
}

/// HTTP/2 state of one connection.
#[derive(Debug, Default)]
pub struct H2Conn {
    decoders: [hpack::Decoder; 2],
    preface_done: bool,
    pending: [Option<Pending>; 2],
    streams: BTreeMap<u32, Stream>,
    goaway: Option<u32>,
}

/// True when `bytes` start with (a prefix of) the client preface.
pub fn starts_preface(bytes: &[u8]) -> bool {
    let n = bytes.len().min(frame::PREFACE.len());
    n > 0 && bytes[..n] == frame::PREFACE[..n]
}

/// A plausible frame header: a known type, no more than the default
/// maximum frame size, and a stream id only where the type takes one.
fn plausible_header(bytes: &[u8]) -> bool {
    if bytes.len() < 9 {
        return false;
    }
    let len = (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
    let kind = bytes[3];
    let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
    let connection_level = matches!(kind, frame::SETTINGS | frame::PING | frame::GOAWAY);
    kind <= frame::CONTINUATION && len <= 16_384 && (connection_level == (stream == 0) || kind == frame::WINDOW_UPDATE)
}

/// HTTP/2 frames joined mid-connection: two well-formed frames in a row, or
/// one frame header that is plausible while its payload is still arriving.
pub fn looks_like_frames(bytes: &[u8]) -> bool {
    if !plausible_header(bytes) {
        return false;
    }
    match frame::parse(bytes) {
        Parsed::Frame(_, size) if size == bytes.len() => true,
        Parsed::Frame(_, size) => plausible_header(&bytes[size..]) || bytes.len() - size < 9,
        Parsed::NeedMore(_) => true,
        Parsed::Invalid => false,
    }
}

impl H2Conn {
    /// A connection whose first bytes are frames (joined mid-stream, or a
    /// server that spoke first); a client preface is still recognised.
    pub fn midstream() -> Self {
        H2Conn::default()
    }

    /// After `Upgrade: h2c` + 101: the HTTP/1.1 request is stream 1.
    pub fn after_upgrade(request: Vec<(String, String)>, size: u64, ts: u64) -> Self {
        let mut c = H2Conn::default();
        c.streams.insert(
            1,
            Stream { request, request_bytes: size, request_ts: Some(ts), request_done: true, ..Stream::default() },
        );
        c
    }

    pub fn data(&mut self, dir: Dir, ts: u64, bytes: &[u8], out: &mut Output) -> Progress {
        // The client's first bytes may be the preface even when the server
        // spoke first (its SETTINGS can arrive before the preface does).
        if dir == Dir::ToServer && !self.preface_done {
            if bytes.len() < frame::PREFACE.len() && starts_preface(bytes) {
                return Progress::NeedMore { consumed: 0, needed: frame::PREFACE.len() as u32 };
            }
            self.preface_done = true;
            if bytes.starts_with(frame::PREFACE) {
                return Progress::Done { consumed: frame::PREFACE.len() as u32 };
            }
        }
        match frame::parse(bytes) {
            Parsed::NeedMore(n) => Progress::NeedMore { consumed: 0, needed: n as u32 },
            Parsed::Invalid => Progress::Desync,
            Parsed::Frame(f, size) => {
                self.frame(dir, ts, f, size as u64, out);
                Progress::Done { consumed: size as u32 }
            }
        }
    }

    fn frame(&mut self, dir: Dir, ts: u64, f: Frame<'_>, size: u64, out: &mut Output) {
        let d = dir.code() as usize;
        if f.stream != 0 && (self.streams.contains_key(&f.stream) || self.streams.len() < MAX_STREAMS) {
            let s = self.streams.entry(f.stream).or_default();
            match dir {
                Dir::ToServer => {
                    s.request_bytes += size;
                    s.request_ts.get_or_insert(ts);
                }
                Dir::ToClient => {
                    s.response_bytes += size;
                    s.response_ts.get_or_insert(ts);
                }
            }
        }
        match f.kind {
            frame::HEADERS => {
                let Some(block) = f.header_block() else { return };
                let pending =
                    Pending { stream: f.stream, block: block.to_vec(), end_stream: f.flags & frame::END_STREAM != 0 };
                if f.flags & frame::END_HEADERS != 0 {
                    self.headers(dir, pending, out);
                } else {
                    self.pending[d] = Some(pending);
                }
            }
            frame::CONTINUATION => {
                let Some(mut pending) = self.pending[d].take() else { return };
                if pending.block.len() + f.payload.len() <= MAX_HEADER_BLOCK {
                    pending.block.extend_from_slice(f.payload);
                }
                if f.flags & frame::END_HEADERS != 0 {
                    self.headers(dir, pending, out);
                } else {
                    self.pending[d] = Some(pending);
                }
            }
            frame::DATA if f.flags & frame::END_STREAM != 0 => self.end(dir, f.stream, out),
            frame::RST_STREAM => {
                if let Some(s) = self.streams.get_mut(&f.stream) {
                    s.rst = f.error_code();
                    s.request_done = true;
                    s.response_done = true;
                }
                self.finish(f.stream, out);
            }
            frame::GOAWAY => self.goaway = f.error_code(),
            _ => {}
        }
    }

    fn headers(&mut self, dir: Dir, p: Pending, out: &mut Output) {
        let d = dir.code() as usize;
        // After a mid-connection join the dynamic table is unknown: decode
        // what the static table and the literals give, and say so.
        let decoded = self.decoders[d].decode_lenient(&p.block).ok();
        let partial = decoded.as_ref().is_none_or(|(_, unknown)| unknown.is_some());
        if let Some(s) = self.streams.get_mut(&p.stream) {
            s.undecodable |= partial;
            match decoded.map(|(fields, _)| fields) {
                None => {}
                Some(fields) => {
                    let list = match dir {
                        Dir::ToServer if s.request.is_empty() => &mut s.request,
                        Dir::ToClient if s.response.is_empty() || is_informational(&s.response) => {
                            s.response.clear();
                            &mut s.response
                        }
                        _ => &mut s.trailers,
                    };
                    *list = fields;
                }
            }
        }
        if p.end_stream {
            self.end(dir, p.stream, out);
        }
    }

    fn end(&mut self, dir: Dir, stream: u32, out: &mut Output) {
        if let Some(s) = self.streams.get_mut(&stream) {
            match dir {
                Dir::ToServer => s.request_done = true,
                Dir::ToClient => s.response_done = true,
            }
            if s.request_done && s.response_done {
                self.finish(stream, out);
            }
        }
    }

    fn finish(&mut self, stream: u32, out: &mut Output) {
        if let Some(s) = self.streams.remove(&stream) {
            out.record(record(stream, &s, self.goaway));
        }
    }

    /// The connection ended: every stream still open is reported.
    pub fn close(&mut self, out: &mut Output) {
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            self.finish(id, out);
        }
    }
}

fn is_informational(h: &[(String, String)]) -> bool {
    header(h, ":status").and_then(|s| s.parse::<i64>().ok()).is_some_and(|s| (100..200).contains(&s))
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

fn record(id: u32, s: &Stream, goaway: Option<u32>) -> Record {
    let mut f: BTreeMap<String, Value> = BTreeMap::new();
    let mut r = Record { transaction_id: u64::from(id), ..Record::default() };
    let method = header(&s.request, ":method").unwrap_or_default().to_string();
    let path = header(&s.request, ":path").unwrap_or_default().to_string();
    r.method = method.clone();
    r.summary = path.clone();
    r.request_size = s.request_bytes;
    r.response_size = s.response_bytes;
    r.request_ts = s.request_ts;
    r.response_ts = s.response_ts;
    let status = header(&s.response, ":status").and_then(|v| v.parse::<i64>().ok());
    r.status_code = status;
    r.error = status.is_some_and(|c| c >= 400) || s.rst.is_some_and(|c| c != 0);
    f.insert("http_version".into(), Value::from("HTTP/2"));
    f.insert("stream_id".into(), Value::Int(i64::from(id)));
    if !method.is_empty() {
        f.insert("method".into(), Value::from(method));
    }
    if !path.is_empty() {
        let (p, q) = path.split_once('?').unwrap_or((&path, ""));
        f.insert("path".into(), Value::from(p));
        f.insert("query_string".into(), Value::from(q));
        f.insert("url".into(), Value::from(path.clone()));
    }
    if let Some(a) = header(&s.request, ":authority").or(header(&s.request, "host")) {
        f.insert("host".into(), Value::from(a));
    }
    if let Some(c) = status {
        f.insert("status_code".into(), Value::Int(c));
    }
    if let Some(c) = s.rst {
        f.insert("rst_stream_code".into(), Value::Int(i64::from(c)));
    }
    if let Some(c) = goaway {
        f.insert("goaway_code".into(), Value::Int(i64::from(c)));
    }
    if let Some(g) = header(&s.trailers, "grpc-status").or(header(&s.response, "grpc-status")) {
        f.insert("grpc_status".into(), Value::from(g));
    }
    if s.undecodable {
        // Joined mid-connection: the HPACK dynamic table was never seen.
        f.insert("headers_undecodable".into(), Value::Bool(true));
    }
    let headers = |h: &[(String, String)]| {
        Value::Map(
            h.iter()
                .filter(|(n, _)| !n.starts_with(':'))
                .map(|(n, v)| {
                    let v = if matches!(n.as_str(), "authorization" | "cookie" | "set-cookie" | "proxy-authorization") {
                        "[REDACTED]".to_string()
                    } else {
                        v.clone()
                    };
                    (n.clone(), Value::from(v))
                })
                .collect(),
        )
    };
    f.insert("request_headers".into(), headers(&s.request));
    f.insert("response_headers".into(), headers(&s.response));
    r.fields = f;
    r
}

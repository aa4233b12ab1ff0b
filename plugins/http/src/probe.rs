//! Is it HTTP/1.x? Request lines and status lines, decided on the first line.

use trawl_sdk::{Dir, Probe};

/// Longest method token accepted (WebDAV and friends included).
const MAX_METHOD: usize = 24;
/// Methods that make a request line on their own (RFC 9110 and WebDAV).
const KNOWN_METHODS: &[&[u8]] = &[
    b"GET",
    b"HEAD",
    b"POST",
    b"PUT",
    b"DELETE",
    b"CONNECT",
    b"OPTIONS",
    b"TRACE",
    b"PATCH",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"REPORT",
    b"SEARCH",
    b"PURGE",
];
/// The first line must end within this many bytes.
const MAX_FIRST_LINE: usize = 8 * 1024;

pub(crate) fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `bytes` start an HTTP/1.x request (to server) or response.
pub(crate) fn probe(dir: Dir, bytes: &[u8]) -> Probe {
    if bytes.is_empty() {
        return Probe::NeedMore;
    }
    if dir == Dir::ToServer && trawl_h2::starts_preface(bytes) {
        return probe_h2(bytes, Probe::Match);
    }
    if trawl_h2::looks_like_frames(bytes) {
        return probe_h2(bytes, Probe::MatchWeak);
    }
    if dir == Dir::ToClient || bytes.starts_with(b"HTTP/") {
        return probe_status_line(bytes);
    }
    probe_request_line(bytes)
}

/// HTTP/2: the first header block decides between this plugin and the
/// grpc plugin (a gRPC call's `content-type` is `application/grpc…`).
/// Without a preface the headers may be undecodable; frames alone are a
/// weak claim that a stronger one (gRPC's) overrides.
fn probe_h2(bytes: &[u8], claim: Probe) -> Probe {
    match trawl_h2::first_headers(bytes) {
        trawl_h2::FirstHeaders::Found { fields, .. } if trawl_h2::is_grpc(&fields) => Probe::NoMatch,
        trawl_h2::FirstHeaders::Found { .. } => claim,
        trawl_h2::FirstHeaders::NeedMore if claim == Probe::Match => Probe::NeedMore,
        trawl_h2::FirstHeaders::NeedMore => Probe::MatchWeak,
        trawl_h2::FirstHeaders::NotH2 => Probe::NoMatch,
    }
}

fn probe_status_line(bytes: &[u8]) -> Probe {
    const PREFIX: &[u8] = b"HTTP/1.";
    let n = bytes.len().min(PREFIX.len());
    if bytes[..n] != PREFIX[..n] {
        return Probe::NoMatch;
    }
    if bytes.len() < PREFIX.len() + 5 {
        return Probe::NeedMore;
    }
    // "HTTP/1.x NNN"
    let rest = &bytes[PREFIX.len()..];
    if matches!(rest[0], b'0' | b'1') && rest[1] == b' ' && rest[2..5].iter().all(u8::is_ascii_digit) {
        Probe::Match
    } else {
        Probe::NoMatch
    }
}

fn probe_request_line(bytes: &[u8]) -> Probe {
    let method_len = bytes.iter().take(MAX_METHOD + 1).take_while(|&&b| is_token(b)).count();
    if method_len == bytes.len() {
        return if method_len <= MAX_METHOD { Probe::NeedMore } else { Probe::NoMatch };
    }
    if method_len == 0 || method_len > MAX_METHOD || bytes[method_len] != b' ' {
        return Probe::NoMatch;
    }
    if KNOWN_METHODS.contains(&&bytes[..method_len]) {
        return Probe::Match;
    }
    let Some(end) = bytes.iter().take(MAX_FIRST_LINE).position(|&b| b == b'\n') else {
        if bytes.len() >= MAX_FIRST_LINE || bytes[method_len..].iter().any(|&b| b == 0 || b == b'\r') {
            return Probe::NoMatch;
        }
        return Probe::NeedMore;
    };
    let line = &bytes[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0") { Probe::Match } else { Probe::NoMatch }
}

/// Where the next message starts after lost bytes: the start of a line that
/// probes as a request line (to server) or a status line (to client).
pub(crate) fn find_message_start(dir: Dir, bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    while at < bytes.len() {
        if (at == 0 || bytes[at - 1] == b'\n') && probe(dir, &bytes[at..]) == Probe::Match {
            return Some(at);
        }
        at += 1;
    }
    None
}

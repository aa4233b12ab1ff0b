//! What every HTTP/2 stream record carries, whichever plugin reports it:
//! sizes, timing, the pseudo-headers, reset codes and the header lists.

use crate::conn::Stream;
use trawl_sdk::{Fields, Record, Value, keys, redact};

/// Regular (non-pseudo) header fields as a map, secrets redacted
/// (`trawl_sdk::redact`: gRPC's `authorization` metadata too).
pub fn header_map(h: &[(String, String)]) -> Value {
    // The policy is read once for the whole list, not once per header.
    redact::with_policy(|policy| {
        Value::Map(
            h.iter()
                .filter(|(n, _)| !n.starts_with(':'))
                .map(|(n, v)| (keys::key(n), Value::from(policy.header_value(n, v).into_owned())))
                .collect(),
        )
    })
}

/// The request's `:path` as records may show it (query values redacted).
pub fn request_target<X>(s: &Stream<X>) -> String {
    redact::target(s.request_header(":path").unwrap_or_default()).into_owned()
}

/// A record with the stream's sizes, times and HTTP/2 fields filled in;
/// `method`, `summary`, `status_code` and `error` are the plugin's to set.
pub fn stream_record<X>(s: &Stream<X>) -> Record {
    let mut f = Fields::with_capacity(24);
    f.insert("http_version", Value::from("HTTP/2"));
    f.insert("stream_id", Value::Int(i64::from(s.id)));
    if let Some(m) = s.request_header(":method") {
        f.insert("method", Value::from(m));
    }
    if let Some(path) = s.request_header(":path").filter(|p| !p.is_empty()) {
        let path = redact::target(path);
        let path = path.as_ref();
        let (p, q) = path.split_once('?').unwrap_or((path, ""));
        f.insert("path", Value::from(p));
        f.insert("query_string", Value::from(q));
        f.insert("url", Value::from(path));
    }
    if let Some(a) = s.request_header(":authority").or(s.request_header("host")) {
        f.insert("host", Value::from(a));
    }
    if let Some(c) = s.status() {
        f.insert("status_code", Value::Int(c));
    }
    // DATA payload, padding excluded: what HTTP/1 would call the body.
    f.insert("request_body_size", Value::Int(s.request_body as i64));
    f.insert("response_body_size", Value::Int(s.response_body as i64));
    if let Some(c) = s.rst {
        f.insert("rst_stream_code", Value::Int(i64::from(c)));
    }
    if let Some(c) = s.goaway {
        f.insert("goaway_code", Value::Int(i64::from(c)));
    }
    if s.undecodable {
        // Joined mid-connection (or after lost bytes): the HPACK dynamic
        // table was not fully seen.
        f.insert("headers_undecodable", Value::Bool(true));
    }
    f.insert("request_headers", header_map(&s.request));
    f.insert("response_headers", header_map(&s.response));
    Record {
        transaction_id: u64::from(s.id),
        request_size: s.request_bytes,
        response_size: s.response_bytes,
        request_ts: s.request_ts,
        response_ts: s.response_ts,
        fields: f,
        ..Record::default()
    }
}

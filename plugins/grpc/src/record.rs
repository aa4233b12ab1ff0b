//! A finished gRPC stream as a trawl record.

use crate::messages::{Framing, Messages};
use trawl_h2::Stream;
use trawl_sdk::{Fields, Record, Value};

/// Status names of the gRPC status codes (grpc/doc/statuscodes.md).
const STATUS_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Longest `grpc-message` kept.
const MAX_MESSAGE: usize = 256;

/// Which sides streamed, as seen on the wire: more than one message in a
/// direction makes that side streaming. A streaming call that sent one
/// message looks unary; the wire cannot tell.
fn streaming_kind(m: &Messages) -> &'static str {
    match (m.request.messages > 1, m.response.messages > 1) {
        (true, true) => "bidi",
        (true, false) => "client",
        (false, true) => "server",
        (false, false) => "unary",
    }
}

fn counts(f: &mut Fields, side: &str, framing: &Framing) {
    if !framing.lost {
        f.insert(format!("grpc_{side}_messages"), Value::Int(framing.messages as i64));
        f.insert(format!("grpc_{side}_message_bytes"), Value::Int(framing.message_bytes as i64));
    }
}

pub(crate) fn record(s: &Stream<Messages>) -> Record {
    let mut r = trawl_h2::record::stream_record(s);
    let path = s.request_header(":path").unwrap_or_default();
    // "/package.Service/Method"
    let (service, method) = path.strip_prefix('/').and_then(|p| p.rsplit_once('/')).unwrap_or(("", ""));
    let grpc_status = s.trailer_or_response("grpc-status").and_then(|v| v.trim().parse::<i64>().ok());
    let http_status = s.status();
    r.method = method.to_string();
    r.summary = trawl_h2::record::request_target(s);
    r.status_code = grpc_status;
    r.error =
        grpc_status.is_some_and(|c| c != 0) || http_status.is_some_and(|c| c != 200) || s.rst.is_some_and(|c| c != 0);
    let f = &mut r.fields;
    if !method.is_empty() {
        f.insert("grpc_method", Value::from(method));
        f.insert("grpc_service", Value::from(service));
    }
    if let Some(c) = grpc_status {
        f.insert("grpc_status", Value::Int(c));
        let name = usize::try_from(c).ok().and_then(|i| STATUS_NAMES.get(i)).copied().unwrap_or("UNKNOWN_CODE");
        f.insert("grpc_status_name", Value::from(name));
    }
    if let Some(m) = s.trailer_or_response("grpc-message") {
        let m: String = m.chars().take(MAX_MESSAGE).collect();
        f.insert("grpc_message", Value::from(m));
    }
    if let Some(ct) = s.request_header("content-type").or(s.response_header("content-type")) {
        f.insert("content_type", Value::from(ct));
    }
    if let Some(e) = s.request_header("grpc-encoding") {
        f.insert("grpc_encoding", Value::from(e));
    }
    counts(f, "request", &s.extra.request);
    counts(f, "response", &s.extra.response);
    f.insert("grpc_compressed", Value::Bool(s.extra.request.compressed || s.extra.response.compressed));
    if !s.extra.request.lost && !s.extra.response.lost {
        f.insert("grpc_streaming", Value::from(streaming_kind(&s.extra)));
    }
    f.insert("response_trailers", trawl_h2::record::header_map(&s.trailers));
    r
}

//! Field and header names that records carry over and over, kept once.
//!
//! A record's names cross the plugin boundary as bytes, so the host's
//! decode made each one an owned `String` again: two dozen allocations for
//! an HTTP/1.1 record, each copied and freed once more wherever the record
//! was cloned. [`key`] gives a borrowed `&'static str` for the names in
//! [`NAMES`] (every first-party plugin's fields, their nested maps' names,
//! and the common HTTP header names as HTTP/1.1 and HTTP/2 write them),
//! and an owned copy only for the rest. A plugin can use it for names it
//! reads off the wire, as the HTTP plugin does for header names.

use crate::fields::Key;

/// The names kept once, in any order (a test checks each is listed once).
/// The first-party fields repeat the plugins' `FIELDS` lists: the SDK
/// cannot depend on the plugins, so a host test checks that every field an
/// embedded plugin declares is here (a missing one is only allocated).
const NAMES: [&str; 155] = [
    // Fields of the first-party plugins, and the names of their nested maps.
    "content_type",
    "data",
    "dns_additional_count",
    "dns_additional_records",
    "dns_answer_records",
    "dns_answers",
    "dns_authoritative",
    "dns_authority_count",
    "dns_authority_records",
    "dns_duplicate",
    "dns_id",
    "dns_opcode",
    "dns_question_types",
    "dns_questions",
    "dns_rcode_name",
    "dns_recursion_desired",
    "dns_request",
    "dns_response",
    "dns_truncated",
    "goaway_code",
    "grpc_compressed",
    "grpc_encoding",
    "grpc_message",
    "grpc_method",
    "grpc_request_message_bytes",
    "grpc_request_messages",
    "grpc_response_message_bytes",
    "grpc_response_messages",
    "grpc_service",
    "grpc_status",
    "grpc_status_name",
    "grpc_streaming",
    "headers_undecodable",
    "host",
    "http_version",
    "interim_status",
    "kafka_api_key",
    "kafka_api_key_name",
    "kafka_api_version",
    "kafka_client_id",
    "kafka_correlation_id",
    "kafka_error_code",
    "kafka_group",
    "kafka_request_summary",
    "kafka_topics",
    "malformed_request",
    "method",
    "name",
    "path",
    "query_string",
    "redis_command",
    "redis_error",
    "redis_error_prefix",
    "redis_key",
    "redis_request",
    "redis_response",
    "redis_type",
    "request_body_size",
    "request_header_size",
    "request_headers",
    "response_body_size",
    "response_header_size",
    "response_headers",
    "response_trailers",
    "rst_stream_code",
    "status_code",
    "status_phrase",
    "stream_id",
    "ttl",
    "type",
    "upgrade",
    "url",
    // HTTP header names as HTTP/1.1 clients and servers usually write them.
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Accept-Ranges",
    "Access-Control-Allow-Origin",
    "Age",
    "Authorization",
    "Cache-Control",
    "Connection",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "Cookie",
    "Date",
    "ETag",
    "Expect",
    "Expires",
    "Host",
    "If-Modified-Since",
    "If-None-Match",
    "Keep-Alive",
    "Last-Modified",
    "Location",
    "Origin",
    "Pragma",
    "Referer",
    "Server",
    "Set-Cookie",
    "Strict-Transport-Security",
    "Transfer-Encoding",
    "Upgrade",
    "User-Agent",
    "Vary",
    "Via",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Request-Id",
    // The same in lower case, as HTTP/2 (and many HTTP/1.1 peers) write them.
    "accept",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "access-control-allow-origin",
    "age",
    "authorization",
    "cache-control",
    "connection",
    "content-encoding",
    "content-language",
    "content-length",
    "content-type",
    "cookie",
    "date",
    "etag",
    "expect",
    "expires",
    "if-modified-since",
    "if-none-match",
    "keep-alive",
    "last-modified",
    "location",
    "origin",
    "pragma",
    "referer",
    "server",
    "set-cookie",
    "strict-transport-security",
    "transfer-encoding",
    "user-agent",
    "vary",
    "via",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-request-id",
    // HTTP/2, gRPC and tracing.
    "te",
    "traceparent",
    "tracestate",
    "grpc-accept-encoding",
    "grpc-encoding",
    "grpc-message",
    "grpc-status",
    "grpc-timeout",
    "x-envoy-upstream-service-time",
];

/// The longest name in [`NAMES`] (a test checks it).
const LONGEST: usize = 29;

/// [`NAMES`] ordered by length, so the names of one length sit together.
const BY_LENGTH: [&str; NAMES.len()] = by_length(NAMES);

/// `BY_LENGTH[START[n]..START[n + 1]]` are the names `n` bytes long.
const START: [u16; LONGEST + 2] = starts(&BY_LENGTH);

const fn by_length(mut names: [&'static str; NAMES.len()]) -> [&'static str; NAMES.len()] {
    // Insertion sort, at compile time.
    let mut i = 1;
    while i < names.len() {
        let mut j = i;
        while j > 0 && names[j - 1].len() > names[j].len() {
            let t = names[j - 1];
            names[j - 1] = names[j];
            names[j] = t;
            j -= 1;
        }
        i += 1;
    }
    names
}

const fn starts(sorted: &[&str; NAMES.len()]) -> [u16; LONGEST + 2] {
    let mut start = [0u16; LONGEST + 2];
    let mut n = 0;
    while n <= LONGEST + 1 {
        let mut i = 0;
        while i < sorted.len() && sorted[i].len() < n {
            i += 1;
        }
        start[n] = i as u16;
        n += 1;
    }
    start
}

/// The kept copy of `name`, if it is one of [`NAMES`]. It compares `name`
/// only with the names of its length, first byte first.
pub fn intern(name: &str) -> Option<&'static str> {
    let n = name.len();
    if n == 0 || n > LONGEST {
        return None;
    }
    let first = name.as_bytes()[0];
    BY_LENGTH[START[n] as usize..START[n + 1] as usize]
        .iter()
        .find(|k| k.as_bytes()[0] == first && k.as_bytes() == name.as_bytes())
        .copied()
}

/// `name` as a field key: borrowed when it is one of [`NAMES`].
pub fn key(name: &str) -> Key {
    match intern(name) {
        Some(k) => Key::Borrowed(k),
        None => Key::Owned(name.to_owned()),
    }
}

/// `name` as a field key, its allocation dropped when it is one of [`NAMES`].
pub fn key_from(name: String) -> Key {
    match intern(&name) {
        Some(k) => Key::Borrowed(k),
        None => Key::Owned(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_found_once_and_others_are_not() {
        let mut seen = std::collections::HashSet::new();
        for name in NAMES {
            assert!(seen.insert(name), "{name} is listed twice");
            assert!(name.len() <= LONGEST, "{name} is longer than LONGEST");
            assert_eq!(intern(name), Some(name));
            assert!(matches!(key(name), Key::Borrowed(_)));
            assert!(matches!(key_from(name.to_string()), Key::Borrowed(k) if k == name));
        }
        assert_eq!(NAMES.iter().map(|n| n.len()).max(), Some(LONGEST));
        for other in ["", "X-Custom", "hosts", "HOST", "host ", "réponse", &"a".repeat(300)] {
            assert_eq!(intern(other), None, "{other}");
            assert_eq!(key(other), other);
            assert!(matches!(key_from(other.to_string()), Key::Owned(_)));
        }
    }

    #[test]
    fn names_of_one_length_sit_together() {
        for n in 0..=LONGEST {
            let bucket = &BY_LENGTH[START[n] as usize..START[n + 1] as usize];
            assert!(bucket.iter().all(|k| k.len() == n), "length {n}: {bucket:?}");
            assert_eq!(bucket.len(), NAMES.iter().filter(|k| k.len() == n).count());
        }
    }
}

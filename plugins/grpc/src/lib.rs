//! gRPC dissector for trawl: calls over HTTP/2 (h2c), one record per
//! stream, built on `trawl-h2` like the http plugin.
//!
//! A connection is gRPC when its first request says so (`content-type:
//! application/grpc…`); the http plugin declines those. Joined
//! mid-connection, when the HPACK table is unknown, DATA frames that hold
//! exactly whole length-prefixed messages decide instead.
#![forbid(unsafe_code)]

mod messages;
mod record;

use messages::Messages;
use trawl_h2::{Connection, FirstHeaders, frame};
use trawl_sdk::{Ctx, Dir, Dissector, L4, PluginInfo, Probe, Progress};

/// Largest frame a connection may buffer: the default maximum frame size
/// (16 KiB) with room for servers that raise it.
pub const MAX_BUFFER: u32 = 1 << 20;

/// The plugin.
#[derive(Debug, Default)]
pub struct Grpc;

/// Per-connection state.
#[derive(Debug, Default)]
pub struct GrpcConn {
    h2: Connection<Messages>,
}

/// DATA frames in `bytes` (after the preface, if any) that hold exactly
/// whole gRPC messages.
fn data_is_grpc(bytes: &[u8]) -> bool {
    let mut at = if trawl_h2::starts_preface(bytes) { frame::PREFACE.len().min(bytes.len()) } else { 0 };
    while let frame::Parsed::Frame(f, size) = frame::parse(&bytes[at..]) {
        if f.kind == frame::DATA && f.data().is_some_and(messages::whole_messages) {
            return true;
        }
        at += size;
    }
    false
}

/// The fields this plugin's records carry (`Dissector::fields`): what
/// the display filter knows before any record arrives.
pub const FIELDS: &[&str] = &[
    "content_type",
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
    "method",
    "path",
    "query_string",
    "request_body_size",
    "request_headers",
    "response_body_size",
    "response_headers",
    "response_trailers",
    "rst_stream_code",
    "status_code",
    "stream_id",
    "url",
];

impl Dissector for Grpc {
    fn fields() -> Option<&'static [&'static str]> {
        Some(FIELDS)
    }

    type Conn = GrpcConn;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "grpc".into(),
            version: option_env!("TRAWL_PLUGIN_VERSION").unwrap_or(env!("CARGO_PKG_VERSION")).into(),
            abbreviation: "gRPC".into(),
            long_name: "gRPC Remote Procedure Calls".into(),
            color: "#00a3a3".into(),
            tcp_ports: vec![50051, 9090, 8443],
            udp_ports: vec![],
            // Ahead of http: both read the same first HEADERS, and a gRPC
            // claim is the more specific one.
            priority: 20,
            probe_depth: 16 * 1024,
            accepts_gaps: true,
            max_buffer: MAX_BUFFER,
        }
    }

    fn probe(l4: L4, dir: Dir, bytes: &[u8]) -> Probe {
        if l4 != L4::Tcp {
            return Probe::NoMatch;
        }
        if bytes.is_empty() {
            return Probe::NeedMore;
        }
        let preface = dir == Dir::ToServer && trawl_h2::starts_preface(bytes);
        if !preface && !trawl_h2::looks_like_frames(bytes) {
            return Probe::NoMatch;
        }
        match trawl_h2::first_headers(bytes) {
            FirstHeaders::Found { fields, .. } if trawl_h2::is_grpc(&fields) => Probe::Match,
            FirstHeaders::Found { complete: true, .. } => Probe::NoMatch,
            // Joined mid-connection with the header table unknown.
            FirstHeaders::Found { complete: false, .. } => {
                if data_is_grpc(bytes) {
                    Probe::Match
                } else {
                    Probe::NoMatch
                }
            }
            FirstHeaders::NeedMore if !preface && data_is_grpc(bytes) => Probe::Match,
            FirstHeaders::NeedMore => Probe::NeedMore,
            FirstHeaders::NotH2 => Probe::NoMatch,
        }
    }

    fn data(&mut self, conn: &mut GrpcConn, cx: &mut Ctx<'_>, bytes: &[u8]) -> Progress {
        let (dir, ts) = (cx.dir, cx.ts);
        let out = &mut *cx.out;
        conn.h2.feed(dir, ts, bytes, out, record::record)
    }

    fn gap(&mut self, conn: &mut GrpcConn, cx: &mut Ctx<'_>, _len: u64) -> bool {
        let dir = cx.dir;
        conn.h2.gap(dir);
        true
    }

    fn close(&mut self, mut conn: GrpcConn, cx: &mut Ctx<'_>) {
        let out = &mut *cx.out;
        conn.h2.close_into(out, record::record);
    }
}

trawl_sdk::export_dissector!(Grpc);

#[cfg(test)]
mod tests;

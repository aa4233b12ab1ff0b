//! HTTP/2 inside the http plugin: the records of streams that `trawl-h2`
//! tracked. One record per stream, with `:method`, `:path`, `:authority`
//! and `:status`; RST_STREAM and GOAWAY codes are kept.

use trawl_h2::Stream;
use trawl_sdk::{Dir, Output, Progress, Record, Value};

pub type H2Conn = trawl_h2::Connection<()>;

/// Feeds one frame to the connection and reports the streams it finished.
pub fn data(conn: &mut H2Conn, dir: Dir, ts: u64, bytes: &[u8], out: &mut Output) -> Progress {
    let mut done = Vec::new();
    let progress = conn.data(dir, ts, bytes, &mut done);
    for s in &done {
        out.record(record(s));
    }
    progress
}

/// The connection ended: open streams are reported as they are.
pub fn close(conn: &mut H2Conn, out: &mut Output) {
    let mut done = Vec::new();
    conn.close(&mut done);
    for s in &done {
        out.record(record(s));
    }
}

pub fn record(s: &Stream<()>) -> Record {
    let mut r = trawl_h2::record::stream_record(s);
    r.method = s.request_header(":method").unwrap_or_default().to_string();
    r.summary = s.request_header(":path").unwrap_or_default().to_string();
    let status = s.response_header(":status").and_then(|v| v.parse::<i64>().ok());
    r.status_code = status;
    r.error = status.is_some_and(|c| c >= 400) || s.rst.is_some_and(|c| c != 0);
    if let Some(g) = s.trailer("grpc-status").or(s.response_header("grpc-status")) {
        r.fields.insert("grpc_status".into(), Value::from(g));
    }
    r
}

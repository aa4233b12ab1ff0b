//! HTTP/2 inside the http plugin: the records of streams that `trawl-h2`
//! tracked. One record per stream, with `:method`, `:path`, `:authority`
//! and `:status`; RST_STREAM and GOAWAY codes are kept.

use trawl_h2::Stream;
use trawl_sdk::{Record, Value};

pub(crate) type H2Conn = trawl_h2::Connection<()>;

pub(crate) fn record(s: &Stream<()>) -> Record {
    let mut r = trawl_h2::record::stream_record(s);
    r.method = s.request_header(":method").unwrap_or_default().to_string();
    r.summary = trawl_h2::record::request_target(s);
    let status = s.status();
    r.status_code = status;
    r.error = status.is_some_and(|c| c >= 400) || s.rst.is_some_and(|c| c != 0);
    if let Some(g) = s.trailer_or_response("grpc-status") {
        r.fields.insert("grpc_status", Value::from(g));
    }
    r
}

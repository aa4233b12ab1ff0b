//! HTTP/2 framing (RFC 9113), HPACK (RFC 7541) and per-connection stream
//! tracking for trawl's dissector plugins. The `http` and `grpc` plugins
//! both build on this crate, so the wire handling exists once.
#![forbid(unsafe_code)]

pub mod conn;
pub mod frame;
pub mod hpack;
pub mod record;
mod tables;

pub use conn::{
    Connection, FirstHeaders, Stream, StreamExtra, first_headers, is_grpc, looks_like_frames, starts_preface,
};

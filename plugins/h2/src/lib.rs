//! HTTP/2 framing (RFC 9113) and HPACK (RFC 7541) for trawl's dissector
//! plugins. The `http` and `grpc` plugins both build on this crate, so the
//! wire handling exists once.
//!
//! Status: frames and HPACK are done and tested; the plugins that use them
//! (per-stream records, h2c detection, gRPC) are the next step.
#![forbid(unsafe_code)]

pub mod frame;
pub mod hpack;
mod tables;

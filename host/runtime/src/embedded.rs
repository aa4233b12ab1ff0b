//! The first-party plugins, compiled to wasm by `build.rs` and carried in
//! the binary.

include!(concat!(env!("OUT_DIR"), "/embedded_plugins.rs"));

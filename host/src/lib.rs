//! The modes of the `trawl` CLI (replay, serve, live capture, the demo,
//! the worker and the hub) wired from the stage crates: `trawl-capture`
//! (where packets come from), `trawl-runtime` (the plugins),
//! `trawl-service` (the maps and their API). The engine itself (decode,
//! flows, reassembly, identity, maps) lives in `trawl-core`.
#![forbid(unsafe_code)]

pub use trawl_capture as capture;
pub use trawl_k8s as k8s;
pub use trawl_lab as lab;
pub use trawl_runtime as plugins;
pub use trawl_runtime::records;
pub use trawl_service as service;

pub mod cluster;
pub mod config;
pub mod demo;
pub mod live;
pub mod pipeline;
pub mod replay;
pub mod replay_l7;
pub mod serve;

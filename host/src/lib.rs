//! The `trawl` CLI's library: `trawl demo`'s wiring, and every stage crate
//! under one roof for the binary, the tests and the benches. The engine
//! (decode, flows, reassembly, identity, maps) is `trawl-core`; the stages
//! are `trawl-capture` (where packets come from), `trawl-runtime` (the
//! plugins), `trawl-service` (the maps and their API), `trawl-k8s`,
//! `trawl-pipeline` (the pipeline and the replay, serve and live modes) and
//! `trawl-cluster` (worker and hub).
#![forbid(unsafe_code)]

pub use trawl_capture as capture;
pub use trawl_cluster as cluster;
pub use trawl_k8s as k8s;
pub use trawl_lab as lab;
pub use trawl_pipeline::{config, live, pcap_export, pipeline, replay, replay_l7, serve, tls};
pub use trawl_runtime as plugins;
pub use trawl_runtime::records;
pub use trawl_service as service;

pub mod demo;

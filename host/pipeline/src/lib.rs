//! The pipeline and the modes that run it: a source (a capture file, the
//! live AF_PACKET rings) feeds the engine through [`pipeline::Pipeline`],
//! and a sink takes what comes out: stdout (`replay`), the graph service
//! (`serve`, `live`). The worker and hub (`trawl-cluster`) and the CLI
//! (`trawl-host`) build on it.
#![forbid(unsafe_code)]

pub mod config;
pub mod diff;
pub mod live;
pub mod pcap_export;
pub mod pipeline;
pub mod replay;
pub mod replay_l7;
pub mod serve;
pub mod tls;

//! trawl's engine library: packet decode, the flow table with per-direction
//! L4 counters, TCP reassembly, workload identity and the map model.
//!
//! It does no I/O and has no async: capture sources feed frames to an
//! [`engine::Engine`], and the host decides where the results go.
#![forbid(unsafe_code)]

pub mod counters;
pub mod decode;
pub mod diff;
pub mod engine;
pub mod export;
pub mod flow;
pub mod history;
pub mod identity;
pub mod l7map;
pub mod map;
pub mod ports;
pub mod reassembly;
pub mod record;
pub mod servicegraph;
pub mod tcp_health;
pub mod time;
pub mod vhost;

pub use decode::{L4Proto, LinkType};
pub use engine::{Engine, EngineConfig, EngineStats};
pub use flow::{DirCounters, Direction, Endpoint, FlowDelta, FlowRecord, Orientation};
pub use identity::{Identity, KubeObject, Workload, WorkloadKind};
pub use map::{GroupBy, L4Map, MapView};
pub use ports::ServicePorts;
pub use tcp_health::TcpHealthDelta;
pub use time::Timestamp;

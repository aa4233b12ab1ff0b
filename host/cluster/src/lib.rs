//! The worker/hub split: one `trawl worker` per node captures and
//! dissects, one `trawl hub` merges them and serves the map. The local
//! default stays one process (`trawl serve`, `trawl demo`).
#![forbid(unsafe_code)]

pub mod auth;
pub mod hub;
pub mod merge;
pub mod outbox;
pub mod proto;
pub mod pushed;
pub mod tls;
pub mod worker;
pub mod worker_live;

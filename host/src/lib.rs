//! trawl's runtime: capture sources and the commands of the `trawl` CLI.
//!
//! The engine itself (decode, flows, reassembly, identity, map) lives in
//! `trawl-core`; this crate decides where packets come from and where the
//! results go.

pub mod capture;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod k8s;
pub mod lab;
pub mod live;
pub mod plugins;
pub mod records;
pub mod replay;
pub mod replay_l7;
pub mod serve;
pub mod service;

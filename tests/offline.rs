//! The tests that need neither root nor servers of their own: the capture
//! corpus against tshark, zeek and the servers' logs, the CLI, the graph
//! service, hostile plugins, Kubernetes identity, the worker/hub cluster on
//! loopback and deploy/. One binary: one link instead of seventeen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod amplification;
mod api_auth;
mod cluster;
mod cluster_tls;
mod deploy;
mod dissect_corpus;
mod graph_exports;
mod grpc_corpus;
mod hostile_clients;
mod hostile_plugins;
mod hostile_workers;
mod http2_corpus;
mod k8s_identity;
mod k8s_token_review;
mod k8s_watch;
mod kafka_corpus;
mod mcp_server;
mod otlp_export;
mod pcap_export;
mod plugin_fields;
mod reassembly_corpus;
mod redis_corpus;
mod replay_cli;
mod replay_corpus;
mod service_graph_metrics;
mod service_maps;
mod service_ws;
mod suricata_verify;
mod zeek_baselines;

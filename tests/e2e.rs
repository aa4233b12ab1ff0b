//! End to end against real servers (redis-server, nginx, a Kafka broker,
//! grpcio) on loopback, captured with tcpdump and checked against the
//! servers' and clients' own logs; and in netns labs, TCP health checked
//! against tshark's analysis and the diff of two captures. One binary: one
//! link instead of six.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod e2e_grpc;
mod e2e_http2;
mod e2e_kafka;
mod e2e_pipelined;
mod e2e_redaction;
mod e2e_redis;
mod e2e_vhosts;
mod map_diff;
mod tcp_health;

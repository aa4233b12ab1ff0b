//! `trawl demo --live` smoke test (root, as CI runs): it starts the
//! mini-cluster, the live map shows L7 edges of all five protocols and L4
//! edges within 30 s, and SIGINT ends it cleanly with nothing left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Killed, free_port, tools_or_skip};
use trawl_host::demo::DEMO_PREFIX;
use trawl_host::demo::workloads::{DEMO_TOOLS, python};
use trawl_host::lab::Lab;

fn map(port: u16, kind: &str) -> Value {
    support::get_json(port, &format!("/api/map?map={kind}"))
}

#[test]
fn live_demo_shows_every_protocol_and_cleans_up() {
    if !support::root_or_skip() || !tools_or_skip(DEMO_TOOLS) {
        return;
    }
    // Without the Python workloads the demo runs without gRPC and Kafka.
    let want: BTreeSet<&str> = if python().is_some() {
        ["dns", "grpc", "http", "kafka", "redis"].into()
    } else {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "no demo Python (scripts/test.sh builds it)");
        ["dns", "http", "redis"].into()
    };
    let port = free_port();
    let mut demo = Killed(
        support::trawl()
            .args(["demo", "--live", "--listen", &format!("127.0.0.1:{port}")])
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    let (mut protocols, mut l4_edges, mut tls_edges) = (BTreeSet::new(), 0, Vec::new());
    while start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_secs(1));
        let l7 = map(port, "l7");
        protocols = l7["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["protocol"].as_str())
            .map(str::to_string)
            .collect();
        // The demo's TLS pair: checkout → web over HTTPS, read at OpenSSL.
        tls_edges = l7["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["tls_requests"].as_u64().is_some_and(|n| n > 0))
            .map(|e| e["id"].as_str().unwrap_or_default().to_string())
            .collect();
        l4_edges = map(port, "l4")["edges"].as_array().map_or(0, Vec::len);
        if want.iter().all(|p| protocols.contains(*p)) && l4_edges > 0 && !tls_edges.is_empty() {
            break;
        }
    }
    assert!(want.iter().all(|p| protocols.contains(*p)), "L7 protocols after 30 s: {protocols:?}, want {want:?}");
    assert!(l4_edges > 0, "no L4 edges after 30 s");
    assert!(tls_edges.iter().any(|id| id.ends_with("|http")), "no TLS edge after 30 s: {tls_edges:?}");

    let _ = Command::new("kill").args(["-INT", &demo.0.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = demo.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "trawl demo did not exit on SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "trawl demo exited with {status}");
    assert_eq!(Lab::leftovers(DEMO_PREFIX), Vec::<String>::new(), "the demo left things behind");
}

//! Live workers and a hub (root, as CI runs): one `trawl worker --live` per
//! node of the netns lab sends to `trawl hub`, while `trawl serve --live`
//! watches the same lab as the one-process reference. After the same
//! traffic (same-node and cross-node) the hub's L4 and L7 maps equal the
//! reference's: each packet and each request counted once, and the L4
//! edges' TCP health (the kernel's, from eBPF) carried through the hub.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::{Terminated, free_port, scratch, tools_or_skip};
use trawl_host::demo::workloads::{DEMO_TOOLS, client_round, demo_pods, start_servers};
use trawl_host::lab::Lab;

fn totals(port: u16, query: &str) -> BTreeMap<String, Value> {
    let map = support::get_json(port, &format!("/api/map?{query}"));
    let mut totals = support::map_totals(&map);
    // TCP health: the counts (round trips' means may differ by rounding).
    for e in map["edges"].as_array().into_iter().flatten() {
        let (Some(id), Some(h)) = (e["id"].as_str(), e.get("tcp_health")) else { continue };
        let keep = ["retransmits_to_server", "retransmits_to_client", "resets_by_client", "resets_by_server"];
        let counts: serde_json::Map<String, Value> = keep
            .iter()
            .chain(&["failed_connects", "handshakes"])
            .filter_map(|k| Some((k.to_string(), h.get(*k)?.clone())))
            .collect();
        if let Some(Value::Object(t)) = totals.get_mut(id) {
            t.insert("tcp_health".into(), Value::Object(counts));
        }
    }
    totals
}

fn spawn(args: &[&str]) -> Terminated {
    Terminated(support::trawl().args(args).stderr(Stdio::inherit()).spawn().unwrap())
}

#[test]
fn live_workers_on_two_nodes_through_the_hub_equal_one_process() {
    if !support::root_or_skip() || !tools_or_skip(DEMO_TOOLS) {
        return;
    }
    let dir = scratch("live-cluster");
    let prefix = format!("tc{}", std::process::id() % 100_000);
    let mut lab = Lab::create(&prefix, 2, &demo_pods()).unwrap();
    start_servers(&mut lab, &dir).unwrap();
    let inventory = dir.join("inventory.json");
    std::fs::write(&inventory, lab.inventory().to_string()).unwrap();
    let inv = inventory.to_str().unwrap();
    let netns = lab.netns_prefix();
    let (_reference, reference_port) = support::serve_live(&netns, &inventory, &[]);
    let (hub_ui, hub_workers) = (free_port(), free_port());
    let _hub = spawn(&[
        "hub",
        "--token",
        "t0k",
        "--workers",
        &format!("127.0.0.1:{hub_workers}"),
        "--listen",
        &format!("127.0.0.1:{hub_ui}"),
        "--inventory",
        inv,
    ]);
    support::wait_for("hub", || std::net::TcpStream::connect(("127.0.0.1", hub_ui)).is_ok());
    // One worker per lab node: each takes its node's pods, and a packet
    // between pods on the two nodes is counted by the sender's worker only.
    let hub = format!("127.0.0.1:{hub_workers}");
    let _workers: Vec<Terminated> = ["node-a", "node-b"]
        .iter()
        .map(|node| {
            spawn(&[
                "worker",
                "--live",
                "--hub",
                &hub,
                "--token",
                "t0k",
                "--node",
                node,
                "--netns-prefix",
                &netns,
                "--inventory",
                inv,
            ])
        })
        .collect();
    // Both attach and open their rings.
    std::thread::sleep(Duration::from_secs(4));
    for n in 0..3 {
        client_round(&lab, n).unwrap();
    }
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let (want_l4, got_l4) = (totals(reference_port, "map=l4&group_by=pod"), totals(hub_ui, "map=l4&group_by=pod"));
        let (want_l7, got_l7) = (totals(reference_port, "map=l7&group_by=pod"), totals(hub_ui, "map=l7&group_by=pod"));
        let handshakes: u64 = want_l4.values().filter_map(|e| e["tcp_health"]["handshakes"].as_u64()).sum();
        if !want_l7.is_empty() && handshakes > 0 && want_l4 == got_l4 && want_l7 == got_l7 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "hub and one-process maps differ:\nL4 want {want_l4:#?}\nL4 got {got_l4:#?}\nL7 want {want_l7:#?}\nL7 got {got_l7:#?}"
        );
    }
    // Each worker reports its TLS capture (the demo's HTTPS pair is in the
    // maps compared above, counted once across the two workers).
    let health = support::get_json(hub_ui, "/api/health");
    let workers: Vec<&Value> = health["workers"].as_object().map(|w| w.values().collect()).unwrap_or_default();
    assert_eq!(workers.len(), 2, "{health:#}");
    assert!(workers.iter().all(|w| w["tls"]["active"] == true), "{health:#}");
    drop(lab);
    assert_eq!(Lab::leftovers(&prefix), Vec::<String>::new());
}

//! `trawl replay BEFORE --diff AFTER --emit diff` on two captures of real
//! servers (needs root): a lab of a client and five HTTP servers, recorded
//! on the client's veth before and after a "deploy" that retires `gone`,
//! brings up `new`, breaks `flaky` (every answer a 500) and slows `slow`
//! (50 ms per answer), while `steady` stays as it was. The L7 diff names
//! exactly those four edges, with the right reasons; the L4 diff only the
//! edge that went and the one that came.

use crate::support::{self, scratch, tools_or_skip};
use serde_json::Value;
use std::path::Path;

fn diff(before: &Path, after: &Path, inventory: &Path, map: &str) -> Value {
    let (b, a, inv) = (before.to_str().unwrap(), after.to_str().unwrap(), inventory.to_str().unwrap());
    let out = support::run_trawl(&["replay", b, "--diff", a, "--emit", "diff", "--map", map, "--inventory", inv]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ids(d: &Value, list: &str) -> Vec<String> {
    d[list].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
}

fn reasons(d: &Value, id: &str) -> Vec<String> {
    let edge = d["changed"].as_array().unwrap().iter().find(|e| e["id"] == id).unwrap();
    edge["reasons"].as_array().unwrap().iter().map(|r| r["reason"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_diff_of_two_captures_names_the_edges_that_changed_and_why() {
    if !support::root_or_skip() || !tools_or_skip(&["tcpdump", "python3"]) {
        return;
    }
    let dir = scratch("map-diff");
    let phases = support::phases::record(&dir, &format!("md{}", std::process::id() % 100_000));
    let (before, after, inventory) = (&phases.before, &phases.after, &phases.inventory);

    let edge = |server: &str, kind: &str| format!("pod/shop/client|pod/shop/{server}|{kind}");
    let l7 = diff(before, after, inventory, "l7");
    assert_eq!(ids(&l7, "removed"), [edge("gone", "http")], "{l7}");
    assert_eq!(ids(&l7, "added"), [edge("new", "http")], "{l7}");
    assert_eq!(ids(&l7, "changed"), [edge("flaky", "http"), edge("slow", "http")], "steady is unchanged: {l7}");
    // p99 is read by nearest rank: of twenty requests, the slowest, so one
    // slow answer among the failures may name latency too.
    assert!(reasons(&l7, &edge("flaky", "http")).contains(&"error_rate".to_string()), "{l7}");
    assert_eq!(reasons(&l7, &edge("slow", "http")), ["latency_p99"], "{l7}");
    let slow = l7["changed"].as_array().unwrap().iter().find(|e| e["id"] == edge("slow", "http")).unwrap();
    let (was, is) = (slow["reasons"][0]["before"].as_f64().unwrap(), slow["reasons"][0]["after"].as_f64().unwrap());
    assert!(was < 20.0 && (50.0..100.0).contains(&is), "p99 {was} ms → {is} ms");
    let node_ids: Vec<&str> = l7["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    for pod in ["client", "gone", "new"] {
        assert!(node_ids.contains(&format!("pod/shop/{pod}").as_str()), "{node_ids:?}");
    }

    let l4 = diff(before, after, inventory, "l4");
    assert_eq!(ids(&l4, "removed"), [edge("gone", "tcp")], "{l4}");
    assert_eq!(ids(&l4, "added"), [edge("new", "tcp")], "{l4}");
    assert_eq!(ids(&l4, "changed"), Vec::<String>::new(), "the same connections and bytes: {l4}");
    history_over_the_api(&dir, &phases, &l7);
}

/// The first and last packet of a capture, in unix seconds (the last
/// rounded up): the window it fills.
fn span(capture: &Path) -> (u64, u64) {
    let mut file = trawl_host::capture::CaptureFile::open(capture).unwrap();
    let (mut first, mut last) = (u64::MAX, 0);
    file.for_each_frame(|f| {
        first = first.min(f.ts.as_nanos());
        last = last.max(f.ts.as_nanos());
    })
    .unwrap();
    (first / 1_000_000_000, last.div_ceil(1_000_000_000))
}

/// A hub fed the capture of both phases, by one worker: its history
/// answers the same diff over the API as the captures offline, its map of
/// a window equals a replay of only that window's packets, and restarted
/// on the same history it answers the same past window.
fn history_over_the_api(dir: &Path, phases: &support::phases::Phases, offline: &Value) {
    if !tools_or_skip(&["mergecap"]) {
        return;
    }
    let (before, after, inventory) = (&phases.before, &phases.after, &phases.inventory);
    let both = support::phases::merged(phases, dir);
    let (history, workers) = (dir.join("history"), support::free_port());
    let hub = |ui: u16| {
        support::Terminated(
            support::trawl()
                .args(["hub", "--workers", &format!("127.0.0.1:{workers}"), "--listen", &format!("127.0.0.1:{ui}")])
                .args(["--token", "s3cret", "--inventory", inventory.to_str().unwrap()])
                // One worker replays in order: nothing comes late.
                .args(["--history-grace", "0", "--history-dir", history.to_str().unwrap()])
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let ui = support::free_port();
    let first = hub(ui);
    support::wait_for("trawl hub", || std::net::TcpStream::connect(("127.0.0.1", ui)).is_ok());
    let worker = support::trawl()
        .args(["worker", "--hub", &format!("127.0.0.1:{workers}"), "--token", "s3cret", "--node", "n0"])
        .args(["--speed", "max", "--replay", both.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(worker.success(), "the worker");
    // Both windows equally long: rates are over the seconds a window
    // covers, and each phase's span rounds out to 2 or 3 whole seconds
    // depending on where it falls, which alone would move a rate by half.
    let ((b0, b1), (a0, a1)) = (span(before), span(after));
    let secs = (b1 - b0).max(a1 - a0);
    let (b1, a1) = (b0 + secs, a0 + secs);
    let total = |m: &Value| m["edges"].as_array().map_or(0, |e| e.iter().filter_map(|e| e["requests"].as_u64()).sum());
    // The worker is done; the hub may still be merging what it sent.
    support::wait_for("the hub's history to hold every request", || {
        let live = total(&support::get_json(ui, "/api/map?map=l7"));
        live > 0 && live == total(&support::get_json(ui, &format!("/api/map?map=l7&from={b0}&to={a1}")))
    });

    let api = support::get_json(ui, &format!("/api/diff?map=l7&before={b0},{b1}&after={a0},{a1}"));
    for list in ["added", "removed", "changed"] {
        assert_eq!(ids(&api, list), ids(offline, list), "{list} over the API: {api}");
    }
    for e in ids(offline, "changed") {
        assert_eq!(reasons(&api, &e), reasons(offline, &e), "{api}");
    }
    let edges = support::cluster::edge_numbers;
    let window = support::get_json(ui, &format!("/api/map?map=l7&from={a0}&to={a1}"));
    let replay = |capture: &Path, map: &str| {
        let (c, inv) = (capture.to_str().unwrap(), inventory.to_str().unwrap());
        let out = support::run_trawl(&["replay", c, "--emit", "map", "--map", map, "--inventory", inv]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        edges(&serde_json::from_slice(&out.stdout).unwrap())
    };
    let only_after = replay(after, "l7");
    assert_eq!(edges(&window), only_after, "the window's map is a replay of its packets alone: {window}");
    let window_l4 = support::get_json(ui, &format!("/api/map?map=l4&from={b0}&to={b1}"));
    let only_before = replay(before, "l4");
    assert_eq!(edges(&window_l4), only_before, "{window_l4}");

    // Restarted on the same history, the hub answers the same past window.
    let past = |ui| {
        let l4 = support::get_json(ui, &format!("/api/map?map=l4&from={b0}&to={b1}"));
        let l7 = support::get_json(ui, &format!("/api/map?map=l7&group_by=namespace&from={b0}&to={b1}"));
        (edges(&l4), edges(&l7), l7["window"].clone())
    };
    let was = past(ui);
    drop(first);
    let ui = support::free_port();
    let _second = hub(ui);
    support::wait_for("trawl hub again", || std::net::TcpStream::connect(("127.0.0.1", ui)).is_ok());
    assert!(!was.0.is_empty() && !was.1.is_empty(), "{was:?}");
    assert_eq!(past(ui), was, "a restarted hub answers the same past window");
}

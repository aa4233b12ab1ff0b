//! The cluster against one process: a hub fed by N workers replaying
//! parts of a capture must show exactly the single-process maps.

use super::{Terminated, free_port, get_json as get};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// An edge's numbers keyed by (source, target, transport or protocol): the
/// shape `trawl replay --emit map` and the hub's `/api/map` share.
pub(crate) fn edge_numbers(map: &Value) -> BTreeMap<String, Value> {
    map["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let keep = ["flows", "to_server", "to_client", "requests", "errors", "request_bytes", "response_bytes"];
            let numbers: serde_json::Map<String, Value> =
                keep.iter().filter_map(|k| Some((k.to_string(), e.get(*k)?.clone()))).collect();
            let kind = e["protocol"].as_str().or(e["l4"].as_str()).unwrap_or("");
            (format!("{} -> {} {kind}", e["source"], e["target"]), Value::Object(numbers))
        })
        .collect()
}

/// The single-process maps of a capture, L4 and L7.
pub(crate) fn replay_maps(capture: &Path) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let map = |extra: &[&str]| {
        let mut args = vec!["replay", capture.to_str().unwrap(), "--emit", "map"];
        args.extend(extra);
        let out = super::run_trawl(&args);
        // A capture cut short still reports what came before (exit 3).
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "{}: {}",
            capture.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        edge_numbers(&serde_json::from_slice(&out.stdout).unwrap())
    };
    (map(&[]), map(&["--map", "l7"]))
}

/// A hub fed by `n` workers, each replaying part i/n of the capture, once
/// they have all finished; returns the hub and its UI port.
pub(crate) fn hub_fed_by(capture: &Path, n: u32) -> (Terminated, u16) {
    let (workers, ui) = (free_port(), free_port());
    let hub = Terminated(
        super::trawl()
            .args(["hub", "--workers", &format!("127.0.0.1:{workers}"), "--listen", &format!("127.0.0.1:{ui}")])
            .args(["--token", "s3cret"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    super::wait_for("trawl hub", || std::net::TcpStream::connect(("127.0.0.1", ui)).is_ok());
    let runs: Vec<_> = (0..n)
        .map(|i| {
            super::trawl()
                .args(["worker", "--hub", &format!("127.0.0.1:{workers}"), "--token", "s3cret"])
                .args(["--node", &format!("node-{i}"), "--part", &format!("{i}/{n}"), "--speed", "max", "--replay"])
                .arg(capture)
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut w in runs {
        assert!(w.wait().unwrap().success(), "{}: a worker failed", capture.display());
    }
    (hub, ui)
}

/// For each `n` in `workers`, a hub fed by `n` workers (parts i/n of the
/// capture) shows exactly the single-process L4 and L7 maps: requests,
/// errors and bytes per edge. Returns how many hubs were compared.
pub(crate) fn assert_hub_equals_one_process(capture: &Path, workers: std::ops::RangeInclusive<u32>) -> usize {
    let (want_l4, want_l7) = replay_maps(capture);
    let mut compared = 0;
    for n in workers {
        let (_hub, ui) = hub_fed_by(capture, n);
        let maps = || {
            let l4 = edge_numbers(&get(ui, "/api/map?map=l4&group_by=pod"));
            (l4, edge_numbers(&get(ui, "/api/map?map=l7&group_by=pod")))
        };
        // Every worker has finished and the hub has read all they sent;
        // the last frames may still be merging: give it a moment.
        let start = Instant::now();
        let (mut l4, mut l7) = maps();
        while (l4 != want_l4 || l7 != want_l7) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(200));
            (l4, l7) = maps();
        }
        let health = get(ui, "/api/health");
        assert_eq!(l4, want_l4, "{}: L4 of a hub with {n} workers", capture.display());
        assert_eq!(l7, want_l7, "{}: L7 of a hub with {n} workers ({health})", capture.display());
        compared += 1;
    }
    compared
}

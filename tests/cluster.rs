//! Worker/hub on loopback: one `trawl hub` and three `trawl worker`
//! processes replaying disjoint parts of the demo capture. The hub's maps
//! must equal the single-process map of the same traffic, also after one
//! worker is killed mid-run and started again (which sends its flows and
//! records a second time), and after the hub itself restarts and the
//! workers reconnect; a worker with the wrong token is refused. One worker
//! may queue only three records: the rest reach the hub as counts, and the
//! L7 numbers must still be the same.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Terminated, free_port, project_root};

use support::get_json as get;

fn totals(map: &Value) -> BTreeMap<String, Value> {
    support::map_totals(map)
}

/// Waits until the map stops changing (the replay is over).
fn settled(port: u16, query: &str) -> Value {
    let start = Instant::now();
    let mut last = Value::Null;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = get(port, &format!("/api/map?{query}"));
        if now["edges"].as_array().is_some_and(|e| !e.is_empty()) && totals(&now) == totals(&last) {
            return now;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the map of port {port} never settled");
        last = now;
    }
}

fn worker(workers: u16, token: &str, node: &str, part: &str, speed: &str) -> Command {
    let demo = project_root().join("examples/demo");
    let mut c = support::trawl();
    c.args(["worker", "--hub", &format!("127.0.0.1:{workers}"), "--token", token, "--node", node])
        .args(["--part", part, "--speed", speed, "--replay"])
        .arg(demo.join("demo.pcap"))
        .stderr(Stdio::null());
    c
}

/// The single-process maps of the demo (L4 and L7 totals per edge).
fn reference() -> (Totals, Totals) {
    let (l4, l7, _) = reference_with_plugins();
    (l4, l7)
}

/// Records and faults per plugin, from `/api/plugins`.
fn plugin_counts(port: u16) -> BTreeMap<String, (u64, u64)> {
    let plugins = get(port, "/api/plugins");
    let entries = plugins.as_array().cloned().unwrap_or_default();
    entries
        .iter()
        .map(|p| {
            let n = |k: &str| p[k].as_u64().unwrap_or(0);
            (p["name"].as_str().unwrap_or("").to_string(), (n("records"), n("faults")))
        })
        .collect()
}

type Totals = BTreeMap<String, Value>;

/// The reference maps, and what each plugin did.
fn reference_with_plugins() -> (Totals, Totals, BTreeMap<String, (u64, u64)>) {
    let (reference, ref_port) = support::serve_demo(&["--speed", "max"]);
    let want_l4 = totals(&settled(ref_port, "map=l4&group_by=pod"));
    let want_l7 = totals(&settled(ref_port, "map=l7&group_by=pod"));
    let plugins = plugin_counts(ref_port);
    drop(reference);
    (want_l4, want_l7, plugins)
}

fn hub(workers: u16, ui: u16) -> Terminated {
    let demo = project_root().join("examples/demo");
    let hub = Terminated(
        support::trawl()
            .args(["hub", "--workers", &format!("127.0.0.1:{workers}"), "--listen", &format!("127.0.0.1:{ui}")])
            .args(["--token", "s3cret", "--inventory"])
            .arg(demo.join("inventory.json"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    support::wait_for("trawl hub", || std::net::TcpStream::connect(("127.0.0.1", ui)).is_ok());
    hub
}

fn http_status(port: u16, path: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://127.0.0.1:{port}{path}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn hub_with_three_workers_equals_one_process_and_survives_a_worker_restart() {
    let (want_l4, want_l7) = reference();
    let (workers, ui) = (free_port(), free_port());
    let _hub = hub(workers, ui);

    // A wrong token is refused, and says so.
    let refused = worker(workers, "wrong", "node-x", "0/3", "max").stderr(Stdio::piped()).output().unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("refused this worker: wrong credential"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Worker 1 is killed part-way through, then started again from scratch.
    let mut doomed = worker(workers, "s3cret", "node-b", "1/3", "1").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let _ = doomed.kill();
    let _ = doomed.wait();
    // node-a may queue only 3 records: the rest reach the hub as counts,
    // which must still add up to the same L7 numbers.
    let runs: Vec<_> = [("node-a", "0/3"), ("node-b", "1/3"), ("node-c", "2/3")]
        .iter()
        .map(|(node, part)| {
            let mut w = worker(workers, "s3cret", node, part, "max");
            if *node == "node-a" {
                w.args(["--max-records", "3"]);
            }
            w.spawn().unwrap()
        })
        .collect();
    for mut w in runs {
        assert!(w.wait().unwrap().success(), "a worker failed");
    }

    let got_l4 = totals(&settled(ui, "map=l4&group_by=pod"));
    let got_l7 = totals(&settled(ui, "map=l7&group_by=pod"));
    assert_eq!(got_l4, want_l4, "the hub's L4 map differs from one process's");
    assert_eq!(got_l7, want_l7, "the hub's L7 map differs from one process's");

    let health = get(ui, "/api/health");
    let workers = health["workers"].as_object().unwrap();
    let nodes: Vec<&str> = workers.values().filter_map(|w| w["node"].as_str()).collect();
    for n in ["node-a", "node-b", "node-c"] {
        assert!(nodes.contains(&n), "{n} missing from {health}");
    }
    assert!(workers.values().filter(|w| w["node"] == "node-b").any(|w| w["done"] == true), "{health}");
    assert!(
        workers.values().filter(|w| w["node"] == "node-a").all(|w| w["records_unsampled"].as_u64() > Some(0)),
        "node-a should have counted records beyond its queue: {health}"
    );
    assert!(workers.values().all(|w| w["connected"] == false), "workers that finished should show as gone: {health}");
}

#[test]
fn a_restarted_hub_gets_the_same_totals_once_the_workers_reconnect() {
    let (want_l4, want_l7, want_plugins) = reference_with_plugins();
    let (workers, ui, health) = (free_port(), free_port(), free_port());
    let first = hub(workers, ui);
    let _runs: Vec<Terminated> = [("node-a", "0/3"), ("node-b", "1/3"), ("node-c", "2/3")]
        .iter()
        .map(|(node, part)| {
            let mut w = worker(workers, "s3cret", node, part, "max");
            w.arg("--stay");
            if *node == "node-a" {
                w.args(["--health-listen", &format!("127.0.0.1:{health}")]);
            }
            Terminated(w.spawn().unwrap())
        })
        .collect();
    assert_eq!(totals(&settled(ui, "map=l4&group_by=pod")), want_l4);
    assert_eq!(totals(&settled(ui, "map=l7&group_by=pod")), want_l7);
    assert_eq!(http_status(health, "/readyz"), "200", "a connected worker is ready");
    // The hub's Plugins view sums what the workers' plugins did.
    assert!(want_plugins.values().filter(|(records, _)| *records > 0).count() >= 3, "{want_plugins:?}");
    assert_eq!(plugin_counts(ui), want_plugins, "plugin records and faults over the workers");

    // The hub goes away: the worker says it is not ready, and keeps trying.
    drop(first);
    support::wait_for("worker not ready", || http_status(health, "/readyz") == "503");
    assert_eq!(http_status(health, "/healthz"), "200", "the worker itself is alive");

    let _second = hub(workers, ui);
    support::wait_for("worker ready again", || http_status(health, "/readyz") == "200");
    let got_l4 = totals(&settled(ui, "map=l4&group_by=pod"));
    let got_l7 = totals(&settled(ui, "map=l7&group_by=pod"));
    assert_eq!(got_l4, want_l4, "the restarted hub's L4 map differs");
    assert_eq!(got_l7, want_l7, "the restarted hub's L7 map differs");
    let health = get(ui, "/api/health");
    let live: Vec<&Value> = health["workers"].as_object().unwrap().values().collect();
    assert_eq!(live.iter().filter(|w| w["connected"] == true).count(), 3, "{health}");
    assert!(live.iter().all(|w| w["done"] == true && w["records_dropped"] == 0), "{health}");
}

/// The cluster equals one process: for every capture of the corpus (the
/// pipelined Redis of redis-benchmark among them, whose equal requests a
/// hub deduplicating by content lost), a hub fed by 1, 2 and 3 workers
/// shows exactly the single-process L4 and L7 maps.
#[test]
fn hub_equals_one_process_on_every_corpus_capture_for_one_two_and_three_workers() {
    let Some(corpus) = support::corpus() else { return };
    let captures = support::captures(&corpus);
    assert!(captures.len() >= 60, "{} captures", captures.len());
    let mut compared = 0;
    for capture in &captures {
        compared += support::cluster::assert_hub_equals_one_process(capture, 1..=3);
    }
    assert_eq!(compared, captures.len() * 3);
}

/// `--stay` keeps a finished replay connected until stopped: Ctrl-C and
/// SIGTERM both stop it cleanly (exit status 0), as they stop every command.
#[test]
fn a_staying_worker_stops_cleanly_on_ctrl_c_and_on_sigterm() {
    let (workers, ui) = (free_port(), free_port());
    let _hub = hub(workers, ui);
    for (i, signal) in ["-INT", "-TERM"].into_iter().enumerate() {
        let node = format!("node-stay-{i}");
        let mut child = worker(workers, "s3cret", &node, "0/1", "max").arg("--stay").spawn().unwrap();
        support::wait_for("the replay to finish", || {
            let health = get(ui, "/api/health");
            health["workers"].as_object().into_iter().flatten().any(|(_, w)| w["node"] == node && w["done"] == true)
        });
        assert!(child.try_wait().unwrap().is_none(), "{node} should stay");
        Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{node} did not stop on {signal}");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{node} on {signal}: {status}");
    }
}

/// `GET /api/pcap` on a hub: the packets are on the workers, which answer
/// the hub's request from their rings; the file holds the flows of the
/// records the filter matches (and every connection of an L4 edge), as
/// tshark reads them, whichever worker saw them.
#[test]
fn a_hub_gets_an_edges_and_a_filters_packets_from_its_workers() {
    if !support::tools_or_skip(&["tshark"]) {
        return;
    }
    let (workers, ui) = (free_port(), free_port());
    let _hub = hub(workers, ui);
    let _w = [("node-a", "0/2"), ("node-b", "1/2")]
        .map(|(node, part)| Terminated(worker(workers, "s3cret", node, part, "max").arg("--stay").spawn().unwrap()));
    settled(ui, "map=l7&group_by=pod");
    let dir = support::scratch("hub-pcap");
    let fetch = |query: &str, name: &str| {
        let file = dir.join(name);
        let url = format!("http://127.0.0.1:{ui}/api/pcap?{query}");
        let out = Command::new("curl").args(["-sf", "-D", "-", "-o"]).arg(&file).arg(&url).output().unwrap();
        assert!(out.status.success(), "{url}");
        let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(headers.contains("x-trawl-workers: 2/2"), "both workers answered: {headers}");
        crate::pcap_export::conversations(&file)
    };
    let records = get(ui, "/api/records?filter=redis&limit=1000")["records"].as_array().unwrap().clone();
    let want = crate::pcap_export::flow_pairs(records.iter());
    assert!(want.len() > 5);
    let got = fetch("filter=redis", "redis.pcapng");
    assert_eq!(got.keys().cloned().collect::<std::collections::BTreeSet<_>>(), want);

    // An L4 edge: the workers replay without an inventory, so they send
    // the transport's packets and the hub picks the edge's by its own.
    let l4 = settled(ui, "map=l4&group_by=pod");
    let edge = l4["edges"].as_array().unwrap().iter().find(|e| e["l4"] == "udp").unwrap();
    let got = fetch(&format!("edge={}", edge["id"].as_str().unwrap().replace('|', "%7C")), "udp.pcapng");
    assert_eq!(got.len() as u64, edge["flows"].as_u64().unwrap(), "{edge}");
    assert_eq!(got.values().map(|c| c.0).sum::<u64>(), edge["packets"].as_f64().unwrap() as u64);
}

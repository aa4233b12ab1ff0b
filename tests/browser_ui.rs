//! The web UI in a real headless Chromium (Debian `chromium`, driven by npm
//! `playwright-core` from `tests/browser/map_ui.mjs`) against a real
//! `trawl serve` replaying the demo capture. The expectations (node counts
//! per map and grouping, the DNS edges, an edge to click) come from the same
//! server's REST API, so the browser is checked against the service, and
//! the service against the capture by the service tests.
//!
//! Screenshots are saved under `$CARGO_TARGET_DIR/ui-screenshots` (or
//! `target/ui-screenshots`). Needs chromium, node and `npm ci` in
//! tests/browser; `scripts/test.sh` installs them. Without them the test
//! skips, except under `CI=true`, where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::process::Command;
use support::{project_root, scratch, tools_or_skip, wait_for};

fn get(base: &str, path: &str) -> Value {
    let out = Command::new("curl").args(["-sf", &format!("{base}{path}")]).output().unwrap();
    assert!(out.status.success(), "GET {path} failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `tests/browser` once its `npm ci` ran; otherwise the test skips (and
/// fails under `CI=true`).
fn browser_or_skip() -> Option<std::path::PathBuf> {
    let browser_dir = project_root().join("tests/browser");
    if browser_dir.join("node_modules/playwright-core").is_dir() {
        return Some(browser_dir);
    }
    let why = "tests/browser/node_modules missing (scripts/test.sh runs npm ci there)";
    assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{why}");
    eprintln!("SKIP: {why}");
    None
}

/// Runs a playwright script with `args` and the screenshot directory; it
/// must succeed.
fn run_script(script: &std::path::Path, args: &[&str], shots: &std::path::Path) {
    let out = Command::new("node").arg(script).args(args).arg(shots).output().unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{log}");
    assert!(out.status.success(), "browser test failed (screenshots in {}):\n{log}", shots.display());
}

/// One browser test at a time: the time-travel test builds a netns lab,
/// and Chromium aborts page loads (`ERR_NETWORK_CHANGED`) when interfaces
/// come and go while it loads.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn count(v: &Value, key: &str) -> usize {
    v[key].as_array().map_or(0, Vec::len)
}

#[test]
fn map_ui_in_headless_chromium() {
    let _serial = one_at_a_time();
    if !tools_or_skip(&["chromium", "node", "curl"]) {
        return;
    }
    let Some(browser_dir) = browser_or_skip() else { return };
    let dir = scratch("ui");
    let (_server, port) = support::serve_demo(&["--speed", "max"]);
    let base = format!("http://127.0.0.1:{port}");
    // At full speed the short demo capture is read within moments; wait
    // until the maps stop changing so the expectations hold.
    let mut last = Value::Null;
    wait_for("the replay to finish", || {
        let now = get(&base, "/api/health")["counters"]["packets"].clone();
        let done = now == last && now.as_u64().unwrap_or(0) > 0;
        last = now;
        std::thread::sleep(std::time::Duration::from_millis(300));
        done
    });
    let l4_pod = get(&base, "/api/map?map=l4&group_by=pod");
    let l7_pod = get(&base, "/api/map?map=l7&group_by=pod");
    let l4_ns = get(&base, "/api/map?map=l4&group_by=namespace");
    let l4_node = get(&base, "/api/map?map=l4&group_by=node");
    let dns = get(&base, "/api/map?map=l7&group_by=pod&filter=dns");
    let plugins = get(&base, "/api/plugins");
    assert!(count(&dns, "edges") >= 1 && count(&l4_pod, "nodes") >= 4, "the demo has DNS and several pods");
    // The DNS edge runs between two namespaces, so it is long and clear of
    // other edges: a real mouse click on it is unambiguous.
    let edge = dns["edges"][0]["id"].clone();
    let expectations = serde_json::json!({
        "l4_pod_nodes": count(&l4_pod, "nodes"),
        "l7_pod_nodes": count(&l7_pod, "nodes"),
        "l4_namespace_nodes": count(&l4_ns, "nodes"),
        "l4_node_nodes": count(&l4_node, "nodes"),
        "namespace_to_hide": "kube-system",
        "dns_edges": count(&dns, "edges"),
        "edge_to_click": edge,
        "edge_to_click_map": "l7",
        "plugins": plugins.as_array().map_or(0, Vec::len),
    });
    let exp_file = dir.join("expectations.json");
    std::fs::write(&exp_file, expectations.to_string()).unwrap();
    let target: std::path::PathBuf =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| project_root().join("target"), Into::into);
    let shots = target.join("ui-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    run_script(&browser_dir.join("map_ui.mjs"), &[&base, exp_file.to_str().unwrap()], &shots);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The UI of a `trawl serve` that needs a token: it prompts for one
/// (again after a wrong one), then draws the map, and the WebSocket URL
/// carries no token (it rides in a subprotocol).
#[test]
fn the_ui_asks_for_a_token_then_draws_the_map() {
    let _serial = one_at_a_time();
    if !tools_or_skip(&["chromium", "node", "curl"]) {
        return;
    }
    let Some(browser_dir) = browser_or_skip() else { return };
    const TOKEN: &str = "ui-read-t0ken";
    let (_server, port) = support::serve_demo(&["--speed", "max", "--api-token", TOKEN]);
    let base = format!("http://127.0.0.1:{port}");
    let authed = |path: &str| {
        let out = Command::new("curl")
            .args(["-sf", "-H", &format!("Authorization: Bearer {TOKEN}"), &format!("{base}{path}")])
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)
    };
    let mut last = Value::Null;
    wait_for("the replay to finish", || {
        let now = authed("/api/health")["counters"]["packets"].clone();
        let done = now == last && now.as_u64().unwrap_or(0) > 0;
        last = now;
        std::thread::sleep(std::time::Duration::from_millis(300));
        done
    });
    let nodes = count(&authed("/api/map?map=l4&group_by=pod"), "nodes");
    assert!(nodes >= 4);
    let target: std::path::PathBuf =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| project_root().join("target"), Into::into);
    let shots = target.join("ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    run_script(&browser_dir.join("auth_ui.mjs"), &[&base, TOKEN, &nodes.to_string()], &shots);
}

/// The header warns when losses grow: a real `trawl hub`, and a client
/// speaking the worker protocol whose status reports packets the reorder
/// buffer let go, growing once the page is open.
#[test]
fn the_ui_warns_when_losses_grow() {
    let _serial = one_at_a_time();
    use std::sync::atomic::{AtomicBool, Ordering};
    use trawl_host::cluster::proto::{PROTOCOL_VERSION, ToHub, WorkerCounters, WorkerStatus, write_frame};
    if !tools_or_skip(&["chromium", "node", "curl"]) {
        return;
    }
    let Some(browser_dir) = browser_or_skip() else { return };
    let (workers, ui) = (support::free_port(), support::free_port());
    let _hub = support::Terminated(
        support::trawl()
            .args(["hub", "--token", "w0rker", "--workers", &format!("127.0.0.1:{workers}")])
            .args(["--listen", &format!("127.0.0.1:{ui}")])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("trawl hub", || std::net::TcpStream::connect(("127.0.0.1", ui)).is_ok());
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", workers)).unwrap();
            let hello = ToHub::Hello {
                version: PROTOCOL_VERSION,
                node: "node-x".into(),
                worker_id: "w1".into(),
                boot_id: "b".into(),
                epoch: "e".into(),
                token: "w0rker".into(),
            };
            write_frame(&mut s, &hello).unwrap();
            let started = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                // Nothing lost for the page's first look, then more and more.
                let lost = started.elapsed().as_secs().saturating_sub(6) * 10;
                let mut counters = WorkerCounters::default();
                counters.losses.reorder_overflow = lost;
                let status = ToHub::Status(WorkerStatus { counters, plugins: Vec::new() });
                if write_frame(&mut s, &status).is_err() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        })
    };
    let target: std::path::PathBuf =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| project_root().join("target"), Into::into);
    let shots = target.join("ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    run_script(&browser_dir.join("losses_ui.mjs"), &[&format!("http://127.0.0.1:{ui}")], &shots);
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
}

/// Time travel and compare mode: a `trawl serve` replaying two phases of
/// real HTTP traffic from a netns lab (needs root); the browser steps from
/// the after window back to the before one and forward again (the map
/// follows, nodes keep their places), compares the two (added green,
/// removed grey and dashed, worse red with the reason on hover, the rest
/// faded) and goes live again, where health follows errors and latency.
#[test]
fn time_travel_and_compare_in_chromium() {
    let _serial = one_at_a_time();
    if !support::root_or_skip() || !tools_or_skip(&["chromium", "node", "curl", "tcpdump", "python3", "mergecap"]) {
        return;
    }
    let Some(browser_dir) = browser_or_skip() else { return };
    let dir = scratch("ui-history");
    let phases = support::phases::record(&dir, &format!("uh{}", std::process::id() % 100_000));
    let both = support::phases::merged(&phases, &dir);
    let port = support::free_port();
    let _server = support::Terminated(
        support::trawl()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--speed", "max"])
            // `slow` answers in 50 ms: degraded by latency. 40 ms leaves
            // the fast edges room for a slow answer when the machine is
            // busy (at 20 ms, one made `new` degraded under the full suite).
            .args(["--health-latency", "40,1000", "--replay"])
            .arg(&both)
            .arg("--inventory")
            .arg(&phases.inventory)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let b = phases.boundary;
    // The replay has ended and history holds both windows, closed (the
    // end of a replay closes its last intervals: both are whole 10 s).
    wait_for("history of both phases", || {
        let window = |from: u64| {
            let out = Command::new("curl")
                .args(["-sf", &format!("{base}/api/map?map=l7&from={from}&to={}", from + 10)])
                .output()
                .unwrap();
            serde_json::from_slice::<Value>(&out.stdout)
                .map_or((0, 0), |v| (count(&v, "edges"), v["window"]["secs"].as_u64().unwrap_or(0)))
        };
        window(b - 10) == (4, 10) && window(b) == (4, 10)
    });
    let target: std::path::PathBuf =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| project_root().join("target"), Into::into);
    let shots = target.join("ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    run_script(&browser_dir.join("history_ui.mjs"), &[&base, &b.to_string()], &shots);
}

#[test]
fn the_cytoscape_export_loads_in_cytoscape_js() {
    let _serial = one_at_a_time();
    if !tools_or_skip(&["chromium", "node", "curl"]) {
        return;
    }
    let Some(browser_dir) = browser_or_skip() else { return };
    let dir = scratch("cytoscape");
    let (_server, port) = support::serve_demo(&["--speed", "max"]);
    let base = format!("http://127.0.0.1:{port}");
    let mut last = Value::Null;
    wait_for("the replay to finish", || {
        let now = get(&base, "/api/map?map=l7&group_by=namespace");
        let done = now == last && count(&now, "edges") > 0;
        last = now;
        std::thread::sleep(std::time::Duration::from_millis(300));
        done
    });
    let (nodes, edges) = (count(&last, "nodes").to_string(), count(&last, "edges").to_string());
    run_script(&browser_dir.join("cytoscape_export.mjs"), &[&base, &nodes, &edges], &dir);
}

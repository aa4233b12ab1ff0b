//! A protocol author's whole path, as a new author takes it, from an empty
//! directory: `trawl plugin new memcached`; the example's code in place;
//! `trawl plugin build` (with an empty CARGO_HOME and no network: the SDK
//! and its dependencies come with trawl); `trawl plugin test` on a capture
//! of a real memcached driven by a real client (pymemcache), against the
//! server's own log and against golden records; then `PUT` to a running
//! `trawl hub` with two `trawl worker`s replaying that traffic. Within a
//! second of the PUT the plugin is active on every worker and in the
//! legend, and KFL2 takes `memcached && …`; once the replay is over the L7
//! map counts exactly the requests the server logged. Refusals (a wrong
//! ABI, an oversized or garbage module, a wrong name, a missing or bad
//! signature) change nothing; an ABI v1 plugin loads next to v2 ones; a
//! worker that connects later gets the plugin, it survives a hub restart,
//! and DELETE takes it back. (A version that faults repeatedly rolls back:
//! `dispatch::tests` in trawl-runtime.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{self, Capture, Killed, Terminated, free_port, get_json, tools_or_skip, wait_for};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `trawl plugin …` in `dir`, with only the toolchain: an empty Cargo home
/// (no registry, no cache) and no network.
fn plugin_cmd(dir: &Path, args: &[&str]) -> Output {
    let home = std::env::temp_dir().join(format!("trawl-empty-cargo-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let toolchain = std::fs::read_to_string(support::project_root().join("rust-toolchain.toml")).unwrap();
    let channel = toolchain.lines().find_map(|l| l.strip_prefix("channel = ")).unwrap().trim_matches('"').to_string();
    support::trawl()
        .arg("plugin")
        .args(args)
        .current_dir(dir)
        .env("CARGO_HOME", &home)
        .env("CARGO_NET_OFFLINE", "true")
        .env("RUSTUP_TOOLCHAIN", channel)
        .env("CARGO_TARGET_DIR", std::env::temp_dir().join("trawl-plugin-toolkit-target"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed:\n{stderr}\n{}", String::from_utf8_lossy(&out.stdout));
    format!("{}{stderr}", String::from_utf8_lossy(&out.stdout))
}

/// Commands memcached logged (`-vv`), by verb in capitals.
fn server_log_commands(log: &Path) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap().lines() {
        let Some(rest) = line.strip_prefix('<') else { continue };
        let mut words = rest.split_whitespace();
        let (Some(fd), Some(verb)) = (words.next(), words.next()) else { continue };
        let known = ["get", "gets", "set", "cas", "delete", "incr", "version"];
        if fd.bytes().all(|b| b.is_ascii_digit()) && known.contains(&verb) {
            *counts.entry(verb.to_ascii_uppercase()).or_insert(0) += 1;
        }
    }
    counts
}

/// memcached with a real client over `connections` connections, after an
/// idle connection and `pause` seconds; returns the capture and the
/// server's log of commands.
fn capture_memcached(dir: &Path, py: &Path, pause: &str, connections: &str) -> (PathBuf, BTreeMap<String, u64>) {
    let port = if std::net::TcpListener::bind("127.0.0.1:11211").is_ok() { 11211 } else { free_port() };
    let log = dir.join("memcached.log");
    let server = Killed(
        Command::new("memcached")
            .args(["-vv", "-U", "0", "-l", "127.0.0.1", "-p", &port.to_string(), "-u", "root"])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("memcached", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let pcap = dir.join("memcached.pcap");
    let dump = Capture::start(&pcap, &format!("tcp port {port}"));
    let client = support::project_root().join("tests/e2e/memcached_client.py");
    let out = Command::new(py).arg(client).args([&port.to_string(), pause, connections]).output().unwrap();
    ok(&out, "the memcached client");
    dump.stop();
    drop(server);
    (pcap, server_log_commands(&log))
}

fn methods(records: &[Value]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for r in records {
        *counts.entry(r["method"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    counts
}

fn curl(args: &[&str]) -> (u16, Value) {
    let out = Command::new("curl").args(["-s", "-w", "\n%{http_code}"]).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::Null))
}

fn put(ui: u16, name: &str, module: &Path, extra: &[&str]) -> (u16, Value) {
    let url = format!("http://127.0.0.1:{ui}/api/plugins/{name}");
    let body = format!("@{}", module.display());
    let mut args = vec!["-X", "PUT", "--data-binary", &body, &url];
    args.extend_from_slice(extra);
    curl(&args)
}

fn hub(workers: u16, ui: u16, extra: &[&str]) -> Terminated {
    let hub = Terminated(
        support::trawl()
            .args(["hub", "--workers", &format!("127.0.0.1:{workers}"), "--listen", &format!("127.0.0.1:{ui}")])
            .args(["--token", "s3cret"])
            .args(extra)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("trawl hub", || std::net::TcpStream::connect(("127.0.0.1", ui)).is_ok());
    hub
}

fn worker(workers: u16, node: &str, part: &str, capture: &Path) -> Terminated {
    Terminated(
        support::trawl()
            .args(["worker", "--hub", &format!("127.0.0.1:{workers}"), "--token", "s3cret", "--node", node])
            .args(["--part", part, "--speed", "1", "--stay", "--replay"])
            .arg(capture)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The plugin's state on each connected worker, by node.
fn states_on_workers(ui: u16, name: &str) -> BTreeMap<String, String> {
    let plugins = get_json(ui, "/api/plugins");
    let health = get_json(ui, "/api/health");
    let entry = plugins.as_array().into_iter().flatten().find(|p| p["name"] == name).cloned().unwrap_or(Value::Null);
    let connected = |id: &str| health["workers"][id]["connected"] == true;
    entry["workers"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(id, _)| connected(id))
        .map(|(id, w)| (id.split('/').next().unwrap().to_string(), w["state"].as_str().unwrap_or("").to_string()))
        .collect()
}

fn connected_workers(ui: u16) -> usize {
    let health = get_json(ui, "/api/health");
    health["workers"].as_object().map_or(0, |w| w.values().filter(|w| w["connected"] == true).count())
}

/// An ABI v1 plugin (what plugins were built against before ABI v2) that
/// claims nothing.
fn abi_v1_module(name: &str) -> Vec<u8> {
    abi_v1_module_with(name, "(i32.const 0)", "{ok}")
}

/// As [`abi_v1_module`], with the bodies of `trawl_probe` and `trawl_data`
/// given (`{ok}` in a body stands for a packed empty result).
fn abi_v1_module_with(name: &str, probe: &str, data: &str) -> Vec<u8> {
    let info =
        postcard::to_allocvec(&trawl_sdk::PluginInfo { tcp_ports: vec![4242], ..trawl_sdk::PluginInfo::new(name) })
            .unwrap();
    let hex: String = info.iter().map(|b| format!("\\{b:02x}")).collect();
    let ok = postcard::to_allocvec(&trawl_sdk::abi::v1::DataResult {
        status: trawl_sdk::Status::Ok,
        consumed: 0,
        needed: 0,
        events: vec![],
    })
    .unwrap();
    let ok_hex: String = ok.iter().map(|b| format!("\\{b:02x}")).collect();
    let packed =
        |at: usize, len: usize| format!("(i64.or (i64.shl (i64.const {at}) (i64.const 32)) (i64.const {len}))");
    wat::parse_str(format!(
        r#"(module (memory (export "memory") 2)
  (data (i32.const 1024) "{hex}") (data (i32.const 4096) "{ok_hex}")
  (func (export "trawl_abi_version") (result i32) (i32.const 1))
  (func (export "trawl_alloc") (param i32) (result i32) (i32.const 65536))
  (func (export "trawl_dealloc") (param i32 i32))
  (func (export "trawl_init") (result i64) {init})
  (func (export "trawl_probe") (param i32 i32 i32 i32) (result i32) {probe})
  (func (export "trawl_open") (param i64 i32 i32) (result i64) {ok})
  (func (export "trawl_data") (param i64 i32 i32 i64 i32 i32 i64) (result i64) {data})
  (func (export "trawl_close") (param i64 i64) (result i64) {ok}))"#,
        init = packed(1024, info.len()),
        data = data.replace("{ok}", &packed(4096, ok.len())),
        ok = packed(4096, ok.len()),
    ))
    .unwrap()
}

#[test]
fn a_new_author_goes_from_an_empty_directory_to_a_cluster_map() {
    if !tools_or_skip(&["memcached", "tcpdump", "curl", "openssl"]) {
        return;
    }
    let Some(py) = support::python_or_skip("pymemcache") else { return };
    let dir = support::scratch("plugin-toolkit");

    // 1–3: scaffold; the template builds as it is, then with the example.
    ok(&plugin_cmd(&dir, &["new", "memcached"]), "trawl plugin new");
    let krate = dir.join("memcached");
    for file in ["Cargo.toml", ".cargo/config.toml", "src/lib.rs", "README.md", ".trawl/sdk/src/lib.rs"] {
        assert!(krate.join(file).exists(), "trawl plugin new wrote no {file}");
    }
    let built = ok(&plugin_cmd(&krate, &["build"]), "trawl plugin build of the template");
    assert!(built.contains("plugin ABI v2"), "{built}");
    let example = support::project_root().join("examples/plugins/memcached/src/lib.rs");
    std::fs::copy(example, krate.join("src/lib.rs")).unwrap();
    let built = ok(&plugin_cmd(&krate, &["build"]), "trawl plugin build");
    assert!(built.contains("built ") && built.contains("memcached 0.1.0") && built.contains("tcp/11211"), "{built}");
    let wasm = krate.join("memcached.wasm");

    // 4: a capture of real traffic; the plugin's records against the
    // server's log, then against golden records.
    let (pcap, truth) = capture_memcached(&dir, &py, "6", "4");
    let golden = dir.join("golden.jsonl");
    let (wasm_s, pcap_s, golden_s) = (wasm.to_str().unwrap(), pcap.to_str().unwrap(), golden.to_str().unwrap());
    let out = plugin_cmd(&dir, &["test", wasm_s, pcap_s, "--expect", golden_s, "--bless"]);
    let report = ok(&out, "trawl plugin test --bless");
    let records = support::json_lines(&out.stdout);
    assert_eq!(methods(&records), truth, "records by method against memcached's own log\n{report}");
    let misses = records.iter().filter(|r| r["fields"]["memcached_hit"] == false).count();
    assert_eq!(misses, 4 * 5, "each connection misses 3 gets, a delete and an incr");
    for needle in ["faults         0", "p99", "MB/s", "peak memory", "amplification", "PASS"] {
        assert!(report.contains(needle), "the report says no {needle:?}:\n{report}");
    }
    ok(&plugin_cmd(&dir, &["test", wasm_s, pcap_s, "--expect", golden_s]), "trawl plugin test --expect");
    let changed = std::fs::read_to_string(&golden).unwrap().replacen("\"GET\"", "\"GOT\"", 1);
    std::fs::write(&golden, changed).unwrap();
    let out = plugin_cmd(&dir, &["test", wasm_s, pcap_s, "--expect", golden_s]);
    assert!(!out.status.success(), "a difference from the golden records must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("differs"));
    // A plugin that faults fails its test too.
    let trapper = dir.join("trapper.wasm");
    std::fs::write(&trapper, abi_v1_module_with("trapper", "(i32.const 2)", "(unreachable)")).unwrap();
    let out = plugin_cmd(&dir, &["test", trapper.to_str().unwrap(), pcap_s]);
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && report.contains("FAIL:") && report.contains("fault(s)"), "{report}");

    // 5: a hub, two workers replaying the capture; the PUT while its
    // traffic has not started yet (the capture opens with a 6 s pause).
    let (workers, ui) = (free_port(), free_port());
    let store = dir.join("store");
    let store_arg = ["--plugin-store", store.to_str().unwrap()];
    let mut hub_process = hub(workers, ui, &store_arg);
    let _w0 = worker(workers, "n0", "0/2", &pcap);
    let _w1 = worker(workers, "n1", "1/2", &pcap);
    wait_for("two workers", || connected_workers(ui) == 2);
    let pushed_at = Instant::now();
    let (code, answer) = put(ui, "memcached", &wasm, &[]);
    assert_eq!(code, 201, "{answer}");
    let mut active = BTreeMap::new();
    while pushed_at.elapsed() < Duration::from_secs(5) {
        active = states_on_workers(ui, "memcached");
        if active.values().filter(|s| *s == "active").count() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = pushed_at.elapsed();
    assert_eq!(active.values().filter(|s| *s == "active").count(), 2, "{active:?}");
    assert!(took < Duration::from_secs(1), "active on every worker {took:?} after the PUT");
    // Its legend entry (name, colour) is the hub's at once; the map's
    // legend lists it once it has an edge.
    let listed = get_json(ui, "/api/plugins");
    let entry = listed.as_array().unwrap().iter().find(|p| p["name"] == "memcached").cloned().unwrap();
    assert_eq!((&entry["color"], &entry["long_name"]), (&Value::from("#2a9d8f"), &Value::from("memcached")), "{entry}");
    let misses_query = "/api/map?map=l7&filter=memcached%20%26%26%20memcached_hit%20%3D%3D%20false";
    assert!(get_json(ui, misses_query).get("error").is_none(), "KFL2 takes memcached && memcached_hit");

    // Once the replay is over: exactly the requests memcached logged (all
    // but the idle connection's `version`, sent before the PUT).
    let want: u64 = truth.values().sum::<u64>() - 1;
    let requests = |query: &str| -> u64 {
        let map = get_json(ui, query);
        let edges = map["edges"].as_array().cloned().unwrap_or_default();
        edges.iter().filter(|e| e["protocol"] == "memcached").map(|e| e["requests"].as_u64().unwrap_or(0)).sum()
    };
    let settle = Instant::now();
    let mut got = 0;
    while settle.elapsed() < Duration::from_secs(30) {
        got = requests("/api/map?map=l7");
        if got == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        got,
        want,
        "memcached requests on the map; the server logged {truth:?}\n{}\n{}",
        get_json(ui, "/api/map?map=l7")["edges"],
        get_json(ui, "/api/plugins")
    );
    let legend = get_json(ui, "/api/map?map=l7")["legend"].clone();
    let entry = legend.as_array().unwrap().iter().find(|l| l["protocol"] == "memcached").cloned();
    assert_eq!(entry.map(|e| e["color"].clone()), Some(Value::from("#2a9d8f")), "memcached in the map's legend");
    assert_eq!(requests(misses_query), 4 * 5, "the filter keeps the misses");

    // Refusals, each with its reason, and nothing changes.
    let before = get_json(ui, "/api/plugins");
    let junk = dir.join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").unwrap();
    let (code, answer) = put(ui, "memcached", &junk, &[]);
    assert_eq!(code, 400, "{answer}");
    let huge = dir.join("huge.wasm");
    std::fs::write(&huge, vec![0u8; 9 << 20]).unwrap();
    let (code, answer) = put(ui, "memcached", &huge, &[]);
    assert_eq!(code, 413, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("over this hub's"), "{answer}");
    let wrong_abi = dir.join("abi9.wasm");
    let text = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "trawl_abi_version") (result i32) (i32.const 9)) (func (export "trawl_alloc") (param i32) (result i32) (i32.const 0)) (func (export "trawl_init") (result i64) (i64.const 0)) (func (export "trawl_probe") (param i32 i32 i32 i32) (result i32) (i32.const 0)) (func (export "trawl_data") (param i64 i32 i32 i64 i32 i32 i64) (result i64) (i64.const 0)) (func (export "trawl_open") (param i64 i32 i32) (result i64) (i64.const 0)) (func (export "trawl_close") (param i64 i64) (result i64) (i64.const 0)) (func (export "trawl_dealloc") (param i32 i32)))"#).unwrap();
    std::fs::write(&wrong_abi, text).unwrap();
    let (code, answer) = put(ui, "memcached", &wrong_abi, &[]);
    assert_eq!(code, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("ABI v9"), "{answer}");
    let (code, answer) = put(ui, "other", &wasm, &[]);
    assert_eq!(code, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("calls itself \"memcached\""), "{answer}");
    let evil = dir.join("evil-module.wasm");
    std::fs::write(&evil, abi_v1_module("../evil")).unwrap();
    let (code, answer) = put(ui, "..%2Fevil", &evil, &[]);
    assert_eq!(code, 400, "a name that would leave the store: {answer}");
    assert!(!dir.join("evil.wasm.sig").exists() && !store.join("../evil.wasm").exists());
    let hidden = dir.join("hidden-module.wasm");
    std::fs::write(&hidden, abi_v1_module(".x")).unwrap();
    let (code, answer) = put(ui, ".x", &hidden, &[]);
    assert_eq!(code, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("bad plugin name"), "{answer}");
    let hashes =
        |v: &Value| v.as_array().unwrap().iter().map(|p| (p["name"].clone(), p["hash"].clone())).collect::<Vec<_>>();
    assert_eq!(hashes(&get_json(ui, "/api/plugins")), hashes(&before), "refusals change nothing");

    // An ABI v1 plugin next to v2 ones, on every worker.
    let legacy = dir.join("legacy.wasm");
    std::fs::write(&legacy, abi_v1_module("legacy")).unwrap();
    let (code, answer) = put(ui, "legacy", &legacy, &[]);
    assert_eq!((code, answer["abi"].as_u64()), (201, Some(1)), "{answer}");
    wait_for("legacy on both workers", || {
        states_on_workers(ui, "legacy").values().filter(|s| *s == "active").count() == 2
    });

    // A worker that connects later gets both.
    let _late = worker(workers, "late", "0/2", &pcap);
    wait_for("the late worker's plugins", || {
        states_on_workers(ui, "memcached").get("late").is_some_and(|s| s == "active")
            && states_on_workers(ui, "legacy").get("late").is_some_and(|s| s == "active")
    });

    // The hub restarts: the pushed plugins come back from its store.
    drop(hub_process);
    hub_process = hub(workers, ui, &store_arg);
    let plugins = get_json(ui, "/api/plugins");
    let memcached = plugins.as_array().unwrap().iter().find(|p| p["name"] == "memcached").cloned().unwrap();
    assert_eq!(memcached["pushed"]["sha256"], Value::from(answer_sha(&wasm)), "{memcached}");
    wait_for("workers back on the restarted hub", || states_on_workers(ui, "memcached").len() == 3);

    // DELETE takes it back everywhere; deleting an embedded plugin is refused.
    let url = format!("http://127.0.0.1:{ui}/api/plugins/legacy");
    assert_eq!(curl(&["-X", "DELETE", &url]).0, 200);
    assert!(!store.join("legacy.wasm").exists());
    assert_eq!(curl(&["-X", "DELETE", &format!("http://127.0.0.1:{ui}/api/plugins/http")]).0, 404);
    let gone = get_json(ui, "/api/plugins");
    assert!(gone.as_array().unwrap().iter().all(|p| p["name"] != "legacy"));
    drop(hub_process);

    // A hub that requires signatures.
    let key = dir.join("key.pem");
    ok(&plugin_cmd(&dir, &["keygen", key.to_str().unwrap()]), "trawl plugin keygen");
    let (workers, ui) = (free_port(), free_port());
    let _signed_hub = hub(workers, ui, &["--plugin-key", dir.join("key.pub.pem").to_str().unwrap()]);
    let (code, answer) = put(ui, "memcached", &wasm, &[]);
    assert_eq!(code, 403, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("signature is required"), "{answer}");
    let (code, _) = put(ui, "memcached", &wasm, &["-H", "X-Trawl-Signature: AAAA"]);
    assert_eq!(code, 400, "a malformed signature");
    let other = dir.join("other.pem");
    ok(&plugin_cmd(&dir, &["keygen", other.to_str().unwrap()]), "trawl plugin keygen");
    ok(&plugin_cmd(&dir, &["sign", "--key", other.to_str().unwrap(), wasm_s]), "trawl plugin sign");
    let sig_header = |path: &Path| format!("X-Trawl-Signature: {}", std::fs::read_to_string(path).unwrap().trim());
    let sig = krate.join("memcached.wasm.sig");
    let (code, answer) = put(ui, "memcached", &wasm, &["-H", &sig_header(&sig)]);
    assert_eq!(code, 403, "signed with another key: {answer}");
    ok(&plugin_cmd(&dir, &["sign", "--key", key.to_str().unwrap(), wasm_s]), "trawl plugin sign");
    let (code, answer) = put(ui, "memcached", &wasm, &["-H", &sig_header(&sig)]);
    assert_eq!((code, answer["signed"].clone()), (201, Value::Bool(true)), "{answer}");
}

fn answer_sha(path: &Path) -> String {
    trawl_host::plugins::wasm::content_hash(&std::fs::read(path).unwrap())
}

/// The host holds no protocol code: nothing under core/ or host/ names the
/// protocol that was added above.
#[test]
fn no_host_code_knows_the_pushed_protocol() {
    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() && !path.ends_with("target") {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for dir in ["core", "host"] {
        rust_files(&support::project_root().join(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} files", files.len());
    let knowing: Vec<&PathBuf> =
        files.iter().filter(|f| std::fs::read_to_string(f).unwrap().to_lowercase().contains("memcached")).collect();
    assert!(knowing.is_empty(), "host code that knows memcached: {knowing:?}");
}

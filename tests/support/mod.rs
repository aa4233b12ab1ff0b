//! Shared helpers of the cross-crate tests: finding the capture corpus and
//! running the `trawl` binary.
#![allow(dead_code)]

pub(crate) mod cluster;
pub(crate) mod phases;
pub(crate) mod segments;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The test corpus (`TRAWL_CORPUS`, default `../shared/data` beside the
/// project root). `None` means "skip": the test prints why. Under `CI=true` a
/// missing corpus is a failure instead.
pub(crate) fn corpus() -> Option<PathBuf> {
    let dir = match std::env::var_os("TRAWL_CORPUS") {
        Some(d) => PathBuf::from(d),
        None => project_root().join("../shared/data"),
    };
    if dir.join("README.md").is_file() {
        return Some(dir);
    }
    let why = format!("capture corpus not found at {} (set TRAWL_CORPUS)", dir.display());
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}");
    }
    eprintln!("SKIP: {why}");
    None
}

pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every capture under `dir` (sorted), as paths.
pub(crate) fn captures(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("pcap" | "pcapng")) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub(crate) fn trawl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trawl"))
}

/// Runs `trawl` with `args` and returns its output.
pub(crate) fn run_trawl(args: &[&str]) -> Output {
    trawl().args(args).output().expect("cannot run trawl")
}

/// Parses JSON lines.
pub(crate) fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// `trawl replay CAPTURE --emit records`, parsed; the replay must succeed.
///
/// Redaction is off: these records are compared with what tshark, zeek and
/// the servers' logs saw, query values and all (`e2e_redaction` checks
/// what redaction hides).
pub(crate) fn records(capture: &Path) -> Vec<serde_json::Value> {
    let out = run_trawl(&["replay", capture.to_str().unwrap(), "--emit", "records", "--redact", "off"]);
    assert!(out.status.success(), "{}: {}", capture.display(), String::from_utf8_lossy(&out.stderr));
    json_lines(&out.stdout)
}

/// `CAPTURE.expected/NAME` beside a corpus capture, if it exists.
pub(crate) fn expected(capture: &Path, name: &str) -> Option<PathBuf> {
    let file = capture.with_file_name(format!("{}.expected/{name}", capture.file_name()?.to_string_lossy()));
    file.is_file().then_some(file)
}

/// Rows of a tshark TSV export, by column name.
pub(crate) fn rows(tsv: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(tsv).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split('\t').map(str::to_string).collect();
    lines.map(|l| header.iter().cloned().zip(l.split('\t').map(str::to_string)).collect()).collect()
}

/// A tshark field with several occurrences (`-E aggregator=|`).
pub(crate) fn split(v: &str) -> Vec<String> {
    if v.is_empty() { Vec::new() } else { v.split('|').map(str::to_string).collect() }
}

/// A child process that is killed when the test lets go of it.
pub(crate) struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts tcpdump on loopback and returns once it is listening. Immediate
/// mode: without it packets sit in the kernel ring until a block fills, and
/// SIGINT can end tcpdump before it writes them.
pub(crate) fn tcpdump(file: &Path, filter: &str) -> Child {
    tcpdump_on("lo", &[], file, filter)
}

/// Starts tcpdump on `iface` with extra options (such as `-Q in`) and
/// returns once it is listening. Its kernel buffer is 128 MiB: on a busy
/// 2-core machine running tests side by side, a 16 MiB buffer of
/// loopback's 64 KiB packets overflowed and the capture lost packets (the
/// test then blamed trawl for requests it never saw).
pub(crate) fn tcpdump_on(iface: &str, extra: &[&str], file: &Path, filter: &str) -> Child {
    let mut child = Command::new("tcpdump")
        .args(["-i", iface, "--immediate-mode", "-B", "131072", "-U", "-n", "-s", "0"])
        .args(extra)
        .arg("-w")
        .arg(file)
        .arg(filter)
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap_or_default().contains("listening on") {
            break;
        }
    }
    // Keep its closing counts ("N packets captured") for a failing test.
    let log = file.with_extension("err");
    std::thread::spawn(move || {
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let _ = std::fs::write(log, rest.join("\n"));
    });
    child
}

/// Waits until a capture file has stopped growing for half a second (at
/// most 15 s). tcpdump writes each packet as it reads it (`-U`), but on
/// SIGINT it leaves what is still in its kernel ring unread: on CI's busy
/// two cores, a test's last conversation (written just before the stop)
/// was lost entirely and the test blamed trawl for requests it never saw.
pub(crate) fn wait_until_written(file: &Path) {
    let size = || std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let (mut last, mut stable) = (size(), 0);
    while stable < 5 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = size();
        stable = if now == last { stable + 1 } else { 0 };
        last = now;
    }
}

/// Stops tcpdump with SIGINT so it flushes and closes its file.
pub(crate) fn stop_tcpdump(mut child: Child) {
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let _ = child.wait();
}

/// True when running as root (live capture needs it). Otherwise the test
/// skips, except under `CI=true` (CI runs as root), where it fails.
pub(crate) fn root_or_skip() -> bool {
    let root = trawl_host::lab::is_root();
    if !root {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "live capture tests need root");
        eprintln!("skipped: live capture needs root");
    }
    root
}

/// Whether a command is on PATH.
pub(crate) fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

/// True when every tool is there. Otherwise the test skips, except under
/// `CI=true`, where a missing tool fails it.
pub(crate) fn tools_or_skip(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("missing {missing:?} (scripts/test.sh installs them)");
    assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{why}");
    eprintln!("SKIP: {why}");
    false
}

/// Polls until `ready`, failing the test after 120 s.
pub(crate) fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !ready() {
        // Generous: the offline tests share two cores, and a debug build
        // compiles its wasm plugins slowly while the corpus tests run (a
        // hub once took over 60 s to serve in a CI-faithful run).
        assert!(start.elapsed() < std::time::Duration::from_secs(120), "{what} did not come up");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The Python of the end-to-end tests' virtualenv (`TRAWL_PY`, default
/// /var/tmp/trawl-py/bin/python), if it can import `modules`.
pub(crate) fn python_with(modules: &str) -> Option<PathBuf> {
    let py = std::env::var_os("TRAWL_PY").map_or_else(|| PathBuf::from("/var/tmp/trawl-py/bin/python"), PathBuf::from);
    let ok = Command::new(&py).args(["-c", &format!("import {modules}")]).output().is_ok_and(|o| o.status.success());
    ok.then_some(py)
}

/// The tests' Python with `module`, or `None` and the test skips (under
/// `CI=true` a missing module fails it instead).
pub(crate) fn python_or_skip(module: &str) -> Option<PathBuf> {
    let py = python_with(module);
    if py.is_none() {
        let why = format!("{module} missing (scripts/test.sh installs it)");
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{why}");
        eprintln!("SKIP: {why}");
    }
    py
}

/// A fresh scratch directory for one end-to-end test.
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trawl-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A loopback port that nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A tcpdump that is stopped (and flushed) when dropped, even when the
/// test panics first.
pub(crate) struct Capture(Option<Child>, PathBuf);

impl Capture {
    pub(crate) fn start(file: &Path, filter: &str) -> Self {
        Capture(Some(tcpdump(file, filter)), file.to_path_buf())
    }

    /// A capture on `iface` with extra tcpdump options.
    pub(crate) fn on(iface: &str, extra: &[&str], file: &Path, filter: &str) -> Self {
        Capture(Some(tcpdump_on(iface, extra, file, filter)), file.to_path_buf())
    }

    /// Stops the capture once tcpdump has written what the kernel gave
    /// it; the file is complete afterwards.
    pub(crate) fn stop(mut self) {
        if let Some(c) = self.0.take() {
            wait_until_written(&self.1);
            stop_tcpdump(c);
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            stop_tcpdump(c);
        }
    }
}

/// A server stopped with SIGTERM when dropped, so it can take its worker
/// processes down with it (SIGKILL would orphan nginx's workers).
#[derive(Debug)]
pub(crate) struct Terminated(pub Child);

impl Drop for Terminated {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// `trawl serve` on the demo capture with its inventory, listening on a
/// free loopback port once this returns; `args` add replay options
/// (`--speed`, `--loop`). Returns the server and its port.
pub(crate) fn serve_demo(args: &[&str]) -> (Terminated, u16) {
    let port = free_port();
    let demo = project_root().join("examples/demo");
    let server = Terminated(
        trawl()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .arg("--replay")
            .arg(demo.join("demo.pcap"))
            .arg("--inventory")
            .arg(demo.join("inventory.json"))
            .stderr(Stdio::null())
            .spawn()
            .expect("trawl serve"),
    );
    wait_for("trawl serve", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    (server, port)
}

/// Waits until a serving trawl's replay is over: its records stop
/// changing. `get` reads its API (with whatever token it needs).
pub(crate) fn wait_for_replay_end(get: impl Fn(&str) -> serde_json::Value) {
    let mut last = -1;
    wait_for("the replay's end", || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        let now = get("/api/health")["counters"]["records"].as_i64().unwrap_or(0);
        std::mem::replace(&mut last, now) == now && now > 0
    });
}

/// `GET http://127.0.0.1:PORT/PATH` as JSON (`null` when it fails).
pub(crate) fn get_json(port: u16, path: &str) -> serde_json::Value {
    let out = Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{port}{path}")]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// The cumulative numbers of a map's edges by edge id (rates left out), for
/// comparing two servers' maps of the same traffic.
pub(crate) fn map_totals(map: &serde_json::Value) -> std::collections::BTreeMap<String, serde_json::Value> {
    map["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let keep = ["flows", "to_server", "to_client", "requests", "errors", "request_bytes", "response_bytes"];
            let v: serde_json::Map<String, serde_json::Value> =
                keep.iter().filter_map(|k| Some((k.to_string(), e.get(*k)?.clone()))).collect();
            Some((e["id"].as_str()?.to_string(), serde_json::Value::Object(v)))
        })
        .collect()
}

/// Starts `trawl serve --live` on the namespaces starting with
/// `netns_prefix` and returns once it listens.
pub(crate) fn serve_live(netns_prefix: &str, inventory: &Path, extra: &[&str]) -> (Terminated, u16) {
    let port = free_port();
    let server = Terminated(
        trawl()
            .args(["serve", "--live", "--netns-prefix", netns_prefix, "--listen", &format!("127.0.0.1:{port}")])
            .arg("--inventory")
            .arg(inventory)
            .args(extra)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("trawl serve --live"),
    );
    wait_for("trawl serve --live", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    (server, port)
}

/// An nginx configuration that keeps everything (pid, logs, temp files) in
/// `dir`, runs in the foreground, and adds `http` lines and one `server`.
/// nginx with `DIR/nginx.conf` (see [`nginx_conf`]), prefix `dir`;
/// stopped with SIGTERM when dropped.
pub(crate) fn start_nginx(dir: &Path) -> Terminated {
    Terminated(
        Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx"),
    )
}

/// redis-server on loopback `port`, nothing saved, files in `dir`, with
/// `extra` arguments (`--requirepass`, say).
pub(crate) fn start_redis(dir: &Path, port: u16, extra: &[&str]) -> Killed {
    Killed(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server"),
    )
}

pub(crate) fn nginx_conf(dir: &Path, http: &str, server: &str) -> String {
    let d = dir.display();
    format!(
        r#"worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {d}/tmp-body;
    proxy_temp_path {d}/tmp-proxy;
    fastcgi_temp_path {d}/tmp-fastcgi;
    uwsgi_temp_path {d}/tmp-uwsgi;
    scgi_temp_path {d}/tmp-scgi;
    {http}
    server {{
        {server}
    }}
}}
"#
    )
}

/// A command's calls in redis's `INFO commandstats`.
pub(crate) fn redis_calls(stats: &str, cmd: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

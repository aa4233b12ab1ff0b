//! Cluster scale, end to end over loopback (a CLI bench, not criterion:
//! it measures processes, not a function).
//!
//! 1. A real `trawl hub` process fed by 200 simulated workers (threads
//!    speaking the real protocol through `Link` and `Outbox`): 10,000
//!    workloads and 100,000 open flows (distinct client→server edges),
//!    every flow growing every second, and one WebSocket client subscribed
//!    to the L4 pod map. Reported: the hub's CPU per second and RSS at
//!    steady state, the snapshot time and the gap between deltas the
//!    client sees (the map tick, 200 ms when it keeps up).
//! 2. A worker's memory at 100,000 live flows: the live path's userspace
//!    state (the counter table over eBPF readings, and the outbox with its
//!    closed-flow conversations), measured as this process's RSS growth,
//!    added to the RSS of a real idle `trawl worker` process (plugins
//!    loaded).
//!
//! Run: `cargo bench -p trawl-host --bench cluster_load` (`-- --quick`
//! for a short run; `-- --tls` runs the hub load twice, plain TCP and then
//! TLS, to compare what TLS costs the hub).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use futures_util::{SinkExt, StreamExt};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use trawl_core::counters::{CounterTable, DirectionalReading};
use trawl_core::flow::{DirCounters, Endpoint, FlowDelta, Orientation};
use trawl_core::{L4Proto, ServicePorts, Timestamp};
use trawl_host::cluster::outbox::{Outbox, OutboxLimits};
use trawl_host::cluster::proto::WorkerStatus;
use trawl_host::cluster::tls;
use trawl_host::cluster::worker::{HubTls, Link, WorkerHealth, WorkerOptions};

const WORKLOADS: u32 = 10_000;
const WORKERS: u32 = 200;
const FLOWS_PER_WORKER: u32 = 500;

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a64_0000 + i))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Flow `j` of worker `w`: its client is one of the worker's 50 local
/// workloads, its server one of the cluster's, so 100,000 distinct edges.
fn flow(w: u32, j: u32, round: u64) -> FlowDelta {
    let client = (w * 50 + j % 50) % WORKLOADS;
    let server = (client + 1 + (j / 50) * 997 + w * 13) % WORKLOADS;
    let ts = 1_700_000_000_000_000_000 + round * 1_000_000_000;
    FlowDelta {
        l4: L4Proto::Tcp,
        client: Endpoint { ip: ip(client), port: 30_000 + (j % 20_000) as u16 },
        server: Endpoint { ip: ip(server), port: 8080 },
        to_server: DirCounters { packets: 3, bytes: 900, ip_bytes: 858 },
        to_client: DirCounters { packets: 2, bytes: 1400, ip_bytes: 1372 },
        first_ts: Timestamp(1_700_000_000_000_000_000),
        last_ts: Timestamp(ts),
        orientation: Orientation::Syn,
        closed: false,
        health: Default::default(),
    }
}

fn proc_field(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn worker_options(hub: &str, w: u32) -> WorkerOptions {
    WorkerOptions {
        hub: hub.to_string(),
        token: "bench".into(),
        token_file: None,
        tls: None,
        node: format!("node-{w}"),
        worker_id: format!("w{w}"),
        replay: trawl_host::replay::ReplayOptions::new(""),
        speed: None,
        part: (0, 1),
        limits: OutboxLimits::default(),
        stay: true,
        health_listen: None,
    }
}

/// One WebSocket client on the L4 pod map: snapshot time, then the gaps
/// between deltas and their bytes.
fn watch_map(ui: u16, seconds: u64) -> (Duration, Vec<Duration>, usize) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{ui}/api/ws")).await.unwrap();
        let started = Instant::now();
        let sub = r#"{"type":"subscribe","map":"l4","group_by":"pod"}"#;
        ws.send(tokio_tungstenite::tungstenite::Message::text(sub)).await.unwrap();
        let mut snapshot = None;
        let (mut gaps, mut bytes, mut last) = (Vec::new(), 0usize, Instant::now());
        while started.elapsed() < Duration::from_secs(seconds) {
            let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await else { break };
            let text = msg.into_text().unwrap_or_default();
            if snapshot.is_none() {
                snapshot = Some(started.elapsed());
            } else {
                gaps.push(last.elapsed());
                bytes += text.len();
            }
            last = Instant::now();
        }
        (snapshot.unwrap_or_default(), gaps, bytes)
    })
}

/// A CA and a hub certificate for `localhost` in a scratch directory:
/// (directory, the workers' TLS settings).
fn tls_files() -> (std::path::PathBuf, HubTls) {
    let dir = std::env::temp_dir().join(format!("trawl-bench-tls-{}", std::process::id()));
    let files = tls::test_certs::write(&dir, &["localhost"]);
    let hub_tls = HubTls {
        config: Arc::new(tls::client_files(&files.ca).unwrap()),
        name: tls::server_name("localhost").unwrap(),
    };
    (dir, hub_tls)
}

/// A real `trawl hub` on free loopback ports, once it serves: the process,
/// its worker port and its UI port. With `tls`, workers connect over TLS
/// with the certificate in that directory.
fn spawn_hub(tls: Option<&std::path::Path>) -> (Killed, u16, u16) {
    let (workers_port, ui) = (free_port(), free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trawl"));
    cmd.args(["hub", "--token", "bench", "--workers", &format!("127.0.0.1:{workers_port}")])
        .args(["--listen", &format!("127.0.0.1:{ui}")]);
    if let Some(dir) = tls {
        cmd.arg("--tls-cert").arg(dir.join("cert.pem")).arg("--tls-key").arg(dir.join("key.pem"));
    }
    let hub = Killed(cmd.stderr(Stdio::null()).spawn().unwrap());
    while std::net::TcpStream::connect(("127.0.0.1", ui)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    (hub, workers_port, ui)
}

fn hub_under_load(quick: bool, tls: Option<(&std::path::Path, &HubTls)>) {
    let (hub, workers_port, ui) = spawn_hub(tls.map(|(dir, _)| dir));
    let pid = hub.0.id();
    let hub_addr = format!("127.0.0.1:{workers_port}");
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (hub_addr, stop) = (hub_addr.clone(), stop.clone());
            let mut opts = worker_options(&hub_addr, w);
            opts.tls = tls.map(|(_, t)| t.clone());
            std::thread::spawn(move || {
                let mut link = Link::new(opts, None, Arc::new(WorkerHealth::default()));
                let mut out = std::sync::Mutex::new(Outbox::new(OutboxLimits::default()));
                let mut round = 0u64;
                // Spread the workers over the second, as real ones are.
                std::thread::sleep(Duration::from_millis(u64::from(w) * 5));
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    for j in 0..FLOWS_PER_WORKER {
                        out.get_mut().unwrap().add_delta(&flow(w, j, round));
                    }
                    link.flush(&out, WorkerStatus::default()).unwrap();
                    round += 1;
                    std::thread::sleep(Duration::from_secs(1).saturating_sub(began.elapsed()));
                }
            })
        })
        .collect();
    let warmup = if quick { 8 } else { 20 };
    std::thread::sleep(Duration::from_secs(warmup));
    let measure = if quick { 10 } else { 30 };
    let (cpu0, t0) = (cpu_seconds(pid), Instant::now());
    let (snapshot, gaps, bytes) = watch_map(ui, measure);
    let cpu = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64();
    let (rss, hwm) = (proc_field(pid, "VmRSS:"), proc_field(pid, "VmHWM:"));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let mut g: Vec<f64> = gaps.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    g.sort_by(f64::total_cmp);
    let pct = |p: f64| g.get(((g.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(f64::NAN);
    println!(
        "hub, {WORKERS} workers x {FLOWS_PER_WORKER} flows ({} flows, {WORKLOADS} workloads), every flow growing each second, workers over {}:",
        WORKERS * FLOWS_PER_WORKER,
        if tls.is_some() { "TLS" } else { "plain TCP" }
    );
    println!("  hub CPU: {:.2} cores (of the measured {measure} s)", cpu);
    println!("  hub RSS: {:.0} MiB now, {:.0} MiB peak", rss as f64 / 1024.0, hwm as f64 / 1024.0);
    println!("  WebSocket L4 pod map: snapshot in {:.0} ms", snapshot.as_secs_f64() * 1000.0);
    println!(
        "  deltas: {} in {measure} s, gap p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {:.0} KB/s",
        g.len(),
        pct(0.5),
        pct(0.99),
        g.last().copied().unwrap_or(f64::NAN),
        bytes as f64 / 1000.0 / measure as f64
    );
}

fn worker_memory() {
    // A real worker process, idle after a replay, with its plugins loaded.
    let (_hub, workers_port, _) = spawn_hub(None);
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo/demo.pcap");
    let worker = Killed(
        Command::new(env!("CARGO_BIN_EXE_trawl"))
            .args([
                "worker",
                "--token",
                "bench",
                "--node",
                "n",
                "--stay",
                "--hub",
                &format!("127.0.0.1:{workers_port}"),
            ])
            .arg("--replay")
            .arg(demo)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(5));
    let idle = proc_field(worker.0.id(), "VmRSS:");

    // The live path's state at 100,000 flows: eBPF readings (both
    // directions) through the counter table into the outbox.
    let me = std::process::id();
    let before = proc_field(me, "VmRSS:");
    let mut table = CounterTable::new(ServicePorts::default());
    let mut out = Outbox::new(OutboxLimits::default());
    let reading = |f: u32| {
        let d = flow(f / FLOWS_PER_WORKER, f % FLOWS_PER_WORKER, 1);
        let r = |src: Endpoint, dst: Endpoint, c: DirCounters| DirectionalReading {
            l4: L4Proto::Tcp,
            src,
            dst,
            counters: c,
            first_ts: d.first_ts,
            last_ts: d.last_ts,
            syn: false,
            syn_ack: false,
            rst: false,
            health: Default::default(),
            fin: false,
        };
        [r(d.client, d.server, d.to_server), r(d.server, d.client, d.to_client)]
    };
    // Read in slices, as the poll reads the kernel map, so the readings
    // themselves are not what is measured.
    for chunk in (0..100_000u32).collect::<Vec<_>>().chunks(5_000) {
        for d in table.update(chunk.iter().flat_map(|&f| reading(f))) {
            out.add_delta(&d);
        }
    }
    let after = proc_field(me, "VmRSS:");
    println!("worker at 100,000 live flows:");
    println!("  idle trawl worker process (plugins loaded): {:.0} MiB", idle as f64 / 1024.0);
    println!(
        "  counter table + outbox for {} flows: {:.0} MiB",
        out.totals.len(),
        after.saturating_sub(before) as f64 / 1024.0
    );
    println!("  together: {:.0} MiB", (idle + after.saturating_sub(before)) as f64 / 1024.0);
    std::hint::black_box((table, out));
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `cargo test --all-targets` runs bench binaries without `--bench`:
    // this one measures minutes of load, so it runs only under cargo bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("cluster_load: run with `cargo bench -p trawl-host --bench cluster_load`");
        return;
    }
    if std::env::args().any(|a| a == "--tls") {
        // Side by side in one run: the same load over plain TCP, then TLS.
        hub_under_load(quick, None);
        let (dir, hub_tls) = tls_files();
        hub_under_load(quick, Some((&dir, &hub_tls)));
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    worker_memory();
    hub_under_load(quick, None);
}

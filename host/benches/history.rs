//! History at cluster scale: 10,000 active edges (8,000 L4, 2,000 L7 with
//! latencies) for a simulated day, one sample per edge per 10 s interval,
//! into a store under the default 1 GiB budget; then time-travel queries.
//!
//! Printed: the ingest time, the store's bytes (values, pages in use, the
//! file) and bytes per active edge per minute, the process's peak RSS, and
//! the time of a map over the last hour (the minute tier) and over the
//! last ten minutes (the 10 s tier), median of ten.
//!
//! `cargo bench -p trawl-host --bench history` (`HISTORY_HOURS=N` for a
//! shorter day).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};
use trawl_core::flow::{DirCounters, Endpoint, FlowDelta, Orientation};
use trawl_core::history::{MapKind, WindowMap};
use trawl_core::{GroupBy, L4Proto, Timestamp, Workload, WorkloadKind};
use trawl_host::service::history::{History, HistoryConfig};

const L4_EDGES: usize = 8_000;
const L7_EDGES: usize = 2_000;
/// On a ten-minute boundary.
const T0: u64 = 1_799_999_400;

fn pod(i: usize) -> Workload {
    let mut w = Workload::external(std::net::Ipv4Addr::LOCALHOST.into());
    w.kind = WorkloadKind::Pod;
    w.namespace = format!("team-{}", i % 40);
    w.name = format!("svc-{}-7d9f8c-{:05}", i % 900, i);
    w.node = Some(format!("node-{:02}", i % 50));
    w
}

fn delta(at: u64, i: usize) -> FlowDelta {
    let ep = Endpoint { ip: std::net::Ipv4Addr::LOCALHOST.into(), port: 8080 };
    let jitter = (at / 10 + i as u64) % 7;
    FlowDelta {
        l4: L4Proto::Tcp,
        client: ep,
        server: ep,
        to_server: DirCounters { packets: 40 + jitter, bytes: 9_000 + 100 * jitter, ip_bytes: 8_400 },
        to_client: DirCounters { packets: 35 + jitter, bytes: 52_000 + 900 * jitter, ip_bytes: 50_000 },
        first_ts: Timestamp::from_secs_nanos(at, 0),
        last_ts: Timestamp::from_secs_nanos(at, 0),
        orientation: Orientation::Syn,
        closed: jitter == 0,
        health: Default::default(),
    }
}

fn record(at: u64, i: usize, n: u64) -> trawl_core::record::L7Record {
    let h = trawl_host::plugins::HostRecord::tcp(
        Endpoint { ip: std::net::Ipv4Addr::LOCALHOST.into(), port: 40_000 },
        Endpoint { ip: std::net::Ipv4Addr::LOCALHOST.into(), port: 8080 },
        "http",
        "1",
        trawl_sdk::abi::Record {
            summary: "/api".into(),
            request_ts: Some(at * 1_000_000_000),
            // A spread of latencies, as a real service has.
            response_ts: Some(at * 1_000_000_000 + 1_000 * (800 + (i as u64 * 37 + n * 911) % 40_000)),
            request_size: 300,
            response_size: 2_000,
            error: n.is_multiple_of(50),
            ..Default::default()
        },
    );
    let (r, _, _) = trawl_host::records::to_l7(h, &trawl_core::Identity::new());
    r
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // Run as a test (`cargo test --benches`, no `--bench`): a smoke run of
    // one simulated hour with a tenth of the edges.
    let bench = std::env::args().any(|a| a == "--bench");
    let hours: u64 =
        std::env::var("HISTORY_HOURS").ok().and_then(|h| h.parse().ok()).unwrap_or(if bench { 24 } else { 1 });
    let scale = if bench { 1 } else { 10 };
    let (l4_edges, l7_edges) = (L4_EDGES / scale, L7_EDGES / scale);
    let dir = std::env::temp_dir().join(format!("trawl-history-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = HistoryConfig { dir: Some(dir.clone()), ..Default::default() };
    let mut h = History::open(&config).unwrap();
    let (clients, servers): (Vec<Workload>, Vec<Workload>) =
        (0..l4_edges + l7_edges).map(|i| (pod(i), pod(i + 50_000))).unzip();
    let began = Instant::now();
    let end = T0 + hours * 3_600;
    let mut t = T0;
    while t < end {
        for i in 0..l4_edges {
            h.add_delta(&delta(t, i), &clients[i], &servers[i], 1);
        }
        for i in l4_edges..l4_edges + l7_edges {
            // Five requests per edge per interval.
            for n in 0..5 {
                let r = record(t, i, n);
                h.add_record(&r, &clients[i], &servers[i], trawl_core::vhost::record_host(&r).as_deref());
            }
        }
        t += 10;
        h.advance(t);
    }
    h.flush();
    assert!(h.sync(Duration::from_secs(600)));
    let ingest = began.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let s = h.stats();
    let edge_minutes = ((l4_edges + l7_edges) as u64 * hours * 60) as f64;
    println!(
        "history: {} edges for {hours} h, ingested and written in {:.1} s",
        l4_edges + l7_edges,
        ingest.as_secs_f64()
    );
    println!(
        "  stored {:.1} MiB of values, {:.1} MiB of pages, file {:.1} MiB (budget {:.0} MiB); {} intervals written, {} let go",
        s.stored_bytes as f64 / 1048576.0,
        s.allocated_bytes as f64 / 1048576.0,
        s.file_bytes as f64 / 1048576.0,
        s.budget_bytes as f64 / 1048576.0,
        s.intervals_written,
        s.intervals_evicted
    );
    println!(
        "  per active edge per minute: {:.1} B of values, {:.1} B of file",
        s.stored_bytes as f64 / edge_minutes,
        s.file_bytes as f64 / edge_minutes
    );
    println!(
        "  peak RSS {:.0} MiB, RSS now {:.0} MiB",
        rss_kib("VmHWM") as f64 / 1024.0,
        rss_kib("VmRSS") as f64 / 1024.0
    );
    // The budgets hold: the file within --history-bytes, and the whole
    // process (history's open intervals, the queue to the writer, redb's
    // cache, and this bench's own workload names) within half the hub's
    // 1 GiB memory limit.
    assert!(s.file_bytes <= s.budget_bytes, "the file outgrew its budget: {s:?}");
    assert!(rss_kib("VmHWM") <= 512 << 10, "peak RSS {} KiB", rss_kib("VmHWM"));
    assert_eq!((s.pending_dropped, s.refused_samples, s.write_errors), (0, 0, 0), "{s:?}");
    if bench {
        assert!(s.file_bytes as f64 / edge_minutes <= 64.0, "history costs more than 64 B per edge per minute");
    }
    for (name, from, kind) in [
        ("last hour, L4, by pod", end - 3_600, MapKind::L4),
        ("last hour, L7, by pod", end - 3_600, MapKind::L7),
        ("last 10 min, L4, by pod", end - 600, MapKind::L4),
        ("the whole day (10 min tier), L4", T0, MapKind::L4),
    ] {
        let mut times = Vec::new();
        let mut edges = 0;
        for _ in 0..10 {
            let began = Instant::now();
            let snapshot = h.snapshot();
            let mut map = WindowMap::new(kind, GroupBy::Pod);
            let covered = snapshot.window(from, end, end, |k, s| map.add(k, s)).unwrap();
            let v = map.to_json(covered.secs(), &[]);
            edges = v["edges"].as_array().map_or(0, Vec::len);
            std::hint::black_box(serde_json::to_vec(&v).unwrap());
            times.push(began.elapsed());
        }
        times.sort();
        println!("  query {name}: {edges} edges, median {:.0} ms", times[5].as_secs_f64() * 1e3);
    }
    drop(h);
    let _ = std::fs::remove_dir_all(&dir);
}

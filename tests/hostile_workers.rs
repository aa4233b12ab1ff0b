//! Hostile peers on a real `trawl hub`'s worker port: 200 connections that
//! announce a 16 MiB frame and stall, 64 that send 15 MiB of one and
//! stall, garbage, and a proven worker that never reads while the capture
//! filters change under it. Through all of them the hub's RSS stays under
//! 256 MiB, its API answers, and a real worker still connects and its
//! counts are exactly the single-process ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::io::Write;
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::cluster::{edge_numbers, replay_maps};
use support::{Terminated, free_port, get_json, project_root, wait_for};
use trawl_host::cluster::proto::{PROTOCOL_VERSION, ToHub, WorkerStatus, write_frame};

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    kib / 1024
}

#[test]
fn hostile_workers_leave_the_hub_whole() {
    let (workers, ui) = (free_port(), free_port());
    let hub = Terminated(
        support::trawl()
            .args(["hub", "--token", "s3cret", "--workers", &format!("127.0.0.1:{workers}")])
            .args(["--listen", &format!("127.0.0.1:{ui}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("trawl hub", || TcpStream::connect(("127.0.0.1", ui)).is_ok());
    let pid = hub.0.id();
    let addr = ("127.0.0.1", workers);
    let mut held = Vec::new();
    let mut peak = 0;

    // 200 connections announcing a 16 MiB frame, then nothing.
    for _ in 0..200 {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.write_all(&(16u32 << 20).to_be_bytes());
            held.push(s);
        }
    }
    // 64 connections sending 15 MiB of one frame, then nothing.
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..64 {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
            let _ = s.write_all(&(15u32 << 20).to_be_bytes());
            for _ in 0..15 {
                if s.write_all(&chunk).is_err() {
                    break;
                }
            }
            held.push(s);
        }
        peak = peak.max(rss_mib(pid));
    }
    // Garbage.
    for i in 0..20u8 {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.write_all(&[i; 4096]);
            held.push(s);
        }
    }
    // A proven worker that never reads, while the filters change 300 times.
    let mut deaf = TcpStream::connect(addr).unwrap();
    write_frame(
        &mut deaf,
        &ToHub::Hello {
            version: PROTOCOL_VERSION,
            node: "deaf".into(),
            worker_id: "0".into(),
            boot_id: "b".into(),
            epoch: "e".into(),
            token: "s3cret".into(),
        },
    )
    .unwrap();
    for i in 0..300 {
        let filter = format!(r#"{{"pod_regex":"^pod-{i}-{}$"}}"#, "x".repeat(2000));
        let status = std::process::Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "-X", "PUT", "-H", "content-type: application/json", "-d", &filter])
            .arg(format!("http://127.0.0.1:{ui}/api/capture-filters"))
            .status()
            .unwrap();
        assert!(status.success(), "the API stops answering at change {i}");
        let _ = deaf.set_write_timeout(Some(Duration::from_millis(100)));
        let _ = write_frame(&mut deaf, &ToHub::Status(WorkerStatus::default()));
    }
    peak = peak.max(rss_mib(pid));
    assert!(peak < 256, "the hub's RSS reached {peak} MiB");

    // A real worker: its counts are exact.
    let capture = project_root().join("examples/demo/demo.pcap");
    let (want_l4, want_l7) = replay_maps(&capture);
    // The filters the deaf worker was sent: back to all, so the real
    // worker dissects what the single process did.
    let status = std::process::Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "-X", "PUT", "-H", "content-type: application/json", "-d", "{}"])
        .arg(format!("http://127.0.0.1:{ui}/api/capture-filters"))
        .status()
        .unwrap();
    assert!(status.success());
    let out = support::trawl()
        .args(["worker", "--hub", &format!("127.0.0.1:{workers}"), "--token", "s3cret", "--node", "real"])
        .args(["--speed", "max", "--replay"])
        .arg(&capture)
        .output()
        .unwrap();
    assert!(out.status.success(), "a real worker: {}", String::from_utf8_lossy(&out.stderr));
    let start = Instant::now();
    let maps = || {
        (
            edge_numbers(&get_json(ui, "/api/map?map=l4&group_by=pod")),
            edge_numbers(&get_json(ui, "/api/map?map=l7&group_by=pod")),
        )
    };
    let (mut l4, mut l7) = maps();
    while (l4 != want_l4 || l7 != want_l7) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
        (l4, l7) = maps();
    }
    assert_eq!(l4, want_l4, "L4 beside hostile peers");
    assert_eq!(l7, want_l7, "L7 beside hostile peers");
    // The hub's metrics carry the workers' packets, per node and summed.
    let metrics = String::from_utf8(
        std::process::Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{ui}/metrics")])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let value = |prefix: &str| -> u64 {
        metrics.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0)
    };
    assert!(value("trawl_worker_packets_total{node=\"real\"") > 0, "{metrics}");
    assert!(value("trawl_packets_received_total ") > 0, "{metrics}");
    peak = peak.max(rss_mib(pid));
    println!("hub RSS peak {peak} MiB beside {} hostile connections", held.len() + 1);
    assert!(peak < 256, "the hub's RSS reached {peak} MiB");
    drop(held);
}

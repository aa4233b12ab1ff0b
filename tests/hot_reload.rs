//! Hot reload while a replay runs: the HTTP plugin is swapped from v1 to v2
//! on disk part-way through a paced (real-time) replay. New connections
//! must get v2 records within a second, and a connection that was already
//! open must finish on v1.
//!
//! The two plugin builds are the real `plugins/http` crate compiled for
//! wasm32 with two version stamps. The capture is stitched from
//! `made/http1.pcap`: its keep-alive connection (11 requests) stretched
//! over three seconds, plus a short connection every 100 ms.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

/// The plugin toolkit's end-to-end test: a nested cargo build, like hot
/// reload's, so it lives in this binary.
mod plugin_toolkit;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Builds `plugins/http` for wasm32 with `TRAWL_PLUGIN_VERSION=version`.
fn build_http(version: &str) -> Vec<u8> {
    let root = support::project_root();
    let target = std::env::temp_dir().join("trawl-hot-reload-target");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args(["build", "--locked", "-q", "-p", "trawl-plugin-http", "--target", "wasm32-unknown-unknown"])
        .args(["--profile", "plugin", "--target-dir"])
        .arg(&target)
        .env("TRAWL_PLUGIN_VERSION", version)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("cannot run cargo");
    assert!(status.success(), "building the http plugin {version} failed");
    std::fs::read(target.join("wasm32-unknown-unknown/plugin/trawl_plugin_http.wasm")).unwrap()
}

struct Frame {
    ts_us: u64,
    data: Vec<u8>,
}

fn read_pcap(path: &Path) -> Vec<Frame> {
    let d = std::fs::read(path).unwrap();
    assert_eq!(&d[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
    let mut at = 24;
    let mut out = Vec::new();
    while at + 16 <= d.len() {
        let u = |o: usize| u32::from_le_bytes(d[at + o..at + o + 4].try_into().unwrap());
        let (sec, usec, incl) = (u(0), u(4), u(8) as usize);
        out.push(Frame {
            ts_us: u64::from(sec) * 1_000_000 + u64::from(usec),
            data: d[at + 16..at + 16 + incl].to_vec(),
        });
        at += 16 + incl;
    }
    out
}

fn write_pcap(path: &Path, frames: &[Frame]) {
    let mut out = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0];
    for f in frames {
        out.extend_from_slice(&((f.ts_us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((f.ts_us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&f.data);
    }
    std::fs::write(path, out).unwrap();
}

/// TCP ports of an Ethernet/IPv4 frame, and where they sit.
fn ports(f: &[u8]) -> (u16, u16, usize) {
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let at = 14 + ihl;
    (u16::from_be_bytes([f[at], f[at + 1]]), u16::from_be_bytes([f[at + 2], f[at + 3]]), at)
}

fn set_client_port(f: &mut [u8], from: u16, to: u16) {
    let (s, d, at) = ports(f);
    if s == from {
        f[at..at + 2].copy_from_slice(&to.to_be_bytes());
    }
    if d == from {
        f[at + 2..at + 4].copy_from_slice(&to.to_be_bytes());
    }
}

const LONG_CONN: u16 = 58904;
const SHORT_CONN: u16 = 58928;

fn stitched_capture(path: &Path, corpus: &Path) {
    let frames = read_pcap(&corpus.join("made/http1.pcap"));
    let of = |port: u16| -> Vec<&Frame> {
        frames.iter().filter(|f| ports(&f.data).0 == port || ports(&f.data).1 == port).collect()
    };
    let base = frames[0].ts_us;
    let mut out = Vec::new();
    let long = of(LONG_CONN);
    for (i, f) in long.iter().enumerate() {
        // Stretched from 0.3 s to 3.3 s.
        out.push(Frame { ts_us: base + 300_000 + i as u64 * 3_000_000 / long.len() as u64, data: f.data.clone() });
    }
    let short = of(SHORT_CONN);
    let t0 = short[0].ts_us;
    for k in 0..40u64 {
        for f in &short {
            let mut data = f.data.clone();
            set_client_port(&mut data, SHORT_CONN, 20_000 + k as u16);
            out.push(Frame { ts_us: base + 100_000 * k + (f.ts_us - t0), data });
        }
    }
    out.sort_by_key(|f| f.ts_us);
    write_pcap(path, &out);
}

#[test]
fn swapping_a_plugin_mid_replay() {
    let Some(corpus) = support::corpus() else { return };
    let v1 = build_http("1.0.0-hot");
    let v2 = build_http("2.0.0-hot");
    assert_ne!(v1, v2);
    let work = std::env::temp_dir().join(format!("trawl-hot-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let (plugins, warm) = (work.join("plugins"), work.join("warm"));
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::create_dir_all(&warm).unwrap();
    std::fs::write(plugins.join("http.wasm"), &v1).unwrap();
    // Compile v2 once so the reload hits the module cache: a debug build of
    // wasmtime compiles far slower than the release binary users run.
    std::fs::write(warm.join("http.wasm"), &v2).unwrap();
    assert!(support::run_trawl(&["plugins", warm.to_str().unwrap()]).status.success());
    let capture = work.join("long.pcap");
    stitched_capture(&capture, &corpus);

    let mut child = support::trawl()
        .args(["replay", capture.to_str().unwrap(), "--emit", "records", "--pace", "1", "--watch", "--plugins"])
        .arg(&plugins)
        .env("TRAWL_LOG", "trawl_host=info,trawl_runtime=info,trawl_pipeline=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<(Instant, bool, String)>();
    let (out_tx, err_tx) = (tx.clone(), tx);
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = out_tx.send((Instant::now(), true, line));
        }
    });
    let t_err = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send((Instant::now(), false, line));
        }
    });

    // Swap 1.2 s after the first record shows up (the replay is running).
    let mut lines = Vec::new();
    let first = loop {
        let l = rx.recv_timeout(Duration::from_secs(60)).expect("no record within 60 s");
        let is_record = l.1;
        let at = l.0;
        lines.push(l);
        if is_record {
            break at;
        }
    };
    std::thread::sleep(Duration::from_millis(1200).saturating_sub(first.elapsed()));
    let tmp = plugins.join("http.wasm.tmp");
    std::fs::write(&tmp, &v2).unwrap();
    std::fs::rename(&tmp, plugins.join("http.wasm")).unwrap();
    let swapped = Instant::now();

    let status = child.wait().unwrap();
    t_out.join().unwrap();
    t_err.join().unwrap();
    lines.extend(rx.try_iter());
    assert!(status.success(), "trawl failed: {:?}", lines.iter().filter(|l| !l.1).map(|l| &l.2).collect::<Vec<_>>());

    let reload = lines
        .iter()
        .find(|(_, is_record, l)| !is_record && l.contains("hot reload") && l.contains("2.0.0-hot"))
        .unwrap_or_else(|| panic!("no reload logged: {:?}", lines.iter().filter(|l| !l.1).collect::<Vec<_>>()));
    let latency = reload.0.saturating_duration_since(swapped);
    assert!(latency <= Duration::from_secs(1), "reload took {latency:?}");
    let capture_ts: f64 =
        reload.2.split("capture_ts=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();

    let records: Vec<Value> = lines.iter().filter(|l| l.1).map(|l| serde_json::from_str(&l.2).unwrap()).collect();
    let version = |r: &Value| r["plugin"]["version"].as_str().unwrap().to_string();
    let long: Vec<&Value> = records.iter().filter(|r| r["src"]["port"] == LONG_CONN).collect();
    assert_eq!(long.len(), 11, "the long connection's requests");
    assert!(long.iter().all(|r| version(r) == "1.0.0-hot"), "the open connection must finish on v1");
    assert!(
        long.iter().any(|r| r["request_ts"].as_f64().unwrap() > capture_ts),
        "the long connection should still be sending after the swap"
    );
    let mut after = 0;
    for r in records.iter().filter(|r| r["src"]["port"] != LONG_CONN) {
        let ts = r["request_ts"].as_f64().unwrap();
        if ts > capture_ts + 0.05 {
            assert_eq!(version(r), "2.0.0-hot", "new connection at {ts} (swap at {capture_ts})");
            after += 1;
        } else if ts < capture_ts - 0.05 {
            assert_eq!(version(r), "1.0.0-hot");
        }
    }
    assert!(after >= 10, "new connections after the swap: {after}");
    let _ = std::fs::remove_dir_all(&work);
}

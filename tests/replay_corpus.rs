//! Every capture of the corpus through `trawl replay --emit flows`, checked
//! against tshark's conversations (`X.expected/service_edges.tsv`): same
//! transport, client, server, and frames and bytes in each direction.
//!
//! Orientation: where trawl saw the handshake (`orientation: syn`) client and
//! server must match exactly. Where it inferred them (UDP, mid-connection
//! TCP) the pair may be reversed against tshark's own port guess, and the
//! counts are then compared reversed too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

#[derive(Debug, Clone)]
struct Conversation {
    transport: String,
    client: SocketAddr,
    server: SocketAddr,
    frames: [u64; 2],
    bytes: [u64; 2],
    first_ts: f64,
}

fn endpoint(s: &str) -> SocketAddr {
    let (ip, port) = s.rsplit_once(':').unwrap_or_else(|| panic!("bad endpoint {s}"));
    SocketAddr::new(ip.parse::<IpAddr>().unwrap_or_else(|_| panic!("bad ip {ip}")), port.parse().unwrap())
}

fn expected_conversations(tsv: &Path) -> Vec<Conversation> {
    let text = std::fs::read_to_string(tsv).unwrap();
    let mut out = Vec::new();
    let mut in_conv = false;
    for line in text.lines() {
        if line.starts_with("# conversations") {
            in_conv = true;
            continue;
        }
        if line.starts_with('#') {
            in_conv = false;
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if !in_conv || line.starts_with("transport\t") {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        out.push(Conversation {
            transport: f[0].to_string(),
            client: endpoint(f[2]),
            server: endpoint(f[3]),
            frames: [f[5].parse().unwrap(), f[7].parse().unwrap()],
            bytes: [f[6].parse().unwrap(), f[8].parse().unwrap()],
            first_ts: f[11].parse().unwrap(),
        });
    }
    out
}

fn flow_endpoint(v: &Value) -> SocketAddr {
    SocketAddr::new(v["ip"].as_str().unwrap().parse().unwrap(), v["port"].as_u64().unwrap() as u16)
}

fn trawl_conversations(capture: &Path) -> (Vec<(Conversation, bool)>, String) {
    let out = support::run_trawl(&["replay", capture.to_str().unwrap(), "--emit", "flows"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{}: trawl failed: {stderr}", capture.display());
    let flows = support::json_lines(&out.stdout)
        .into_iter()
        .map(|f| {
            let c = Conversation {
                transport: f["l4"].as_str().unwrap().to_string(),
                client: flow_endpoint(&f["client"]),
                server: flow_endpoint(&f["server"]),
                frames: [f["to_server"]["packets"].as_u64().unwrap(), f["to_client"]["packets"].as_u64().unwrap()],
                bytes: [f["to_server"]["bytes"].as_u64().unwrap(), f["to_client"]["bytes"].as_u64().unwrap()],
                first_ts: f["first_ts"].as_f64().unwrap(),
            };
            (c, f["orientation"] == "inferred")
        })
        .collect();
    (flows, stderr)
}

fn reversed(c: &Conversation) -> Conversation {
    Conversation {
        client: c.server,
        server: c.client,
        frames: [c.frames[1], c.frames[0]],
        bytes: [c.bytes[1], c.bytes[0]],
        ..c.clone()
    }
}

fn same(a: &Conversation, b: &Conversation) -> bool {
    a.transport == b.transport
        && a.client == b.client
        && a.server == b.server
        && a.frames == b.frames
        && a.bytes == b.bytes
        && (a.first_ts - b.first_ts).abs() < 1e-5
}

/// Returns a description of every difference between the two lists.
fn compare(expected: &[Conversation], got: &[(Conversation, bool)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut unused: Vec<bool> = vec![true; got.len()];
    for e in expected {
        let hit = got
            .iter()
            .enumerate()
            .position(|(i, (g, inferred))| unused[i] && (same(e, g) || (*inferred && same(e, &reversed(g)))));
        match hit {
            Some(i) => unused[i] = false,
            None => problems.push(format!("expected {e:?}, no trawl flow matches")),
        }
    }
    for (i, (g, _)) in got.iter().enumerate() {
        if unused[i] {
            problems.push(format!("trawl reported an extra flow {g:?}"));
        }
    }
    problems
}

#[test]
fn every_capture_matches_tshark_conversations() {
    let Some(corpus) = support::corpus() else {
        return;
    };
    let captures = support::captures(&corpus);
    assert!(!captures.is_empty(), "no captures under {}", corpus.display());
    let mut checked = 0;
    let mut conversations = 0;
    let mut failures = Vec::new();
    for capture in &captures {
        let Some(tsv) = support::expected(capture, "service_edges.tsv") else {
            failures.push(format!("{}: no expected service_edges.tsv", capture.display()));
            continue;
        };
        let expected = expected_conversations(&tsv);
        let (got, _stderr) = trawl_conversations(capture);
        conversations += expected.len();
        for p in compare(&expected, &got) {
            failures.push(format!("{}: {p}", capture.strip_prefix(&corpus).unwrap_or(capture).display()));
        }
        checked += 1;
    }
    println!("checked {checked} captures, {conversations} conversations");
    assert!(failures.is_empty(), "{} differences:\n{}", failures.len(), failures.join("\n"));
}

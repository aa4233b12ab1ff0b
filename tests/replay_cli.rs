//! `trawl replay` as a new user runs it: errors, truncated captures,
//! `--stats`, and `--emit map` with an inventory and each grouping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trawl-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = support::run_trawl(&["replay", "/nonexistent/capture.pcap"]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot open capture /nonexistent/capture.pcap"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn random_and_empty_files_are_rejected() {
    let random = scratch("random.bin");
    let mut seed = 0x9e37_79b9u32;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as u8
        })
        .collect();
    std::fs::write(&random, bytes).unwrap();
    let out = support::run_trawl(&["replay", random.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(err.contains("is not a pcap or pcapng capture"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let empty = scratch("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    let out = support::run_trawl(&["replay", empty.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("the file is empty"), "{}", stderr_of(&out));
}

/// Offsets just past each complete record of a little-endian µs pcap.
fn pcap_record_ends(data: &[u8]) -> Vec<usize> {
    assert_eq!(&data[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "test expects a little-endian pcap");
    let mut ends = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let incl = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        if at + 16 + incl > data.len() {
            break;
        }
        at += 16 + incl;
        ends.push(at);
    }
    ends
}

#[test]
fn truncated_capture_reports_what_was_read_and_fails() {
    let Some(corpus) = support::corpus() else {
        return;
    };
    let full = std::fs::read(corpus.join("made/http1.pcap")).unwrap();
    let ends = pcap_record_ends(&full);
    // Cut in the middle of record 60.
    let cut = ends[59] + 30;
    let truncated = scratch("http1-truncated.pcap");
    std::fs::write(&truncated, &full[..cut]).unwrap();
    let out = support::run_trawl(&["replay", truncated.to_str().unwrap(), "--stats"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("warning:") && err.contains("truncated"), "{err}");
    let flows = support::json_lines(&out.stdout);
    assert!(!flows.is_empty());
    let packets: u64 = flows
        .iter()
        .map(|f| f["to_server"]["packets"].as_u64().unwrap() + f["to_client"]["packets"].as_u64().unwrap())
        .sum();
    assert_eq!(packets, 60, "every complete record before the cut is counted");
    assert!(err.contains("trawl replay: 60 packets"), "{err}");
}

#[test]
fn stats_go_to_stderr() {
    let Some(corpus) = support::corpus() else {
        return;
    };
    let capture = corpus.join("made/dns.pcap");
    let out = support::run_trawl(&["replay", capture.to_str().unwrap(), "--stats"]);
    assert!(out.status.success());
    let err = stderr_of(&out);
    assert!(err.contains("84 packets") && err.contains("MB/s") && err.contains(" s = "), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("MB/s"));
}

#[test]
fn bad_inventory_is_a_clear_error() {
    let Some(corpus) = support::corpus() else {
        return;
    };
    let bad = scratch("bad-inventory.json");
    std::fs::write(&bad, b"{\"not\": \"a list\"}").unwrap();
    let capture = corpus.join("made/dns.pcap");
    let out = support::run_trawl(&[
        "replay",
        capture.to_str().unwrap(),
        "--emit",
        "map",
        "--inventory",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("bad inventory"), "{}", stderr_of(&out));
}

/// `(source, target) → (frames, bytes, flows)` summed over the edges section
/// of tshark's `service_edges.tsv`, after naming each IP with `name`.
fn expected_edges(tsv: &Path, name: impl Fn(&str) -> String) -> BTreeMap<(String, String), (u64, u64, u64)> {
    let text = std::fs::read_to_string(tsv).unwrap();
    let mut edges = BTreeMap::new();
    let mut in_edges = false;
    for line in text.lines() {
        if line.starts_with("# edges") {
            in_edges = true;
            continue;
        }
        if !in_edges || line.starts_with("client_ip") || line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let e = edges.entry((name(f[0]), name(f[1]))).or_insert((0, 0, 0));
        e.0 += f[7].parse::<u64>().unwrap();
        e.1 += f[8].parse::<u64>().unwrap();
        e.2 += f[5].parse::<u64>().unwrap();
    }
    edges
}

fn map_edges(map: &Value) -> BTreeMap<(String, String), (u64, u64, u64)> {
    let mut edges = BTreeMap::new();
    for e in map["edges"].as_array().unwrap() {
        let frames = e["to_server"]["packets"].as_u64().unwrap() + e["to_client"]["packets"].as_u64().unwrap();
        let bytes = e["to_server"]["bytes"].as_u64().unwrap() + e["to_client"]["bytes"].as_u64().unwrap();
        let key = (e["source"].as_str().unwrap().to_string(), e["target"].as_str().unwrap().to_string());
        let v = edges.entry(key).or_insert((0, 0, 0));
        v.0 += frames;
        v.1 += bytes;
        v.2 += e["flows"].as_u64().unwrap();
    }
    edges
}

fn replay_map(capture: &Path, inventory: &Path, group: &str) -> Value {
    let out = support::run_trawl(&[
        "replay",
        capture.to_str().unwrap(),
        "--emit",
        "map",
        "--inventory",
        inventory.to_str().unwrap(),
        "--group-by",
        group,
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn map_names_nodes_from_the_inventory_and_groups() {
    let Some(corpus) = support::corpus() else {
        return;
    };
    let capture = corpus.join("public/ndpi/kafka.pcapng");
    let tsv = corpus.join("public/ndpi/kafka.pcapng.expected/service_edges.tsv");
    let inventory = support::project_root().join("tests/data/ndpi-kafka-inventory.json");

    // By pod: names come from the inventory; 127.0.0.1 is unknown and private.
    let map = replay_map(&capture, &inventory, "pod");
    let nodes: BTreeMap<String, (String, String, String)> = map["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let s = |k: &str| n[k].as_str().unwrap_or_default().to_string();
            (s("id"), (s("name"), s("namespace"), s("kind")))
        })
        .collect();
    let want: BTreeMap<String, (String, String, String)> = [
        ("pod/ingest/producer-6d5f8b7c9-x2v4q", ("producer-6d5f8b7c9-x2v4q", "ingest", "pod")),
        ("pod/data/kafka-0", ("kafka-0", "data", "pod")),
        ("internal/127.0.0.1", ("127.0.0.1", "internal", "external")),
    ]
    .into_iter()
    .map(|(id, (a, b, c))| (id.to_string(), (a.to_string(), b.to_string(), c.to_string())))
    .collect();
    assert_eq!(nodes, want);
    let pod_name = |ip: &str| match ip {
        "172.16.17.101" => "pod/ingest/producer-6d5f8b7c9-x2v4q".to_string(),
        "172.30.0.237" => "pod/data/kafka-0".to_string(),
        other => format!("internal/{other}"),
    };
    assert_eq!(map_edges(&map), expected_edges(&tsv, pod_name));

    // By namespace and by node: the same traffic, summed into fewer nodes.
    let ns_name = |ip: &str| match ip {
        "172.16.17.101" => "ingest".to_string(),
        "172.30.0.237" => "data".to_string(),
        _ => "internal".to_string(),
    };
    let map = replay_map(&capture, &inventory, "namespace");
    let ids: Vec<&str> = map["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["data", "ingest", "internal"]);
    assert_eq!(map_edges(&map), expected_edges(&tsv, ns_name));

    let node_name = |ip: &str| match ip {
        "172.16.17.101" => "worker-1".to_string(),
        "172.30.0.237" => "worker-2".to_string(),
        _ => "internal".to_string(),
    };
    let map = replay_map(&capture, &inventory, "node");
    let ids: Vec<&str> = map["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["internal", "worker-1", "worker-2"]);
    assert_eq!(map_edges(&map), expected_edges(&tsv, node_name));
}

#[test]
fn unknown_public_addresses_fall_into_public() {
    let Some(corpus) = support::corpus() else {
        return;
    };
    // nDPI's HTTP capture talks to a public web server from a private client.
    let capture = corpus.join("public/ndpi/http.pcapng");
    let out = support::run_trawl(&["replay", capture.to_str().unwrap(), "--emit", "map", "--group-by", "namespace"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let map: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = map["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["internal", "public"]);
    let edge = &map["edges"][0];
    assert_eq!((edge["source"].as_str(), edge["target"].as_str()), (Some("internal"), Some("public")));
}

#[test]
fn demo_capture_maps_as_the_readme_says() {
    let root = support::project_root();
    let capture = root.join("examples/demo/demo.pcap");
    let inventory = root.join("examples/demo/inventory.json");
    let map = replay_map(&capture, &inventory, "pod");
    let edges: Vec<(String, String, String, u64)> = map["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_string();
            (s("source"), s("target"), s("l4"), e["flows"].as_u64().unwrap())
        })
        .collect();
    let want = [
        ("internal/10.244.9.9", "pod/shop/api-5f6b", "tcp", 2),
        ("pod/shop/api-5f6b", "pod/shop/cart-redis-0", "tcp", 4),
        ("pod/shop/frontend-7d9c", "pod/kube-system/coredns-abc12", "tcp", 1),
        ("pod/shop/frontend-7d9c", "pod/kube-system/coredns-abc12", "udp", 4),
        ("pod/shop/frontend-7d9c", "pod/shop/api-5f6b", "tcp", 7),
        ("pod/shop/frontend-7d9c", "pod/shop/cart-redis-0", "tcp", 12),
    ];
    let want: Vec<(String, String, String, u64)> =
        want.iter().map(|(a, b, c, n)| (a.to_string(), b.to_string(), c.to_string(), *n)).collect();
    assert_eq!(edges, want);

    let map = replay_map(&capture, &inventory, "namespace");
    let ids: Vec<&str> = map["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["internal", "kube-system", "shop"]);
    let map = replay_map(&capture, &inventory, "node");
    let pairs: Vec<(&str, &str)> = map["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["source"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    assert_eq!(pairs, [("internal", "node-a"), ("node-a", "node-a"), ("node-a", "node-b"), ("node-a", "node-b")]);
}

#[test]
fn demo_l7_map_has_the_l4_nodes_and_protocol_edges() {
    let root = support::project_root();
    let capture = root.join("examples/demo/demo.pcap");
    let inventory = root.join("examples/demo/inventory.json");
    let out = support::run_trawl(&[
        "replay",
        capture.to_str().unwrap(),
        "--inventory",
        inventory.to_str().unwrap(),
        "--emit",
        "map",
        "--map",
        "l7",
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let l7: Value = serde_json::from_slice(&out.stdout).unwrap();
    let l4 = replay_map(&capture, &inventory, "pod");
    assert_eq!(l7["nodes"], l4["nodes"], "the L7 map shows the L4 map's nodes");
    let edges: Vec<(String, String, String, u64, u64)> = l7["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_string();
            (s("source"), s("target"), s("protocol"), e["requests"].as_u64().unwrap(), e["errors"].as_u64().unwrap())
        })
        .collect();
    // What examples/demo/README.md says the script sent: 10 HTTP requests
    // from frontend (two 404s), 2 from the stray host, 5 DNS lookups (one
    // NXDOMAIN), 4 Redis commands from api and 31 from frontend (10
    // one-command connections, 10 INCR, 10 piped SETs and an ECHO).
    let want = [
        ("internal/10.244.9.9", "pod/shop/api-5f6b", "http", 2, 0),
        ("pod/shop/api-5f6b", "pod/shop/cart-redis-0", "redis", 4, 0),
        ("pod/shop/frontend-7d9c", "pod/kube-system/coredns-abc12", "dns", 5, 1),
        ("pod/shop/frontend-7d9c", "pod/shop/api-5f6b", "http", 10, 2),
        ("pod/shop/frontend-7d9c", "pod/shop/cart-redis-0", "redis", 31, 0),
    ];
    let want: Vec<(String, String, String, u64, u64)> =
        want.iter().map(|(a, b, p, r, e)| (a.to_string(), b.to_string(), p.to_string(), *r, *e)).collect();
    assert_eq!(edges, want);
    let legend: Vec<&str> = l7["legend"].as_array().unwrap().iter().map(|l| l["protocol"].as_str().unwrap()).collect();
    assert_eq!(legend, ["dns", "http", "redis"]);
    assert!(l7["legend"][0]["color"].as_str().unwrap().starts_with('#'));
    assert!(l7["edges"][3]["latency_us"]["p50"].as_u64().is_some());
}

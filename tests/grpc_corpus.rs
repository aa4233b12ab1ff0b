//! gRPC calls from `trawl replay --emit records` against tshark's
//! `http2.tsv` (its gRPC layer counts length-prefixed messages per
//! direction) and deepflow's `*.result` files (path, service, stream id,
//! gRPC status).
//!
//! Every connection tshark sees gRPC on must be claimed by the grpc plugin,
//! and no other HTTP/2 connection may be, except the deliberate differences
//! in [`TRAWL_KNOWS_BETTER`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use support::{records, rows, split};

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Captures joined mid-connection, where the HPACK table is unknown and
/// tshark cannot read `content-type`, so it never reaches its gRPC layer.
/// trawl claims them because every DATA frame holds exactly whole
/// length-prefixed gRPC messages (and each response ends in trailers); its
/// counts are checked against the frames themselves.
const TRAWL_KNOWS_BETTER: &[(&str, &str, usize)] = &[
    // deepflow's own result calls this one gRPC too.
    ("public/deepflow/http/grpc-unknown.pcap", "a 5-byte empty request message, a 165-byte reply", 2),
    // Online Boutique's productcatalogservice port; deepflow says HTTP/2.
    ("public/deepflow/http/http2-multi.pcap", "two unary calls: 12-byte requests, 145/143-byte replies", 4),
];

fn ep(ip4: &str, ip6: &str, port: &str) -> String {
    format!("{}:{port}", if ip4.is_empty() { ip6 } else { ip4 })
}

/// gRPC messages per directed (sender, receiver) pair, and whether tshark
/// saw gRPC on the connection at all (keyed by the sorted pair).
/// Something per pair of endpoints.
type PerPair<T> = BTreeMap<(String, String), T>;

fn tshark(tsv: &Path) -> (PerPair<usize>, PerPair<bool>) {
    let mut messages = BTreeMap::new();
    let mut grpc = BTreeMap::new();
    for r in rows(tsv) {
        let src = ep(&r["ip.src"], &r["ipv6.src"], &r["tcp.srcport"]);
        let dst = ep(&r["ip.dst"], &r["ipv6.dst"], &r["tcp.dstport"]);
        let n = split(&r["grpc.message_length"]).len();
        let is_grpc = n > 0 || split(&r["http2.header.value"]).iter().any(|v| v.starts_with("application/grpc"));
        *messages.entry((src.clone(), dst.clone())).or_insert(0) += n;
        let key = if src <= dst { (src, dst) } else { (dst, src) };
        *grpc.entry(key).or_insert(false) |= is_grpc;
    }
    messages.retain(|_, n| *n > 0);
    (messages, grpc)
}

fn endpoint(v: &Value) -> String {
    format!("{}:{}", v["ip"].as_str().unwrap(), v["port"])
}

#[test]
fn grpc_calls_agree_with_tshark() {
    let Some(corpus) = support::corpus() else { return };
    let mut failures = Vec::new();
    let mut total = 0;
    for capture in support::captures(&corpus) {
        let Some(tsv) = support::expected(&capture, "http2.tsv") else { continue };
        let (expected, grpc_conns) = tshark(&tsv);
        let name = capture.strip_prefix(&corpus).unwrap().display().to_string();
        let mut got: PerPair<usize> = BTreeMap::new();
        let mut claimed: PerPair<bool> = BTreeMap::new();
        for r in records(&capture).iter().filter(|r| r["fields"]["http_version"] == "HTTP/2") {
            let (client, server) = (endpoint(&r["src"]), endpoint(&r["dst"]));
            let is_grpc = r["protocol"] == "grpc";
            if is_grpc {
                let f = &r["fields"];
                *got.entry((client.clone(), server.clone())).or_insert(0) +=
                    f["grpc_request_messages"].as_u64().unwrap() as usize;
                *got.entry((server.clone(), client.clone())).or_insert(0) +=
                    f["grpc_response_messages"].as_u64().unwrap() as usize;
            }
            let key = if client <= server { (client, server) } else { (server, client) };
            *claimed.entry(key).or_insert(false) |= is_grpc;
        }
        got.retain(|_, n| *n > 0);
        if let Some((_, why, messages)) = TRAWL_KNOWS_BETTER.iter().find(|(c, _, _)| *c == name) {
            let all_grpc = claimed.values().all(|g| *g);
            if !all_grpc || got.values().sum::<usize>() != *messages {
                failures.push(format!("{name} ({why}): trawl {got:?} {claimed:?}"));
            }
            continue;
        }
        total += expected.values().sum::<usize>();
        if got != expected {
            failures.push(format!("{name}: messages\n  tshark {expected:?}\n  trawl  {got:?}"));
        }
        for (conn, is_grpc) in &claimed {
            if grpc_conns.get(conn) != Some(is_grpc) {
                failures.push(format!("{name} {conn:?}: tshark grpc {:?}, trawl grpc {is_grpc}", grpc_conns.get(conn)));
            }
        }
    }
    println!("compared {total} gRPC messages");
    assert!(total > 0, "the corpus has gRPC captures");
    assert!(failures.is_empty(), "{} differences:\n{}", failures.len(), failures.join("\n"));
}

/// `field: Some("x")` / `field: Some(3)` / `field: "x"` out of a deepflow
/// `HttpInfo { … }` line.
fn deepflow_field(line: &str, name: &str) -> Option<String> {
    let at = line.find(&format!(" {name}: "))? + name.len() + 3;
    let rest = &line[at..];
    let rest = rest.strip_prefix("Some(").unwrap_or(rest);
    let end = if let Some(quoted) = rest.strip_prefix('"') {
        return quoted.find('"').map(|e| quoted[..e].to_string()).filter(|s| !s.is_empty());
    } else {
        rest.find([',', ')', ' ']).unwrap_or(rest.len())
    };
    let v = &rest[..end];
    (v != "None").then(|| v.to_string())
}

#[test]
fn grpc_calls_agree_with_deepflow() {
    let Some(corpus) = support::corpus() else { return };
    let dir = corpus.join("public/deepflow/http");
    let mut checked = 0;
    for capture in support::captures(&dir) {
        let stem = capture.file_stem().unwrap().to_str().unwrap().to_string();
        let Ok(result) = std::fs::read_to_string(dir.join(format!("{stem}.result"))) else { continue };
        let lines: Vec<&str> = result.lines().filter(|l| l.contains("proto: Grpc")).collect();
        if lines.is_empty() {
            continue;
        }
        let got = records(&capture);
        assert!(!got.is_empty() && got.iter().all(|r| r["protocol"] == "grpc"), "{stem}: {got:?}");
        for line in lines {
            let stream: i64 = deepflow_field(line, "stream_id").unwrap().parse().unwrap();
            let r = got
                .iter()
                .find(|r| r["fields"]["stream_id"] == stream)
                .unwrap_or_else(|| panic!("{stem}: no record for stream {stream}"));
            if let Some(path) = deepflow_field(line, "path") {
                assert_eq!(r["fields"]["path"], path.as_str(), "{stem}");
            }
            if let Some(service) = deepflow_field(line, "service_name") {
                assert_eq!(r["fields"]["grpc_service"], service.as_str(), "{stem}");
            }
            if let Some(status) = deepflow_field(line, "grpc_status_code") {
                assert_eq!(r["fields"]["grpc_status"], status.parse::<i64>().unwrap(), "{stem}");
            }
            if let Some(status) = deepflow_field(line, "status_code") {
                assert_eq!(r["fields"]["status_code"], status.parse::<i64>().unwrap(), "{stem}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "checked {checked} deepflow gRPC messages");
}

/// suricata-verify's http2-errorcode: one SayHello over a CONNECT tunnel
/// and one direct, each answered OK; both clients then send GOAWAY with
/// INTERNAL_ERROR, after their streams ended.
#[test]
fn grpc_inside_a_connect_tunnel() {
    let Some(corpus) = support::corpus() else { return };
    let got = records(&corpus.join("public/suricata-verify/http2-errorcode/input.pcap"));
    let mut seen: Vec<(String, String, i64)> = got
        .iter()
        .map(|r| {
            (
                r["protocol"].as_str().unwrap().to_string(),
                r["summary"].as_str().unwrap().to_string(),
                r["status_code"].as_i64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    let hello = ("grpc".to_string(), "/helloworld.GreeterService/SayHello".to_string(), 0);
    assert_eq!(seen, [hello.clone(), hello, ("http".into(), "127.0.0.1:6233".into(), 200)]);
}

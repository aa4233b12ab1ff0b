//! The WebSocket API of a real `trawl serve` (the demo capture in a loop,
//! at ten times its pace): subscribe, get a snapshot and then deltas that
//! keep a client's copy equal to the server's map; change the subscription
//! and get a new snapshot; an invalid filter gets an error and the
//! subscription in force stays. A deliberately slow reader (tiny receive
//! buffer, not reading for seconds) costs the server no growing queue: its
//! memory stays flat, and when the reader catches up, the coalesced deltas
//! still bring its copy to the server's map.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A client's copy of the map, kept by applying what the server sends.
#[derive(Default, Debug)]
struct Copy {
    nodes: BTreeMap<String, Value>,
    edges: BTreeMap<String, Value>,
    snapshots: usize,
    deltas: usize,
}

impl Copy {
    fn apply(&mut self, msg: &Value) {
        let index = |v: &Value| -> BTreeMap<String, Value> {
            v.as_array().into_iter().flatten().map(|x| (x["id"].as_str().unwrap().to_string(), x.clone())).collect()
        };
        match msg["type"].as_str().unwrap() {
            "snapshot" => {
                self.nodes = index(&msg["map"]["nodes"]);
                self.edges = index(&msg["map"]["edges"]);
                self.snapshots += 1;
            }
            "delta" => {
                for (kind, map) in [("nodes", &mut self.nodes), ("edges", &mut self.edges)] {
                    for x in msg[format!("{kind}_added")].as_array().unwrap() {
                        map.insert(x["id"].as_str().unwrap().to_string(), x.clone());
                    }
                    // A change carries only the numbers that move.
                    for x in msg[format!("{kind}_changed")].as_array().unwrap() {
                        let entry = map.get_mut(x["id"].as_str().unwrap()).expect("change to an unknown id");
                        for (k, v) in x.as_object().unwrap() {
                            entry[k] = v.clone();
                        }
                    }
                    for id in msg[format!("{kind}_removed")].as_array().unwrap() {
                        map.remove(id.as_str().unwrap());
                    }
                }
                self.deltas += 1;
            }
            other => panic!("unexpected {other}: {msg}"),
        }
    }
}

async fn connect(port: u16, recv_buffer: Option<u32>) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let stream = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}/api/ws"), stream).await.unwrap();
    ws
}

async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("no message").unwrap().unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

async fn subscribe(ws: &mut Ws, spec: Value) {
    let mut m = spec;
    m["type"] = json!("subscribe");
    ws.send(Message::text(m.to_string())).await.unwrap();
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_snapshot_deltas_and_a_slow_reader() {
    let (server, port) = support::serve_demo(&["--loop", "--speed", "10"]);

    // Snapshot first, then deltas; the copy follows the server's map.
    let mut ws = connect(port, None).await;
    subscribe(&mut ws, json!({ "map": "l4", "group_by": "pod", "mode": "rate" })).await;
    let mut copy = Copy::default();
    let first = next(&mut ws).await;
    assert_eq!(first["type"], "snapshot", "{first}");
    copy.apply(&first);
    while copy.deltas < 3 {
        let m = next(&mut ws).await;
        assert!(m["seq"].as_u64() > first["seq"].as_u64());
        copy.apply(&m);
    }
    assert!(!copy.nodes.is_empty() && !copy.edges.is_empty());

    // A new subscription: a new snapshot, with only DNS edges.
    subscribe(&mut ws, json!({ "map": "l7", "group_by": "pod", "filter": "dns" })).await;
    let mut m = next(&mut ws).await;
    while m["type"] != "snapshot" {
        m = next(&mut ws).await;
    }
    let edges = m["map"]["edges"].as_array().unwrap();
    assert!(!edges.is_empty() && edges.iter().all(|e| e["protocol"] == "dns"), "{m}");

    // One edge in full: the feed carries summaries, details come on request.
    let dns_edge = edges[0]["id"].as_str().unwrap().to_string();
    ws.send(Message::text(json!({ "type": "detail", "id": dns_edge }).to_string())).await.unwrap();
    let mut m = next(&mut ws).await;
    while m["type"] == "delta" {
        m = next(&mut ws).await;
    }
    assert_eq!((m["type"].as_str(), m["id"].as_str()), (Some("detail"), Some(dns_edge.as_str())), "{m}");
    assert!(m["edge"]["requests"].as_u64() > Some(0) && m["edge"]["latency_us"].is_object(), "{m}");
    assert!(m["edge"]["top"].as_array().is_some_and(|t| !t.is_empty()), "{m}");

    // A bound on edges: the heaviest ones, and totals saying what is cut.
    subscribe(&mut ws, json!({ "map": "l4", "group_by": "pod", "max_edges": 2 })).await;
    let mut m = next(&mut ws).await;
    while m["type"] != "snapshot" {
        m = next(&mut ws).await;
    }
    let totals = &m["map"]["totals"];
    assert_eq!(m["map"]["edges"].as_array().unwrap().len(), 2, "{m}");
    assert_eq!(totals["edges_shown"], 2, "{m}");
    assert!(totals["edges"].as_u64() > Some(2), "{m}");

    // An invalid filter: an error naming the position; no new snapshot.
    subscribe(&mut ws, json!({ "map": "l7", "filter": "status_code ==" })).await;
    let mut m = next(&mut ws).await;
    while m["type"] == "delta" {
        m = next(&mut ws).await;
    }
    assert_eq!(m["type"], "error", "{m}");
    assert_eq!((m["line"].as_u64(), m["column"].as_u64()), (Some(1), Some(15)), "{m}");
    // A misspelt name would match nothing: the plugins declare their
    // fields, so it is refused with the closest ones, where it stands.
    subscribe(&mut ws, json!({ "map": "l7", "filter": "dns && dns_rcode == 'NXDOMAIN'" })).await;
    let mut m = next(&mut ws).await;
    while m["type"] == "delta" {
        m = next(&mut ws).await;
    }
    assert_eq!(m["type"], "error", "{m}");
    let message = "unknown variable `dns_rcode`; did you mean one of `dns_rcode_name`, `dns_opcode`?";
    assert_eq!(m["message"], message, "{m}");
    assert_eq!((m["line"].as_u64(), m["column"].as_u64(), m["position"].as_u64()), (Some(1), Some(8), Some(7)), "{m}");
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-G", &format!("http://127.0.0.1:{port}/api/map")])
        .args(["--data-urlencode", "map=l7", "--data-urlencode", "filter=status_cod >= 500"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.ends_with("\n400") && text.contains("did you mean `status_code`?"), "{text}");
    ws.close(None).await.unwrap();

    // The slow reader: rate-mode L4 changes every tick. It reads the
    // snapshot, then stops reading for 8 s with a 4 KiB receive buffer.
    let mut slow = connect(port, Some(4096)).await;
    subscribe(&mut slow, json!({ "map": "l4", "group_by": "pod", "mode": "rate" })).await;
    let mut copy = Copy::default();
    copy.apply(&next(&mut slow).await);
    let before = rss_kib(server.0.id());
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = rss_kib(server.0.id());
    assert!(after < before + 16 * 1024, "server grew from {before} KiB to {after} KiB while a reader stalled");
    // Catch up: read everything pending, then the next delta must leave
    // the copy equal to the map the server serves right then.
    let mut received = 0;
    while let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_millis(300), slow.next()).await {
        copy.apply(&serde_json::from_str(&t).unwrap());
        received += 1;
    }
    // 8 s at 5 ticks per second would be 40 messages if each were queued.
    assert!(received < 40, "{received} messages were queued for a stalled reader");
    let nodes: Vec<String> = copy.nodes.keys().cloned().collect();
    let out = Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{port}/api/map?map=l4&group_by=pod")])
        .output()
        .unwrap();
    let rest: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rest_nodes: Vec<String> =
        rest["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap().to_string()).collect();
    let mut rest_nodes = rest_nodes;
    rest_nodes.sort();
    assert_eq!(nodes, rest_nodes);
    let rest_edges: Vec<String> =
        rest["edges"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    let mut rest_edges = rest_edges;
    rest_edges.sort();
    assert_eq!(copy.edges.keys().cloned().collect::<Vec<_>>(), rest_edges);
    drop(server);
}

//! The API's answers cut down to what an assistant needs: the numbers a
//! person reads off the map, rounded, with long lists limited and long
//! strings cut. Everything here is pure: JSON in, JSON out.

use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// Most characters of one string value in a tool's answer.
pub const MAX_STRING: usize = 200;
/// Most fields of one record.
pub const MAX_FIELDS: usize = 16;

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// A string cut to [`MAX_STRING`] characters, saying so.
pub fn cut(s: &str) -> Value {
    match s.char_indices().nth(MAX_STRING) {
        Some((at, _)) => Value::String(format!("{}… ({} chars)", &s[..at], s.chars().count())),
        None => Value::String(s.to_string()),
    }
}

/// Every string in `v` cut to [`MAX_STRING`], every array to 20 items.
fn cut_all(v: &Value) -> Value {
    match v {
        Value::String(s) => cut(s),
        Value::Array(a) => Value::Array(a.iter().take(20).map(cut_all).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), cut_all(v))).collect()),
        other => other.clone(),
    }
}

/// Milliseconds from a `latency_us` value.
fn ms(us: &Value) -> Value {
    us.as_f64().map_or(Value::Null, |us| json!(round(us / 1000.0, 3)))
}

/// One L7 edge: who, what, how many, how bad, how slow.
pub fn l7_edge(e: &Value) -> Value {
    let (requests, errors) = (num(&e["requests"]), num(&e["errors"]));
    let mut out = json!({
        "id": e["id"],
        "source": e["source"],
        "target": e["target"],
        "protocol": e["protocol"],
        "requests": e["requests"],
        "errors": e["errors"],
        "error_rate": if requests > 0.0 { round(errors / requests, 4) } else { 0.0 },
        "requests_per_sec": e["rate"]["requests_per_sec"],
        "p50_ms": ms(&e["latency_us"]["p50"]),
        "p99_ms": ms(&e["latency_us"]["p99"]),
        "request_bytes": e["request_bytes"],
        "response_bytes": e["response_bytes"],
    });
    if let Some(host) = e.get("host") {
        out["host"] = host.clone();
    }
    out
}

/// One L4 edge: bytes and packets each way, and TCP trouble.
pub fn l4_edge(e: &Value) -> Value {
    let h = &e["tcp_health"];
    let mut out = json!({
        "id": e["id"],
        "source": e["source"],
        "target": e["target"],
        "transport": e["l4"],
        "flows": e["flows"],
        "bytes_to_server": e["to_server"]["bytes"],
        "bytes_to_client": e["to_client"]["bytes"],
        "packets_to_server": e["to_server"]["packets"],
        "packets_to_client": e["to_client"]["packets"],
        "bytes_per_sec": round(num(&e["rate"]["to_server"]["bytes_per_sec"]) + num(&e["rate"]["to_client"]["bytes_per_sec"]), 1),
    });
    if h.is_object() {
        out["tcp"] = tcp_health(h);
    }
    out
}

fn tcp_health(h: &Value) -> Value {
    json!({
        "retransmits": num(&h["retransmits_to_server"]) + num(&h["retransmits_to_client"]),
        "resets": num(&h["resets_by_client"]) + num(&h["resets_by_server"]),
        "failed_connects": h["failed_connects"],
        "handshake_rtt_ms_mean": h["handshake_rtt_ms_mean"],
        "handshake_rtt_ms_max": h["handshake_rtt_ms_max"],
    })
}

/// Whether an edge touches namespace `ns` (either end's node id names it).
fn touches(e: &Value, nodes: &Map<String, Value>, ns: &str) -> bool {
    ["source", "target"].iter().any(|end| {
        let id = e[*end].as_str().unwrap_or("");
        nodes.get(id).is_some_and(|n| n["namespace"] == ns) || id == ns
    })
}

/// A map: its size, and its heaviest `limit` edges (by requests on the L7
/// map, bytes on the L4 map), optionally only those touching a namespace.
pub fn map(v: &Value, l7: bool, namespace: Option<&str>, limit: usize) -> Value {
    let nodes: Map<String, Value> = v["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| Some((n["id"].as_str()?.to_string(), n.clone())))
        .collect();
    let mut edges: Vec<&Value> = v["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| namespace.is_none_or(|ns| touches(e, &nodes, ns)))
        .collect();
    let weight = |e: &Value| if l7 { num(&e["requests"]) } else { num(&e["bytes"]) };
    edges.sort_by(|a, b| weight(b).total_cmp(&weight(a)).then_with(|| a["id"].as_str().cmp(&b["id"].as_str())));
    let total = edges.len();
    let shown: Vec<Value> = edges.iter().take(limit).map(|e| if l7 { l7_edge(e) } else { l4_edge(e) }).collect();
    let mut used: Vec<&str> =
        shown.iter().flat_map(|e| [e["source"].as_str(), e["target"].as_str()]).flatten().collect();
    used.sort_unstable();
    used.dedup();
    let node_list: Vec<Value> = used
        .iter()
        .filter_map(|id| nodes.get(*id))
        .map(|n| json!({"id": n["id"], "kind": n["kind"], "namespace": n["namespace"]}))
        .collect();
    let mut out = json!({
        "map": if l7 { "l7" } else { "l4" },
        "nodes_total": nodes.len(),
        "edges_total": total,
        "edges_shown": shown.len(),
        "edges": shown,
        "nodes": node_list,
    });
    if let Some(w) = v.get("window") {
        out["window"] = w.clone();
    }
    if let Some(p) = v.get("partial") {
        out["partial"] = p.clone();
    }
    out
}

fn same_ends(a: &Value, b: &Value) -> bool {
    b["source"] == a["source"] && b["target"] == a["target"]
}

/// One edge in detail: an L7 edge's RED numbers and top calls with the TCP
/// health of the connections beneath it, or an L4 edge with the L7 edges
/// over it. `None` when neither map has the id.
pub fn edge(id: &str, l7: &Value, l4: &Value) -> Option<Value> {
    let find = |m: &Value, pred: &dyn Fn(&Value) -> bool| -> Vec<Value> {
        m["edges"].as_array().into_iter().flatten().filter(|e| pred(e)).cloned().collect()
    };
    if let Some(e) = find(l7, &|e| e["id"] == id).first() {
        let mut out = l7_edge(e);
        out["p95_ms"] = ms(&e["latency_us"]["p95"]);
        out["top_calls"] = Value::Array(
            e["top"]
                .as_array()
                .into_iter()
                .flatten()
                .take(10)
                .map(|t| json!({"call": cut_all(&t["name"]), "count": t["count"]}))
                .collect(),
        );
        out["connections"] = Value::Array(find(l4, &|b| same_ends(e, b)).iter().map(l4_edge).collect());
        return Some(out);
    }
    let e = find(l4, &|e| e["id"] == id).into_iter().next()?;
    let mut out = l4_edge(&e);
    out["l7"] = Value::Array(find(l7, &|b| same_ends(&e, b)).iter().map(l7_edge).collect());
    Some(out)
}

/// Workloads whose id, name or namespace contains `query` (any case), from
/// the L4 map by pod (every connection, before any filter), with their
/// traffic in and out.
pub fn workloads(l4: &Value, query: &str, limit: usize) -> Value {
    let q = query.to_lowercase();
    // Each node's edges, indexed once: a short query may match thousands.
    let mut by_node: HashMap<&str, (Vec<&Value>, Vec<&Value>)> = HashMap::new();
    for e in l4["edges"].as_array().into_iter().flatten() {
        if let (Some(s), Some(t)) = (e["source"].as_str(), e["target"].as_str()) {
            by_node.entry(s).or_default().0.push(e);
            by_node.entry(t).or_default().1.push(e);
        }
    }
    let matching: Vec<&Value> = l4["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| {
            ["id", "name", "namespace"].iter().any(|k| n[*k].as_str().is_some_and(|s| s.to_lowercase().contains(&q)))
        })
        .collect();
    let peers = |edges: &[&Value], end: &str| -> (Vec<Value>, f64) {
        let mut names: Vec<&str> = edges.iter().filter_map(|e| e[end].as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let bytes = edges.iter().map(|e| num(&e["bytes"])).sum();
        (names.into_iter().take(20).map(|n| json!(n)).collect(), bytes)
    };
    let found: Vec<Value> = matching
        .iter()
        .take(limit)
        .map(|n| {
            let (out, inn) = by_node.get(n["id"].as_str().unwrap_or("")).cloned().unwrap_or_default();
            let ((calls, bytes_out), (called_by, bytes_in)) = (peers(&out, "target"), peers(&inn, "source"));
            json!({
                "id": n["id"],
                "kind": n["kind"],
                "name": n["name"],
                "namespace": n["namespace"],
                "node": n.get("node"),
                "calls": calls,
                "called_by": called_by,
                "bytes_as_client": bytes_out,
                "bytes_as_server": bytes_in,
            })
        })
        .collect();
    json!({"query": query, "matches": matching.len(), "workloads": found})
}

/// A record's end as the map's node id (`pod/NS/NAME`, `node/NAME`,
/// `internal/IP`…), so records and edges name workloads alike; the address
/// when the record names no workload.
fn end(e: &Value) -> Value {
    let w = &e["workload"];
    let (kind, ns, name) =
        (w["kind"].as_str(), w["namespace"].as_str().unwrap_or(""), w["name"].as_str().unwrap_or(""));
    match kind {
        Some("node") => json!(format!("node/{name}")),
        Some("external") => json!(format!("{ns}/{name}")),
        Some(kind) => json!(format!("{kind}/{ns}/{name}")),
        None => json!(format!("{}:{}", e["ip"].as_str().unwrap_or(""), e["port"])),
    }
}

/// One record: what was asked, what came back, how long it took; at most
/// [`MAX_FIELDS`] fields, every string cut.
pub fn record(r: &Value) -> Value {
    let fields: Map<String, Value> =
        r["fields"].as_object().into_iter().flatten().take(MAX_FIELDS).map(|(k, v)| (k.clone(), cut_all(v))).collect();
    json!({
        // Unix seconds, of the request (else the response).
        "ts": if r["request_ts"].is_null() { r["response_ts"].clone() } else { r["request_ts"].clone() },
        "protocol": r["protocol"],
        "method": cut_all(&r["method"]),
        "summary": cut_all(&r["summary"]),
        "status_code": r["status_code"],
        "error": r["error"],
        "elapsed_ms": ms(&r["elapsed_us"]),
        "src": end(&r["src"]),
        "dst": end(&r["dst"]),
        "request_size": r["request_size"],
        "response_size": r["response_size"],
        "fields": fields,
    })
}

/// A diff: the edges added, removed and changed, each with why.
pub fn diff(v: &Value, limit: usize) -> Value {
    let list = |k: &str| -> Value {
        let all = v[k].as_array().cloned().unwrap_or_default();
        let shown: Vec<Value> = all
            .iter()
            .take(limit)
            .map(|e| {
                let mut out = if e.get("protocol").is_some() { l7_edge(e) } else { l4_edge(e) };
                if let Some(why) = e.get("reasons") {
                    out["reasons"] = why.clone();
                }
                out
            })
            .collect();
        json!({"total": all.len(), "edges": shown})
    };
    let mut out = json!({"added": list("added"), "removed": list("removed"), "changed": list("changed")});
    for key in ["before", "after"] {
        if let Some(x) = v.get(key) {
            out[key] = x.clone();
        }
    }
    out
}

/// The plugins: name, version, state and what each has done.
pub fn plugins(v: &Value) -> Value {
    Value::Array(
        v.as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                json!({
                    "name": p["name"],
                    "version": p["version"],
                    "state": p["state"],
                    "source": p["source"],
                    "ports": p["ports"],
                    "records": p["records"],
                    "faults": p["faults"],
                    "last_error": p["last_error"],
                    "generation": p["generation"],
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_l7() -> Value {
        json!({
            "nodes": [
                {"id": "pod/shop/a", "kind": "pod", "namespace": "shop", "name": "a"},
                {"id": "pod/shop/b", "kind": "pod", "namespace": "shop", "name": "b"},
                {"id": "pod/db/c", "kind": "pod", "namespace": "db", "name": "c"}
            ],
            "edges": [
                {"id": "pod/shop/a|pod/shop/b|http", "source": "pod/shop/a", "target": "pod/shop/b", "protocol": "http",
                 "requests": 10, "errors": 2, "latency_us": {"p50": 1500, "p95": 2000, "p99": 2500},
                 "rate": {"requests_per_sec": 1.0}, "top": [{"name": "GET /x", "count": 10}]},
                {"id": "pod/shop/b|pod/db/c|redis", "source": "pod/shop/b", "target": "pod/db/c", "protocol": "redis",
                 "requests": 40, "errors": 0, "latency_us": {"p50": 100, "p95": 200, "p99": 300}, "rate": {}}
            ]
        })
    }

    #[test]
    fn a_map_keeps_the_heaviest_edges_and_their_nodes() {
        let m = map(&demo_l7(), true, None, 1);
        assert_eq!((m["edges_total"].as_u64(), m["edges_shown"].as_u64()), (Some(2), Some(1)));
        assert_eq!(m["edges"][0]["protocol"], "redis", "most requests first");
        assert_eq!(m["nodes"].as_array().map(Vec::len), Some(2), "only the shown edges' nodes");
        let shop_only = map(&demo_l7(), true, Some("db"), 10);
        assert_eq!(shop_only["edges_total"], 1);
        let e = &map(&demo_l7(), true, None, 10)["edges"][1];
        assert_eq!((e["error_rate"].as_f64(), e["p99_ms"].as_f64()), (Some(0.2), Some(2.5)));
    }

    #[test]
    fn an_edge_in_detail_and_long_strings_cut() {
        let l4 = json!({"nodes": [], "edges": [{"id": "pod/shop/a|pod/shop/b|tcp", "source": "pod/shop/a", "target": "pod/shop/b",
            "l4": "tcp", "to_server": {"bytes": 5}, "to_client": {"bytes": 7}, "tcp_health": {"retransmits_to_server": 1, "resets_by_server": 2}}]});
        let e = edge("pod/shop/a|pod/shop/b|http", &demo_l7(), &l4).unwrap_or_default();
        assert_eq!(e["top_calls"][0]["call"], "GET /x");
        assert_eq!(e["connections"][0]["tcp"]["resets"], 2.0);
        let back = edge("pod/shop/a|pod/shop/b|tcp", &demo_l7(), &l4).unwrap_or_default();
        assert_eq!(back["l7"][0]["protocol"], "http");
        assert!(edge("nope", &demo_l7(), &l4).is_none());
        let long = "x".repeat(5000);
        assert!(cut(&long).as_str().is_some_and(|s| s.chars().count() < MAX_STRING + 20));
    }
}

//! What changed between two maps of the same kind: edges only after
//! (`added`), only before (`removed`), and in both but different enough to
//! matter (`changed`, each with its reasons and the values before and
//! after). Maps are compared in their JSON form (`trawl replay --emit map`,
//! `GET /api/map`), each with the seconds it covers, so rates compare
//! fairly between windows of different lengths.
//!
//! Thresholds keep noise out: an edge must carry a minimum volume before a
//! change of its rates counts, and a rate must change by a minimum factor
//! (and, for error rate and latency, by a minimum amount).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};

/// When a difference between two edges is a change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Thresholds {
    /// A rate changed when one side is at least this much more than the
    /// other (0.5: half again).
    pub min_change: f64,
    /// L7: requests an edge needs, on both sides, before its request rate,
    /// error rate and latency are compared.
    pub min_requests: u64,
    /// Error rate: the least change, in share of requests (0.02: two points).
    pub min_error_points: f64,
    /// p99 latency: the least change, in milliseconds.
    pub min_latency_ms: f64,
    /// Bytes either side needs before its byte rate is compared.
    pub min_bytes: u64,
    /// L4: packets an edge needs, on both sides, before its retransmission
    /// share is compared; and the least change of that share.
    pub min_packets: u64,
    pub min_retransmit_points: f64,
    /// L4: failed connects either side needs before their rate is compared.
    pub min_failed_connects: u64,
    /// L4: the least change of the mean handshake RTT, in milliseconds.
    pub min_rtt_ms: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_change: 0.5,
            min_requests: 10,
            min_error_points: 0.02,
            min_latency_ms: 5.0,
            min_bytes: 64 * 1024,
            min_packets: 100,
            min_retransmit_points: 0.01,
            min_failed_connects: 3,
            min_rtt_ms: 1.0,
        }
    }
}

/// One map and the seconds it covers.
#[derive(Clone, Copy, Debug)]
pub struct Window<'a> {
    pub map: &'a Value,
    pub secs: f64,
}

/// Why an edge is in `changed`: a measure, before and after.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reason {
    pub reason: &'static str,
    pub before: f64,
    pub after: f64,
}

/// What the diff compares of one edge.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Measures {
    requests: f64,
    errors: f64,
    bytes: f64,
    latency_p99_ms: Option<f64>,
    latency_p95_ms: Option<f64>,
    packets: f64,
    retransmits: f64,
    failed_connects: f64,
    rtt_ms: Option<f64>,
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// An edge's id (`source|target|protocol or l4`, as `/api/map` names it)
/// and its measures.
fn measures(e: &Value) -> (String, Measures) {
    let kind = e["protocol"].as_str().or(e["l4"].as_str()).unwrap_or("");
    let (source, target) = (e["source"].as_str().unwrap_or(""), e["target"].as_str().unwrap_or(""));
    let id = crate::vhost::l7_edge_id(source, target, kind, e["host"].as_str());
    let m = if e.get("protocol").is_some() {
        Measures {
            requests: num(&e["requests"]),
            errors: num(&e["errors"]),
            bytes: num(&e["request_bytes"]) + num(&e["response_bytes"]),
            latency_p99_ms: e["latency_us"]["p99"].as_f64().map(|us| us / 1e3),
            latency_p95_ms: e["latency_us"]["p95"].as_f64().map(|us| us / 1e3),
            ..Measures::default()
        }
    } else {
        let h = &e["tcp_health"];
        let handshakes = num(&h["handshakes"]);
        Measures {
            bytes: num(&e["to_server"]["bytes"]) + num(&e["to_client"]["bytes"]),
            packets: num(&e["to_server"]["packets"]) + num(&e["to_client"]["packets"]),
            retransmits: num(&h["retransmits_to_server"]) + num(&h["retransmits_to_client"]),
            failed_connects: num(&h["failed_connects"]),
            rtt_ms: (handshakes > 0.0).then(|| num(&h["handshake_rtt_sum_us"]) / handshakes / 1e3),
            ..Measures::default()
        }
    };
    (id, m)
}

/// Whether one of two values is at least `1 + change` times the other.
fn moved(a: f64, b: f64, change: f64) -> bool {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    hi > 0.0 && (lo <= 0.0 || hi / lo >= 1.0 + change)
}

/// The reasons an edge present in both windows changed, if any.
fn reasons(b: &Measures, bs: f64, a: &Measures, as_: f64, t: &Thresholds) -> Vec<Reason> {
    let mut out = Vec::new();
    let mut check = |reason, before: f64, after: f64, enough: bool, least: f64| {
        if enough && (after - before).abs() >= least && moved(before, after, t.min_change) {
            out.push(Reason { reason, before: round(before), after: round(after) });
        }
    };
    let requests = b.requests.min(a.requests) >= t.min_requests as f64;
    check("request_rate", b.requests / bs, a.requests / as_, requests, 0.0);
    let share = |part: f64, whole: f64| if whole > 0.0 { part / whole } else { 0.0 };
    check("error_rate", share(b.errors, b.requests), share(a.errors, a.requests), requests, t.min_error_points);
    if let (Some(lb), Some(la)) = (b.latency_p99_ms, a.latency_p99_ms) {
        // Of fewer than 100 requests the p99 is the slowest one or two (by
        // nearest rank): one slow answer is no change unless the p95
        // moved as well.
        let few = b.requests.min(a.requests) < 100.0;
        let p95_moved = match (b.latency_p95_ms, a.latency_p95_ms) {
            (Some(pb), Some(pa)) => (pa - pb).abs() >= t.min_latency_ms && moved(pb, pa, t.min_change),
            _ => false,
        };
        check("latency_p99", lb, la, requests && (!few || p95_moved), t.min_latency_ms);
    }
    let bytes = b.bytes.max(a.bytes) >= t.min_bytes as f64;
    check("bytes_rate", b.bytes / bs, a.bytes / as_, bytes, 0.0);
    let packets = b.packets.min(a.packets) >= t.min_packets as f64;
    let (rb, ra) = (share(b.retransmits, b.packets), share(a.retransmits, a.packets));
    check("retransmits", rb, ra, packets, t.min_retransmit_points);
    let failed = b.failed_connects.max(a.failed_connects) >= t.min_failed_connects as f64;
    check("failed_connects", b.failed_connects / bs, a.failed_connects / as_, failed, 0.0);
    if let (Some(rb), Some(ra)) = (b.rtt_ms, a.rtt_ms) {
        check("handshake_rtt", rb, ra, true, t.min_rtt_ms);
    }
    out
}

fn round(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// An edge as the diff lists it: its id, then the edge as the map has it.
fn listed(id: &str, edge: &Value) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), Value::from(id));
    if let Some(fields) = edge.as_object() {
        out.extend(fields.clone());
    }
    Value::Object(out)
}

/// The diff of two maps of one kind: `{nodes, added, removed, changed}`,
/// edges in the maps' own shape with an `id`; a changed edge as it is
/// after, with `reasons` (`[{reason, before, after}]`). Nodes are those
/// of either map. Edges without traffic count as absent.
pub fn diff(before: Window<'_>, after: Window<'_>, t: &Thresholds) -> Value {
    // Edges are borrowed, and only those listed are copied out.
    fn edges<'a>(w: &Window<'a>) -> HashMap<String, (Measures, &'a Value)> {
        let list = w.map["edges"].as_array().map(Vec::as_slice).unwrap_or_default();
        list.iter()
            .map(|e| (measures(e), e))
            .filter(|((_, m), _)| m.bytes > 0.0 || m.requests > 0.0 || m.packets > 0.0)
            .map(|((id, m), e)| (id, (m, e)))
            .collect()
    }
    let (old, new) = (edges(&before), edges(&after));
    let (bs, as_) = (before.secs.max(1e-3), after.secs.max(1e-3));
    let sorted = |mut v: Vec<Value>| {
        v.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        v
    };
    let removed =
        sorted(old.iter().filter(|(id, _)| !new.contains_key(*id)).map(|(id, (_, e))| listed(id, e)).collect());
    let added = sorted(new.iter().filter(|(id, _)| !old.contains_key(*id)).map(|(id, (_, e))| listed(id, e)).collect());
    let mut changed = Vec::new();
    for (id, (a, edge)) in &new {
        let Some((b, _)) = old.get(id) else { continue };
        let why = reasons(b, bs, a, as_, t);
        if !why.is_empty() {
            let mut v = listed(id, edge);
            v["reasons"] = json!(why);
            changed.push(v);
        }
    }
    let mut nodes: BTreeMap<&str, &Value> = BTreeMap::new();
    for w in [&before, &after] {
        for n in w.map["nodes"].as_array().map(Vec::as_slice).unwrap_or_default() {
            nodes.entry(n["id"].as_str().unwrap_or("")).or_insert(n);
        }
    }
    json!({
        "before": {"secs": round(before.secs)},
        "after": {"secs": round(after.secs)},
        "thresholds": t,
        "nodes": nodes.into_values().cloned().collect::<Vec<_>>(),
        "added": added,
        "removed": removed,
        "changed": sorted(changed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l7(target: &str, requests: u64, errors: u64, p99_us: u64) -> Value {
        json!({"source": "pod/a/client", "target": target, "protocol": "http", "requests": requests,
               "errors": errors, "request_bytes": 100 * requests, "response_bytes": 1000 * requests,
               "latency_us": {"p50": p99_us / 2, "p95": p99_us, "p99": p99_us}})
    }

    fn map(edges: Vec<Value>) -> Value {
        json!({"nodes": [{"id": "pod/a/client"}], "edges": edges})
    }

    fn ids(v: &Value, list: &str) -> Vec<String> {
        v[list].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn added_removed_and_changed_edges_with_their_reasons() {
        let before = map(vec![
            l7("gone", 20, 0, 2_000),
            l7("flaky", 20, 0, 2_000),
            l7("slow", 20, 0, 2_000),
            l7("steady", 20, 1, 2_000),
        ]);
        let after = map(vec![
            l7("new", 20, 0, 2_000),
            l7("flaky", 20, 8, 2_000),
            l7("slow", 20, 0, 60_000),
            l7("steady", 21, 1, 2_400),
        ]);
        let d = diff(Window { map: &before, secs: 2.0 }, Window { map: &after, secs: 2.1 }, &Thresholds::default());
        assert_eq!(ids(&d, "removed"), ["pod/a/client|gone|http"]);
        assert_eq!(ids(&d, "added"), ["pod/a/client|new|http"]);
        assert_eq!(ids(&d, "changed"), ["pod/a/client|flaky|http", "pod/a/client|slow|http"], "steady is noise");
        let reasons = |i: usize| d["changed"][i]["reasons"].as_array().unwrap().clone();
        assert_eq!(reasons(0), vec![json!({"reason": "error_rate", "before": 0.0, "after": 0.4})]);
        assert_eq!(reasons(1), vec![json!({"reason": "latency_p99", "before": 2.0, "after": 60.0})]);
    }

    #[test]
    fn one_slow_answer_among_few_is_no_latency_change() {
        let with = |p95_us: u64, p99_us: u64| {
            let mut e = l7("steady", 20, 0, p99_us);
            e["latency_us"]["p95"] = json!(p95_us);
            map(vec![e])
        };
        let t = Thresholds::default();
        // Of twenty requests, only the slowest got slow: the p95 held.
        let d = diff(Window { map: &with(600, 700), secs: 2.0 }, Window { map: &with(650, 8_000), secs: 2.0 }, &t);
        assert!(d["changed"].as_array().unwrap().is_empty(), "{d}");
        // Every request got slow: the p95 moved too.
        let d = diff(Window { map: &with(600, 700), secs: 2.0 }, Window { map: &with(50_000, 57_000), secs: 2.0 }, &t);
        assert_eq!(d["changed"][0]["reasons"][0]["reason"], "latency_p99");
    }

    #[test]
    fn rates_are_per_second_of_each_window_and_small_edges_are_noise() {
        let edge = |requests| l7("svc", requests, 0, 1_000);
        let (before, after) = (map(vec![edge(100)]), map(vec![edge(100)]));
        let d = diff(Window { map: &before, secs: 10.0 }, Window { map: &after, secs: 2.0 }, &Thresholds::default());
        let why = &d["changed"][0]["reasons"];
        assert_eq!(why[0], json!({"reason": "request_rate", "before": 10.0, "after": 50.0}));
        // Five requests are too few to say anything about.
        let (before, after) = (map(vec![edge(5)]), map(vec![l7("svc", 5, 5, 90_000)]));
        let d = diff(Window { map: &before, secs: 1.0 }, Window { map: &after, secs: 1.0 }, &Thresholds::default());
        assert!(d["changed"].as_array().unwrap().is_empty(), "{d}");
    }

    #[test]
    fn l4_edges_compare_bytes_retransmissions_and_handshakes() {
        let l4 = |bytes: u64, packets: u64, retransmits: u64, rtt_us: u64| {
            json!({"source": "pod/a/client", "target": "pod/a/db", "l4": "tcp",
                   "to_server": {"packets": packets / 2, "bytes": bytes / 2},
                   "to_client": {"packets": packets / 2, "bytes": bytes / 2},
                   "tcp_health": {"retransmits_to_server": 0, "retransmits_to_client": retransmits,
                                  "failed_connects": 0, "handshakes": 2, "handshake_rtt_sum_us": 2 * rtt_us}})
        };
        let before = map(vec![l4(1 << 20, 1000, 0, 100)]);
        let after = map(vec![l4(1 << 20, 1000, 40, 5_100)]);
        let d = diff(Window { map: &before, secs: 1.0 }, Window { map: &after, secs: 1.0 }, &Thresholds::default());
        let why: Vec<&str> =
            d["changed"][0]["reasons"].as_array().unwrap().iter().map(|r| r["reason"].as_str().unwrap()).collect();
        assert_eq!(why, ["retransmits", "handshake_rtt"]);
        assert_eq!(d["changed"][0]["id"], "pod/a/client|pod/a/db|tcp");
    }
}

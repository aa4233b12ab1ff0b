//! Grafana's Node Graph panel through the Node Graph API data source
//! (`hamedkarbasi93-nodegraphapi-datasource`): `GET /api/graph/fields`
//! names the fields, `GET /api/graph/data?…` answers with the map that
//! `/api/map` gives for the same query, and the data source's health check
//! is `/api/health`, which the service already answers.
//!
//! Nodes carry a title and subtitle, the requests (or bytes) they serve
//! per second as the main stat, their error share, arcs that sum to 1
//! (answered and failed), and details; edges the same numbers as the map.

use serde_json::{Value, json};
use std::collections::HashMap;

/// `GET /api/graph/fields`.
pub fn fields() -> Value {
    let f = |name: &str, ty: &str, display: &str| json!({"field_name": name, "type": ty, "displayName": display});
    json!({
        "nodes_fields": [
            {"field_name": "id", "type": "string"},
            f("title", "string", "Workload"),
            f("subtitle", "string", "Namespace"),
            f("mainstat", "string", "Served"),
            f("secondarystat", "string", "Errors"),
            {"field_name": "arc__ok", "type": "number", "color": "green", "displayName": "Answered"},
            {"field_name": "arc__failed", "type": "number", "color": "red", "displayName": "Failed"},
            f("detail__kind", "string", "Kind"),
            f("detail__node", "string", "Node"),
            f("detail__requests", "number", "Requests served"),
            f("detail__errors", "number", "Errors"),
        ],
        "edges_fields": [
            {"field_name": "id", "type": "string"},
            {"field_name": "source", "type": "string"},
            {"field_name": "target", "type": "string"},
            f("mainstat", "string", "Traffic"),
            f("secondarystat", "string", "Errors"),
            f("detail__protocol", "string", "Protocol"),
            f("detail__requests", "number", "Requests"),
            f("detail__errors", "number", "Errors"),
            f("detail__bytes", "number", "Bytes"),
            f("detail__p99_ms", "number", "p99 latency (ms)"),
        ],
    })
}

/// What a node serves: requests and failures (L7), or handshakes and
/// failed connects (L4).
#[derive(Default)]
struct Served {
    total: f64,
    failed: f64,
    rate: f64,
}

fn num(v: &Value, path: &[&str]) -> f64 {
    path.iter().fold(v, |v, k| &v[*k]).as_f64().unwrap_or(0.0)
}

/// `GET /api/graph/data`: a map (in `/api/map`'s shape) as the panel's
/// nodes and edges.
pub fn data(map: &Value) -> Value {
    let l7 = map["edges"].as_array().is_some_and(|e| e.iter().any(|e| e.get("protocol").is_some()));
    let mut served: HashMap<&str, Served> = HashMap::new();
    let empty = Vec::new();
    let edges: Vec<Value> = map["edges"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|e| {
            let (source, target) = (e["source"].as_str().unwrap_or(""), e["target"].as_str().unwrap_or(""));
            let (total, failed, rate) = if l7 {
                (num(e, &["requests"]), num(e, &["errors"]), num(e, &["rate", "requests_per_sec"]))
            } else {
                let rate =
                    num(e, &["rate", "to_server", "bytes_per_sec"]) + num(e, &["rate", "to_client", "bytes_per_sec"]);
                (num(e, &["tcp_health", "handshakes"]), num(e, &["tcp_health", "failed_connects"]), rate)
            };
            let s = served.entry(target).or_default();
            (s.total, s.failed, s.rate) = (s.total + total, s.failed + failed, s.rate + rate);
            let bytes = if l7 {
                num(e, &["request_bytes"]) + num(e, &["response_bytes"])
            } else {
                num(e, &["to_server", "bytes"]) + num(e, &["to_client", "bytes"])
            };
            let kind = e.get("protocol").or_else(|| e.get("l4")).and_then(Value::as_str).unwrap_or("");
            let id = e["id"].as_str().map_or_else(|| format!("{source}|{target}|{kind}"), str::to_string);
            json!({
                "id": id,
                "source": source,
                "target": target,
                "mainstat": if l7 { format!("{rate:.2} req/s") } else { format!("{} B/s", rate.round()) },
                "secondarystat": format!("{:.1} % errors", share(failed, total) * 100.0),
                "detail__protocol": kind,
                "detail__requests": if l7 { total } else { num(e, &["flows"]) },
                "detail__errors": failed,
                "detail__bytes": bytes,
                "detail__p99_ms": num(e, &["latency_us", "p99"]) / 1000.0,
            })
        })
        .collect();
    let nodes: Vec<Value> = map["nodes"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|n| {
            let id = n["id"].as_str().unwrap_or("");
            let s = served.get(id);
            let (total, failed, rate) = s.map_or((0.0, 0.0, 0.0), |s| (s.total, s.failed, s.rate));
            let failed_share = share(failed, total);
            json!({
                "id": id,
                "title": n["name"].as_str().unwrap_or(id),
                "subtitle": n["namespace"].as_str().unwrap_or(""),
                "mainstat": if l7 { format!("{rate:.2} req/s") } else { format!("{} B/s", rate.round()) },
                "secondarystat": format!("{:.1} % errors", failed_share * 100.0),
                "arc__ok": 1.0 - failed_share,
                "arc__failed": failed_share,
                "detail__kind": n["kind"].as_str().unwrap_or(""),
                "detail__node": n["node"].as_str().unwrap_or(""),
                "detail__requests": total,
                "detail__errors": failed,
            })
        })
        .collect();
    json!({"nodes": nodes, "edges": edges})
}

/// `part` of `whole`, 0 when there is no whole.
fn share(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { (part / whole).clamp(0.0, 1.0) } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arcs_sum_to_one_and_edges_keep_the_maps_numbers() {
        let map = json!({
            "nodes": [{"id": "a", "name": "a", "namespace": "n", "kind": "pod"},
                      {"id": "b", "name": "b", "namespace": "n", "kind": "pod"}],
            "edges": [{"id": "a|b|http", "source": "a", "target": "b", "protocol": "http", "requests": 8, "errors": 2,
                       "rate": {"requests_per_sec": 0.8}, "latency_us": {"p99": 1500}}]
        });
        let d = data(&map);
        for n in d["nodes"].as_array().unwrap() {
            let sum = n["arc__ok"].as_f64().unwrap() + n["arc__failed"].as_f64().unwrap();
            assert!((sum - 1.0).abs() < 1e-9, "{n}");
        }
        assert_eq!(d["nodes"][1]["arc__failed"], json!(0.25));
        assert_eq!(d["edges"][0]["detail__requests"], json!(8.0));
        assert_eq!(d["edges"][0]["detail__p99_ms"], json!(1.5));
        let declared = fields();
        let names: Vec<&str> =
            declared["nodes_fields"].as_array().unwrap().iter().map(|f| f["field_name"].as_str().unwrap()).collect();
        for key in d["nodes"][0].as_object().unwrap().keys() {
            assert!(names.contains(&key.as_str()), "{key} is not among the fields");
        }
    }
}

//! Service-graph metrics read by a real Prometheus (Debian's `prometheus`):
//! it scrapes a `trawl serve` replaying the demo capture with its
//! inventory, and PromQL over its HTTP API gives each L7 edge's requests
//! and failures as the map shows them, summed per workload, and a p99 within
//! one histogram bucket of the map's. `promtool` lints the exposition.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{self, Terminated, tools_or_skip};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// Each demo pod's workload, worked out here from the inventory's owner
/// references (a ReplicaSet's Deployment is its name less the
/// `pod-template-hash`), independently of trawl.
pub(crate) fn workloads_of_pods() -> BTreeMap<String, String> {
    let inventory = support::project_root().join("examples/demo/inventory.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(inventory).unwrap()).unwrap();
    let mut out = BTreeMap::new();
    for item in doc["items"].as_array().unwrap().iter().filter(|i| i["kind"] == "Pod") {
        let meta = &item["metadata"];
        let owner = &meta["ownerReferences"][0];
        let name = owner["name"].as_str().unwrap();
        let workload = match owner["kind"].as_str().unwrap() {
            "ReplicaSet" => {
                let hash = meta["labels"]["pod-template-hash"].as_str().unwrap();
                name.strip_suffix(&format!("-{hash}")).unwrap().to_string()
            }
            _ => name.to_string(),
        };
        out.insert(format!("pod/{}/{}", meta["namespace"].as_str().unwrap(), meta["name"].as_str().unwrap()), workload);
    }
    out
}

/// Prometheus' answer to a PromQL instant query.
fn query(port: u16, promql: &str) -> Value {
    let out = Command::new("curl")
        .args(["-s", "--data-urlencode", &format!("query={promql}")])
        .arg(format!("http://127.0.0.1:{port}/api/v1/query"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// A PromQL instant query's vector, keyed by the labels asked for.
fn promql(port: u16, promql: &str, keys: &[&str]) -> BTreeMap<Vec<String>, f64> {
    query(port, promql)["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let key = keys.iter().map(|k| r["metric"][*k].as_str().unwrap_or("").to_string()).collect();
            (key, r["value"][1].as_str().unwrap().parse::<f64>().unwrap())
        })
        .collect()
}

#[test]
fn prometheus_reads_the_maps_requests_failures_and_latency_per_workload() {
    if !tools_or_skip(&["prometheus", "promtool"]) {
        return;
    }
    let dir = support::scratch("prometheus");
    let (_server, port) = support::serve_demo(&["--speed", "max"]);
    // The replay is over when its records stop changing.
    support::wait_for_replay_end(|path| support::get_json(port, path));

    // The exposition is valid as Prometheus' own linter reads it.
    let text = Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{port}/metrics")]).output().unwrap();
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin.take().unwrap().write_all(&text.stdout).unwrap();
    let lint = lint.wait_with_output().unwrap();
    let complaints = String::from_utf8_lossy(&lint.stdout).to_string() + &String::from_utf8_lossy(&lint.stderr);
    // promtool also offers advice on naming; only errors fail.
    assert!(lint.status.success() || !complaints.contains("error"), "promtool: {complaints}");

    let prom_port = support::free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: trawl\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let _prometheus = Terminated(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // What the map shows, summed per client and server workload.
    let map = support::get_json(port, "/api/map?map=l7");
    let pods = workloads_of_pods();
    let workload = |id: &str| pods.get(id).cloned().unwrap_or_else(|| id.rsplit('/').next().unwrap().to_string());
    let mut want: BTreeMap<Vec<String>, (f64, f64)> = BTreeMap::new();
    let mut p99s = BTreeMap::new();
    for e in map["edges"].as_array().unwrap() {
        let key = vec![
            workload(e["source"].as_str().unwrap()),
            workload(e["target"].as_str().unwrap()),
            e["protocol"].as_str().unwrap().to_string(),
        ];
        let w = want.entry(key.clone()).or_default();
        w.0 += e["requests"].as_f64().unwrap();
        w.1 += e["errors"].as_f64().unwrap();
        p99s.insert(key, e["latency_us"]["p99"].as_f64().unwrap() / 1e6);
    }
    assert!(want.len() >= 4, "the demo has HTTP, Redis and DNS edges: {want:?}");
    let by = ["client", "server", "protocol"];
    let total = "sum by (client, server, protocol) (traces_service_graph_request_total)";
    support::wait_for("Prometheus to scrape every series", || promql(prom_port, total, &by).len() == want.len());
    let requests = promql(prom_port, total, &by);
    let failed =
        promql(prom_port, "sum by (client, server, protocol) (traces_service_graph_request_failed_total)", &by);
    for (key, (req, err)) in &want {
        assert_eq!(requests.get(key), Some(req), "requests of {key:?}: {requests:?}");
        assert_eq!(failed.get(key), Some(err), "failures of {key:?}: {failed:?}");
    }
    assert!(want.values().any(|w| w.1 > 0.0), "the demo has failed requests");

    // The p99 Prometheus reads from the histogram is in the map's p99's
    // bucket, or within a bucket's width of it.
    let q = "histogram_quantile(0.99, sum by (le, client, server, protocol) (traces_service_graph_request_server_seconds_bucket))";
    let quantiles = promql(prom_port, q, &by);
    let bounds = trawl_core::servicegraph::LATENCY_BUCKETS;
    for (key, p99) in &p99s {
        let got = quantiles[key];
        let upper = bounds.iter().position(|b| p99 <= b).unwrap();
        let width = bounds[upper] - if upper == 0 { 0.0 } else { bounds[upper - 1] };
        assert!((got - p99).abs() <= width, "{key:?}: Prometheus' p99 {got} s, the map's {p99} s (bucket {width} s)");
    }
    // Redis is a database to Tempo's conventions; HTTP has no type.
    let types = promql(prom_port, "traces_service_graph_request_total", &["protocol", "connection_type"]);
    assert!(types.keys().any(|k| k == &["redis".to_string(), "database".to_string()]), "{types:?}");
    assert!(types.keys().any(|k| k == &["http".to_string(), String::new()]), "{types:?}");

    // Every query of the shipped Grafana dashboard runs on these series.
    let dashboard = support::project_root().join("deploy/grafana/trawl-service-graph.json");
    let dashboard: Value = serde_json::from_slice(&std::fs::read(dashboard).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    for expr in exprs {
        let q = expr.replace("$__rate_interval", "1m").replace("$namespace", ".*").replace("$protocol", ".*");
        let v = query(prom_port, &q);
        assert_eq!(v["status"], "success", "{q}: {v}");
    }
}

/// Every `expr` of a dashboard's panels, rows and targets.
fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                match (k.as_str(), x.as_str()) {
                    ("expr", Some(e)) => out.push(e.to_string()),
                    _ => collect_exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

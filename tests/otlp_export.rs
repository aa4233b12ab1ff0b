//! OTLP export read by a real OTLP receiver built from the OpenTelemetry
//! protobufs (Python `opentelemetry-proto`, OTLP/HTTP): `trawl serve
//! --otlp-endpoint` on the demo pushes each workload as a resource with its
//! `k8s.*` attributes, the semantic-convention metric names, and the map's
//! numbers per workload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{self, Terminated};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};

#[test]
fn a_real_otlp_receiver_gets_the_maps_numbers_with_k8s_resources_and_semconv_names() {
    let Some(py) = support::python_or_skip("opentelemetry.proto") else { return };
    let dir = support::scratch("otlp");
    let received = dir.join("received.jsonl");
    let receiver_port = support::free_port();
    let _receiver = Terminated(
        Command::new(&py)
            .arg(support::project_root().join("tests/e2e/otlp_receiver.py"))
            .args(["--http-port", &receiver_port.to_string()])
            .stdout(std::fs::File::create(&received).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    support::wait_for("the OTLP receiver", || std::net::TcpStream::connect(("127.0.0.1", receiver_port)).is_ok());
    let endpoint = format!("http://127.0.0.1:{receiver_port}");
    let (_server, port) = support::serve_demo(&[
        "--speed",
        "max",
        "--otlp-endpoint",
        &endpoint,
        "--otlp-interval",
        "1",
        "--cluster-name",
        "lab",
    ]);
    support::wait_for_replay_end(|path| support::get_json(port, path));
    let map = support::get_json(port, "/api/map?map=l7");

    // The newest push (every data point of one push has its time).
    let newest = || -> Vec<Value> {
        let lines = support::json_lines(&std::fs::read(&received).unwrap_or_default());
        let last = lines.iter().filter_map(|l| l["time_unix_nano"].as_u64()).max().unwrap_or(0);
        lines.into_iter().filter(|l| l["time_unix_nano"].as_u64() == Some(last)).collect()
    };
    // What the map shows, summed per client and server workload.
    let pods = crate::service_graph_metrics::workloads_of_pods();
    let workload = |id: &str| pods.get(id).cloned().unwrap_or_else(|| id.rsplit('/').next().unwrap().to_string());
    let mut want: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for e in map["edges"].as_array().unwrap() {
        let key = (
            workload(e["source"].as_str().unwrap()),
            workload(e["target"].as_str().unwrap()),
            e["protocol"].as_str().unwrap().to_string(),
        );
        *want.entry(key).or_default() += e["requests"].as_u64().unwrap();
    }
    // trawl.requests per (client, server, protocol): the reporting side is
    // the resource, the other end the peer.
    let requests = |push: &[Value]| -> BTreeMap<(String, String, String), u64> {
        let mut got = BTreeMap::new();
        for p in push.iter().filter(|p| p["metric"] == "trawl.requests") {
            let (me, peer) = (
                p["resource"]["service.name"].as_str().unwrap(),
                p["attributes"]["trawl.peer.workload.name"].as_str().unwrap(),
            );
            let protocol = p["attributes"]["trawl.protocol"].as_str().unwrap().to_string();
            let client_side = p["attributes"].get("server.address").is_some();
            let (client, server) = if client_side { (me, peer) } else { (peer, me) };
            *got.entry((client.to_string(), server.to_string(), protocol)).or_default() += p["value"].as_u64().unwrap();
        }
        got
    };
    support::wait_for("a push with every request", || requests(&newest()) == want);
    let push = newest();

    // Semantic-convention names, each on the side the conventions say.
    let find = |metric: &str, service: &str| {
        push.iter()
            .find(|p| p["metric"] == metric && p["resource"]["service.name"] == service)
            .unwrap_or_else(|| panic!("{metric} of {service}"))
    };
    let http = find("http.server.request.duration", "api");
    assert_eq!(http["type"], "histogram");
    assert_eq!(http["unit"], "s");
    assert_eq!(http["temporality"], "cumulative");
    let resource = &http["resource"];
    assert_eq!(
        (&resource["k8s.deployment.name"], &resource["k8s.namespace.name"]),
        (&"api".into(), &"shop".into()),
        "{resource}"
    );
    assert_eq!(resource["k8s.cluster.name"], "lab");
    let redis = find("db.client.operation.duration", "frontend");
    assert_eq!(
        (&redis["attributes"]["db.system.name"], &redis["attributes"]["server.address"]),
        (&"redis".into(), &"cart-redis.shop".into())
    );
    let dns = find("trawl.request.duration", "coredns");
    assert_eq!(dns["resource"]["k8s.namespace.name"], "kube-system");
    // Failures are the histogram's points with error.type, as the map
    // counts them.
    let failed_http: u64 = push
        .iter()
        .filter(|p| p["metric"] == "http.server.request.duration" && p["attributes"]["error.type"].is_string())
        .map(|p| p["count"].as_u64().unwrap())
        .sum();
    let map_http_errors: u64 = map["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["protocol"] == "http")
        .map(|e| e["errors"].as_u64().unwrap())
        .sum();
    assert_eq!(failed_http, map_http_errors);
    let bounds = &http["explicit_bounds"];
    assert_eq!(http["bucket_counts"].as_array().unwrap().len(), bounds.as_array().unwrap().len() + 1);

    let metrics = Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{port}/metrics")]).output().unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.lines().any(|l| l.starts_with("trawl_otlp_exports_total ") && !l.ends_with(" 0")),
        "pushes are counted"
    );
}

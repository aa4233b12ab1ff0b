//! The graph service against the CLI on the demo capture (real nginx,
//! redis-server and dnsmasq with an inventory): per grouping the same L4
//! nodes and edge totals as `trawl replay --emit map`; L7 edges that add up
//! the records of `--emit records`; rates over the window; request and
//! response sizes switched off; capture filters that remove L7 edges and
//! never L4 ones; KFL2 filters checked against the same predicate written
//! in Rust over the records; invalid filters with their positions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use trawl_host::replay::{ReplayOptions, load_identity};
use trawl_host::serve::{ServeOptions, feed};
use trawl_host::service::{CaptureFilter, Graph, GraphState, SharedState, Subscription, SubscriptionSpec, lock};

fn demo() -> (std::path::PathBuf, std::path::PathBuf) {
    let d = support::project_root().join("examples/demo");
    (d.join("demo.pcap"), d.join("inventory.json"))
}

fn service(filter: CaptureFilter) -> SharedState {
    let (pcap, inventory) = demo();
    let mut replay = ReplayOptions::new(&pcap);
    replay.inventories = vec![inventory];
    let identity = Arc::new(load_identity(&replay.inventories).unwrap());
    let state: SharedState = Graph::new(GraphState::new(identity, filter.clone(), 10));
    let opts = ServeOptions {
        replay,
        speed: None,
        repeat: false,
        api: trawl_host::service::auth::Access::loopback("127.0.0.1:0".parse().unwrap()),
        capture_filter: filter,
    };
    feed(&opts, &state).unwrap();
    state
}

fn snapshot(state: &SharedState, spec: SubscriptionSpec) -> Value {
    let mut sub = Subscription::new(spec).unwrap();
    // A filtered map reads the record log a few milliseconds at a time.
    while !sub.caught_up(&lock(state)) {
        sub.fold(&lock(state));
    }
    sub.snapshot(&lock(state))
}

fn spec(map: &str, group_by: &str, filter: &str) -> SubscriptionSpec {
    serde_json::from_value(serde_json::json!({ "map": map, "group_by": group_by, "filter": filter })).unwrap()
}

fn cli(args: &[&str]) -> Vec<Value> {
    let (pcap, inventory) = demo();
    let mut all = vec![pcap.to_str().unwrap(), "--inventory", inventory.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut a = vec!["replay"];
    a.extend(all);
    let out = support::run_trawl(&a);
    assert!(out.status.success());
    if args.contains(&"map") {
        // The map is one pretty-printed document.
        return vec![serde_json::from_slice(&out.stdout).unwrap()];
    }
    support::json_lines(&out.stdout)
}

fn ids(v: &Value, key: &str) -> BTreeSet<String> {
    v[key].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn l4_maps_match_the_cli_for_every_grouping() {
    let state = service(CaptureFilter::default());
    for group in ["pod", "namespace", "node"] {
        let want = cli(&["--emit", "map", "--group-by", group]).remove(0);
        let got = snapshot(&state, spec("l4", group, ""));
        assert_eq!(ids(&got, "nodes"), ids(&want, "nodes"), "{group}: nodes");
        let edges = |v: &Value| -> BTreeMap<String, (u64, u64, u64, u64)> {
            v["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let k = format!(
                        "{}|{}|{}",
                        e["source"].as_str().unwrap(),
                        e["target"].as_str().unwrap(),
                        e["l4"].as_str().unwrap()
                    );
                    let n = |p: &str, f: &str| e[p][f].as_u64().unwrap();
                    (
                        k,
                        (
                            n("to_server", "packets"),
                            n("to_server", "bytes"),
                            n("to_client", "packets"),
                            n("to_client", "bytes"),
                        ),
                    )
                })
                .collect()
        };
        assert_eq!(edges(&got), edges(&want), "{group}: edge totals");
        assert_eq!(ids(&got, "edges"), edges(&want).keys().cloned().collect(), "{group}: edge ids");
    }
}

/// Node id of a record's end under pod grouping.
fn node_id(end: &Value) -> String {
    let w = &end["workload"];
    let (kind, ns, name) = (w["kind"].as_str().unwrap(), w["namespace"].as_str().unwrap(), w["name"].as_str().unwrap());
    if kind == "external" { format!("{ns}/{name}") } else { format!("{kind}/{ns}/{name}") }
}

fn edge_id(r: &Value) -> String {
    format!("{}|{}|{}", node_id(&r["src"]), node_id(&r["dst"]), r["protocol"].as_str().unwrap())
}

#[test]
fn l7_edges_add_up_the_records() {
    let state = service(CaptureFilter::default());
    let records = cli(&["--emit", "records"]);
    let mut want: BTreeMap<String, (u64, u64, u64, u64)> = BTreeMap::new();
    for r in &records {
        let e = want.entry(edge_id(r)).or_default();
        e.0 += 1;
        e.1 += u64::from(r["error"].as_bool().unwrap());
        e.2 += r["request_size"].as_u64().unwrap();
        e.3 += r["response_size"].as_u64().unwrap();
    }
    let got = snapshot(&state, spec("l7", "pod", ""));
    let got: BTreeMap<String, (u64, u64, u64, u64)> = got["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let n = |k: &str| e[k].as_u64().unwrap();
            (
                e["id"].as_str().unwrap().to_string(),
                (n("requests"), n("errors"), n("request_bytes"), n("response_bytes")),
            )
        })
        .collect();
    assert_eq!(got, want);
    // Every edge has latency percentiles in order, and a legend entry.
    let v = snapshot(&state, spec("l7", "pod", ""));
    for e in v["edges"].as_array().unwrap() {
        let l = &e["latency_us"];
        assert!(l["p50"].as_u64() <= l["p95"].as_u64() && l["p95"].as_u64() <= l["p99"].as_u64(), "{e}");
    }
    let legend: BTreeSet<&str> =
        v["legend"].as_array().unwrap().iter().map(|l| l["protocol"].as_str().unwrap()).collect();
    assert_eq!(legend, BTreeSet::from(["dns", "http", "redis"]));
}

#[test]
fn sizes_and_rates_follow_the_options() {
    let state = service(CaptureFilter::default());
    let mut s = spec("l4", "pod", "");
    let both = snapshot(&state, s.clone());
    s.include_request = false;
    let responses = snapshot(&state, s.clone());
    s.include_request = true;
    s.include_response = false;
    let requests = snapshot(&state, s.clone());
    for (i, e) in both["edges"].as_array().unwrap().iter().enumerate() {
        let (ts, tc) = (e["to_server"]["bytes"].as_f64().unwrap(), e["to_client"]["bytes"].as_f64().unwrap());
        assert_eq!(e["bytes"].as_f64().unwrap(), ts + tc);
        assert_eq!(responses["edges"][i]["bytes"].as_f64().unwrap(), tc);
        assert_eq!(requests["edges"][i]["bytes"].as_f64().unwrap(), ts);
    }
    // L7: request and response bytes the same way.
    let mut s = spec("l7", "pod", "");
    s.include_response = false;
    for e in snapshot(&state, s).as_object().unwrap()["edges"].as_array().unwrap() {
        assert_eq!(e["bytes"].as_f64().unwrap(), e["request_bytes"].as_f64().unwrap());
    }
    // Rates: bytes per second over the 10 s window ending at the newest
    // packet; the demo capture is shorter than the window, so each rate is
    // the edge's total over 10 s.
    let mut s = spec("l4", "pod", "");
    s.mode = trawl_host::service::Mode::Rate;
    let rates = snapshot(&state, s);
    for (i, e) in rates["edges"].as_array().unwrap().iter().enumerate() {
        let total = both["edges"][i]["bytes"].as_f64().unwrap();
        let rate = e["bytes"].as_f64().unwrap();
        assert!((rate - total / 10.0).abs() < 1e-6, "{rate} vs {total}/10 for {}", e["id"]);
    }
}

#[test]
fn capture_filters_gate_l7_never_l4() {
    let open = service(CaptureFilter::default());
    let kube = service(CaptureFilter { namespaces: vec!["kube-system".into()], ..CaptureFilter::default() });
    let redis_only = service(CaptureFilter {
        pod_regex: Some(regex::Regex::new("^cart-redis").unwrap()),
        ..CaptureFilter::default()
    });
    for group in ["pod", "namespace", "node"] {
        let l4 = snapshot(&open, spec("l4", group, ""));
        assert_eq!(snapshot(&kube, spec("l4", group, "")), l4, "{group}: L4 is not filtered");
        assert_eq!(snapshot(&redis_only, spec("l4", group, "")), l4, "{group}: L4 is not filtered");
    }
    let edges = |s: &SharedState| ids(&snapshot(s, spec("l7", "pod", "")), "edges");
    assert!(edges(&open).len() > 2);
    assert_eq!(edges(&kube), BTreeSet::from(["pod/shop/frontend-7d9c|pod/kube-system/coredns-abc12|dns".to_string()]));
    assert!(
        edges(&redis_only).iter().all(|e| e.contains("cart-redis-0") && e.ends_with("|redis")),
        "{:?}",
        edges(&redis_only)
    );
    // Untargeted streams are never reassembled nor dissected: counted, and
    // the plugins that would have taken them (HTTP and Redis in `shop`)
    // are never called, while L4 above stayed exact.
    let st = lock(&kube);
    assert!(st.counters().streams_not_targeted > 0, "{:?}", st.counters());
    assert_eq!(st.counters().records_not_targeted, 0, "no record of an untargeted stream is even made");
    let calls = |name: &str| st.plugins().iter().find(|p| p.name == name).map(|p| (p.calls, p.bytes_in));
    assert_eq!(calls("http"), Some((0, 0)), "{:?}", st.plugins());
    assert_eq!(calls("redis"), Some((0, 0)), "{:?}", st.plugins());
    assert!(calls("dns").is_some_and(|(c, b)| c > 0 && b > 0), "{:?}", st.plugins());
    let open = lock(&open);
    assert_eq!(open.counters().streams_not_targeted, 0);
    for name in ["http", "dns", "redis"] {
        assert!(open.plugins().iter().any(|p| p.name == name && p.calls > 0), "{name}: {:?}", open.plugins());
    }
}

type Predicate = fn(&Value) -> bool;

fn s<'a>(r: &'a Value, path: &[&str]) -> &'a str {
    path.iter().fold(r, |v, k| &v[*k]).as_str().unwrap_or("")
}

#[test]
fn kfl2_filters_select_the_right_edges() {
    let state = service(CaptureFilter::default());
    let records = cli(&["--emit", "records"]);
    let cases: Vec<(&str, Predicate)> = vec![
        // protocol flags
        ("dns", |r| r["protocol"] == "dns"),
        ("redis || dns", |r| r["protocol"] == "redis" || r["protocol"] == "dns"),
        ("udp", |r| r["transport"] == "udp"),
        ("tcp && !redis", |r| r["transport"] == "tcp" && r["protocol"] != "redis"),
        ("dns && tcp", |r| r["transport"] == "tcp" && r["protocol"] == "dns"),
        ("protocol == 'http'", |r| r["protocol"] == "http"),
        // record fields
        ("http && status_code >= 400", |r| r["protocol"] == "http" && r["status_code"].as_i64() >= Some(400)),
        ("method == 'POST'", |r| r["method"] == "POST"),
        ("path.startsWith('/static')", |r| r["fields"]["path"].as_str().is_some_and(|p| p.starts_with("/static"))),
        ("url.contains('healthz')", |r| r["fields"]["url"].as_str().unwrap_or(s(r, &["summary"])).contains("healthz")),
        ("response_size > 300", |r| r["response_size"].as_u64() > Some(300)),
        ("elapsed_time > 0 && request_size > 0", |r| {
            r["elapsed_us"].as_u64() > Some(0) && r["request_size"].as_u64() > Some(0)
        }),
        ("timestamp > timestamp('2020-01-01T00:00:00Z') && timestamp < now()", |_| true),
        ("duration('1s') > duration('500ms') && error", |r| r["error"] == true),
        // endpoints and workloads
        ("src.ip == '10.244.9.9'", |r| r["src"]["ip"] == "10.244.9.9"),
        ("dst.port == 6379", |r| r["dst"]["port"] == 6379),
        ("src.pod.name == 'api-5f6b'", |r| s(r, &["src", "workload", "name"]) == "api-5f6b"),
        ("dst.namespace == 'kube-system'", |r| s(r, &["dst", "workload", "namespace"]) == "kube-system"),
        ("'kube-system' in namespaces", |r| {
            s(r, &["src", "workload", "namespace"]) == "kube-system"
                || s(r, &["dst", "workload", "namespace"]) == "kube-system"
        }),
        ("size(pods) == 2", |r| {
            s(r, &["src", "workload", "kind"]) == "pod" && s(r, &["dst", "workload", "kind"]) == "pod"
        }),
        ("src.name.matches('^front') && dst.pod.namespace == 'shop'", |r| {
            s(r, &["src", "workload", "name"]).starts_with("front") && s(r, &["dst", "workload", "namespace"]) == "shop"
        }),
        // the virtual host asked for (HTTP/1 Host, HTTP/2 :authority)
        ("authority.endsWith(':8080')", |r| r["fields"]["host"].as_str().is_some_and(|h| h.ends_with(":8080"))),
        ("node_name == 'node-b'", |r| {
            let dst = s(r, &["dst", "workload", "node"]);
            (if dst.is_empty() { s(r, &["src", "workload", "node"]) } else { dst }) == "node-b"
        }),
        // how the ends were resolved (Kubeshark's *_resolution_status)
        ("dst_resolution_status == 'unresolved'", |r| r["dst"]["resolution_status"] == "unresolved"),
        ("src.resolution_status == 'resolved' && dst.resolution_status == 'resolved'", |r| {
            r["src"]["resolution_status"] == "resolved" && r["dst"]["resolution_status"] == "resolved"
        }),
        // plugin fields, with no host change
        ("redis && redis_key.startsWith('session:')", |r| {
            r["protocol"] == "redis" && r["fields"]["redis_key"].as_str().is_some_and(|k| k.starts_with("session:"))
        }),
        ("dns && dns_rcode_name != 'NOERROR' && size(dns_questions) > 0", |r| {
            r["protocol"] == "dns" && r["fields"]["dns_rcode_name"] != "NOERROR"
        }),
        ("http && map_get(request_headers, 'user-agent').startsWith('curl')", |r| {
            r["protocol"] == "http"
                && r["fields"]["request_headers"]["user-agent"].as_str().is_some_and(|u| u.starts_with("curl"))
        }),
        ("grpc || kafka", |_| false),
    ];
    assert!(cases.len() >= 15);
    for (filter, pred) in cases {
        let want: BTreeSet<String> = records.iter().filter(|r| pred(r)).map(edge_id).collect();
        let got = ids(&snapshot(&state, spec("l7", "pod", filter)), "edges");
        assert_eq!(got, want, "filter {filter:?}");
    }
}

#[test]
fn invalid_filters_are_errors_with_positions() {
    for filter in ["status_code ==", "dns &&& http", "src.ip == '10.0.0.1", "(dns"] {
        let err = Subscription::new(spec("l7", "pod", filter)).unwrap_err();
        let trawl_host::service::subscription::SpecError::Filter(e) = err else { panic!("{filter}") };
        assert_eq!(e.line, 1, "{filter}: {e}");
        assert!(e.column >= 1 && e.column as usize <= filter.len() + 1, "{filter}: {e}");
        assert!(!e.message.is_empty());
    }
    assert!(Subscription::new(spec("l7", "galaxy", "")).is_err());
}

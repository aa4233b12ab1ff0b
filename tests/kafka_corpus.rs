//! Kafka records against tshark's `kafka.tsv`: every request with its api
//! key, version, correlation id and client id, paired with its response as
//! tshark pairs them; and the topic and group names and the response error
//! codes deepflow's results give.
//!
//! tshark decodes request headers of every version (its body decoding stops
//! at older versions, which is why the header fields are what is compared).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use support::{records, rows, split};

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

type Exchange = (i64, i64, i64, String, bool);

fn tshark(tsv: &Path) -> BTreeMap<String, Vec<Exchange>> {
    let mut out: BTreeMap<String, Vec<Exchange>> = BTreeMap::new();
    let all = rows(tsv);
    // Responses by (client endpoint, correlation id): tshark leaves
    // `response_frame` empty in these captures, so pair the way Kafka does.
    let mut responses = std::collections::BTreeSet::new();
    for r in &all {
        // tshark 4.0 does not always name the api of a flexible-version
        // response, but it always reads its correlation id.
        if split(&r["kafka.request_key"]).is_empty() {
            let client =
                format!("{}:{}", if r["ip.dst"].is_empty() { &r["ipv6.dst"] } else { &r["ip.dst"] }, r["tcp.dstport"]);
            for c in split(&r["kafka.correlation_id"]) {
                responses.insert((client.clone(), c));
            }
        }
    }
    for r in all {
        let keys = split(&r["kafka.request_key"]);
        if keys.is_empty() {
            continue;
        }
        let versions = split(&r["kafka.api_version"]);
        let corrs = split(&r["kafka.correlation_id"]);
        let clients = split(&r["kafka.client_id"]);
        let client =
            format!("{}:{}", if r["ip.src"].is_empty() { &r["ipv6.src"] } else { &r["ip.src"] }, r["tcp.srcport"]);
        for (i, k) in keys.iter().enumerate() {
            out.entry(client.clone()).or_default().push((
                k.parse().unwrap(),
                versions.get(i).and_then(|v| v.parse().ok()).unwrap_or(-1),
                corrs.get(i).and_then(|v| v.parse().ok()).unwrap_or(-1),
                clients.get(i).cloned().unwrap_or_default(),
                corrs.get(i).is_some_and(|c| responses.contains(&(client.clone(), c.clone()))),
            ));
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

fn trawl(recs: &[Value]) -> BTreeMap<String, Vec<Exchange>> {
    let mut out: BTreeMap<String, Vec<Exchange>> = BTreeMap::new();
    for r in recs.iter().filter(|r| r["protocol"] == "kafka" && r["fields"]["kafka_api_key"].is_i64()) {
        let f = &r["fields"];
        out.entry(format!("{}:{}", r["src"]["ip"].as_str().unwrap(), r["src"]["port"])).or_default().push((
            f["kafka_api_key"].as_i64().unwrap(),
            f["kafka_api_version"].as_i64().unwrap(),
            f["kafka_correlation_id"].as_i64().unwrap(),
            f["kafka_client_id"].as_str().unwrap_or_default().to_string(),
            r["response_size"].as_u64().unwrap() > 0,
        ));
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

#[test]
fn kafka_requests_agree_with_tshark() {
    let Some(corpus) = support::corpus() else { return };
    let mut failures = Vec::new();
    let mut requests = 0;
    let mut checked_errors = 0;
    for capture in support::captures(&corpus) {
        let Some(tsv) = support::expected(&capture, "kafka.tsv") else {
            continue;
        };
        let expected = tshark(&tsv);
        let recs = records(&capture);
        let got = trawl(&recs);
        requests += expected.values().map(Vec::len).sum::<usize>();
        let name = capture.strip_prefix(&corpus).unwrap().display().to_string();
        for key in expected.keys().chain(got.keys()) {
            if expected.get(key) != got.get(key) {
                failures.push(format!("{name} {key}:\n  tshark {:?}\n  trawl  {:?}", expected.get(key), got.get(key)));
            }
        }
        // deepflow's results name the topic or group of each request.
        let result = capture.with_extension("result");
        if let Ok(text) = std::fs::read_to_string(&result) {
            for line in text.lines().filter(|l| l.contains("msg_type: Request")) {
                let field =
                    |k: &str| line.split(&format!("{k}: \"")).nth(1).and_then(|s| s.split('"').next()).unwrap_or("");
                let (topic, group) = (field("topic_name"), field("group_id"));
                let want = if !topic.is_empty() { topic } else { group };
                if want.is_empty() {
                    continue;
                }
                let found = recs.iter().any(|r| r["summary"].as_str().is_some_and(|s| s.split(',').any(|t| t == want)));
                if !found {
                    failures.push(format!("{name}: no record names {want:?} (deepflow: {line})"));
                }
            }
            // …and the error code of each response (top-level, or the
            // first non-zero per topic or partition).
            for line in text.lines().filter(|l| l.contains("msg_type: Response")) {
                let num = |k: &str| {
                    line.split(&format!("{k}: Some(")).nth(1).and_then(|s| s.split(')').next()?.parse::<i64>().ok())
                };
                // deepflow writes -2 (no Kafka error has that code) where
                // it did not decode the body: nothing to compare.
                let (Some(corr), Some(code)) = (num("correlation_id"), num("status_code").filter(|c| *c >= -1)) else {
                    continue;
                };
                let got = recs.iter().find(|r| r["fields"]["kafka_correlation_id"] == corr).map(|r| &r["status_code"]);
                if got != Some(&Value::from(code)) {
                    failures.push(format!("{name} correlation {corr}: deepflow error {code}, trawl {got:?}"));
                }
                checked_errors += 1;
            }
        }
    }
    println!("compared {requests} Kafka requests, {checked_errors} response error codes with deepflow");
    assert!(checked_errors >= 10, "{checked_errors}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

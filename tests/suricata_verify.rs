//! HTTP/2 transactions from `trawl replay --emit records` against the
//! suricata-verify `test.yaml` checks that describe them: every
//! `event_type: http` filter that names a URL (or a response header) must
//! match exactly `count` trawl records on the same capture.
//!
//! The filters are read from the YAML files as they are (a small reader for
//! their flat `key: value` blocks); only the transaction fields trawl also
//! reports are compared: URL, status, method, HTTP version, stream id,
//! response body length and response header values. Settings frames and
//! alert signatures have no trawl counterpart and are skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The `match:` fields of each `- filter:` block, with its `count`.
fn filters(yaml: &str) -> Vec<(usize, BTreeMap<String, String>)> {
    let mut out = Vec::new();
    for block in yaml.split("- filter:").skip(1) {
        let mut count = None;
        let mut fields = BTreeMap::new();
        for line in block.lines() {
            let Some((k, v)) = line.trim().split_once(": ") else { continue };
            let v = v.trim().trim_matches('"').to_string();
            match k {
                "count" => count = v.parse().ok(),
                _ => {
                    fields.insert(k.to_string(), v);
                }
            }
        }
        if let (Some(c), Some("http")) = (count, fields.get("event_type").map(String::as_str)) {
            out.push((c, fields));
        }
    }
    out
}

/// Where each test's capture is: its own directory, or the one its
/// README says it shares.
fn capture_of(dir: &Path) -> Option<PathBuf> {
    let shared = match dir.file_name()?.to_str()? {
        "http2-basic" | "http2-tx-log" => Some("http2-keywords"),
        "http2-upgrade" => Some("http2-keywords2"),
        _ => None,
    };
    let dir = shared.map_or_else(|| dir.to_path_buf(), |s| dir.with_file_name(s));
    support::captures(&dir).into_iter().next()
}

fn matches(r: &Value, fields: &BTreeMap<String, String>) -> Option<bool> {
    let f = &r["fields"];
    let mut compared = false;
    for (k, want) in fields {
        let got = match k.as_str() {
            "http.url" => f["url"].as_str().map(str::to_string),
            "http.status" => f["status_code"].as_i64().map(|c| c.to_string()),
            "http.http_method" => f["method"].as_str().map(str::to_string),
            "http.version" => f["http_version"].as_str().map(|v| v.trim_start_matches("HTTP/").to_string()),
            "http.http2.stream_id" => f["stream_id"].as_i64().map(|c| c.to_string()),
            "http.length" => f["response_body_size"].as_i64().map(|c| c.to_string()),
            k if k.starts_with("http.response_headers[") && k.ends_with("].value") => {
                let name_key = k.replace("].value", "].name");
                let Some(name) = fields.get(&name_key) else { continue };
                if name.starts_with(':') {
                    continue;
                }
                let headers = f["response_headers"].as_object()?;
                headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .and_then(|(_, v)| v.as_str())
                    .map(str::to_string)
            }
            _ => continue,
        };
        compared = true;
        if got.as_deref() != Some(want.as_str()) {
            return Some(false);
        }
    }
    compared.then_some(true)
}

#[test]
fn http_transactions_agree_with_suricata_verify() {
    let Some(corpus) = support::corpus() else { return };
    let root = corpus.join("public/suricata-verify");
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root).unwrap().flatten().map(|e| e.path()).collect();
    dirs.sort();
    for dir in dirs {
        let Ok(yaml) = std::fs::read_to_string(dir.join("test.yaml")) else { continue };
        let Some(capture) = capture_of(&dir) else { continue };
        let records = support::records(&capture);
        for (count, fields) in filters(&yaml) {
            // Stream 0 is the connection (SETTINGS, GOAWAY): suricata logs
            // it as a transaction, trawl's records are per request.
            if fields.get("http.http2.stream_id").is_some_and(|s| s == "0") {
                continue;
            }
            let results: Vec<Option<bool>> = records.iter().map(|r| matches(r, &fields)).collect();
            if results.iter().all(Option::is_none) {
                continue; // nothing trawl reports (settings frames and the like)
            }
            let got = results.iter().filter(|m| **m == Some(true)).count();
            checked += 1;
            if got != count {
                failures.push(format!("{}: {fields:?}: suricata {count}, trawl {got}", dir.display()));
            }
        }
    }
    assert!(checked >= 5, "only {checked} filters compared");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

//! The fields the first-party plugins declare (`Dissector::fields`, read
//! by the host at load through `trawl_fields`) are the fields their
//! records carry: over every capture of the corpus, no record has a field
//! its plugin did not declare, so the display filter never refuses a real
//! name as misspelt.

use crate::support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

#[test]
fn every_field_in_the_corpus_records_is_declared_by_its_plugin() {
    let Some(corpus) = support::corpus() else { return };
    let out = support::run_trawl(&["plugins", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plugins: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let declared: BTreeMap<String, BTreeSet<String>> = plugins
        .iter()
        .map(|p| {
            let fields = p["fields"].as_array().unwrap_or_else(|| panic!("{} declares no fields", p["name"]));
            (p["name"].as_str().unwrap().to_string(), fields.iter().map(|f| f.as_str().unwrap().to_string()).collect())
        })
        .collect();
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for capture in support::captures(&corpus) {
        let out = support::run_trawl(&["replay", capture.to_str().unwrap(), "--emit", "records"]);
        // 3: a capture that breaks off part-way; its records still count.
        assert!(matches!(out.status.code(), Some(0 | 3)), "{}", capture.display());
        for r in support::json_lines(&out.stdout) {
            let fields = r["fields"].as_object().into_iter().flat_map(|f| f.keys().cloned());
            seen.entry(r["protocol"].as_str().unwrap().to_string()).or_default().extend(fields);
        }
    }
    assert!(seen.len() >= 5, "records of every first-party protocol: {seen:?}");
    for (protocol, fields) in &seen {
        let undeclared: Vec<&String> = fields.difference(&declared[protocol]).collect();
        assert!(undeclared.is_empty(), "{protocol} records carry undeclared fields {undeclared:?}");
    }
}

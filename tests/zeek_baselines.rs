//! trawl's HTTP and DNS records against zeek's own logs for the zeek test
//! captures (`public/zeek/baseline/*/http.log`, `dns.log`).
//!
//! Deliberate differences: zeek's `response_body_len` is the decoded size,
//! so it is compared only for bodies without a Content-Encoding (trawl
//! counts wire bytes). `http-methods` (methods.pcap) is not compared
//! here. Its requests have malformed request lines, which zeek logs as
//! method `-` while tshark keeps the method token; trawl follows tshark
//! and is checked against it in `dissect_corpus`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use support::records;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn zeek_log(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let fields: Vec<String> =
        text.lines().find_map(|l| l.strip_prefix("#fields\t")).unwrap().split('\t').map(str::to_string).collect();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| fields.iter().cloned().zip(l.split('\t').map(str::to_string)).collect())
        .collect()
}

fn known(v: &str) -> Option<&str> {
    (v != "-" && v != "(empty)").then_some(v)
}

#[test]
fn http_logs_agree() {
    let Some(corpus) = support::corpus() else { return };
    let base = corpus.join("public/zeek/baseline");
    let cases = [
        ("scripts.base.protocols.http.http-pipelining/http.log", "public/zeek/http/pipelined-requests.pcap"),
        ("scripts.base.protocols.http.100-continue/http.log", "public/zeek/http/100-continue.pcap"),
        ("scripts.base.protocols.http.101-switching-protocols/http.log", "public/zeek/http/websocket.pcap"),
    ];
    let mut compared = 0;
    for (log, capture) in cases {
        let recs = records(&corpus.join(capture));
        let mut per_port: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
        for r in &recs {
            per_port.entry(r["src"]["port"].as_u64().unwrap()).or_default().push(r);
        }
        for z in zeek_log(&base.join(log)) {
            let port: u64 = z["id.orig_p"].parse().unwrap();
            let depth: usize = z["trans_depth"].parse().unwrap();
            let r = per_port
                .get(&port)
                .and_then(|v| v.get(depth - 1))
                .unwrap_or_else(|| panic!("{capture}: no record for {z:?}"));
            let ctx = format!("{capture} port {port} #{depth}");
            assert_eq!(r["method"].as_str().unwrap(), z["method"], "{ctx}");
            assert_eq!(r["summary"].as_str().unwrap(), z["uri"], "{ctx}");
            if let Some(host) = known(&z["host"]) {
                assert_eq!(r["fields"]["host"].as_str().unwrap(), host, "{ctx}");
            }
            assert_eq!(r["status_code"].as_i64().unwrap().to_string(), z["status_code"], "{ctx}");
            assert_eq!(r["fields"]["request_body_size"].as_u64().unwrap().to_string(), z["request_body_len"], "{ctx}");
            // zeek logs the decoded body size; trawl counts wire bytes. They
            // agree when the body has no Content-Encoding.
            let encoded = r["fields"]["response_headers"]
                .as_object()
                .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("content-encoding")));
            if !encoded {
                assert_eq!(
                    r["fields"]["response_body_size"].as_u64().unwrap().to_string(),
                    z["response_body_len"],
                    "{ctx}"
                );
            }
            // zeek's info_code is the last 1xx; for a 101 it is the status itself.
            if let Some(info) = known(&z["info_code"]).filter(|i| *i != z["status_code"]) {
                assert_eq!(r["fields"]["interim_status"][0].as_i64().unwrap().to_string(), info, "{ctx}");
            }
            compared += 1;
        }
    }
    assert!(compared >= 7, "{compared}");
}

/// zeek writes TXT answers as `TXT <len> <string>` per character-string.
fn zeek_txt(answer: &str) -> Option<String> {
    let mut rest = answer.strip_prefix("TXT ")?;
    let mut parts = Vec::new();
    loop {
        let (len, tail) = rest.split_once(' ')?;
        let len: usize = len.parse().ok()?;
        parts.push(tail.get(..len)?.to_string());
        rest = tail.get(len..)?.trim_start();
        match rest.strip_prefix("TXT ") {
            Some(r) => rest = r,
            None => break,
        }
    }
    Some(parts.join(" "))
}

#[test]
fn dns_logs_agree() {
    let Some(corpus) = support::corpus() else { return };
    let base = corpus.join("public/zeek/baseline");
    let cases = [
        ("scripts.base.protocols.dns.duplicate-reponses/dns.log", "public/zeek/dns-two-responses.pcap"),
        ("scripts.base.protocols.dns.flip/dns.log", "public/zeek/dns53.pcap"),
        ("scripts.base.protocols.dns.multiple-txt-strings/dns.log", "public/zeek/dns-txt-multiple.pcap"),
    ];
    for (log, capture) in cases {
        let recs = records(&corpus.join(capture));
        let zeek = zeek_log(&base.join(log));
        assert_eq!(recs.len(), zeek.len(), "{capture}: one record per zeek log line");
        for (r, z) in recs.iter().zip(&zeek) {
            let ctx = format!("{capture} {z:?}");
            assert_eq!(r["src"]["ip"].as_str().unwrap(), z["id.orig_h"], "{ctx}: who asked");
            assert_eq!(r["fields"]["dns_id"].as_i64().unwrap().to_string(), z["trans_id"], "{ctx}");
            assert_eq!(r["summary"].as_str().unwrap(), z["query"], "{ctx}");
            assert_eq!(r["status_code"].as_i64().unwrap().to_string(), z["rcode"], "{ctx}");
            if known(&z["rtt"]).is_some() {
                assert!(r["fields"]["dns_request"].as_bool().unwrap(), "{ctx}: zeek paired it with its query");
            }
            let ours: Vec<String> = r["fields"]["dns_answer_records"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["type"] != "RRSIG")
                .map(|a| a["data"].as_str().unwrap().to_string())
                .collect();
            let theirs: Vec<String> = z["answers"]
                .split(',')
                .filter(|a| !a.starts_with("RRSIG"))
                .map(|a| zeek_txt(a).unwrap_or_else(|| a.to_string()))
                .collect();
            assert_eq!(ours.len(), theirs.len(), "{ctx}: {ours:?} vs {theirs:?}");
            for (o, t) in ours.iter().zip(&theirs) {
                assert!(o.eq_ignore_ascii_case(t), "{ctx}: answer {o:?} vs zeek {t:?}");
            }
            let ttls: Vec<u64> = r["fields"]["dns_answer_records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["ttl"].as_u64().unwrap())
                .collect();
            let zttls: Vec<u64> = z["TTLs"].split(',').map(|t| t.parse::<f64>().unwrap() as u64).collect();
            assert_eq!(ttls, zttls, "{ctx}: TTLs");
        }
    }
}

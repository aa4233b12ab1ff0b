//! Redis records against hiredis's parse of the same streams
//! (`resp_hiredis.jsonl`, every RESP2/RESP3/inline message of every Redis
//! connection): the same commands, in the same order, per connection, and
//! as many error replies as hiredis saw.
//!
//! Deliberate differences: hiredis surfaces a RESP3 attribute as a message
//! of its own; trawl folds it into the reply it describes. Streams where
//! hiredis itself stopped on a protocol error are compared up to that point
//! only for commands (their error counts are not compared).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Default, Debug, PartialEq)]
struct Conn {
    commands: Vec<String>,
    errors: usize,
}

fn hiredis(path: &Path) -> (BTreeMap<String, Conn>, Vec<String>) {
    let mut conns: BTreeMap<String, Conn> = BTreeMap::new();
    let mut broken = Vec::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let d: Value = serde_json::from_str(line).unwrap();
        let client = d["client"].as_str().unwrap().to_string();
        let c = conns.entry(client.clone()).or_default();
        if d["summary"] == true {
            if !d["error"].is_null() {
                broken.push(client);
            }
            continue;
        }
        match (d["dir"].as_str().unwrap(), d["type"].as_str().unwrap()) {
            ("c2s", "list" | "inline") => {
                if let Some(verb) = d["value"].as_array().and_then(|v| v.first()).and_then(Value::as_str) {
                    c.commands.push(verb.to_ascii_uppercase());
                }
            }
            ("s2c", "ReplyError") => c.errors += 1,
            _ => {}
        }
    }
    (conns, broken)
}

fn trawl(capture: &Path) -> BTreeMap<String, Conn> {
    let mut conns: BTreeMap<String, Conn> = BTreeMap::new();
    for r in support::records(capture).iter().filter(|r| r["protocol"] == "redis") {
        let ip = r["src"]["ip"].as_str().unwrap();
        let client = if ip.contains(':') {
            format!("[{ip}]:{}", r["src"]["port"])
        } else {
            format!("{ip}:{}", r["src"]["port"])
        };
        let c = conns.entry(client).or_default();
        if let Some(m) = r["method"].as_str().filter(|m| !m.is_empty()) {
            c.commands.push(m.to_string());
        }
        c.errors += usize::from(r["error"] == true);
    }
    conns
}

#[test]
fn redis_commands_agree_with_hiredis() {
    let Some(corpus) = support::corpus() else { return };
    let mut failures = Vec::new();
    let mut commands = 0;
    for capture in support::captures(&corpus) {
        let Some(jsonl) = support::expected(&capture, "resp_hiredis.jsonl") else {
            continue;
        };
        let (expected, broken) = hiredis(&jsonl);
        let got = trawl(&capture);
        let name = capture.strip_prefix(&corpus).unwrap().display().to_string();
        for (client, want) in &expected {
            commands += want.commands.len();
            let have = got.get(client);
            let have_cmds = have.map(|c| c.commands.clone()).unwrap_or_default();
            if have_cmds != want.commands {
                failures.push(format!(
                    "{name} {client}: commands\n  hiredis {:?}\n  trawl   {:?}",
                    want.commands, have_cmds
                ));
            }
            let have_errors = have.map_or(0, |c| c.errors);
            if !broken.contains(client) && have_errors != want.errors {
                failures.push(format!("{name} {client}: {have_errors} error replies, hiredis saw {}", want.errors));
            }
        }
    }
    println!("compared {commands} Redis commands");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `ts [db ip:port] "CMD" "arg" …` lines of `redis-cli MONITOR`.
fn monitor(path: &Path) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let Some((_, rest)) = line.split_once(" [") else { continue };
        let Some((who, args)) = rest.split_once("] ") else { continue };
        let client = who.split_whitespace().nth(1).unwrap_or_default().to_string();
        let words: Vec<String> = args.split("\" \"").map(|w| w.trim_matches('"').to_string()).collect();
        let verb = words[0].to_ascii_uppercase();
        let key = words.get(1).cloned().unwrap_or_else(|| verb.clone());
        out.entry(client).or_default().push((verb, key));
    }
    out
}

/// Every command redis-server executed (MONITOR) is a trawl record, in order;
/// the records MONITOR lacks are the ones the server refused (ERR replies).
#[test]
fn made_redis_matches_the_monitor_log() {
    let Some(corpus) = support::corpus() else { return };
    let executed = monitor(&corpus.join("made/logs/redis_resp2_monitor.log"));
    let mut per_client: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in support::records(&corpus.join("made/redis_resp2.pcap")).into_iter().filter(|r| r["protocol"] == "redis") {
        per_client.entry(format!("{}:{}", r["src"]["ip"].as_str().unwrap(), r["src"]["port"])).or_default().push(r);
    }
    let mut checked = 0;
    for (client, commands) in executed.iter().filter(|(c, _)| !c.starts_with("unix:")) {
        let records = &per_client[client];
        let mut i = 0;
        for r in records {
            let verb = r["method"].as_str().unwrap().to_string();
            let key = r["summary"].as_str().unwrap().to_string();
            // MONITOR escapes binary arguments and redacts AUTH's; compare
            // keys only where it prints them as they are.
            let same = commands.get(i).is_some_and(|(v, k)| {
                *v == verb && (k == &key || k.contains('\\') || k == "(redacted)" || verb == "AUTH")
            });
            if same {
                i += 1;
                checked += 1;
            } else {
                let refused = r["fields"]["redis_error_prefix"].as_str().is_some_and(|p| p == "ERR");
                let docs = verb == "COMMAND";
                assert!(refused || docs, "{client}: {verb} {key} is not in MONITOR and was not refused");
            }
        }
        assert_eq!(i, commands.len(), "{client}: MONITOR has commands trawl did not report");
    }
    assert!(checked >= 480, "{checked}");
}

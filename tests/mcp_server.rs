//! The MCP server as an assistant meets it: the official Python `mcp`
//! client lists the tools and calls each of them, over stdio (`trawl mcp`
//! reading a serving trawl's API) and over streamable HTTP (`/api/mcp`),
//! against `trawl serve` replaying the demo with an API token. Answers
//! match `/api/map`, `/api/records` and `/api/plugins`; without the token
//! the HTTP endpoint refuses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{self, Terminated};
use serde_json::{Value, json};
use std::process::{Command, Stdio};

const TOKEN: &str = "mcp-test-token";

fn get(port: u16, path: &str) -> Value {
    let out = Command::new("curl")
        .args(["-sf", "-H", &format!("Authorization: Bearer {TOKEN}"), &format!("http://127.0.0.1:{port}{path}")])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The answer of the call of `tool` (the first one) in a session.
fn answer<'a>(session: &'a Value, tool: &str) -> &'a Value {
    let call = session["calls"].as_array().unwrap().iter().find(|c| c["tool"] == tool).unwrap();
    assert_eq!(call["is_error"], false, "{tool}: {call}");
    assert!(call["chars"].as_u64().unwrap() < 16 * 1024, "{tool}'s answer fits an assistant's context: {call}");
    &call["answer"]
}

#[test]
fn the_python_mcp_client_calls_every_tool_over_stdio_and_http_with_auth() {
    let Some(py) = support::python_or_skip("mcp") else { return };
    let port = support::free_port();
    let demo = support::project_root().join("examples/demo");
    let _server = Terminated(
        support::trawl()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--speed", "max", "--replay"])
            .arg(demo.join("demo.pcap"))
            .arg("--inventory")
            .arg(demo.join("inventory.json"))
            .env("TRAWL_API_TOKEN", TOKEN)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    support::wait_for_replay_end(|path| get(port, path));
    let map = get(port, "/api/map?map=l7");
    let edges = map["edges"].as_array().unwrap();
    let heaviest = edges.iter().max_by_key(|e| e["requests"].as_u64()).unwrap();
    let capture_secs = get(port, "/api/health")["capture_time_ns"].as_u64().unwrap() / 1_000_000_000;
    let calls = json!([
        ["get_map", {"map": "l7", "limit": 100}],
        ["get_map", {"map": "l4", "group_by": "namespace"}],
        ["get_edge", {"id": heaviest["id"]}],
        ["find_workload", {"query": "cart"}],
        ["query_records", {"filter": "redis", "limit": 5}],
        ["query_records", {"filter": "redis &&& nonsense"}],
        ["diff_maps", {"before": format!("{},{}", capture_secs - 7200, capture_secs - 3600),
                       "after": format!("{},{}", capture_secs - 3600, capture_secs + 60)}],
        ["list_plugins", {}],
    ]);
    let out = Command::new(&py)
        .arg(support::project_root().join("tests/e2e/mcp_client.py"))
        .arg(env!("CARGO_BIN_EXE_trawl"))
        .arg(format!("http://127.0.0.1:{port}"))
        .arg(TOKEN)
        .arg(calls.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "mcp client: {}", String::from_utf8_lossy(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();

    let tools = ["diff_maps", "find_workload", "get_edge", "get_map", "list_plugins", "query_records"];
    for transport in ["stdio", "http"] {
        let s = &result[transport];
        assert_eq!(s["tools"], json!(tools), "{transport}: {s}");
        assert!(s["schemas"]["get_map"]["properties"]["filter"].is_object(), "tools describe their arguments");

        // get_map: every edge of /api/map, with its numbers.
        let got = answer(s, "get_map");
        assert_eq!(got["edges_total"].as_u64(), Some(edges.len() as u64), "{transport}: {got}");
        for e in edges {
            let mine = got["edges"].as_array().unwrap().iter().find(|g| g["id"] == e["id"]).unwrap();
            assert_eq!((&mine["requests"], &mine["errors"]), (&e["requests"], &e["errors"]), "{}", e["id"]);
        }
        // get_edge: the RED numbers, top calls and the connections beneath.
        let edge = answer(s, "get_edge");
        assert_eq!(edge["requests"], heaviest["requests"]);
        assert_eq!(edge["p99_ms"].as_f64().unwrap(), heaviest["latency_us"]["p99"].as_f64().unwrap() / 1000.0);
        assert!(
            !edge["top_calls"].as_array().unwrap().is_empty() && !edge["connections"].as_array().unwrap().is_empty()
        );
        // find_workload: the Redis pod, and who calls it.
        let found = answer(s, "find_workload");
        let cart = found["workloads"].as_array().unwrap().iter().find(|w| w["id"] == "pod/shop/cart-redis-0").unwrap();
        assert!(cart["called_by"].as_array().unwrap().contains(&json!("pod/shop/frontend-7d9c")), "{cart}");
        // query_records: Redis records only, newest first, as /api/records.
        let records = answer(s, "query_records");
        let want = get(port, "/api/records?filter=redis&limit=5");
        assert_eq!(records["shown"].as_u64(), Some(5));
        for (mine, theirs) in records["records"].as_array().unwrap().iter().zip(want["records"].as_array().unwrap()) {
            assert_eq!((&mine["protocol"], &mine["method"]), (&json!("redis"), &theirs["method"]));
        }
        // A bad filter is the tool's error, in KFL2's words.
        let bad = s["calls"].as_array().unwrap().iter().find(|c| c["args"]["filter"] == "redis &&& nonsense").unwrap();
        assert_eq!(bad["is_error"], true, "{bad}");
        assert!(bad["answer"].as_str().unwrap().contains("400"), "{bad}");
        // diff_maps: the replay's edges appeared in the later window.
        let diff = answer(s, "diff_maps");
        assert!(diff["added"]["total"].as_u64().unwrap() >= 1, "{diff}");
        let plugins = answer(s, "list_plugins");
        let names: Vec<&str> = plugins.as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
        assert!(["http", "dns", "redis"].iter().all(|n| names.contains(n)), "{names:?}");
    }
    for refused in ["http_wrong_token", "http_no_token"] {
        assert!(result[refused]["refused"].is_string(), "{refused}: {}", result[refused]);
    }
    let status = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "content-type: application/json"])
        .args(["-d", "{}", &format!("http://127.0.0.1:{port}/api/mcp")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout), "401");
    // A body of more than a megabyte is refused before it is read whole.
    let big = support::scratch("mcp-big").join("big.json");
    std::fs::write(&big, vec![b' '; 2 << 20]).unwrap();
    let status = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "content-type: application/json"])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}"), "--data-binary"])
        .arg(format!("@{}", big.display()))
        .arg(format!("http://127.0.0.1:{port}/api/mcp"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout), "413");
    // Whole packets hold what redaction keeps from records: a read token
    // lists records but does not get packets.
    let status = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", &format!("Authorization: Bearer {TOKEN}")])
        .arg(format!("http://127.0.0.1:{port}/api/pcap?filter=redis"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout), "403");
}

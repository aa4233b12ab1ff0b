//! End to end against a real gRPC server and client (grpcio from PyPI):
//! unary, server-streaming, client-streaming and bidi calls, a compressed
//! call, an error status in trailers-only form and one after streamed
//! messages, all on one HTTP/2 connection (so HPACK's dynamic table is in
//! play). Captured on loopback with tcpdump and replayed through
//! `trawl replay --emit records`. The server's own call log (method, peer,
//! declared kind, messages it counted, status it returned) and the client's
//! (which calls it compressed) are the word on what happened.
//!
//! Needs the Python environment `scripts/test.sh` builds (`TRAWL_PY`) with
//! grpcio, and tcpdump. Without them the test skips, except under
//! `CI=true`, where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use support::{Capture, Killed, free_port, scratch, tools_or_skip, wait_for};

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn log(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn grpcio_calls_of_every_kind() {
    if !tools_or_skip(&["tcpdump"]) {
        return;
    }
    let Some(py) = support::python_with("grpc") else {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "grpcio missing (scripts/test.sh installs it)");
        eprintln!("SKIP: grpcio missing (scripts/test.sh installs it)");
        return;
    };
    let dir = scratch("grpc");
    let script = support::project_root().join("tests/e2e/grpc_peer.py");
    let port = free_port();
    let (server_log, client_log, capture) = (dir.join("server.log"), dir.join("client.log"), dir.join("grpc.pcap"));
    let mut server = Killed(
        Command::new(&py)
            .arg(&script)
            .args(["server", &port.to_string()])
            .arg(&server_log)
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .stdout(Stdio::piped())
            .spawn()
            .expect("grpc server"),
    );
    let mut ready = BufReader::new(server.0.stdout.take().unwrap()).lines();
    wait_for("grpc server", || ready.next().is_some_and(|l| l.is_ok_and(|l| l == "ready")));

    let dump = Capture::start(&capture, &format!("tcp port {port}"));
    let client = Command::new(&py)
        .arg(&script)
        .args(["client", &port.to_string()])
        .arg(&client_log)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .output()
        .unwrap();
    assert!(client.status.success(), "client: {}", String::from_utf8_lossy(&client.stderr));
    drop(server);
    dump.stop();

    let served = log(&server_log);
    let asked = log(&client_log);
    let mut records = support::records(&capture);
    records.sort_by_key(|r| r["fields"]["stream_id"].as_i64());
    assert_eq!(records.len(), served.len(), "one record per call: {records:#?}");
    // The client makes its calls one after another, so stream order is
    // call order; the server logs each call as it ends.
    let mut served_sorted: Vec<&Value> = served.iter().collect();
    let key = |v: &Value| (v["method"].as_str().unwrap().to_string(), v["code"].as_i64().unwrap());
    served_sorted.sort_by_key(|v| key(v));
    let mut by_call: Vec<&Value> = records.iter().collect();
    by_call.sort_by_key(|r| (r["summary"].as_str().unwrap().to_string(), r["status_code"].as_i64().unwrap()));
    for (s, r) in served_sorted.iter().zip(&by_call) {
        let f = &r["fields"];
        let peer_port = s["peer"].as_str().unwrap().rsplit(':').next().unwrap();
        assert_eq!(r["protocol"], "grpc");
        assert_eq!(r["src"]["port"].to_string(), peer_port, "{r}");
        assert_eq!(r["summary"], s["method"], "{r}");
        assert_eq!(f["grpc_method"], s["method"].as_str().unwrap().rsplit('/').next().unwrap());
        assert_eq!(f["grpc_service"], "trawl.e2e.Echo");
        assert_eq!(r["status_code"], s["code"], "{r}");
        assert_eq!(f["grpc_status"], s["code"]);
        assert_eq!(r["error"], s["code"] != 0, "{r}");
        assert_eq!(f["grpc_streaming"], s["kind"], "{r}");
        assert_eq!(f["grpc_request_messages"], s["requests"], "{r}");
        assert_eq!(f["grpc_response_messages"], s["responses"], "{r}");
        assert!(f.get("headers_undecodable").is_none(), "{r}");
    }
    // Calls in stream order against the client's log: compression.
    assert_eq!(asked.len(), records.len());
    for (a, r) in asked.iter().zip(&records) {
        assert_eq!(r["summary"], a["method"]);
        assert_eq!(r["fields"]["grpc_compressed"], a["compressed"], "{r}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

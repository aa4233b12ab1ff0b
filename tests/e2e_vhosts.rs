//! Virtual hosts on the L7 map: nginx serving two server names on one IP
//! and port (HTTP/1.1, and h2c on a second port), as an ingress does. The
//! L7 map has one edge per host, each with the requests nginx's own access
//! log counts for that host; `--split-hosts false` keeps one edge.

use crate::support::{self, Capture, free_port, scratch, tools_or_skip, wait_for};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

fn l7_edges(capture: &Path, extra: &[&str]) -> BTreeMap<Option<String>, u64> {
    let mut args = vec!["replay", capture.to_str().unwrap(), "--emit", "map", "--map", "l7"];
    args.extend(extra);
    let out = support::run_trawl(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let map: Value = serde_json::from_slice(&out.stdout).unwrap();
    let edges = map["edges"].as_array().unwrap();
    assert!(edges.iter().all(|e| e["protocol"] == "http"), "{map}");
    edges.iter().map(|e| (e["host"].as_str().map(str::to_string), e["requests"].as_u64().unwrap())).collect()
}

#[test]
fn a_server_of_two_names_has_an_edge_per_name() {
    if !tools_or_skip(&["nginx", "curl", "tcpdump"]) {
        return;
    }
    let dir = scratch("vhosts");
    let (h1, h2c) = (free_port(), free_port());
    let d = dir.display();
    let listen = format!("listen 127.0.0.1:{h1};\n        listen 127.0.0.1:{h2c} http2;");
    let second = format!(
        "server {{\n        {listen}\n        server_name b.shop.example;\n        return 200 \"b\\n\";\n    }}"
    );
    let http = format!("log_format hosts '$host';\n    access_log {d}/access.log hosts;\n    {second}");
    let first = format!("{listen}\n        server_name a.shop.example;\n        return 200 \"a\\n\";");
    std::fs::write(dir.join("nginx.conf"), support::nginx_conf(&dir, &http, &first)).unwrap();
    let nginx = support::start_nginx(&dir);
    wait_for("nginx", || TcpStream::connect(("127.0.0.1", h1)).is_ok());

    let capture = dir.join("vhosts.pcap");
    let dump = Capture::start(&capture, &format!("tcp port {h1} or tcp port {h2c}"));
    let get = |host: &str, port: u16, h2: bool| {
        let mut curl = Command::new("curl");
        curl.args(["-sf", "-o", "/dev/null", "-H", &format!("Host: {host}")]);
        if h2 {
            curl.arg("--http2-prior-knowledge");
        }
        assert!(curl.arg(format!("http://127.0.0.1:{port}/")).status().unwrap().success(), "curl {host}");
    };
    for _ in 0..7 {
        get("a.shop.example", h1, false);
    }
    for _ in 0..3 {
        get("a.shop.example", h2c, true);
    }
    for _ in 0..4 {
        get("B.shop.example", h1, false);
    }
    dump.stop();
    drop(nginx);

    // nginx's own count per host.
    let log = std::fs::read_to_string(dir.join("access.log")).unwrap();
    let mut truth: BTreeMap<Option<String>, u64> = BTreeMap::new();
    for host in log.lines().filter(|l| !l.is_empty()) {
        *truth.entry(Some(host.to_ascii_lowercase())).or_default() += 1;
    }
    assert_eq!(truth.values().sum::<u64>(), 14, "{log}");
    assert_eq!(l7_edges(&capture, &[]), truth, "an edge per host, with nginx's counts");
    assert_eq!(l7_edges(&capture, &["--split-hosts", "false"]), BTreeMap::from([(None, 14)]), "one edge when off");
}

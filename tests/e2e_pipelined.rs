//! Pipelined requests that look alike, against real servers: nginx
//! answering HTTP/1.1 requests pipelined 50 at a time on one connection,
//! and redis-server answering 100 pipelined `GET` of the same key in one
//! segment. Equal requests are distinct requests: the single-process L7
//! map must count every one (nginx's access log and the number sent are
//! the truth), and a hub fed by 1, 2 and 3 workers must show exactly the
//! single-process L4 and L7 maps (a hub that deduplicated records by
//! content collapsed them).
//!
//! Needs nginx, redis-server and tcpdump; `scripts/test.sh` installs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use support::{Capture, free_port, scratch, tools_or_skip, wait_for};

const HTTP_CONNECTIONS: usize = 4;
const HTTP_PIPELINED: usize = 50;
const REDIS_PIPELINED: usize = 100;

fn nginx_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    support::nginx_conf(
        dir,
        &format!("access_log {d}/access.log;\n    keepalive_requests 1000;"),
        &format!("listen 127.0.0.1:{port};\n        root {d}/www;"),
    )
}

/// Writes `requests` in one go, then reads until the server closes.
fn pipeline(port: u16, requests: &[u8]) -> usize {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    s.write_all(requests).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    answer.len()
}

fn requests_on(map: &serde_json::Value, protocol: &str) -> u64 {
    map["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["protocol"] == protocol)
        .map(|e| e["requests"].as_u64().unwrap())
        .sum()
}

#[test]
fn pipelined_equal_requests_all_count_in_one_process_and_through_the_hub() {
    if !tools_or_skip(&["nginx", "redis-server", "tcpdump"]) {
        return;
    }
    let dir = scratch("pipelined");
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/same.txt"), "the same answer\n".repeat(40)).unwrap();
    let (http_port, redis_port) = (free_port(), free_port());
    std::fs::write(dir.join("nginx.conf"), nginx_conf(&dir, http_port)).unwrap();
    let _nginx = support::start_nginx(&dir);
    let _redis = support::start_redis(&dir, redis_port, &[]);
    wait_for("nginx", || TcpStream::connect(("127.0.0.1", http_port)).is_ok());
    wait_for("redis-server", || TcpStream::connect(("127.0.0.1", redis_port)).is_ok());

    let capture = dir.join("pipelined.pcap");
    let dump = Capture::start(&capture, &format!("tcp port {http_port} or tcp port {redis_port}"));
    // HTTP/1.1: 50 identical GETs in one write per connection, the last
    // closing it.
    let get = "GET /same.txt HTTP/1.1\r\nHost: trawl\r\n\r\n";
    let last = "GET /same.txt HTTP/1.1\r\nHost: trawl\r\nConnection: close\r\n\r\n";
    for _ in 0..HTTP_CONNECTIONS {
        let requests = get.repeat(HTTP_PIPELINED - 1) + last;
        assert!(pipeline(http_port, requests.as_bytes()) > 0);
    }
    // Redis: 100 identical GETs in one segment, then QUIT.
    let mut redis = b"*2\r\n$3\r\nGET\r\n$4\r\nsame\r\n".repeat(REDIS_PIPELINED);
    redis.extend_from_slice(b"*1\r\n$4\r\nQUIT\r\n");
    assert!(pipeline(redis_port, &redis) > 0);
    dump.stop();

    let served = std::fs::read_to_string(dir.join("access.log")).unwrap().lines().count();
    assert_eq!(served, HTTP_CONNECTIONS * HTTP_PIPELINED, "nginx's access log");
    let out = support::run_trawl(&["replay", capture.to_str().unwrap(), "--emit", "map", "--map", "l7", "--stats"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let map: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // tcpdump's closing counts, to tell a lost capture from a miscount.
    let counts = std::fs::read_to_string(capture.with_extension("err")).unwrap_or_default();
    assert_eq!(
        requests_on(&map, "http") as usize,
        served,
        "every pipelined HTTP request counts once; tcpdump: {counts}"
    );
    // The QUIT is a request too.
    assert_eq!(
        requests_on(&map, "redis") as usize,
        REDIS_PIPELINED + 1,
        "every pipelined Redis request counts once; tcpdump: {counts}; stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(support::cluster::assert_hub_equals_one_process(&capture, 1..=3), 3);
}

//! End to end against a real HTTP/2 server: nginx with h2c (prior
//! knowledge), driven by `curl --http2-prior-knowledge` (GETs answered
//! 200/404/302/503, a POST with a body, HEAD) and `nghttp` (concurrent
//! streams, a small flow-control window so WINDOW_UPDATE frames pace a
//! large body, gzip). Captured on loopback with tcpdump and replayed
//! through `trawl replay --emit records`. nginx's access log (client port,
//! connection, method, URI, protocol, status, body bytes sent) is the word
//! on what was served.
//!
//! Needs nginx, curl, nghttp and tcpdump; `scripts/test.sh` installs them.
//! Without them the test skips, except under `CI=true`, where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use support::{Capture, Terminated, free_port, scratch, tools_or_skip, wait_for};

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};

fn nginx_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    let http = format!(
        "log_format trawl '$remote_port $connection $connection_requests $request_method $request_uri $server_protocol $status $body_bytes_sent';
    access_log {d}/access.log trawl;
    types {{ text/html html; text/plain txt; application/octet-stream bin; }}"
    );
    let server = format!(
        "listen 127.0.0.1:{port} http2;
        root {d}/www;
        gzip on;
        gzip_types text/plain;
        gzip_min_length 64;
        location = /redirect {{ return 302 /index.html; }}
        location = /unavailable {{ return 503; }}
        location = /upload {{ client_max_body_size 1m; return 201 \"stored\\n\"; }}"
    );
    support::nginx_conf(dir, &http, &server)
}

/// `(client port, method, uri, status, body bytes)`, one per request.
type Served = (String, String, String, i64, i64);

fn access_log(path: &Path) -> (Vec<Served>, BTreeMap<String, i64>) {
    let mut served = Vec::new();
    let mut per_conn: BTreeMap<String, i64> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f[5], "HTTP/2.0", "{line}");
        served.push((f[0].into(), f[3].into(), f[4].into(), f[6].parse().unwrap(), f[7].parse().unwrap()));
        let n: i64 = f[2].parse().unwrap();
        let e = per_conn.entry(f[0].to_string()).or_default();
        *e = (*e).max(n);
    }
    served.sort();
    (served, per_conn)
}

#[test]
fn nginx_h2c_with_curl_and_nghttp() {
    if !tools_or_skip(&["nginx", "curl", "nghttp", "tcpdump"]) {
        return;
    }
    let dir = scratch("http2");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "<html><body>trawl</body></html>\n").unwrap();
    std::fs::write(www.join("words.txt"), "the quick brown fox jumps over the lazy dog\n".repeat(200)).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(www.join("big.bin"), &big).unwrap();
    let upload = dir.join("upload.bin");
    std::fs::write(&upload, vec![b'u'; 100_000]).unwrap();
    let port = free_port();
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&dir, port)).unwrap();
    let _nginx = Terminated(
        Command::new("nginx").arg("-p").arg(&dir).arg("-c").arg(&conf).stderr(Stdio::null()).spawn().expect("nginx"),
    );
    wait_for("nginx", || TcpStream::connect(("127.0.0.1", port)).is_ok());

    let capture = dir.join("http2.pcap");
    let dump = Capture::start(&capture, &format!("tcp port {port}"));
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let run = |cmd: &mut Command| {
        let out = cmd.env_remove("http_proxy").env_remove("HTTP_PROXY").output().unwrap();
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    // curl 7.88 cannot reuse a prior-knowledge connection ("Error in the
    // HTTP2 framing layer"), so each curl request gets its own; nghttp
    // below puts many streams on one.
    for path in ["/index.html", "/missing", "/redirect", "/unavailable"] {
        run(Command::new("curl").args(["-s", "-o", "/dev/null", "-m", "20", "--http2-prior-knowledge"]).arg(url(path)));
    }
    // nginx answers the POST before reading its body, then resets the
    // stream with NO_ERROR; curl calls that a stream error, so its exit
    // status is not checked (the access log still has the request).
    let _ = Command::new("curl")
        // curl 7.88 can spin after that reset instead of exiting: bound it.
        .args(["-s", "-o", "/dev/null", "--max-time", "10", "--http2-prior-knowledge", "--data-binary"])
        .arg(format!("@{}", upload.display()))
        .arg(url("/upload"))
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .status();
    run(Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-m", "20", "--http2-prior-knowledge", "-I"])
        .arg(url("/words.txt")));
    // nghttp: concurrent streams on one connection, gzip asked for.
    run(Command::new("nghttp").args(["-n", "-t", "20", "-a", "-H", "accept-encoding: gzip"]).args([
        url("/index.html"),
        url("/words.txt"),
        url("/big.bin"),
        url("/missing"),
    ]));
    // A 16 KiB window (-w 14 / -W 14): the 300 KB body is paced by WINDOW_UPDATE.
    run(Command::new("nghttp").args(["-n", "-t", "20", "-w", "14", "-W", "14"]).arg(url("/big.bin")));
    dump.stop();

    let (served, requests_per_conn) = access_log(&dir.join("access.log"));
    let records = support::records(&capture);
    let mut seen: Vec<Served> = records
        .iter()
        .map(|r| {
            assert_eq!(r["protocol"], "http", "{r}");
            let f = &r["fields"];
            assert_eq!(f["http_version"], "HTTP/2");
            (
                r["src"]["port"].to_string(),
                f["method"].as_str().unwrap_or_else(|| panic!("no method: {r}")).to_string(),
                f["url"].as_str().unwrap_or_else(|| panic!("no url: {r}")).to_string(),
                f["status_code"].as_i64().unwrap_or_else(|| panic!("no status: {r}")),
                f["response_body_size"].as_i64().unwrap_or_else(|| panic!("no body size: {r}")),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(seen, served, "trawl's streams against nginx's access log");
    let mut per_conn: BTreeMap<String, i64> = BTreeMap::new();
    for s in &seen {
        *per_conn.entry(s.0.clone()).or_default() += 1;
    }
    assert_eq!(per_conn, requests_per_conn, "requests per connection");
    assert_eq!(served.len(), 11, "{served:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

//! Redaction, end to end, on traffic of real servers and clients:
//! redis-server with `requirepass`, given its password by `redis-cli -a`,
//! `AUTH`, `HELLO 3 AUTH`, `CONFIG SET masterauth` and `ACL SETUSER`; and
//! nginx over HTTP/1.1 and h2c, to which curl sends Bearer and Basic
//! credentials, a cookie, an `X-Api-Key` and a query token (and nginx
//! answers with a `Set-Cookie`).
//!
//! With `--redact off` every secret is in the records (so the capture
//! really carries them). By default, none is anywhere: not in
//! `--emit records` or `--emit map`, not in `trawl serve`'s `/api/map`,
//! WebSocket stream or edge details, not in its logs at debug level. The
//! rest of each record (method, path, status, header and key names) is
//! still there, and a filter cannot find a secret out.
//!
//! Needs nginx, curl, redis-server, redis-cli and tcpdump; `scripts/test.sh`
//! installs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::{Capture, Terminated, free_port, scratch, tools_or_skip, wait_for};
use tokio_tungstenite::tungstenite::Message;

const REDIS_PASSWORD: &str = "r3dis-Pa55";
const MASTERAUTH: &str = "m4ster-S3cret";
const ACL_PASSWORD: &str = "b0b-Pa55";
const BEARER: &str = "tok-B34rer";
const BASIC_PASSWORD: &str = "ba51c-pw";
/// base64("alice:ba51c-pw"), as curl sends it.
const BASIC_ENCODED: &str = "YWxpY2U6YmE1MWMtcHc=";
const COOKIE: &str = "c00kie-Val";
const API_KEY: &str = "k3y-Val";
const QUERY_TOKEN: &str = "q-T0ken";
const SET_COOKIE: &str = "s3t-C00kie";

const SECRETS: &[&str] = &[
    REDIS_PASSWORD,
    MASTERAUTH,
    ACL_PASSWORD,
    BEARER,
    BASIC_PASSWORD,
    BASIC_ENCODED,
    COOKIE,
    API_KEY,
    QUERY_TOKEN,
    SET_COOKIE,
];

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows the secret {s:?}");
    }
}

fn nginx_conf(dir: &Path, h1: u16, h2: u16) -> String {
    let d = dir.display();
    support::nginx_conf(
        dir,
        &format!("access_log {d}/access.log;"),
        &format!(
            "listen 127.0.0.1:{h1};\n        listen 127.0.0.1:{h2} http2;\n        root {d}/www;\n        \
             add_header Set-Cookie \"sess={SET_COOKIE}; Path=/; HttpOnly\";"
        ),
    )
}

/// One RESP command; returns the first line of the reply. A reply that
/// is a map (HELLO 3's) is read to its end by a PING after it.
fn redis(conn: &mut BufReader<TcpStream>, args: &[&str]) -> String {
    let resp = |args: &[&str]| {
        let mut cmd = format!("*{}\r\n", args.len());
        for a in args {
            cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        cmd
    };
    conn.get_mut().write_all(resp(args).as_bytes()).unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    if line.starts_with('%') {
        conn.get_mut().write_all(resp(&["PING"]).as_bytes()).unwrap();
        let mut rest = String::new();
        while rest != "+PONG\r\n" {
            rest.clear();
            conn.read_line(&mut rest).unwrap();
        }
    }
    line
}

fn make_capture(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/index.html"), "<html>trawl</html>\n").unwrap();
    let (h1, h2, redis_port) = (free_port(), free_port(), free_port());
    std::fs::write(dir.join("nginx.conf"), nginx_conf(dir, h1, h2)).unwrap();
    let _nginx = support::start_nginx(dir);
    let _redis = support::start_redis(dir, redis_port, &["--requirepass", REDIS_PASSWORD]);
    wait_for("nginx", || TcpStream::connect(("127.0.0.1", h1)).is_ok());
    wait_for("redis-server", || TcpStream::connect(("127.0.0.1", redis_port)).is_ok());

    let capture = dir.join("secrets.pcap");
    let dump = Capture::start(&capture, &format!("tcp port {h1} or tcp port {h2} or tcp port {redis_port}"));
    for (port, h2c) in [(h1, false), (h2, true)] {
        let url = format!("http://127.0.0.1:{port}/index.html?token={QUERY_TOKEN}&page=2");
        let mut curl = Command::new("curl");
        curl.args(["-sf", "-o", "/dev/null", "-H", &format!("Authorization: Bearer {BEARER}")]).args([
            "-H",
            &format!("X-Api-Key: {API_KEY}"),
            "-b",
            &format!("sid={COOKIE}; theme=dark"),
        ]);
        if h2c {
            curl.arg("--http2-prior-knowledge");
        }
        assert!(curl.arg(&url).status().unwrap().success(), "curl {url}");
        // Basic credentials, on a second request.
        let mut basic = Command::new("curl");
        basic.args(["-sf", "-o", "/dev/null", "-u", &format!("alice:{BASIC_PASSWORD}")]);
        if h2c {
            basic.arg("--http2-prior-knowledge");
        }
        assert!(basic.arg(format!("http://127.0.0.1:{port}/index.html")).status().unwrap().success());
    }
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &redis_port.to_string(), "--no-auth-warning", "-a", REDIS_PASSWORD])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "redis-cli {args:?}");
    };
    cli(&["SET", "user:1", "alice"]);
    cli(&["-3", "GET", "user:1"]);
    let mut conn = BufReader::new(TcpStream::connect(("127.0.0.1", redis_port)).unwrap());
    conn.get_mut().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(redis(&mut conn, &["AUTH", REDIS_PASSWORD]), "+OK\r\n");
    assert!(redis(&mut conn, &["HELLO", "3", "AUTH", "default", REDIS_PASSWORD]).starts_with('%'));
    assert_eq!(redis(&mut conn, &["CONFIG", "SET", "masterauth", MASTERAUTH]), "+OK\r\n");
    assert_eq!(
        redis(&mut conn, &["ACL", "SETUSER", "bob", "on", &format!(">{ACL_PASSWORD}"), "~*", "+get"]),
        "+OK\r\n"
    );
    assert_eq!(redis(&mut conn, &["QUIT"]), "+OK\r\n");
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    dump.stop();
    capture
}

/// `trawl replay` with extra arguments: (stdout, stderr), at debug level.
fn replay(capture: &Path, args: &[&str]) -> (String, String) {
    let out = support::trawl()
        .arg("replay")
        .arg(capture)
        .args(args)
        .env("TRAWL_LOG", "debug")
        .output()
        .expect("trawl replay");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The L7 map, every edge's detail and a few seconds of the WebSocket
/// stream of a `trawl serve` on the capture, as one text.
async fn served_texts(port: u16) -> String {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/api/ws")).await.unwrap();
    let mut seen = String::new();
    ws.send(Message::text(json!({"type": "subscribe", "map": "l7"}).to_string())).await.unwrap();
    let mut edges: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await {
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        for e in v["map"]["edges"].as_array().into_iter().chain(v["edges_added"].as_array()).flatten() {
            edges.push(e["id"].as_str().unwrap().to_string());
        }
        seen.push_str(&t);
    }
    assert!(!edges.is_empty(), "the L7 map has edges");
    for id in &edges {
        ws.send(Message::text(json!({"type": "detail", "id": id}).to_string())).await.unwrap();
        loop {
            let Message::Text(t) = ws.next().await.unwrap().unwrap() else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            seen.push_str(&t);
            if v["type"] == "detail" {
                assert!(v["edge"].is_object(), "{t}");
                break;
            }
        }
    }
    seen
}

#[test]
fn no_secret_leaves_the_agent_and_the_rest_of_each_record_stays() {
    if !tools_or_skip(&["nginx", "curl", "redis-server", "redis-cli", "tcpdump"]) {
        return;
    }
    let dir = scratch("redaction");
    let capture = make_capture(&dir);

    // Off: the capture carries every secret, and trawl shows them (the
    // Basic password only base64-encoded, as curl sent it).
    let (open, _) = replay(&capture, &["--emit", "records", "--redact", "off"]);
    for s in SECRETS.iter().filter(|s| **s != BASIC_PASSWORD) {
        assert!(open.contains(s), "--redact off shows {s}: the capture carries it");
    }

    // Default: no secret, anywhere; the rest stays.
    let (records, log) = replay(&capture, &["--emit", "records"]);
    assert_no_secret("--emit records", &records);
    assert_no_secret("the replay's debug log", &log);
    let records = support::json_lines(records.as_bytes());
    let http: Vec<&Value> = records.iter().filter(|r| r["protocol"] == "http").collect();
    assert_eq!(http.len(), 4, "two requests over HTTP/1.1 and two over h2c");
    for r in &http {
        assert_eq!((r["method"].as_str(), r["status_code"].as_i64()), (Some("GET"), Some(200)), "{r}");
        assert_eq!(r["fields"]["path"], "/index.html");
        assert!(
            r["fields"]["response_headers"]["set-cookie"].is_string()
                || r["fields"]["response_headers"]["Set-Cookie"].is_string()
        );
    }
    let with_token: Vec<&&Value> = http.iter().filter(|r| r["fields"]["query_string"] != "").collect();
    assert_eq!(with_token.len(), 2);
    for r in with_token {
        assert_eq!(r["summary"], "/index.html?token=[REDACTED]&page=[REDACTED]");
        let headers = r["fields"]["request_headers"].as_object().unwrap();
        let get = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
        assert_eq!(get("authorization"), Some(json!("Bearer [REDACTED]")));
        assert_eq!(get("x-api-key"), Some(json!("[REDACTED]")));
        assert_eq!(get("cookie"), Some(json!("sid=[REDACTED]; theme=[REDACTED]")));
        assert_eq!(get("accept"), Some(json!("*/*")), "harmless headers stay");
    }
    let redis: Vec<&Value> = records.iter().filter(|r| r["protocol"] == "redis").collect();
    let commands: Vec<&str> = redis.iter().filter_map(|r| r["fields"]["redis_command"].as_str()).collect();
    for want in [
        "AUTH [REDACTED]",
        "SET user:1 alice",
        "HELLO 3 AUTH [REDACTED] [REDACTED]",
        "CONFIG SET masterauth [REDACTED]",
        "ACL SETUSER bob on [REDACTED] ~* +get",
    ] {
        assert!(commands.contains(&want), "{want:?} in {commands:?}");
    }

    // Strict: values go too, keys stay.
    let (strict, _) = replay(&capture, &["--emit", "records", "--redact", "strict"]);
    assert_no_secret("--redact strict", &strict);
    assert!(strict.contains("\"SET user:1 …\""), "strict keeps the verb and key only");
    assert!(!strict.contains("alice"), "strict drops values");

    let (map, _) = replay(&capture, &["--emit", "map", "--map", "l7"]);
    assert_no_secret("--emit map", &map);

    // The served map, its WebSocket stream and details, and the log.
    let log_file = dir.join("serve.log");
    let port = free_port();
    let _serve = Terminated(
        support::trawl()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--speed", "max", "--replay"])
            .arg(&capture)
            .env("TRAWL_LOG", "debug")
            .stderr(std::fs::File::create(&log_file).unwrap())
            .spawn()
            .expect("trawl serve"),
    );
    wait_for("trawl serve", || TcpStream::connect(("127.0.0.1", port)).is_ok());
    let all = records.len() as u64;
    wait_for("the records", || support::get_json(port, "/api/health")["counters"]["records"].as_u64() >= Some(all));
    let api = support::get_json(port, "/api/map?map=l7");
    assert!(!api["edges"].as_array().unwrap().is_empty());
    assert_no_secret("/api/map", &api.to_string());
    let streamed = tokio::runtime::Runtime::new().unwrap().block_on(served_texts(port));
    assert_no_secret("the WebSocket stream and edge details", &streamed);
    assert!(streamed.contains("user:1"), "details show top calls: {streamed}");
    // A filter sees the records as redacted: a secret cannot be guessed.
    let guess = format!("/api/map?map=l7&filter=request_headers%5B%22X-Api-Key%22%5D==%22{API_KEY}%22");
    assert_eq!(support::get_json(port, &guess)["edges"], json!([]), "a right guess matches nothing");
    let seen = "/api/map?map=l7&filter=request_headers%5B%22X-Api-Key%22%5D==%22%5BREDACTED%5D%22";
    assert!(!support::get_json(port, seen)["edges"].as_array().unwrap().is_empty(), "a key was sent");
    assert_no_secret("trawl serve's debug log", &std::fs::read_to_string(&log_file).unwrap());
}

//! Hostile clients against a real `trawl serve` (the demo capture in a
//! loop): a 32 MiB WebSocket message, hundreds of subscribers, a flood
//! of a thousand messages, and a filter whose nested
//! comprehensions would cost 10⁸ steps a record, by WebSocket and on
//! `/api/map`. Throughout, `/healthz` answers (probed every 50 ms; the
//! slowest answer is printed), the costly filter gets an error that says
//! why, and a well-behaved client still gets its map.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Probes `/healthz` every 50 ms until stopped: (failures, slowest in ms).
fn probe_health(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (failures, slowest) = (AtomicU64::new(0), AtomicU64::new(0));
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let ok = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                answer.starts_with("HTTP/1.1 200")
            });
            slowest.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
            if !ok {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (failures.load(Ordering::Relaxed), slowest.load(Ordering::Relaxed))
    })
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(port: u16) -> Result<Ws, u16> {
    match tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/api/ws")).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

/// The next text message, parsed.
async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => return serde_json::from_str(&t).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

const COSTLY: &str =
    "pods.all(a, pods.all(b, pods.all(c, pods.all(d, pods.all(e, pods.all(f, pods.all(g, pods.all(h, a == h))))))))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_leave_the_server_answering() {
    let (_serve, port) = support::serve_demo(&["--loop", "--speed", "10"]);
    support::wait_for("the first edges", || {
        support::get_json(port, "/api/map?map=l4")["edges"].as_array().is_some_and(|e| !e.is_empty())
    });
    let stop = Arc::new(AtomicBool::new(false));
    let health = probe_health(port, stop.clone());

    // A 32 MiB message: the connection is closed, nothing else happens.
    let mut big = connect(port).await.unwrap();
    let _ = big.send(Message::text("x".repeat(32 << 20))).await;
    assert!(next(&mut big).await.is_none(), "a 32 MiB message is not answered");

    // The costly filter, by WebSocket and by REST: an error that says why.
    let mut ws = connect(port).await.unwrap();
    ws.send(Message::text(json!({"type": "subscribe", "map": "l7", "filter": COSTLY}).to_string())).await.unwrap();
    let answer = next(&mut ws).await.unwrap();
    assert_eq!(answer["type"], "error", "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("too costly"), "{answer}");
    let url = format!("/api/map?map=l7&filter={}", COSTLY.replace(' ', "%20").replace('=', "%3D"));
    let rest = support::get_json(port, &url);
    assert!(rest.is_null(), "the costly filter is refused on /api/map too");

    // A flood of messages on one connection (detail requests: each cheap
    // to answer, so the server meets them faster than the limit allows):
    // answered up to the limit, then refused, then the connection goes.
    let mut flood = connect(port).await.unwrap();
    for _ in 0..1_000 {
        if flood.send(Message::text(json!({"type": "detail", "id": "a|b|tcp"}).to_string())).await.is_err() {
            break;
        }
    }
    let mut errors = 0;
    while let Some(m) = next(&mut flood).await {
        errors += usize::from(m["type"] == "error");
    }
    assert!(errors > 0, "a flood of messages is refused past the limit (the refusals arrive before the close)");

    // Subscribers beyond the cap get 503; those within keep working.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..600 {
        match connect(port).await {
            Ok(ws) => held.push(ws),
            Err(503) => refused += 1,
            Err(code) => panic!("unexpected {code}"),
        }
    }
    assert!(held.len() <= 256 && refused >= 300, "held {} refused {refused}", held.len());
    drop(held);

    // A well-behaved client still gets its map, once the server has seen
    // the held connections go.
    let started = Instant::now();
    let mut ws = loop {
        match connect(port).await {
            Ok(ws) => break ws,
            Err(503) if started.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(code) => panic!("a well-behaved client got {code}"),
        }
    };
    ws.send(Message::text(json!({"type": "subscribe", "map": "l4"}).to_string())).await.unwrap();
    let snapshot = next(&mut ws).await.unwrap();
    assert_eq!(snapshot["type"], "snapshot");
    assert!(!snapshot["map"]["edges"].as_array().unwrap().is_empty());

    stop.store(true, Ordering::Relaxed);
    let (failures, slowest) = health.join().unwrap();
    println!("/healthz: {failures} failures, slowest answer {slowest} ms");
    assert_eq!(failures, 0, "/healthz failed while hostile clients ran");
}

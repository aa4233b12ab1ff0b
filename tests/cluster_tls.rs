//! Workers and hub over TLS, with each worker proving its node: a real
//! `trawl hub` with a certificate signed by a test CA and per-node
//! credentials, and real `trawl worker`s replaying the demo capture.
//!
//! A worker with the right CA and its node's credential connects over TLS
//! and its counts arrive; one that trusts another CA, presents a wrong
//! credential or another node's, or talks plain TCP to the TLS port, is
//! refused and counts nothing. Off loopback, hub and worker refuse plain
//! TCP unless told otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use support::{Terminated, free_port, project_root, scratch, wait_for};
use trawl_host::cluster::tls::test_certs;

/// A replaying worker for `node` with extra arguments; its exit and stderr.
fn worker(workers: u16, node: &str, args: &[&str]) -> (bool, String) {
    let mut c = support::trawl();
    c.args(["worker", "--hub", &format!("127.0.0.1:{workers}"), "--node", node, "--speed", "max"])
        .args(args)
        .arg("--replay")
        .arg(project_root().join("examples/demo/demo.pcap"))
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn connected_nodes(ui: u16) -> Vec<String> {
    let health = support::get_json(ui, "/api/health");
    let mut nodes: Vec<String> = health["workers"]
        .as_object()
        .map(|w| w.values().filter_map(|v| v["node"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    nodes.sort();
    nodes.dedup();
    nodes
}

#[test]
fn workers_prove_their_node_over_tls() {
    let dir = scratch("cluster-tls");
    let files = test_certs::write(&dir.join("hub"), &["trawl-hub.test"]);
    let other_ca = test_certs::write(&dir.join("other"), &["trawl-hub.test"]).ca;
    let (ca, cert, key) = (files.ca, files.cert, files.key);
    let creds = dir.join("nodes");
    std::fs::write(&creds, "node-a cred-aaa\nnode-b cred-bbb\n").unwrap();
    let (workers, ui) = (free_port(), free_port());
    let _hub = Terminated(
        support::trawl()
            .args(["hub", "--workers", &format!("127.0.0.1:{workers}"), "--listen", &format!("127.0.0.1:{ui}")])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .arg("--node-credentials")
            .arg(&creds)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("trawl hub", || std::net::TcpStream::connect(("127.0.0.1", ui)).is_ok());
    let tls = |ca: &Path| {
        vec!["--hub-ca".to_string(), ca.display().to_string(), "--hub-name".into(), "trawl-hub.test".into()]
    };
    let args = |v: &[String], more: &[&str]| {
        v.iter().map(String::as_str).chain(more.iter().copied()).map(str::to_string).collect::<Vec<_>>()
    };

    // Another CA: the hub's certificate is not trusted; nothing is sent.
    let a = args(&tls(&other_ca), &["--token", "cred-aaa"]);
    let (ok, err) = worker(workers, "node-a", &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok && err.contains("certificate"), "an untrusted hub: {err}");
    // A wrong credential, and another node's.
    let a = args(&tls(&ca), &["--token", "cred-zzz"]);
    let (ok, err) = worker(workers, "node-a", &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok && err.contains("refused this worker: wrong credential for node node-a"), "{err}");
    let a = args(&tls(&ca), &["--token", "cred-bbb"]);
    let (ok, err) = worker(workers, "node-a", &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok && err.contains("refused this worker"), "node-b's credential for node-a: {err}");
    // Plain TCP to the TLS port: the handshake fails and nothing counts.
    let mut plain = Terminated(
        support::trawl()
            .args(["worker", "--hub", &format!("127.0.0.1:{workers}"), "--node", "node-a", "--token", "cred-aaa"])
            .args(["--speed", "max", "--replay"])
            .arg(project_root().join("examples/demo/demo.pcap"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(plain.0.try_wait().unwrap().is_none(), "a plain worker keeps trying");
    assert!(connected_nodes(ui).is_empty(), "no refused worker shows");
    assert_eq!(support::get_json(ui, "/api/health")["counters"]["packets"], 0);
    drop(plain);

    // The right CA and node-a's own credential: over TLS, and it counts.
    let a = args(&tls(&ca), &["--token", "cred-aaa"]);
    let (ok, err) = worker(workers, "node-a", &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "a good worker: {err}");
    wait_for("node-a's counts", || {
        support::get_json(ui, "/api/map?map=l4")["edges"].as_array().is_some_and(|e| !e.is_empty())
    });
    assert_eq!(connected_nodes(ui), vec!["node-a".to_string()]);
}

#[test]
fn plain_tcp_off_loopback_is_refused_unless_insisted() {
    let out = support::trawl()
        .args(["hub", "--workers", &format!("0.0.0.0:{}", free_port()), "--listen", "127.0.0.1:0", "--token", "t"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plain TCP") && err.contains("--tls-cert"), "{err}");
    let out = support::trawl()
        .args(["worker", "--hub", "192.0.2.1:9797", "--node", "n", "--token", "t", "--replay"])
        .arg(project_root().join("examples/demo/demo.pcap"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plain TCP") && err.contains("--hub-ca"), "{err}");
}

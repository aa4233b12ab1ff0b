//! The real `kube` watchers against a local HTTP server that replays real
//! objects (minikube v1.35 and bookinfo dumps from `../shared/data/k8s`)
//! as list and watch responses: a first list, a watch that modifies and
//! deletes a pod and then ends with 410 Gone (the real Status body from the
//! kubeclient fixtures), a re-list in which another pod is missing and a
//! new one appears, and a dropped connection after which the watch resumes
//! from its resourceVersion without listing again.
//!
//! Checked: pods resolve as listed; deleted pods stop resolving from their
//! deletion on but still resolve for traffic seen before it; the re-list
//! happened and removed what it no longer lists; the watch resumed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trawl_core::{Identity, Timestamp, WorkloadKind};

#[derive(Default)]
struct Script {
    pods_first: Vec<Value>,
    pods_second: Vec<Value>,
    /// Events of the first pod watch, before its 410.
    first_watch: Vec<Value>,
    gone: Value,
    services: Vec<Value>,
    nodes: Vec<Value>,
    namespaces: Vec<Value>,
}

#[derive(Default)]
struct Seen {
    pod_lists: AtomicUsize,
    pod_watches: Mutex<Vec<String>>,
    /// Set to drop the open watch connections (an API server restart).
    drop_watches: AtomicBool,
    stop: AtomicBool,
}

fn respond(mut s: TcpStream, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn list(kind: &str, rv: &str, items: &[Value]) -> String {
    json!({ "kind": format!("{kind}List"), "apiVersion": "v1", "metadata": { "resourceVersion": rv }, "items": items })
        .to_string()
}

/// Streams `events`, then ends the response (`hold`: keeps it open until
/// told to drop it).
fn watch(mut s: TcpStream, events: &[Value], hold: bool, seen: &Seen) {
    let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n");
    for e in events {
        let _ = writeln!(s, "{e}");
    }
    let _ = s.flush();
    while hold && !seen.drop_watches.load(Ordering::Relaxed) && !seen.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve(listener: TcpListener, script: Arc<Script>, seen: Arc<Seen>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if seen.stop.load(Ordering::Relaxed) {
            return;
        }
        let (script, seen) = (script.clone(), seen.clone());
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let watching = query.split('&').any(|p| p == "watch=true" || p == "watch=1");
            let rv = query.split('&').find_map(|p| p.strip_prefix("resourceVersion=")).unwrap_or("").to_string();
            match (path, watching) {
                ("/api/v1/pods", false) => {
                    let n = seen.pod_lists.fetch_add(1, Ordering::SeqCst);
                    let (rv, items) = if n == 0 { ("1000", &script.pods_first) } else { ("2000", &script.pods_second) };
                    respond(stream, &list("Pod", rv, items));
                }
                ("/api/v1/pods", true) => {
                    seen.pod_watches.lock().unwrap().push(rv.clone());
                    if rv == "1000" {
                        let mut events = script.first_watch.clone();
                        events.push(json!({ "type": "ERROR", "object": script.gone }));
                        watch(stream, &events, false, &seen);
                    } else {
                        watch(stream, &[], true, &seen);
                    }
                }
                ("/api/v1/services", false) => respond(stream, &list("Service", "1000", &script.services)),
                ("/api/v1/nodes", false) => respond(stream, &list("Node", "1000", &script.nodes)),
                ("/api/v1/namespaces", false) => respond(stream, &list("Namespace", "1000", &script.namespaces)),
                ("/apis/discovery.k8s.io/v1/endpointslices", false) => {
                    respond(stream, &list("EndpointSlice", "1000", &[]))
                }
                (_, true) => watch(stream, &[], true, &seen),
                _ => {
                    let _ = write!(&stream, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                }
            }
        });
    }
}

fn items(path: &std::path::Path) -> Vec<Value> {
    trawl_host::replay::inventory_documents(path)
        .unwrap()
        .into_iter()
        .flat_map(|d| d["items"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn pod_ip(p: &Value) -> IpAddr {
    p["status"]["podIP"].as_str().unwrap().parse().unwrap()
}

fn created(p: &Value) -> Timestamp {
    trawl_core::identity::parse_rfc3339(p["metadata"]["creationTimestamp"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_list_watch_survive_410_and_reconnects() {
    let Some(corpus) = support::corpus() else { return };
    let k8s = corpus.join("k8s");
    let mini = k8s.join("nri-kubernetes-minikube-v1.35");
    let pods: Vec<Value> = items(&mini.join("pods.yaml"))
        .into_iter()
        .filter(|p| {
            p["status"]["phase"] == "Running"
                && p["spec"]["hostNetwork"].as_bool() != Some(true)
                && p["status"]["podIP"].is_string()
        })
        .collect();
    assert!(pods.len() >= 4, "too few running pods in the dump");
    let (deleted_by_event, missing_from_relist, modified) = (pods[0].clone(), pods[1].clone(), pods[2].clone());
    let newcomer = items(&k8s.join("nca-bookinfo-istio-kind-2021/bookinfo_pods_list.json"))[0].clone();
    let mut relabelled = modified.clone();
    relabelled["metadata"]["labels"]["trawl-test"] = json!("modified");
    let gone: Value =
        serde_json::from_str(&std::fs::read_to_string(k8s.join("kubeclient-fixtures/pods_410.json")).unwrap()).unwrap();
    let script = Arc::new(Script {
        pods_first: pods.clone(),
        // The API's state after the watch: the modified pod as modified.
        pods_second: pods
            .iter()
            .skip(2)
            .map(|p| if p["metadata"]["name"] == modified["metadata"]["name"] { relabelled.clone() } else { p.clone() })
            .chain([newcomer.clone()])
            .collect(),
        first_watch: vec![
            json!({ "type": "MODIFIED", "object": relabelled }),
            json!({ "type": "DELETED", "object": deleted_by_event }),
        ],
        gone,
        services: items(&mini.join("services.yaml")),
        nodes: items(&mini.join("nodes.yaml")),
        namespaces: items(&mini.join("namespaces.yaml")),
    });
    let seen = Arc::new(Seen::default());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    {
        let (script, seen) = (script.clone(), seen.clone());
        std::thread::spawn(move || serve(listener, script, seen));
    }

    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let latest: Arc<Mutex<(Arc<Identity>, u64, usize)>> = Arc::new(Mutex::new((Arc::new(Identity::new()), 0, 0)));
    let watcher = {
        let latest = latest.clone();
        tokio::spawn(trawl_host::k8s::watch(client, Identity::new(), move |identity, state| {
            *latest.lock().unwrap() = (identity, state.lists.get("Pod").copied().unwrap_or(0), state.namespaces.len());
        }))
    };
    let started = Instant::now();
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        let t = Instant::now();
        while !ok() {
            assert!(t.elapsed() < Duration::from_secs(20), "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // The re-list after the 410 completes the second pod list.
    wait("no re-list after 410 Gone", &|| latest.lock().unwrap().1 >= 2);
    let now = Timestamp(
        Timestamp::ZERO.0
            + std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    );
    let (identity, _, namespaces) = latest.lock().unwrap().clone();
    assert_eq!(seen.pod_lists.load(Ordering::SeqCst), 2);
    assert!(namespaces >= 4, "namespaces watched: {namespaces}");
    let resolve = |p: &Value, at: Timestamp| {
        let w = identity.resolve(pod_ip(p), at);
        (w.kind, w.name.clone())
    };
    let name = |p: &Value| p["metadata"]["name"].as_str().unwrap().to_string();
    // Still listed, and modified on the way: resolves now.
    for p in &pods[2..] {
        assert_eq!(resolve(p, now), (WorkloadKind::Pod, name(p)));
    }
    assert_eq!(
        identity.lookup(pod_ip(&modified), now).unwrap().labels.get("trawl-test").map(String::as_str),
        Some("modified")
    );
    // New in the re-list.
    assert_eq!(resolve(&newcomer, now), (WorkloadKind::Pod, name(&newcomer)));
    // Deleted (by event, or missing from the re-list): not now, but for
    // traffic from before, yes.
    for p in [&deleted_by_event, &missing_from_relist] {
        assert_ne!(resolve(p, now), (WorkloadKind::Pod, name(p)), "{} still resolves", name(p));
        let before = Timestamp(created(p).0 + 1_000_000_000);
        assert_eq!(resolve(p, before), (WorkloadKind::Pod, name(p)));
    }
    // Services and nodes came from their own watchers.
    for s in &script.services {
        if let Some(ip) = s["spec"]["clusterIP"].as_str().and_then(|i| i.parse::<IpAddr>().ok()) {
            assert_eq!(identity.resolve(ip, now).name, s["metadata"]["name"].as_str().unwrap());
        }
    }

    // The API server drops the watch: the watcher resumes from rv 2000
    // without listing again.
    seen.drop_watches.store(true, Ordering::Relaxed);
    wait("no new watch after the connection dropped", &|| {
        seen.pod_watches.lock().unwrap().iter().filter(|rv| *rv == "2000").count() >= 2
    });
    seen.drop_watches.store(false, Ordering::Relaxed);
    assert_eq!(seen.pod_lists.load(Ordering::SeqCst), 2, "a dropped connection should not force a re-list");
    assert!(started.elapsed() < Duration::from_secs(30));
    seen.stop.store(true, Ordering::Relaxed);
    watcher.abort();
}

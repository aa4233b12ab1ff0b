//! The hub's TokenReview, with the real `kube` client against a local HTTP
//! server that answers as the API server did (`tests/data/k8s`): a bound
//! token names its node, which a worker must claim; a token without node
//! information has its node read from its pod (a real pod from
//! `../shared/data/k8s`); an expired token and another ServiceAccount's
//! are refused. The request carries the token and the `trawl-hub`
//! audience.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use trawl_host::cluster::auth::{KubeReviewer, WorkerAuth};

const NODE: &str = "ip-10-16-7-50.eu-central-1.compute.internal";

/// Answers every TokenReview with `review` and every pod GET with `pod`;
/// keeps the review requests' bodies.
fn api_server(review: Value, pod: Value) -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let requests = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (review, pod, requests) = (review.clone(), pod.clone(), requests.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let (method, path) = {
                        let mut w = line.split_whitespace();
                        (w.next().unwrap_or("").to_string(), w.next().unwrap_or("").to_string())
                    };
                    let mut length = 0;
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let (status, answer) =
                        if method == "POST" && path.starts_with("/apis/authentication.k8s.io/v1/tokenreviews") {
                            requests.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                            ("201 Created", review.clone())
                        } else if method == "GET" && path.starts_with("/api/v1/namespaces/my-namespace/pods/my-pod") {
                            ("200 OK", pod.clone())
                        } else {
                            (
                                "404 Not Found",
                                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}),
                            )
                        };
                    let text = answer.to_string();
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if stream.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, seen)
}

fn fixture(name: &str) -> Value {
    let path = support::project_root().join("tests/data/k8s").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A real running pod from the corpus, as the token's pod (`my-pod` in
/// `my-namespace`) on node `node`.
fn the_tokens_pod(node: &str) -> Option<Value> {
    let k8s = support::corpus()?.join("k8s");
    let text = std::fs::read_to_string(k8s.join("nca-bookinfo-istio-kind-2021/bookinfo_pods_list.json")).ok()?;
    let list: Value = serde_json::from_str(&text).ok()?;
    let mut pod = list["items"].as_array()?.iter().find(|p| p["spec"]["nodeName"].is_string())?.clone();
    pod["metadata"]["name"] = json!("my-pod");
    pod["metadata"]["namespace"] = json!("my-namespace");
    pod["spec"]["nodeName"] = json!(node);
    Some(pod)
}

fn auth_with(review: Value, pod: Value, account: &str) -> (WorkerAuth, Arc<Mutex<Vec<Value>>>) {
    let (url, seen) = api_server(review, pod);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let client = {
        let _entered = runtime.enter();
        kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap()
    };
    let reviewer = KubeReviewer::with_client(runtime, client, "trawl-hub", "my-namespace", account);
    (WorkerAuth::new(None).with_reviewer(Arc::new(reviewer)), seen)
}

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0cmF3bCJ9.c2lnbmF0dXJl";

#[test]
fn a_service_account_token_proves_its_node() {
    let Some(pod) = the_tokens_pod("kind-worker-7") else { return };
    let (auth, seen) = auth_with(fixture("tokenreview-bound.json"), pod.clone(), "my-serviceaccount");
    assert_eq!(auth.check(NODE, TOKEN), Ok(()));
    let why = auth.check("another-node", TOKEN).unwrap_err().reason().to_string();
    assert!(why.contains(&format!("node {NODE}, not another-node")), "{why}");
    let asked = seen.lock().unwrap()[0].clone();
    assert_eq!(asked["spec"]["token"], TOKEN);
    assert_eq!(asked["spec"]["audiences"], json!(["trawl-hub"]));
    assert_eq!(asked["kind"], "TokenReview");

    // The same token without node information: the node is the pod's.
    let mut unbound = fixture("tokenreview-bound.json");
    let extra = unbound["status"]["user"]["extra"].as_object_mut().unwrap();
    extra.remove("authentication.kubernetes.io/node-name");
    extra.remove("authentication.kubernetes.io/node-uid");
    let (auth, _) = auth_with(unbound, pod, "my-serviceaccount");
    assert_eq!(auth.check("kind-worker-7", TOKEN), Ok(()));
    assert!(auth.check(NODE, TOKEN).is_err());
}

#[test]
fn expired_tokens_and_other_accounts_are_refused() {
    let (auth, _) = auth_with(fixture("tokenreview-invalid.json"), Value::Null, "my-serviceaccount");
    let why = auth.check(NODE, TOKEN).unwrap_err().reason().to_string();
    assert!(why.contains("did not authenticate") && why.contains("has expired"), "{why}");
    let (auth, _) = auth_with(fixture("tokenreview-bound.json"), Value::Null, "trawl");
    let why = auth.check(NODE, TOKEN).unwrap_err().reason().to_string();
    assert!(why.contains("not to the workers' ServiceAccount"), "{why}");
}

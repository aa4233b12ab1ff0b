//! `trawl replay BEFORE --diff AFTER --emit diff` on two captures of real
//! servers (needs root): a lab of a client and five HTTP servers, recorded
//! on the client's veth before and after a "deploy" that retires `gone`,
//! brings up `new`, breaks `flaky` (every answer a 500) and slows `slow`
//! (50 ms per answer), while `steady` stays as it was. The L7 diff names
//! exactly those four edges, with the right reasons; the L4 diff only the
//! edge that went and the one that came.

use crate::support::{self, Capture, scratch, tools_or_skip};
use serde_json::Value;
use std::path::Path;
use trawl_host::lab::{Lab, PodSpec};

/// An HTTP/1.1 server on ADDR:8080: `/fail` answers 500, `/slow` answers
/// 50 ms late, anything else 200; always a 1,000-byte body.
const SERVER_PY: &str = r#"
import http.server, sys, time
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        if self.path.startswith('/slow'):
            time.sleep(0.05)
        body = b'x' * 1000
        self.send_response(500 if self.path.startswith('/fail') else 200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((sys.argv[1], 8080), Handler).serve_forever()
"#;

/// Twenty rounds, one every 100 ms, each a new connection to every
/// ADDR/PATH argument: the same pace before and after, so rates compare.
const CLIENT_PY: &str = r#"
import http.client, sys, time
targets = [a.split('/', 1) for a in sys.argv[1:]]
start = time.monotonic()
for i in range(20):
    time.sleep(max(0.0, start + i * 0.1 - time.monotonic()))
    for host, path in targets:
        c = http.client.HTTPConnection(host, 8080, timeout=5)
        c.request('GET', '/' + path)
        c.getresponse().read()
        c.close()
"#;

fn diff(before: &Path, after: &Path, inventory: &Path, map: &str) -> Value {
    let (b, a, inv) = (before.to_str().unwrap(), after.to_str().unwrap(), inventory.to_str().unwrap());
    let out = support::run_trawl(&["replay", b, "--diff", a, "--emit", "diff", "--map", map, "--inventory", inv]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ids(d: &Value, list: &str) -> Vec<String> {
    d[list].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
}

fn reasons(d: &Value, id: &str) -> Vec<String> {
    let edge = d["changed"].as_array().unwrap().iter().find(|e| e["id"] == id).unwrap();
    edge["reasons"].as_array().unwrap().iter().map(|r| r["reason"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_diff_of_two_captures_names_the_edges_that_changed_and_why() {
    if !support::root_or_skip() || !tools_or_skip(&["tcpdump", "python3"]) {
        return;
    }
    let dir = scratch("map-diff");
    let prefix = format!("md{}", std::process::id() % 100_000);
    let servers = ["gone", "new", "flaky", "slow", "steady"];
    let pods: Vec<PodSpec> = std::iter::once("client")
        .chain(servers)
        .map(|name| PodSpec { name: name.into(), namespace: "shop".into(), node: 0 })
        .collect();
    let mut lab = Lab::create(&prefix, 1, &pods).unwrap();
    let ip = |lab: &Lab, pod: &str| lab.pod(pod).ip.to_string();
    for pod in servers {
        let addr = ip(&lab, pod);
        lab.spawn(pod, "python3", &["-c", SERVER_PY, &addr]).unwrap();
    }
    let run = |targets: &[(&str, &str)]| {
        let args: Vec<String> = targets.iter().map(|(pod, path)| format!("{}/{path}", ip(&lab, pod))).collect();
        let mut cmd = lab.command("client", "python3");
        cmd.args(["-c", CLIENT_PY]).args(&args);
        assert!(cmd.status().unwrap().success(), "client {args:?}");
    };
    support::wait_for("the servers", || {
        servers.iter().all(|pod| {
            lab.command("client", "python3")
                .args(["-c", CLIENT_PY.replace("range(20)", "range(1)").as_str(), &format!("{}/ok", ip(&lab, pod))])
                .status()
                .is_ok_and(|s| s.success())
        })
    });
    let record = |name: &str, targets: &[(&str, &str)]| {
        let file = dir.join(name);
        let dump = Capture::on(&lab.pod("client").host_iface, &[], &file, "tcp port 8080");
        run(targets);
        dump.stop();
        file
    };
    let before = record("before.pcap", &[("gone", "ok"), ("flaky", "ok"), ("slow", "ok"), ("steady", "ok")]);
    let after = record("after.pcap", &[("new", "ok"), ("flaky", "fail"), ("slow", "slow"), ("steady", "ok")]);
    let inventory = dir.join("inventory.json");
    std::fs::write(&inventory, serde_json::to_vec(&lab.inventory()).unwrap()).unwrap();

    let edge = |server: &str, kind: &str| format!("pod/shop/client|pod/shop/{server}|{kind}");
    let l7 = diff(&before, &after, &inventory, "l7");
    assert_eq!(ids(&l7, "removed"), [edge("gone", "http")], "{l7}");
    assert_eq!(ids(&l7, "added"), [edge("new", "http")], "{l7}");
    assert_eq!(ids(&l7, "changed"), [edge("flaky", "http"), edge("slow", "http")], "steady is unchanged: {l7}");
    assert_eq!(reasons(&l7, &edge("flaky", "http")), ["error_rate"], "{l7}");
    assert_eq!(reasons(&l7, &edge("slow", "http")), ["latency_p99"], "{l7}");
    let slow = l7["changed"].as_array().unwrap().iter().find(|e| e["id"] == edge("slow", "http")).unwrap();
    let (was, is) = (slow["reasons"][0]["before"].as_f64().unwrap(), slow["reasons"][0]["after"].as_f64().unwrap());
    assert!(was < 20.0 && (50.0..100.0).contains(&is), "p99 {was} ms → {is} ms");
    let node_ids: Vec<&str> = l7["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    for pod in ["client", "gone", "new"] {
        assert!(node_ids.contains(&format!("pod/shop/{pod}").as_str()), "{node_ids:?}");
    }

    let l4 = diff(&before, &after, &inventory, "l4");
    assert_eq!(ids(&l4, "removed"), [edge("gone", "tcp")], "{l4}");
    assert_eq!(ids(&l4, "added"), [edge("new", "tcp")], "{l4}");
    assert_eq!(ids(&l4, "changed"), Vec::<String>::new(), "the same connections and bytes: {l4}");
    drop(lab);
    assert!(Lab::leftovers(&prefix).is_empty(), "the lab is gone");
}

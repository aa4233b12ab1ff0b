//! Two phases of real HTTP traffic, recorded in a netns lab (needs
//! root): a client and five servers, before and after a "deploy" that
//! retires `gone`, brings up `new`, breaks `flaky` (every answer a 500)
//! and slows `slow` (50 ms per answer), while `steady` stays as it was.
//! The phases land in 10 s intervals of their own (history's finest), on
//! either side of `boundary`, each whole in its interval.

use super::{Capture, wait_for};
use std::path::{Path, PathBuf};
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

/// The two captures, the lab's inventory, and the 10 s boundary between
/// them (unix seconds).
#[derive(Debug)]
pub(crate) struct Phases {
    pub before: PathBuf,
    pub after: PathBuf,
    pub inventory: PathBuf,
    pub boundary: u64,
}

/// Records both phases into `dir`; the lab (named `prefix`) is gone after.
pub(crate) fn record(dir: &Path, prefix: &str) -> Phases {
    let servers = ["gone", "new", "flaky", "slow", "steady"];
    let pods: Vec<PodSpec> = std::iter::once("client")
        .chain(servers)
        .map(|name| PodSpec { name: name.into(), namespace: "shop".into(), node: 0 })
        .collect();
    let mut lab = Lab::create(prefix, 1, &pods).unwrap();
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
    wait_for("the servers", || {
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
    // History keeps 10 s intervals: each phase starts a second into one
    // of its own (and takes about three), so [boundary - 10, boundary)
    // holds all of "before" and [boundary, boundary + 10) all of "after".
    let next_interval = || {
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        std::thread::sleep(std::time::Duration::from_secs_f64(11.0 - wall % 10.0));
        (wall as u64 / 10 + 1) * 10
    };
    next_interval();
    let before = record("before.pcap", &[("gone", "ok"), ("flaky", "ok"), ("slow", "ok"), ("steady", "ok")]);
    let boundary = next_interval();
    let after = record("after.pcap", &[("new", "ok"), ("flaky", "fail"), ("slow", "slow"), ("steady", "ok")]);
    let inventory = dir.join("inventory.json");
    std::fs::write(&inventory, serde_json::to_vec(&lab.inventory()).unwrap()).unwrap();
    drop(lab);
    assert!(Lab::leftovers(prefix).is_empty(), "the lab is gone");
    Phases { before, after, inventory, boundary }
}

/// Both phases in one capture (`mergecap`), for a server to replay.
pub(crate) fn merged(p: &Phases, dir: &Path) -> PathBuf {
    let both = dir.join("both.pcap");
    let status = std::process::Command::new("mergecap").arg("-w").arg(&both).arg(&p.before).arg(&p.after).status();
    assert!(status.unwrap().success(), "mergecap");
    both
}

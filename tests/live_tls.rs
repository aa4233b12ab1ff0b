//! L7 through TLS, live (root, as CI runs): real TLS servers and clients in
//! the netns lab, with a self-signed certificate made here, and
//! `trawl serve --live --tls on` reading their plaintext at OpenSSL.
//! - nginx over HTTPS with curl (HTTP/1.1 and HTTP/2 over TLS) and Python's
//!   `ssl` (the `SSL_read_ex`/`SSL_write_ex` path): the L7 edge is `http`,
//!   marked TLS, and its requests equal nginx's access log; a request by
//!   name carries its server name (SNI);
//! - redis-server `--tls-port` with `redis-cli --tls`: the `redis` edge
//!   equals redis's own command counts;
//! - `tls && http` selects the HTTPS edge and nothing else;
//! - the L4 edge is what the client's veth carried (tcpdump), ciphertext
//!   and all;
//! - a TLS connection between two untargeted pods yields no records;
//! - a client with OpenSSL linked in statically is found by its symbols;
//! - after `kill -9`, bpftool shows none of its uprobe links left, and no
//!   process keeps a breakpoint;
//! - with `--tls-scope process`, only the targeted pods' processes get
//!   breakpoints, and the server is still captured.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{Capture, scratch, tools_or_skip};
use trawl_host::lab::{Lab, PodSpec};

fn edges(map: &Value) -> BTreeMap<String, Value> {
    map["edges"].as_array().into_iter().flatten().map(|e| (e["id"].as_str().unwrap().to_string(), e.clone())).collect()
}

fn map(port: u16, query: &str) -> BTreeMap<String, Value> {
    edges(&support::get_json(port, &format!("/api/map?map=l7&group_by=pod{query}")))
}

fn run(c: &mut Command) -> String {
    let out = c.stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "{c:?}: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `redis-cli --tls` in `pod` against the cache's TLS port.
fn redis_tls(lab: &Lab, pod: &str, args: &[&str]) -> String {
    let cache = lab.pod("cache").ip.to_string();
    run(lab.command(pod, "redis-cli").args(["--tls", "--insecure", "-h", &cache, "-p", "6380"]).args(args))
}

fn https_server(lab: &mut Lab, pod: &str, dir: &Path, cert: &Path, key: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let ip = lab.pod(pod).ip;
    let conf = support::nginx_conf(
        dir,
        &format!(
            "log_format trawl '$remote_addr $server_protocol $request_uri $status';\n    access_log {}/access.log trawl;",
            dir.display()
        ),
        &format!(
            "listen {ip}:8443 ssl http2;\n        ssl_certificate {};\n        ssl_certificate_key {};\n        location / {{ return 200 \"over tls\\n\"; }}",
            cert.display(),
            key.display()
        ),
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let (p, c) = (dir.display().to_string(), dir.join("nginx.conf").display().to_string());
    lab.spawn(pod, "nginx", &["-p", &p, "-c", &c]).unwrap();
}

/// The ids of the perf-event links (uprobes and uretprobes) that run
/// trawl's OpenSSL programs, as bpftool lists them.
fn openssl_probe_links() -> Vec<u64> {
    let json = |args: &[&str]| -> Value {
        let out = Command::new("bpftool").arg("-j").args(args).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    let programs: Vec<u64> = json(&["prog", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("trawl_ssl")))
        .filter_map(|p| p["id"].as_u64())
        .collect();
    json(&["link", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["type"] == "perf_event" && l["prog_id"].as_u64().is_some_and(|id| programs.contains(&id)))
        .filter_map(|l| l["id"].as_u64())
        .collect()
}

/// Whether `SSL_write` in process `pid`'s libssl starts with a breakpoint
/// (int3, 0xcc): whether the kernel placed a uprobe in that process.
fn breakpoint_in(pid: u32) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let lib = maps.lines().find(|l| l.contains("libssl.so")).and_then(|l| l.split_whitespace().nth(5)).unwrap();
    let nm = Command::new("nm").args(["-D", "--defined-only", lib]).output().unwrap();
    let offset = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .find(|l| l.ends_with(" SSL_write") || l.contains(" SSL_write@@"))
        .and_then(|l| u64::from_str_radix(l.split_whitespace().next()?, 16).ok())
        .unwrap();
    // The text segment's addresses are its file offsets in Debian's libssl.
    for line in maps.lines().filter(|l| l.contains("libssl.so")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (start, end) = f[0].split_once('-').unwrap();
        let (start, end) = (u64::from_str_radix(start, 16).unwrap(), u64::from_str_radix(end, 16).unwrap());
        let file_off = u64::from_str_radix(f[2], 16).unwrap();
        if f[1].contains('x') && (file_off..file_off + (end - start)).contains(&offset) {
            let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
            mem.seek(SeekFrom::Start(start + offset - file_off)).unwrap();
            let mut byte = [0u8];
            mem.read_exact(&mut byte).unwrap();
            return byte[0] == 0xcc;
        }
    }
    panic!("no executable libssl mapping holds SSL_write in {pid}");
}

/// The nginx processes of a pod.
fn nginx_pids(lab: &Lab, pod: &str) -> Vec<u32> {
    let out = Command::new("ip").args(["netns", "pids", &lab.pod(pod).netns]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|pid: &u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "nginx"))
        .collect()
}

#[test]
fn tls_plaintext_is_dissected_like_cleartext_and_nothing_is_left_attached() {
    if !support::root_or_skip() {
        return;
    }
    if !tools_or_skip(&[
        "nginx",
        "curl",
        "openssl",
        "redis-server",
        "redis-cli",
        "python3",
        "tcpdump",
        "bpftool",
        "gcc",
    ]) {
        return;
    }
    let dir = scratch("live-tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=web", "-days", "1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(made.success(), "openssl req: {made}");
    let prefix = format!("tt{}", std::process::id() % 100_000);
    let pod = |name: &str, namespace: &str, node| PodSpec { name: name.into(), namespace: namespace.into(), node };
    let pods = [
        pod("web", "shop", 0),
        pod("client", "shop", 0),
        pod("cache", "data", 1),
        pod("vault", "other", 1),
        pod("stranger", "other", 1),
    ];
    let mut lab = Lab::create(&prefix, 2, &pods).unwrap();
    https_server(&mut lab, "web", &dir.join("web"), &cert, &key);
    https_server(&mut lab, "vault", &dir.join("vault"), &cert, &key);
    let cache_ip = lab.pod("cache").ip.to_string();
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    lab.spawn(
        "cache",
        "redis-server",
        &[
            "--bind",
            &cache_ip,
            "--port",
            "0",
            "--tls-port",
            "6380",
            "--tls-cert-file",
            &cert_s,
            "--tls-key-file",
            &key_s,
            "--tls-auth-clients",
            "no",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
    )
    .unwrap();
    let (web_ip, vault_ip) = (lab.pod("web").ip, lab.pod("vault").ip);
    let curl = |lab: &Lab, pod: &str, args: &[&str]| {
        let mut c = lab.command(pod, "curl");
        c.args(["-sk", "-o", "/dev/null", "-w", "%{http_version} ", "--max-time", "5"]).args(args);
        c.output().unwrap()
    };
    support::wait_for("the HTTPS servers", || {
        curl(&lab, "client", &[&format!("https://{web_ip}:8443/ready")]).status.success()
            && curl(&lab, "stranger", &[&format!("https://{vault_ip}:8443/ready")]).status.success()
    });
    support::wait_for("redis over TLS", || {
        lab.command("client", "redis-cli")
            .args(["--tls", "--insecure", "-h", &cache_ip, "-p", "6380", "PING"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
    });
    let inventory = dir.join("inventory.json");
    std::fs::write(&inventory, lab.inventory().to_string()).unwrap();
    let access = |pod: &str| std::fs::read_to_string(dir.join(pod).join("access.log")).unwrap_or_default();
    let (web_before, vault_before) = (access("web").lines().count(), access("vault").lines().count());

    let client_pcap = dir.join("client.pcap");
    let capture = Capture::on(
        &lab.pod("client").host_iface,
        &["-Q", "in"],
        &client_pcap,
        &format!("tcp and dst host {web_ip} and dst port 8443"),
    );
    let (trawl, port) =
        support::serve_live(&lab.netns_prefix(), &inventory, &["--tls", "on", "--exclude-namespace", "other"]);
    // The first retarget probes the OpenSSL the targeted pods map.
    support::wait_for("OpenSSL probed", || {
        let health = support::get_json(port, "/api/health");
        health["live"]["tls"]["files"].as_array().is_some_and(|f| !f.is_empty())
    });
    // Four entry probes, four return probes and SSL_free's, on one libssl.
    let probes = openssl_probe_links();
    assert!(probes.len() >= 9, "{probes:?}");

    // HTTP/1.1 over TLS: one connection per request, the last with a
    // secret header that redaction must scrub as it does in cleartext.
    for i in 0..4 {
        let out = curl(&lab, "client", &["--http1.1", &format!("https://{web_ip}:8443/h1/{i}")]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "1.1 ");
    }
    let out = curl(
        &lab,
        "client",
        &["--http1.1", "-H", "Authorization: Bearer s3cret", &format!("https://{web_ip}:8443/h1/secret")],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1.1 ");
    // By name, so the client sends SNI (never for an address).
    let resolve = format!("web.shop:8443:{web_ip}");
    let out = curl(&lab, "client", &["--http1.1", "--resolve", &resolve, "https://web.shop:8443/h1/sni"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1.1 ");
    // HTTP/2 over TLS (ALPN): three requests on one connection.
    let h2: Vec<String> = (0..3).map(|i| format!("https://{web_ip}:8443/h2/{i}")).collect();
    let mut args = vec!["--http2", h2[0].as_str()];
    for url in &h2[1..] {
        args.extend(["-o", "/dev/null", url.as_str()]);
    }
    let out = curl(&lab, "client", &args);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 2 2 ");
    // Python's ssl (SSL_read_ex/SSL_write_ex), one connection per request.
    let py = format!(
        "import ssl, urllib.request\nctx = ssl._create_unverified_context()\nfor i in range(3):\n    urllib.request.urlopen('https://{web_ip}:8443/py/%d' % i, context=ctx).read()\n"
    );
    run(lab.command("client", "python3").args(["-c", &py]));
    // Redis over TLS.
    for i in 0..3 {
        let (k, v) = (format!("key{i}"), format!("value{i}"));
        let out = redis_tls(&lab, "client", &["SET", &k, &v]);
        assert_eq!(out.trim(), "OK");
        redis_tls(&lab, "client", &["GET", &k]);
    }
    // Two untargeted pods (namespace `other` is excluded) speak TLS too.
    for i in 0..3 {
        assert!(curl(&lab, "stranger", &[&format!("https://{vault_ip}:8443/hidden/{i}")]).status.success());
    }

    // Records finish when the SSL objects are freed, and are published.
    let web_log: Vec<String> = access("web").lines().skip(web_before).map(str::to_string).collect();
    let from_client = web_log.iter().filter(|l| l.starts_with(&format!("{} ", lab.pod("client").ip))).count() as u64;
    assert_eq!(from_client, 4 + 1 + 1 + 3 + 3, "{web_log:#?}");
    assert_eq!(web_log.iter().filter(|l| l.contains(" HTTP/2.0 ")).count(), 3, "{web_log:#?}");
    let http_id = "pod/shop/client|pod/shop/web|http";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while map(port, "").get(http_id).is_none_or(|e| e["requests"].as_u64() != Some(from_client)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the HTTPS edge did not come up: {:#?}\n{:#}\n{}",
            map(port, ""),
            support::get_json(port, "/api/health"),
            support::get_json(port, "/api/records?filter=http&limit=100")["records"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| format!("{} {} {} {}\n", r["method"], r["summary"], r["src"]["port"], r["fields"]))
                .collect::<String>()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(2));
    let l7 = map(port, "");
    let edge = &l7[http_id];
    assert_eq!(edge["requests"], from_client, "{edge:#}");
    assert_eq!(edge["tls_requests"], from_client, "{edge:#}");
    assert_eq!(edge["errors"], 0, "{edge:#}");

    // Redis: the server's own counts.
    let stats = redis_tls(&lab, "client", &["INFO", "commandstats"]);
    let calls = |cmd: &str| support::redis_calls(&stats, cmd);
    let redis = &l7["pod/shop/client|pod/data/cache|redis"];
    // The readiness PING was before trawl started.
    assert_eq!(calls("set") + calls("get"), 6, "{stats}");
    assert_eq!(redis["requests"], 6, "{redis:#}");
    assert_eq!(redis["tls_requests"], 6, "{redis:#}");

    // KFL2: `tls && http` is the HTTPS edge alone.
    let selected = map(port, "&filter=tls%20%26%26%20http");
    assert_eq!(selected.keys().collect::<Vec<_>>(), [http_id], "{selected:#?}");
    assert_eq!(selected[http_id]["requests"], from_client);
    assert!(map(port, "&filter=!tls").is_empty());

    // The server name, where the client sent one.
    let named = support::get_json(port, "/api/records?filter=tls_sni%20%3D%3D%20%22web.shop%22&limit=100");
    let named: Vec<&Value> = named["records"].as_array().unwrap().iter().collect();
    assert_eq!(named.len(), 1, "{named:#?}");
    assert_eq!(named[0]["summary"], "/h1/sni");
    assert_eq!(named[0]["tls_sni"], "web.shop");

    // Redaction applies to the TLS stream as to cleartext.
    let records = support::get_json(port, "/api/records?filter=tls%20%26%26%20http&limit=100");
    let text = records.to_string();
    assert!(text.contains("/h1/secret"), "{text}");
    assert!(!text.contains("s3cret"), "the secret header was not redacted: {text}");

    // Untargeted pods: nginx served them, trawl recorded nothing of theirs.
    let vault_log = access("vault").lines().count() - vault_before;
    assert_eq!(vault_log, 3);
    assert!(l7.keys().all(|id| !id.contains("pod/other/")), "{l7:#?}");

    // OpenSSL linked into the executable (no libssl.so mapped), calling the
    // untargeted vault: only the client's side can give the plaintext.
    let client = dir.join("static_tls_client");
    let built = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&client)
        .arg(support::project_root().join("tests/e2e/static_tls_client.c"))
        .args(["-Wl,-Bstatic", "-lssl", "-lcrypto", "-Wl,-Bdynamic", "-lpthread", "-ldl"])
        .status()
        .unwrap();
    assert!(built.success(), "gcc (libssl-dev's static libraries) failed: {built}");
    // It waits for a rescan to find it before it connects.
    let out =
        run(lab.command("client", client.to_str().unwrap()).args([&vault_ip.to_string(), "8443", "/static", "3", "5"]));
    assert_eq!(out.lines().filter(|l| l.starts_with("HTTP/1.1 200")).count(), 3, "{out}");
    let static_id = "pod/shop/client|pod/other/vault|http";
    support::wait_for("the static client's edge", || {
        map(port, "").get(static_id).is_some_and(|e| e["tls_requests"].as_u64() == Some(3))
    });
    assert_eq!(access("vault").lines().filter(|l| l.contains(" /static/")).count(), 3);

    // L4 stays what the wire carried (ciphertext): client → web on 8443.
    std::thread::sleep(Duration::from_secs(2));
    capture.stop();
    let l4 = edges(&support::get_json(port, "/api/map?map=l4&group_by=pod"));
    let l4_edge = &l4["pod/shop/client|pod/shop/web|tcp"];
    let mut reader = pcap_file::pcap::PcapReader::new(std::fs::File::open(&client_pcap).unwrap()).unwrap();
    let (mut packets, mut bytes) = (0u64, 0u64);
    while let Some(pkt) = reader.next_packet() {
        packets += 1;
        bytes += u64::from(pkt.unwrap().orig_len);
    }
    assert_eq!(
        (l4_edge["to_server"]["packets"].as_u64().unwrap(), l4_edge["to_server"]["bytes"].as_u64().unwrap()),
        (packets, bytes),
        "{l4_edge:#}"
    );

    // TLS health: nothing lost, and the status names what was probed.
    let health = support::get_json(port, "/api/health");
    let tls = &health["live"]["tls"];
    assert_eq!(tls["active"], true, "{tls:#}");
    assert!(tls["streams"].as_u64().unwrap() >= 5 + 1 + 3 + 6, "{tls:#}");
    assert_eq!(health["counters"]["losses"]["tls_lost_bytes"], 0, "{health:#}");
    assert_eq!(health["counters"]["losses"]["tls_ring_full"], 0, "{health:#}");

    // kill -9: the probes go with the process.
    let mut trawl = trawl;
    trawl.0.kill().unwrap();
    let _ = trawl.0.wait();
    let left: Vec<u64> = openssl_probe_links().into_iter().filter(|id| probes.contains(id)).collect();
    assert!(left.is_empty(), "uprobe links left after kill -9: {left:?}");
    let (web, vault) = (nginx_pids(&lab, "web"), nginx_pids(&lab, "vault"));
    assert!(!web.is_empty() && !vault.is_empty());
    assert!(web.iter().chain(&vault).all(|&pid| !breakpoint_in(pid)), "a breakpoint outlived trawl");

    // Per process: only the targeted pods' processes get breakpoints (the
    // untargeted nginx shares the same libssl and pays nothing), and the
    // long-lived server is still captured.
    let (trawl, port) = support::serve_live(
        &lab.netns_prefix(),
        &inventory,
        &["--tls", "on", "--tls-scope", "process", "--exclude-namespace", "other"],
    );
    support::wait_for("OpenSSL probed per process", || {
        let health = support::get_json(port, "/api/health");
        health["live"]["tls"]["files"]
            .as_array()
            .is_some_and(|f| f.iter().any(|k| k.as_str().is_some_and(|k| k.contains('@'))))
    });
    assert!(web.iter().all(|&pid| breakpoint_in(pid)), "the targeted nginx has no breakpoint");
    assert!(vault.iter().all(|&pid| !breakpoint_in(pid)), "the untargeted nginx has a breakpoint");
    let out = curl(&lab, "client", &["--http1.1", &format!("https://{web_ip}:8443/h1/per-process")]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1.1 ");
    support::wait_for("the per-process record", || {
        let records = support::get_json(port, "/api/records?filter=tls%20%26%26%20http&limit=10");
        records.to_string().contains("/h1/per-process")
    });
    drop(trawl);
    assert!(web.iter().all(|&pid| !breakpoint_in(pid)), "a breakpoint outlived trawl");
}

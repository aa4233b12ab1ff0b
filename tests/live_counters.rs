//! Live L4 counting with eBPF (needs root, as CI runs): a lab of four pods
//! on two "nodes" (network namespaces on two bridges) runs a fixed traffic
//! script against real servers, while tcpdump records what each pod sends
//! on its host-side veth (`-Q in`). The eBPF counters must equal those
//! captures exactly, per direction, in packets and bytes; so a packet is
//! counted once although it crosses two pods' veths (and, across nodes,
//! the link between the bridges). When trawl exits its programs are gone
//! from the interfaces, and afterwards nothing of the lab remains.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use pcap_file::pcap::PcapReader;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use support::{Capture, Killed, scratch, tools_or_skip};
use trawl_host::lab::{Lab, PodSpec};

/// (l4, src, sport, dst, dport) → (packets, bytes)
type Directional = BTreeMap<(String, String, u16, String, u16), (u64, u64)>;

/// Every IPv4 TCP/UDP packet from `subnet` (its first two octets) in an
/// Ethernet capture.
fn count_pcap(file: &Path, subnet: [u8; 2], into: &mut Directional) {
    let mut reader = PcapReader::new(std::fs::File::open(file).unwrap()).unwrap();
    while let Some(p) = reader.next_packet() {
        let p = p.unwrap();
        let d = &p.data;
        if d.len() < 34 || d[12..14] != [0x08, 0x00] {
            continue;
        }
        let ihl = usize::from(d[14] & 0x0f) * 4;
        let proto = match d[23] {
            6 => "tcp",
            17 => "udp",
            _ => continue,
        };
        let src = Ipv4Addr::new(d[26], d[27], d[28], d[29]);
        let dst = Ipv4Addr::new(d[30], d[31], d[32], d[33]);
        let l4 = 14 + ihl;
        if d.len() < l4 + 4 || src.octets()[..2] != subnet {
            continue;
        }
        let sport = u16::from_be_bytes([d[l4], d[l4 + 1]]);
        let dport = u16::from_be_bytes([d[l4 + 2], d[l4 + 3]]);
        let e = into.entry((proto.into(), src.to_string(), sport, dst.to_string(), dport)).or_default();
        e.0 += 1;
        e.1 += u64::from(p.orig_len);
    }
}

/// `trawl count ARGS`, its stderr, and the line that says it is counting.
fn start_count(args: &[&str]) -> (Killed, std::io::Lines<BufReader<std::process::ChildStderr>>, String) {
    let mut count =
        Killed(support::trawl().arg("count").args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let mut stderr = BufReader::new(count.0.stderr.take().unwrap()).lines();
    let ready = stderr.next().unwrap().unwrap();
    (count, stderr, ready)
}

/// `trawl count`'s output: totals per direction, for senders in `subnet`.
fn count_readings(stdout: &[u8], subnet: &str) -> Directional {
    let mut out = Directional::new();
    for r in support::json_lines(stdout) {
        let src = r["src"].as_str().unwrap().to_string();
        if src.starts_with(subnet) {
            let key = (
                r["l4"].as_str().unwrap().to_string(),
                src,
                r["sport"].as_u64().unwrap() as u16,
                r["dst"].as_str().unwrap().to_string(),
                r["dport"].as_u64().unwrap() as u16,
            );
            out.insert(key, (r["packets"].as_u64().unwrap(), r["bytes"].as_u64().unwrap()));
        }
    }
    out
}

#[test]
fn ebpf_counts_equal_tcpdump_on_the_same_veths_and_count_once() {
    if !support::root_or_skip() {
        return;
    }
    if !tools_or_skip(&["tcpdump", "curl", "python3"]) {
        return;
    }
    let dir = scratch("live-counters");
    let prefix = format!("tl{}", std::process::id() % 100_000);
    let spec = |name: &str, namespace: &str, node| PodSpec { name: name.into(), namespace: namespace.into(), node };
    let mut lab = Lab::create(
        &prefix,
        2,
        &[spec("web", "shop", 0), spec("client", "shop", 0), spec("cache", "data", 1), spec("dns", "kube-system", 1)],
    )
    .unwrap();
    let web = lab.pod("web").ip.to_string();
    let dns = lab.pod("dns").ip.to_string();
    // Real servers: Python's HTTP server, and a UDP echo service.
    lab.spawn("web", "python3", &["-m", "http.server", "8080", "--bind", &web, "--directory", dir.to_str().unwrap()])
        .unwrap();
    std::fs::write(dir.join("big.bin"), vec![7u8; 300_000]).unwrap();
    let echo = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{dns}',5353))\nwhile True:\n d,a=s.recvfrom(65535)\n s.sendto(d,a)\n"
    );
    lab.spawn("dns", "python3", &["-c", &echo]).unwrap();
    support::wait_for("http server", || {
        lab.command("client", "curl")
            .args(["-sf", "-o", "/dev/null", &format!("http://{web}:8080/")])
            .status()
            .is_ok_and(|s| s.success())
    });

    let captures: Vec<(Capture, std::path::PathBuf)> = lab
        .pods
        .iter()
        .map(|p| {
            let file = dir.join(format!("{}.pcap", p.name));
            (Capture::on(&p.host_iface, &["-Q", "in"], &file, "ip"), file)
        })
        .collect();
    let (mut count, stderr, ready) = start_count(&["--netns-prefix", &lab.netns_prefix(), "--seconds", "6"]);
    assert!(ready.contains("counting on 4 interfaces"), "{ready}");
    for p in &lab.pods {
        assert_eq!(trawl_ebpf::tcx_programs(&p.host_iface).unwrap(), 2, "{}: sent and received", p.host_iface);
    }

    // The traffic script: same-node and cross-node TCP, cross-node UDP.
    let curl = |from: &str, path: &str| {
        let ok = lab
            .command(from, "curl")
            .args(["-sf", "-o", "/dev/null", "--max-time", "5", &format!("http://{web}:8080/{path}")])
            .status()
            .unwrap();
        assert!(ok.success(), "curl from {from}");
    };
    for _ in 0..3 {
        curl("client", "");
    }
    curl("client", "big.bin");
    curl("cache", "big.bin");
    curl("cache", "");
    let udp = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(2)\nfor i in range(5):\n s.sendto(b'x'*(100+i),('{dns}',5353))\n s.recvfrom(65535)\n"
    );
    assert!(lab.command("client", "python3").args(["-c", &udp]).status().unwrap().success());

    let mut stdout = Vec::new();
    std::io::Read::read_to_end(&mut count.0.stdout.take().unwrap(), &mut stdout).unwrap();
    let status = count.0.wait().unwrap();
    let rest: Vec<String> = stderr.map_while(Result::ok).collect();
    assert!(status.success(), "{}", rest.join("\n"));
    let ebpf = count_readings(&stdout, "10.213.");
    // The programs went with the process that attached them.
    for p in &lab.pods {
        assert_eq!(trawl_ebpf::tcx_programs(&p.host_iface).unwrap(), 0, "{} still has programs", p.host_iface);
    }
    let mut captured = Directional::new();
    for (c, file) in captures {
        c.stop();
        count_pcap(&file, [10, 213], &mut captured);
    }
    assert!(captured.len() >= 14, "too little traffic captured: {captured:?}");
    assert_eq!(ebpf, captured, "eBPF counters differ from tcpdump on the senders' veths");

    drop(lab);
    assert_eq!(Lab::leftovers(&prefix), Vec::<String>::new(), "the lab left things behind");
}

/// Two pods laid out as a routed CNI (Calico) lays them out: each in its
/// own namespace behind a veth, a /32 address, a default route through a
/// link-local gateway that the host answers by proxy ARP, and a host route
/// to each pod over its veth. `trawl count --routes` must find them from
/// the host's tables alone and count like tcpdump on their veths.
#[test]
fn routed_pods_are_found_from_host_routes_and_counted_once() {
    if !support::root_or_skip() || !tools_or_skip(&["tcpdump", "curl", "python3"]) {
        return;
    }
    let tag = std::process::id() % 100_000;
    let pods: Vec<(String, String, String)> =
        (0..2).map(|i| (format!("trwrt{tag}p{i}"), format!("trwrt{tag}v{i}"), format!("10.216.0.{}", i + 2))).collect();
    struct Cleanup(Vec<String>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for ns in &self.0 {
                let _ = std::process::Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
    }
    let _cleanup = Cleanup(pods.iter().map(|p| p.0.clone()).collect());
    let ip = |args: &[&str]| {
        let out = std::process::Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    };
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
    for (ns, host, addr) in &pods {
        ip(&["netns", "add", ns]);
        ip(&["link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&["-n", ns, "addr", "add", &format!("{addr}/32"), "dev", "eth0"]);
        ip(&["-n", ns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"]);
        ip(&["-n", ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"]);
        ip(&["link", "set", host, "up"]);
        std::fs::write(format!("/proc/sys/net/ipv4/conf/{host}/proxy_arp"), "1").unwrap();
        ip(&["route", "add", &format!("{addr}/32"), "dev", host, "scope", "link"]);
    }
    let dir = scratch("live-routes");
    let (server_ns, server) = (&pods[1].0, &pods[1].2);
    let _server = Killed(
        std::process::Command::new("ip")
            .args(["netns", "exec", server_ns, "python3", "-m", "http.server", "8080", "--bind", server])
            .args(["--directory", dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::fs::write(dir.join("big.bin"), vec![7u8; 200_000]).unwrap();
    let curl = |path: &str| {
        std::process::Command::new("ip")
            .args(["netns", "exec", &pods[0].0, "curl", "-sf", "-o", "/dev/null", "--max-time", "5"])
            .arg(format!("http://{server}:8080/{path}"))
            .status()
            .is_ok_and(|s| s.success())
    };
    support::wait_for("http server in a routed pod", || curl(""));

    let captures: Vec<(Capture, std::path::PathBuf)> = pods
        .iter()
        .map(|(_, host, _)| {
            let file = dir.join(format!("{host}.pcap"));
            (Capture::on(host, &["-Q", "in"], &file, "ip"), file)
        })
        .collect();
    let (mut count, _stderr, ready) = start_count(&["--routes", "--seconds", "4"]);
    for (_, host, _) in &pods {
        assert!(ready.contains(host.as_str()), "{host} not found from the routes: {ready}");
    }
    assert!(curl("") && curl("big.bin") && curl(""), "curl between routed pods");
    let mut stdout = Vec::new();
    std::io::Read::read_to_end(&mut count.0.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(count.0.wait().unwrap().success());
    let ebpf = count_readings(&stdout, "10.216.");
    let mut captured = Directional::new();
    for (c, file) in captures {
        c.stop();
        count_pcap(&file, [10, 216], &mut captured);
    }
    assert!(captured.len() >= 6, "too little traffic captured: {captured:?}");
    assert_eq!(ebpf, captured, "eBPF counters differ from tcpdump on the routed pods' veths");
}

//! Live capture end to end (root, as CI runs): the demo's lab of six pods
//! on two nodes runs real nginx, dnsmasq and redis-server; two
//! `trawl serve --live` processes watch it at once, one with no capture
//! filter and one excluding the `data` namespace. Checked:
//! - L7 edges match the servers' own logs (nginx access log, dnsmasq query
//!   log, redis command stats), with no request doubled although
//!   same-node requests cross two captured interfaces;
//! - a pod pair's L4 edge equals what the two pods' veths carried, counted
//!   once (tcpdump `-Q in` on each sender's veth);
//! - the capture filter removes the L7 edges inside the `data` namespace
//!   and leaves its L4 edges, and changing the filters at runtime
//!   (`PUT /api/capture-filters`) retargets the payload capture;
//! - afterwards no namespace, veth or bridge of the lab remains.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;
use support::{Capture, scratch, tools_or_skip};
use trawl_host::demo::workloads::{DEMO_TOOLS, Round, client_round, demo_pods, start_servers};
use trawl_host::lab::Lab;

fn get(port: u16, query: &str) -> Value {
    support::get_json(port, &format!("/api/map?{query}"))
}

fn edges(map: &Value) -> BTreeMap<String, Value> {
    map["edges"].as_array().into_iter().flatten().map(|e| (e["id"].as_str().unwrap().to_string(), e.clone())).collect()
}

#[test]
fn live_maps_match_server_logs_and_count_once() {
    if !support::root_or_skip() {
        return;
    }
    let mut tools = DEMO_TOOLS.to_vec();
    tools.push("tcpdump");
    if !tools_or_skip(&tools) {
        return;
    }
    let dir = scratch("live-map");
    let prefix = format!("tm{}", std::process::id() % 100_000);
    let mut lab = Lab::create(&prefix, 2, &demo_pods()).unwrap();
    start_servers(&mut lab, &dir).unwrap();
    let inventory = dir.join("inventory.json");
    std::fs::write(&inventory, lab.inventory().to_string()).unwrap();
    // Only what the clients send from now on is compared.
    let access_before = std::fs::read_to_string(dir.join("access.log")).unwrap_or_default().lines().count();
    let dns_before = std::fs::read_to_string(dir.join("dnsmasq.log")).unwrap_or_default().matches("query[").count();

    // What frontend sent to web and web to frontend, at each sender's veth.
    let (web_ip, frontend_ip) = (lab.pod("web").ip, lab.pod("frontend").ip);
    let captures = [
        Capture::on(
            &lab.pod("frontend").host_iface,
            &["-Q", "in"],
            &dir.join("frontend.pcap"),
            &format!("tcp and dst host {web_ip}"),
        ),
        Capture::on(
            &lab.pod("web").host_iface,
            &["-Q", "in"],
            &dir.join("web.pcap"),
            &format!("tcp and dst host {frontend_ip}"),
        ),
    ];
    let (all, all_port) = support::serve_live(&lab.netns_prefix(), &inventory, &[]);
    let (filtered, filtered_port) =
        support::serve_live(&lab.netns_prefix(), &inventory, &["--exclude-namespace", "data"]);
    // The rings open on the first retarget; give both a moment.
    std::thread::sleep(Duration::from_secs(4));

    let mut asked = Round::default();
    for n in 0..5 {
        asked += client_round(&lab, n).unwrap();
    }
    // Records finish, counters are read (each second) and published.
    std::thread::sleep(Duration::from_secs(4));
    for c in captures {
        c.stop();
    }

    // L7 against the servers' logs.
    let l7 = edges(&get(all_port, "map=l7&group_by=pod"));
    let requests = |id: &str| l7.get(id).map_or(0, |e| e["requests"].as_u64().unwrap());
    let access = std::fs::read_to_string(dir.join("access.log")).unwrap();
    let served: Vec<&str> = access.lines().skip(access_before).collect();
    let from = |pod: &str| served.iter().filter(|l| l.starts_with(&format!("{} ", lab.pod(pod).ip))).count() as u64;
    assert_eq!(from("frontend"), asked.http_frontend, "nginx log: {served:?}");
    assert_eq!(requests("pod/shop/frontend|pod/shop/web|http"), from("frontend"), "{l7:#?}");
    assert_eq!(requests("pod/shop/checkout|pod/shop/web|http"), from("checkout"), "{l7:#?}");
    let dns_log = std::fs::read_to_string(dir.join("dnsmasq.log")).unwrap();
    let queries = dns_log.matches("query[").count() - dns_before;
    assert_eq!(queries as u64, asked.dns_frontend + asked.dns_worker, "{dns_log}");
    assert_eq!(requests("pod/shop/frontend|pod/kube-system/coredns|dns"), asked.dns_frontend, "{l7:#?}");
    assert_eq!(requests("pod/data/worker|pod/kube-system/coredns|dns"), asked.dns_worker, "{l7:#?}");
    let stats = lab
        .command("cache", "redis-cli")
        .args(["-h", &lab.pod("cache").ip.to_string(), "INFO", "commandstats"])
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&stats.stdout);
    let calls = |cmd: &str| support::redis_calls(&stats, cmd);
    assert_eq!(calls("set") + calls("get"), asked.redis_worker, "{stats}");
    assert_eq!(requests("pod/data/worker|pod/data/cache|redis"), asked.redis_worker, "{l7:#?}");

    // L4: the frontend → web edge is what each side's veth carried, once.
    let l4 = edges(&get(all_port, "map=l4&group_by=pod"));
    let edge = &l4["pod/shop/frontend|pod/shop/web|tcp"];
    let sent = |p: &str| {
        let mut reader =
            pcap_file::pcap::PcapReader::new(std::fs::File::open(dir.join(format!("{p}.pcap"))).unwrap()).unwrap();
        let (mut packets, mut bytes) = (0u64, 0u64);
        while let Some(pkt) = reader.next_packet() {
            packets += 1;
            bytes += u64::from(pkt.unwrap().orig_len);
        }
        (packets, bytes)
    };
    let counted = |d: &str| (edge[d]["packets"].as_u64().unwrap(), edge[d]["bytes"].as_u64().unwrap());
    assert_eq!(counted("to_server"), sent("frontend"), "{edge}");
    assert_eq!(counted("to_client"), sent("web"), "{edge}");

    // The capture filter: no L7 edge touches `data`, every L4 edge stays.
    let l7_filtered = edges(&get(filtered_port, "map=l7&group_by=pod"));
    // A record is kept when either end is targeted (as Kubeshark's
    // targeting does): only data ↔ data disappears.
    let both_in_data = |id: &str| id.matches("pod/data/").count() == 2;
    assert!(l7.keys().any(|id| both_in_data(id)), "{l7:#?}");
    assert!(l7_filtered.keys().all(|id| !both_in_data(id)), "{l7_filtered:#?}");
    assert!(l7_filtered.contains_key("pod/shop/frontend|pod/shop/web|http"), "{l7_filtered:#?}");
    let l4_filtered = edges(&get(filtered_port, "map=l4&group_by=pod"));
    assert!(l4_filtered.contains_key("pod/data/worker|pod/data/cache|tcp"), "{l4_filtered:#?}");
    assert_eq!(l4_filtered.keys().collect::<Vec<_>>(), l4.keys().collect::<Vec<_>>());

    // Capture filters change at runtime and the payload rings follow.
    let health = |port: u16| -> Value {
        let out = Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{port}/api/health")]).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let payload = |port: u16| -> Vec<String> {
        health(port)["live"]["payload"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
    };
    let data_ifaces: Vec<String> =
        lab.pods.iter().filter(|p| p.namespace == "data").map(|p| p.host_iface.clone()).collect();
    assert_eq!(payload(all_port).len(), lab.pods.len());
    assert!(payload(filtered_port).iter().all(|i| !data_ifaces.contains(i)), "{:?}", payload(filtered_port));
    let put = |port: u16, body: &str| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-H", "content-type: application/json"])
            .args(["--data", body, &format!("http://127.0.0.1:{port}/api/capture-filters")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(put(all_port, r#"{"pod_regex": "("}"#), "400", "a bad regex is refused");
    assert_eq!(put(all_port, r#"{"exclude_namespaces": ["data"]}"#), "200");
    support::wait_for("payload rings to follow the new filters", || payload(all_port) == payload(filtered_port));
    assert_eq!(health(all_port)["capture_filters"]["exclude_namespaces"], serde_json::json!(["data"]));

    drop(all);
    drop(filtered);
    drop(lab);
    assert_eq!(Lab::leftovers(&prefix), Vec::<String>::new(), "the lab left things behind");
}

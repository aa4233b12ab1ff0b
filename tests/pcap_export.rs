//! `trawl replay --write-pcap OUT.pcapng --filter KFL2` read back by
//! tshark: its conversations are exactly the flows of the matching records
//! (worked out here from `--emit records`), frame for frame as in the
//! original capture; the Name Resolution Block names the pods, and each
//! flow's first packet carries a comment naming its workloads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{self, tools_or_skip};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// The flows of records (as `--emit records` and `/api/records` give
/// them) by their two ends, in order.
pub(crate) fn flow_pairs<'a>(records: impl Iterator<Item = &'a Value>) -> BTreeSet<(String, String)> {
    let end = |e: &Value| format!("{}:{}", e["ip"].as_str().unwrap(), e["port"]);
    records
        .map(|r| {
            let mut ends = [end(&r["src"]), end(&r["dst"])];
            ends.sort();
            (ends[0].clone(), ends[1].clone())
        })
        .collect()
}

/// `tshark -z conv,tcp -z conv,udp`: frames and bytes per conversation,
/// keyed by its two ends (in order).
pub(crate) fn conversations(file: &std::path::Path) -> BTreeMap<(String, String), (u64, u64)> {
    let out =
        Command::new("tshark").arg("-r").arg(file).args(["-q", "-z", "conv,tcp", "-z", "conv,udp"]).output().unwrap();
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("<->"))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let mut ends = [w[0].to_string(), w[2].to_string()];
            ends.sort();
            // a <-> b, frames and bytes each way, then the totals.
            let (frames, bytes) = (w[9].parse().unwrap(), w[10].parse().unwrap());
            ((ends[0].clone(), ends[1].clone()), (frames, bytes))
        })
        .collect()
}

#[test]
fn the_pcapng_holds_exactly_the_matching_flows_with_names_and_comments() {
    if !tools_or_skip(&["tshark"]) {
        return;
    }
    let demo = support::project_root().join("examples/demo");
    let (pcap, inventory) = (demo.join("demo.pcap"), demo.join("inventory.json"));
    let filter = "redis || dns || (http && status_code >= 400)";

    // The flows a reader of the records would pick by hand.
    let records = support::json_lines(
        &support::trawl()
            .arg("replay")
            .arg(&pcap)
            .arg("--inventory")
            .arg(&inventory)
            .args(["--emit", "records"])
            .output()
            .unwrap()
            .stdout,
    );
    let chosen = |r: &Value| {
        let p = r["protocol"].as_str().unwrap();
        p == "redis" || p == "dns" || (p == "http" && r["status_code"].as_i64().is_some_and(|s| s >= 400))
    };
    let want = flow_pairs(records.iter().filter(|r| chosen(r)));
    assert!(want.len() > 5, "{want:?}");

    let dir = support::scratch("pcap-export");
    let out_file = dir.join("chosen.pcapng");
    let out = support::trawl()
        .arg("replay")
        .arg(&pcap)
        .arg("--inventory")
        .arg(&inventory)
        .arg("--write-pcap")
        .arg(&out_file)
        .args(["--filter", filter])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["flows"].as_u64(), Some(want.len() as u64), "{summary}");

    // Exactly the chosen conversations, each as the original capture has it.
    let got = conversations(&out_file);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), want);
    let original = conversations(&pcap);
    for (ends, counts) in &got {
        assert_eq!(Some(counts), original.get(ends), "{ends:?}: every frame of the flow, as captured");
    }
    assert_eq!(got.values().map(|c| c.0).sum::<u64>(), summary["packets"].as_u64().unwrap());

    // Names from the Name Resolution Block, as Wireshark shows them.
    let hosts = Command::new("tshark").arg("-r").arg(&out_file).args(["-q", "-z", "hosts"]).output().unwrap();
    let hosts = String::from_utf8_lossy(&hosts.stdout);
    for name in ["frontend-7d9c.shop", "cart-redis-0.shop", "coredns-abc12.kube-system"] {
        assert!(hosts.contains(name), "{name} in {hosts}");
    }
    let named = Command::new("tshark")
        .arg("-r")
        .arg(&out_file)
        .args(["-N", "n", "-T", "fields", "-e", "ip.src_host", "-e", "frame.comment"])
        .output()
        .unwrap();
    let named = String::from_utf8_lossy(&named.stdout);
    assert!(named.lines().any(|l| l.starts_with("frontend-7d9c.shop")), "{named}");
    // One comment per flow, naming both workloads.
    let comments: Vec<&str> = named.lines().filter_map(|l| l.split('\t').nth(1)).filter(|c| !c.is_empty()).collect();
    assert_eq!(comments.len(), want.len(), "{comments:?}");
    assert!(comments.iter().all(|c| c.starts_with("trawl: ") && c.matches("pod/").count() == 2), "{comments:?}");

    // A bad filter is a clear error, and writes nothing.
    let bad = dir.join("bad.pcapng");
    let out = support::trawl()
        .arg("replay")
        .arg(&pcap)
        .arg("--write-pcap")
        .arg(&bad)
        .args(["--filter", "redis &&& x"])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--filter"));
    assert!(!bad.exists());
}

/// A serving trawl's ring: `GET /api/pcap` with an L7 edge's id gives the
/// flows of that edge's records, with an L4 edge's id every connection
/// between its ends, and with a filter the flows of the matching records.
#[test]
fn the_served_ring_gives_an_edges_and_a_filters_packets() {
    if !tools_or_skip(&["tshark"]) {
        return;
    }
    let (_server, port) = support::serve_demo(&["--speed", "max"]);
    support::wait_for_replay_end(|path| support::get_json(port, path));
    let dir = support::scratch("pcap-ring");
    let fetch = |query: &str, name: &str| {
        let file = dir.join(name);
        let url = format!("http://127.0.0.1:{port}/api/pcap?{query}");
        let out = Command::new("curl").args(["-sf", "-G", "-o"]).arg(&file).arg(&url).output().unwrap();
        assert!(out.status.success(), "{url}");
        conversations(&file)
    };
    let records = support::get_json(port, "/api/records?limit=1000")["records"].as_array().unwrap().clone();
    let flows_of = |keep: &dyn Fn(&Value) -> bool| flow_pairs(records.iter().filter(|r| keep(r)));

    // An L7 edge: the flows of its records.
    let l7 = support::get_json(port, "/api/map?map=l7");
    let edge = l7["edges"].as_array().unwrap().iter().find(|e| e["protocol"] == "redis").unwrap();
    let id = edge["id"].as_str().unwrap();
    let pod = |id: &str| id.rsplit('/').next().unwrap().to_string();
    let (source, target) = (pod(edge["source"].as_str().unwrap()), pod(edge["target"].as_str().unwrap()));
    let want = flows_of(&|r| {
        r["protocol"] == "redis"
            && r["src"]["workload"]["name"] == source.as_str()
            && r["dst"]["workload"]["name"] == target.as_str()
    });
    let got = fetch(&format!("edge={}", id.replace('|', "%7C")), "l7.pcapng");
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), want, "{id}");

    // An L4 edge: every connection between its ends, as many as it counts.
    let l4 = support::get_json(port, "/api/map?map=l4");
    let edge = l4["edges"].as_array().unwrap().iter().find(|e| e["l4"] == "udp").unwrap();
    let got = fetch(&format!("edge={}", edge["id"].as_str().unwrap().replace('|', "%7C")), "l4.pcapng");
    assert_eq!(got.len() as u64, edge["flows"].as_u64().unwrap(), "{edge}");
    let packets: u64 = got.values().map(|c| c.0).sum();
    assert_eq!(packets, edge["packets"].as_f64().unwrap() as u64, "every packet of the edge");

    // A filter: the flows of the records it matches.
    let got = fetch("filter=dns", "dns.pcapng");
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), flows_of(&|r| r["protocol"] == "dns"));
    let refused = Command::new("curl")
        .args(["-s", "-w", " %{http_code}", &format!("http://127.0.0.1:{port}/api/pcap?filter=dns%20%26%26%26")])
        .output()
        .unwrap();
    let refused = String::from_utf8_lossy(&refused.stdout);
    assert!(refused.ends_with(" 400") && refused.contains("\"error\""), "{refused}");
}

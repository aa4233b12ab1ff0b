//! Which host-side interfaces belong to which workloads on this node.
//!
//! Pods live in network namespaces. Container runtimes (containerd's CNI
//! plugins) and `trawl demo` name them under `/run/netns`, so the node
//! agent lists those, asks iproute2 for each namespace's addresses (JSON
//! output), and follows each veth's peer index to its host-side end.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

/// Where named network namespaces live.
pub const NETNS_DIR: &str = "/run/netns";

/// A workload's interface as seen from the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInterface {
    /// The network namespace's name under `/run/netns`.
    pub netns: String,
    /// The host-side end of its veth: where the flow counters attach.
    pub host_iface: String,
    /// The workload's addresses on that interface (not link-local).
    pub ips: Vec<IpAddr>,
}

/// Host interface names by index.
fn host_interfaces() -> Result<Vec<(u32, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/sys/class/net").context("cannot list /sys/class/net")? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(index) = std::fs::read_to_string(entry.path().join("ifindex")) else { continue };
        if let Ok(index) = index.trim().parse() {
            out.push((index, name));
        }
    }
    Ok(out)
}

/// The addresses of the interfaces in `netns` that have a peer in another
/// namespace: `(peer index, addresses)`.
fn netns_links(netns: &str) -> Result<Vec<(u32, Vec<IpAddr>)>> {
    let out =
        Command::new("ip").args(["-n", netns, "-j", "addr", "show"]).output().context("cannot run ip (iproute2)")?;
    if !out.status.success() {
        bail!("ip -n {netns} addr: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let doc: Value = serde_json::from_slice(&out.stdout).context("ip -j output is not JSON")?;
    Ok(parse_links(&doc))
}

fn parse_links(doc: &Value) -> Vec<(u32, Vec<IpAddr>)> {
    let mut out = Vec::new();
    for link in doc.as_array().into_iter().flatten() {
        // A veth's peer in another namespace: link_index plus link_netnsid.
        let (Some(peer), true) = (link["link_index"].as_u64(), link.get("link_netnsid").is_some()) else { continue };
        let ips: Vec<IpAddr> = link["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["scope"] != "link")
            .filter_map(|a| a["local"].as_str()?.parse().ok())
            .collect();
        if !ips.is_empty() {
            out.push((peer as u32, ips));
        }
    }
    out
}

/// Every named namespace whose name starts with `prefix`, with its
/// host-side interface and addresses. Namespaces that vanish while being
/// read are skipped.
pub fn discover(prefix: &str) -> Result<Vec<PodInterface>> {
    discover_in(Path::new(NETNS_DIR), prefix)
}

fn discover_in(dir: &Path, prefix: &str) -> Result<Vec<PodInterface>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(Vec::new()) };
    let host = host_interfaces()?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let netns = entry.file_name().to_string_lossy().into_owned();
        if !netns.starts_with(prefix) {
            continue;
        }
        let links = match netns_links(&netns) {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(netns, error = %e, "skipping namespace");
                continue;
            }
        };
        for (peer, ips) in links {
            if let Some((_, name)) = host.iter().find(|(i, _)| *i == peer) {
                out.push(PodInterface { netns: netns.clone(), host_iface: name.clone(), ips });
            }
        }
    }
    out.sort_by(|a, b| a.host_iface.cmp(&b.host_iface));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_peers_and_their_addresses() {
        let doc: Value = serde_json::from_str(
            r#"[{"ifindex":1,"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","scope":"host"}]},
                {"ifindex":2,"link_index":5,"ifname":"eth0","link_netnsid":0,"addr_info":[
                  {"family":"inet","local":"10.213.0.2","prefixlen":24,"scope":"global"},
                  {"family":"inet6","local":"fd00::2","prefixlen":64,"scope":"global"},
                  {"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"}]}]"#,
        )
        .unwrap();
        let links = parse_links(&doc);
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].0, 5);
        assert_eq!(links[0].1, vec!["10.213.0.2".parse::<IpAddr>().unwrap(), "fd00::2".parse().unwrap()]);
    }
}

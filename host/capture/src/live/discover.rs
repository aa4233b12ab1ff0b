//! Which host-side interfaces belong to which workloads on this node.
//!
//! Two ways, both through iproute2's JSON output:
//! - [`Discovery::Netns`]: pods live in network namespaces, which
//!   container runtimes (containerd's CNI plugins) and `trawl demo` name
//!   under `/run/netns`. The agent lists those, asks for each namespace's
//!   addresses, and follows each veth's peer index to its host-side end.
//!   Entering a namespace (`ip -n`) needs CAP_SYS_ADMIN.
//! - [`Discovery::Routes`]: routed CNIs (Calico, Cilium, kindnet, the AWS
//!   VPC CNI) give each pod a host route (`10.1.2.3 dev cali…`) over a veth
//!   whose peer is in another namespace. Read from the host's own tables,
//!   with no capability beyond reading them. Bridge CNIs (flannel's cni0)
//!   have no such routes; they need `Netns`.

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
    Ok(parse_links(&ip_json(&["-n", netns, "-j", "addr", "show"])?))
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

/// How the node's workloads are found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// Named network namespaces whose name starts with this.
    Netns { prefix: String },
    /// Host routes to single addresses over veths.
    Routes,
}

/// The workloads on this node, found the way `how` says.
pub fn discover(how: &Discovery) -> Result<Vec<PodInterface>> {
    match how {
        Discovery::Netns { prefix } => discover_in(Path::new(NETNS_DIR), prefix),
        Discovery::Routes => discover_routed(),
    }
}

fn ip_json(args: &[&str]) -> Result<Value> {
    let out = Command::new("ip").args(args).output().context("cannot run ip (iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout).context("ip -j output is not JSON")
}

fn discover_routed() -> Result<Vec<PodInterface>> {
    let links = ip_json(&["-j", "link", "show", "type", "veth"])?;
    let v4 = ip_json(&["-j", "-4", "route", "show", "table", "all"])?;
    let v6 = ip_json(&["-j", "-6", "route", "show", "table", "all"])?;
    Ok(parse_routed(&links, &[v4, v6]))
}

/// Veths whose peer is in another namespace, with the single-address
/// routes that point at them.
fn parse_routed(links: &Value, routes: &[Value]) -> Vec<PodInterface> {
    let veths: Vec<&str> = links
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l.get("link_netnsid").is_some())
        .filter_map(|l| l["ifname"].as_str())
        .collect();
    let mut out: Vec<PodInterface> = Vec::new();
    for route in routes.iter().filter_map(Value::as_array).flatten() {
        let (Some(dst), Some(dev)) = (route["dst"].as_str(), route["dev"].as_str()) else { continue };
        if !veths.contains(&dev) || route["type"].as_str().is_some_and(|t| t != "unicast") {
            continue;
        }
        let addr = match dst.split_once('/') {
            None => dst,
            Some((a, "32" | "128")) => a,
            Some(_) => continue,
        };
        let Ok(ip) = addr.parse::<IpAddr>() else { continue };
        if ip.is_ipv6() && matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80) {
            continue;
        }
        match out.iter_mut().find(|p| p.host_iface == dev) {
            Some(p) if !p.ips.contains(&ip) => p.ips.push(ip),
            Some(_) => {}
            None => {
                out.push(PodInterface { netns: format!("route:{dev}"), host_iface: dev.to_string(), ips: vec![ip] })
            }
        }
    }
    out.sort_by(|a, b| a.host_iface.cmp(&b.host_iface));
    out
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
    fn routed_pods_are_their_veths_and_host_routes() {
        // As Calico lays a node out: a /32 route per pod over its cali veth.
        let links: Value = serde_json::from_str(
            r#"[{"ifindex":7,"ifname":"cali1a","link_index":3,"link_netnsid":1},
                {"ifindex":8,"ifname":"cali2b","link_index":3,"link_netnsid":2},
                {"ifindex":9,"ifname":"vethlocal","link_index":10}]"#,
        )
        .unwrap();
        let v4: Value = serde_json::from_str(
            r#"[{"dst":"default","gateway":"10.0.0.1","dev":"eth0"},
                {"dst":"10.1.0.5","dev":"cali1a","scope":"link"},
                {"type":"blackhole","dst":"10.1.0.0/26"},
                {"dst":"10.1.0.6/32","dev":"cali2b","scope":"link"},
                {"dst":"10.1.0.0/24","dev":"cali2b"},
                {"dst":"10.1.0.9","dev":"vethlocal"}]"#,
        )
        .unwrap();
        let v6: Value = serde_json::from_str(
            r#"[{"dst":"fd00::5","dev":"cali1a","metric":1024},{"dst":"fe80::/64","dev":"cali1a"}]"#,
        )
        .unwrap();
        let pods = parse_routed(&links, &[v4, v6]);
        let got: Vec<(&str, Vec<String>)> =
            pods.iter().map(|p| (p.host_iface.as_str(), p.ips.iter().map(|i| i.to_string()).collect())).collect();
        assert_eq!(
            got,
            [("cali1a", vec!["10.1.0.5".to_string(), "fd00::5".into()]), ("cali2b", vec!["10.1.0.6".to_string()])]
        );
    }

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

//! A mini-cluster made of network namespaces, for the live demo and the
//! live-capture tests: each "node" is a Linux bridge, each "pod" a
//! network namespace joined to its node's bridge by a veth pair, and the
//! node bridges are linked by one more veth pair, so every pod reaches
//! every other one on one flat subnet (as a CNI's pod network does)
//! without touching the host's routing or forwarding settings.
//!
//! Everything it creates carries its prefix and is removed when the lab
//! is dropped: processes, namespaces, veths and bridges.
#![forbid(unsafe_code)]

pub mod install;
pub mod workloads;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};

/// What a pod is, before it exists.
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    /// Index of the node (bridge) it runs on.
    pub node: usize,
}

/// A pod of the lab.
#[derive(Clone, Debug)]
pub struct LabPod {
    pub name: String,
    pub namespace: String,
    pub node: String,
    /// Its network namespace under /run/netns.
    pub netns: String,
    /// The host-side end of its veth.
    pub host_iface: String,
    pub ip: Ipv4Addr,
}

/// The lab; dropping it tears everything down.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    bridges: Vec<String>,
    pub pods: Vec<LabPod>,
    children: Vec<Child>,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("cannot run ip (iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Whether this process runs as root (namespaces, eBPF and AF_PACKET
/// need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
}

/// The subnet every lab pod lives on.
pub const LAB_SUBNET: &str = "10.213.0.0/16";

impl Lab {
    /// Builds the lab. `prefix` (at most 8 characters) starts every name,
    /// so two labs, or a lab and the host, never collide.
    pub fn create(prefix: &str, nodes: usize, pods: &[PodSpec]) -> Result<Lab> {
        if prefix.is_empty() || prefix.len() > 8 || !prefix.chars().all(|c| c.is_ascii_alphanumeric()) {
            bail!("lab prefix {prefix:?} must be 1-8 letters or digits");
        }
        let mut lab = Lab { prefix: prefix.to_string(), bridges: Vec::new(), pods: Vec::new(), children: Vec::new() };
        // Leftovers of a lab that was killed before it could clean up.
        lab.teardown();
        for n in 0..nodes.max(1) {
            let br = format!("{prefix}br{n}");
            ip(&["link", "add", &br, "type", "bridge"])?;
            lab.bridges.push(br.clone());
            ip(&["link", "set", &br, "up"])?;
        }
        // The nodes' "network": a veth between consecutive bridges.
        for n in 1..lab.bridges.len() {
            let (a, b) = (format!("{prefix}ln{n}a"), format!("{prefix}ln{n}b"));
            ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
            ip(&["link", "set", &a, "master", &lab.bridges[n - 1], "up"])?;
            ip(&["link", "set", &b, "master", &lab.bridges[n], "up"])?;
        }
        for (i, spec) in pods.iter().enumerate() {
            let node = spec.node.min(lab.bridges.len() - 1);
            let netns = format!("{prefix}-{}", spec.name);
            let host_iface = format!("{prefix}v{i}");
            let addr = Ipv4Addr::new(10, 213, node as u8, 10 + i as u8);
            ip(&["netns", "add", &netns])?;
            ip(&["link", "add", &host_iface, "type", "veth", "peer", "name", "eth0", "netns", &netns])?;
            ip(&["link", "set", &host_iface, "master", &lab.bridges[node], "up"])?;
            ip(&["-n", &netns, "addr", "add", &format!("{addr}/16"), "dev", "eth0"])?;
            ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
            lab.pods.push(LabPod {
                name: spec.name.clone(),
                namespace: spec.namespace.clone(),
                node: format!("node-{}", (b'a' + node as u8) as char),
                netns,
                host_iface,
                ip: addr,
            });
        }
        Ok(lab)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The namespace prefix live capture looks for (`--netns-prefix`).
    pub fn netns_prefix(&self) -> String {
        format!("{}-", self.prefix)
    }

    pub fn pod(&self, name: &str) -> &LabPod {
        self.pods.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no pod {name} in the lab"))
    }

    /// A command that runs inside `pod`'s network namespace.
    pub fn command(&self, pod: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.pod(pod).netns, program]);
        c
    }

    /// Starts a long-running process in `pod`; it is killed with the lab.
    pub fn spawn(&mut self, pod: &str, program: &str, args: &[&str]) -> Result<()> {
        let child = self
            .command(pod, program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {program} in {pod}"))?;
        self.children.push(child);
        Ok(())
    }

    /// The pods and nodes as a Kubernetes list, the inventory format.
    pub fn inventory(&self) -> Value {
        let mut items: Vec<Value> = self
            .pods
            .iter()
            .map(|p| {
                json!({
                    "kind": "Pod",
                    "metadata": { "name": p.name, "namespace": p.namespace, "uid": format!("{}-{}", self.prefix, p.name),
                                  "creationTimestamp": "2020-01-01T00:00:00Z" },
                    "spec": { "nodeName": p.node, "containers": [] },
                    "status": { "phase": "Running", "podIP": p.ip.to_string(), "podIPs": [{ "ip": p.ip.to_string() }] },
                })
            })
            .collect();
        let mut nodes: Vec<&str> = self.pods.iter().map(|p| p.node.as_str()).collect();
        nodes.sort();
        nodes.dedup();
        items.extend(nodes.into_iter().map(|n| json!({ "kind": "Node", "metadata": { "name": n } })));
        json!({ "kind": "List", "apiVersion": "v1", "items": items })
    }

    /// Names of the lab's namespaces and links still present on the host.
    pub fn leftovers(prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(trawl_capture::live::discover::NETNS_DIR) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("{prefix}-")) {
                    out.push(name);
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(prefix) {
                    out.push(name);
                }
            }
        }
        out.sort();
        out
    }

    fn teardown(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
        // Deleting a namespace takes its end of the veth; the host end
        // goes with it, but not always at once, so delete both.
        for name in Self::leftovers(&self.prefix) {
            if std::path::Path::new(trawl_capture::live::discover::NETNS_DIR).join(&name).exists() {
                // Processes still inside (started outside this lab) would
                // keep it alive; `ip netns pids` finds them.
                if let Ok(out) = Command::new("ip").args(["netns", "pids", &name]).output() {
                    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                        let _ = Command::new("kill").args(["-KILL", pid]).status();
                    }
                }
                let _ = ip(&["netns", "del", &name]);
            }
        }
        for name in Self::leftovers(&self.prefix) {
            let _ = ip(&["link", "del", &name]);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

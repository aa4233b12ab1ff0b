//! Workload identity: which pod, service or node an IP belonged to at a time.
//!
//! Bindings come from an inventory in the shape of
//! `kubectl get pods,services,nodes -A -o json` (a `v1 List`), from typed
//! lists (`PodList`, …) or plain JSON arrays of objects. Each binding carries
//! the interval in which it held the IP, so a reused pod IP resolves to the
//! pod that had it when the packet was seen.

mod inventory;
mod objects;

use crate::time::Timestamp;
use imbl::HashMap;
pub use inventory::{object_from_json, parse_rfc3339};
pub use objects::{EndpointAddress, EndpointFacts, KubeObject, NodeFacts, ObjectMeta, PodFacts, ServiceFacts};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// What kind of thing a workload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Pod,
    Service,
    Node,
    /// Not in the inventory: a private (`internal`) or public address.
    External,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Pod => "pod",
            WorkloadKind::Service => "service",
            WorkloadKind::Node => "node",
            WorkloadKind::External => "external",
        }
    }
}

/// A pod, service, node or external address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Controller of a pod, as `Kind/name` (for example `ReplicaSet/web-7d9`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// How an endpoint's workload was found (Kubeshark's `*_resolution_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolutionStatus {
    /// The IP was held by a pod, Service (ClusterIP) or node at that time.
    Resolved,
    /// A node's IP, named by the one hostNetwork pod declaring the port.
    ResolvedByPort,
    /// Only a pod that had already finished (Succeeded/Failed) listed the
    /// IP: a likely but weak name.
    FinishedPod,
    /// No workload held the IP at that time (`internal` or `public`).
    Unresolved,
}

impl ResolutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ResolutionStatus::Resolved => "resolved",
            ResolutionStatus::ResolvedByPort => "resolved_by_port",
            ResolutionStatus::FinishedPod => "finished_pod",
            ResolutionStatus::Unresolved => "unresolved",
        }
    }
}

/// Pseudo-namespace of unknown private addresses, as Kubeshark names it.
pub const NAMESPACE_INTERNAL: &str = "internal";
/// Pseudo-namespace of unknown public addresses.
pub const NAMESPACE_PUBLIC: &str = "public";

impl Workload {
    /// The workload of an address that is not in the inventory.
    pub fn external(ip: IpAddr) -> Workload {
        let namespace = if is_private(ip) { NAMESPACE_INTERNAL } else { NAMESPACE_PUBLIC };
        Workload {
            kind: WorkloadKind::External,
            namespace: namespace.to_string(),
            name: ip.to_string(),
            node: None,
            labels: BTreeMap::new(),
            owner: None,
        }
    }
}

/// RFC 1918, CGNAT, loopback, link-local and IPv6 ULA/link-local ranges.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback() || v6.is_unspecified() || (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Errors reading an inventory.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("inventory is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("inventory has no Kubernetes objects (expected a List, a *List or an array of objects)")]
    NoObjects,
}

/// How a binding ranks against others holding the same IP at the same time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    /// A finished (Succeeded/Failed) pod that still lists its IP.
    FinishedPod = 0,
    /// A hostNetwork pod shares its node's IP; the node is the better name.
    HostNetworkPod = 1,
    Node = 2,
    Service = 3,
    Pod = 4,
}

#[derive(Clone, Debug)]
struct Binding {
    workload: Arc<Workload>,
    from: Option<Timestamp>,
    until: Option<Timestamp>,
    rank: Rank,
    /// A hostNetwork pod's declared ports (TCP or UDP): on its node's IP,
    /// a port only it listens on names it.
    ports: Arc<[u16]>,
}

impl Binding {
    fn holds_at(&self, ts: Timestamp) -> bool {
        self.from.is_none_or(|f| f <= ts) && self.until.is_none_or(|u| ts < u)
    }
}

/// IP → workload bindings over time.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    by_ip: HashMap<IpAddr, Vec<Binding>>,
    /// Pods by `namespace/name`, for EndpointSlices that name them.
    pods: HashMap<String, Binding>,
    /// Nodes by name, including those only known from their pods.
    nodes: HashMap<String, Arc<Workload>>,
    /// The Services (`namespace/name`) whose endpoints include an IP.
    services_of: HashMap<IpAddr, Vec<String>>,
    externals: Arc<Externals>,
}

/// Most addresses outside the inventory whose workloads are kept.
const MOST_EXTERNALS: usize = 16 * 1024;

/// The workloads of addresses outside the inventory, each made once:
/// making one formats the address and allocates thrice, and every record
/// has two ends. An external workload depends on its address alone, so an
/// identity's clones share them. Emptied when full.
#[derive(Debug, Default)]
struct Externals(std::sync::Mutex<hashbrown::HashMap<IpAddr, Arc<Workload>>>);

impl Externals {
    fn get(&self, ip: IpAddr) -> Arc<Workload> {
        // A panic elsewhere while this was held left the map whole.
        let mut known = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(w) = known.get(&ip) {
            return Arc::clone(w);
        }
        if known.len() >= MOST_EXTERNALS {
            known.clear();
        }
        let w = Arc::new(Workload::external(ip));
        known.insert(ip, Arc::clone(&w));
        w
    }
}

impl Identity {
    pub fn new() -> Self {
        Self::default()
    }

    /// An object is gone (a watch's DELETED event, or missing from a
    /// re-list) as of `at`: its addresses stop resolving to it from then
    /// on, and still do for traffic seen before.
    pub fn remove(&mut self, kind: WorkloadKind, namespace: &str, name: &str, at: Timestamp) -> usize {
        let open = |b: &Binding| {
            let w = &b.workload;
            w.kind == kind && w.namespace == namespace && w.name == name && b.until.is_none_or(|u| u > at)
        };
        // Only the addresses it held are written: the maps share their
        // structure with earlier clones, and a write copies what it touches.
        let held: Vec<IpAddr> =
            self.by_ip.iter().filter(|(_, list)| list.iter().any(open)).map(|(ip, _)| *ip).collect();
        let mut closed = 0;
        for ip in held {
            for b in self.by_ip.get_mut(&ip).into_iter().flatten() {
                if open(b) {
                    b.until = Some(at.max(b.from.unwrap_or(at)));
                    closed += 1;
                }
            }
        }
        if kind == WorkloadKind::Pod {
            self.pods.remove(&format!("{namespace}/{name}"));
        }
        closed
    }

    /// Forgets bindings that ended before `before`: no record that late
    /// will ask for them, and a cluster that churns pods would otherwise
    /// keep every address it ever handed out. Returns how many went.
    pub fn prune_closed(&mut self, before: Timestamp) -> usize {
        let ended = |b: &Binding| b.until.is_some_and(|u| u < before);
        let stale: Vec<IpAddr> =
            self.by_ip.iter().filter(|(_, list)| list.iter().any(ended)).map(|(ip, _)| *ip).collect();
        let mut pruned = 0;
        for ip in stale {
            if let Some(list) = self.by_ip.get_mut(&ip) {
                let n = list.len();
                list.retain(|b| !ended(b));
                pruned += n - list.len();
                if list.is_empty() {
                    self.by_ip.remove(&ip);
                    self.services_of.remove(&ip);
                }
            }
        }
        pruned
    }

    /// Every pod, service and node with an address that resolves to it at
    /// `ts`, as `(kind, namespace, name)`: what a re-list compares with.
    pub fn objects_at(&self, ts: Timestamp) -> std::collections::BTreeSet<(WorkloadKind, String, String)> {
        self.by_ip
            .values()
            .flatten()
            .filter(|b| b.holds_at(ts))
            .map(|b| (b.workload.kind, b.workload.namespace.clone(), b.workload.name.clone()))
            .collect()
    }

    /// Addresses of pods (not hostNetwork, not finished) at `ts`, with
    /// their node: where each pod's traffic is counted in a cluster.
    pub fn pod_addresses(&self, ts: Timestamp) -> Vec<(IpAddr, Option<String>)> {
        let mut out: Vec<(IpAddr, Option<String>)> = self
            .by_ip
            .iter()
            .filter_map(|(ip, list)| {
                let b = best_at(list, ts)?;
                (b.rank == Rank::Pod && b.workload.kind == WorkloadKind::Pod).then(|| (*ip, b.workload.node.clone()))
            })
            .collect();
        out.sort();
        out
    }

    /// The Services (`namespace/name`) whose endpoints list `ip`: a pod
    /// reached through a Service is linked to it this way.
    pub fn services_of(&self, ip: IpAddr) -> &[String] {
        self.services_of.get(&ip).map_or(&[], Vec::as_slice)
    }

    /// The node called `name`, made from a pod's view of it if the
    /// inventory has no Node object.
    fn node_named(&mut self, name: &str) -> Arc<Workload> {
        self.nodes
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Workload {
                    kind: WorkloadKind::Node,
                    namespace: String::new(),
                    name: name.to_string(),
                    node: Some(name.to_string()),
                    labels: BTreeMap::new(),
                    owner: None,
                })
            })
            .clone()
    }

    fn bind(&mut self, ip: &str, binding: &Binding) {
        if let Ok(ip) = ip.parse::<IpAddr>() {
            let list = self.by_ip.entry(ip).or_default();
            // The same object seen again (a watch's MODIFIED event, a
            // re-list) updates its binding instead of adding one.
            match list.iter_mut().find(|b| Arc::ptr_eq(&b.workload, &binding.workload) || same_object(b, binding)) {
                Some(b) => *b = binding.clone(),
                None => list.push(binding.clone()),
            }
        }
    }

    /// The workload that held `ip` at `ts`, if the inventory knows one.
    pub fn lookup(&self, ip: IpAddr, ts: Timestamp) -> Option<Arc<Workload>> {
        best_at(self.by_ip.get(&ip)?, ts).map(|b| Arc::clone(&b.workload))
    }

    /// The workload behind `ip:port` at `ts`: as [`Identity::resolve`],
    /// except that on a node's IP, a port that exactly one of its
    /// hostNetwork pods declares names that pod (the node otherwise).
    pub fn resolve_endpoint(&self, ip: IpAddr, port: u16, ts: Timestamp) -> Arc<Workload> {
        self.resolve_endpoint_status(ip, port, ts).0
    }

    /// [`Identity::resolve_endpoint`], and how the workload was found.
    pub fn resolve_endpoint_status(&self, ip: IpAddr, port: u16, ts: Timestamp) -> (Arc<Workload>, ResolutionStatus) {
        let bindings = self.by_ip.get(&ip).map(Vec::as_slice).unwrap_or_default();
        let Some(best) = best_at(bindings, ts) else {
            return (self.externals.get(ip), ResolutionStatus::Unresolved);
        };
        let status =
            if best.rank == Rank::FinishedPod { ResolutionStatus::FinishedPod } else { ResolutionStatus::Resolved };
        if best.workload.kind != WorkloadKind::Node {
            return (Arc::clone(&best.workload), status);
        }
        let mut owners =
            bindings.iter().filter(|b| b.rank == Rank::HostNetworkPod && b.holds_at(ts) && b.ports.contains(&port));
        match (owners.next(), owners.next()) {
            (Some(only), None) => (Arc::clone(&only.workload), ResolutionStatus::ResolvedByPort),
            _ => (Arc::clone(&best.workload), status),
        }
    }

    /// The workload that held `ip` at `ts`, or its `internal`/`public`
    /// pseudo-workload.
    pub fn resolve(&self, ip: IpAddr, ts: Timestamp) -> Arc<Workload> {
        self.lookup(ip, ts).unwrap_or_else(|| self.externals.get(ip))
    }
}

/// The binding that names an IP at `ts`: the best ranked of those holding
/// it then, the newest among equals.
fn best_at(bindings: &[Binding], ts: Timestamp) -> Option<&Binding> {
    bindings.iter().filter(|b| b.holds_at(ts)).max_by_key(|b| (b.rank, b.from))
}

/// Two bindings of one Kubernetes object (same kind, namespace, name, and
/// rank: a pod that finished is a new binding next to its running one).
fn same_object(a: &Binding, b: &Binding) -> bool {
    a.workload.kind == b.workload.kind
        && a.workload.namespace == b.workload.namespace
        && a.workload.name == b.workload.name
        && a.rank == b.rank
        && a.from == b.from
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(Timestamp(0)));
        assert_eq!(parse_rfc3339("2024-03-01T12:00:00Z").map(|t| t.0 / 1_000_000_000), Some(1_709_294_400));
        assert_eq!(parse_rfc3339("2024-03-01T13:00:00.5+01:00"), Some(Timestamp(1_709_294_400_500_000_000)));
        // Non-ASCII where digits or the offset belong: None, not a panic.
        for text in
            ["2024-03-01T12:00:0é0Z", "2024-03-01T12:00:00€000", "2024-03-01T12:00:00.é", "２０２４-03-01T12:00:00Z"]
        {
            assert_eq!(parse_rfc3339(text), None, "{text}");
        }
        assert_eq!(parse_rfc3339("garbage"), None);
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
    }

    fn pod(name: &str, ip: &str, phase: &str, created: &str, deleted: Option<&str>) -> Value {
        let mut meta = serde_json::json!({"name": name, "namespace": "shop", "creationTimestamp": created,
            "labels": {"app": name}, "ownerReferences": [{"kind": "ReplicaSet", "name": "rs-1", "controller": true}]});
        if let Some(d) = deleted {
            meta["deletionTimestamp"] = Value::from(d);
        }
        serde_json::json!({"kind": "Pod", "metadata": meta, "spec": {"nodeName": "node-a", "containers": []},
            "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]}})
    }

    #[test]
    fn ip_reuse_resolves_by_time() {
        let list = serde_json::json!({"kind": "List", "items": [
            pod("old", "10.0.0.5", "Running", "2024-01-01T00:00:00Z", Some("2024-01-01T01:00:00Z")),
            pod("new", "10.0.0.5", "Running", "2024-01-01T01:00:05Z", None),
            {"kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
             "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::a"]}},
            {"kind": "Node", "metadata": {"name": "node-a"},
             "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "node-a"}]}},
        ]});
        let mut id = Identity::new();
        assert_eq!(id.load_json(&list.to_string()).unwrap(), 4);
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let t = |s| parse_rfc3339(s).unwrap();
        assert_eq!(id.resolve(ip, t("2024-01-01T00:30:00Z")).name, "old");
        assert_eq!(id.resolve(ip, t("2024-01-01T02:00:00Z")).name, "new");
        let between = id.resolve(ip, t("2024-01-01T01:00:02Z"));
        assert_eq!((between.kind, between.namespace.as_str()), (WorkloadKind::External, NAMESPACE_INTERNAL));
        assert_eq!(id.resolve("fd00::a".parse().unwrap(), Timestamp(0)).name, "web");
        let node = id.resolve("192.168.1.10".parse().unwrap(), Timestamp(0));
        assert_eq!(node.kind, WorkloadKind::Node);
        assert_eq!(id.resolve("8.8.8.8".parse().unwrap(), Timestamp(0)).namespace, NAMESPACE_PUBLIC);
        assert_eq!(id.resolve(ip, t("2024-01-01T02:00:00Z")).owner.as_deref(), Some("ReplicaSet/rs-1"));
        assert_eq!(id.prune_closed(t("2024-01-01T00:59:00Z")), 0, "the old pod's binding ends later");
        assert_eq!(id.prune_closed(t("2024-01-01T01:30:00Z")), 1);
        assert_eq!(id.resolve(ip, t("2024-01-01T00:30:00Z")).kind, WorkloadKind::External, "forgotten");
        assert_eq!(id.resolve(ip, t("2024-01-01T02:00:00Z")).name, "new", "the open binding stays");
    }

    #[test]
    fn running_pod_beats_finished_pod_with_same_ip() {
        let list = serde_json::json!({"kind": "PodList", "items": [
            pod("job", "172.17.0.3", "Succeeded", "2024-01-01T00:00:00Z", None),
            pod("web", "172.17.0.3", "Running", "2023-12-01T00:00:00Z", None),
        ]});
        let mut id = Identity::new();
        id.load_json(&list.to_string()).unwrap();
        assert_eq!(
            id.resolve("172.17.0.3".parse().unwrap(), parse_rfc3339("2024-02-01T00:00:00Z").unwrap()).name,
            "web"
        );
    }

    #[test]
    fn resolution_status_says_how_an_endpoint_was_named() {
        let list = serde_json::json!({"kind": "PodList", "items": [
            pod("job", "172.17.0.3", "Succeeded", "2024-01-01T00:00:00Z", None),
            pod("web", "172.17.0.4", "Running", "2024-01-01T00:00:00Z", None),
        ]});
        let mut id = Identity::new();
        id.load_json(&list.to_string()).unwrap();
        let at = parse_rfc3339("2024-02-01T00:00:00Z").unwrap();
        let status = |ip: &str| id.resolve_endpoint_status(ip.parse().unwrap(), 80, at).1;
        assert_eq!(status("172.17.0.4"), ResolutionStatus::Resolved);
        assert_eq!(status("172.17.0.3"), ResolutionStatus::FinishedPod);
        assert_eq!(status("172.17.0.9"), ResolutionStatus::Unresolved);
    }

    #[test]
    fn not_an_inventory() {
        assert!(Identity::new().load_json("{\"a\":1}").is_err());
        assert!(Identity::new().load_json("nope").is_err());
    }
}

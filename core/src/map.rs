//! The L4 workload map: a petgraph of workloads joined by client → server
//! edges, fed by flow deltas.

use crate::decode::L4Proto;
use crate::flow::{DirCounters, FlowDelta};
use crate::identity::{Identity, Workload, WorkloadKind};
use crate::tcp_health::{EdgeHealth, HealthView};
use crate::time::{NANOS_PER_SEC, Timestamp};
use petgraph::stable_graph::StableDiGraph;
pub use petgraph::stable_graph::{EdgeIndex, NodeIndex};
use serde::Serialize;
// hashbrown's default hasher (foldhash): the maps look nodes and edges up
// per record, where std's SipHash showed in profiles.
use hashbrown::HashMap;
use std::str::FromStr;

/// How workloads are folded into map nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GroupBy {
    /// One node per pod, service, node or external address.
    #[default]
    Pod,
    Namespace,
    Node,
}

impl FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pod" | "service" | "pod/service" => Ok(GroupBy::Pod),
            "namespace" | "ns" => Ok(GroupBy::Namespace),
            "node" => Ok(GroupBy::Node),
            other => Err(format!("unknown grouping {other:?}: expected pod, namespace or node")),
        }
    }
}

/// Node name for services when grouping by node: a ClusterIP lives on no
/// node, it is served by the cluster's service network.
pub const SERVICE_NETWORK_NODE: &str = "service-network";

/// A node of the map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MapNode {
    pub id: String,
    pub name: String,
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub kind: String,
}

impl MapNode {
    /// The map node a workload falls into under `group`.
    pub fn for_workload(w: &Workload, group: GroupBy) -> MapNode {
        match group {
            GroupBy::Pod => {
                let mut id = String::new();
                Self::id_of(w, group, &mut id);
                MapNode {
                    id,
                    name: w.name.clone(),
                    namespace: w.namespace.clone(),
                    node: w.node.clone(),
                    kind: w.kind.as_str().to_string(),
                }
            }
            GroupBy::Namespace => {
                // Nodes have no namespace; they group as the cluster's hosts.
                let ns = if w.kind == WorkloadKind::Node { "(nodes)".to_string() } else { w.namespace.clone() };
                MapNode { id: ns.clone(), name: ns.clone(), namespace: ns, node: None, kind: "namespace".into() }
            }
            GroupBy::Node => {
                let (name, kind) = match (&w.node, w.kind) {
                    (Some(n), _) => (n.clone(), "node"),
                    (None, WorkloadKind::Service) => (SERVICE_NETWORK_NODE.to_string(), "network"),
                    (None, _) => (w.namespace.clone(), "external"),
                };
                MapNode {
                    id: name.clone(),
                    name: name.clone(),
                    namespace: String::new(),
                    node: Some(name),
                    kind: kind.into(),
                }
            }
        }
    }

    /// The `id` of [`MapNode::for_workload`], without building the node:
    /// borrowed from `w` where it can be, else written into `scratch`. The
    /// maps look up a node per record end, and building one to look it up
    /// took five allocations.
    pub fn id_of<'a>(w: &'a Workload, group: GroupBy, scratch: &'a mut String) -> &'a str {
        use std::fmt::Write;
        match group {
            GroupBy::Pod => {
                scratch.clear();
                // Writing to a String cannot fail.
                let _ = match w.kind {
                    WorkloadKind::Node => write!(scratch, "node/{}", w.name),
                    WorkloadKind::External => write!(scratch, "{}/{}", w.namespace, w.name),
                    kind => write!(scratch, "{}/{}/{}", kind.as_str(), w.namespace, w.name),
                };
                scratch
            }
            GroupBy::Namespace if w.kind == WorkloadKind::Node => "(nodes)",
            GroupBy::Namespace => &w.namespace,
            GroupBy::Node => match (&w.node, w.kind) {
                (Some(n), _) => n,
                (None, WorkloadKind::Service) => SERVICE_NETWORK_NODE,
                (None, _) => &w.namespace,
            },
        }
    }
}

/// The graph node of workload `w` under `group`, added if new; a node
/// already there is found without building one.
pub(crate) fn intern_workload<E>(
    graph: &mut StableDiGraph<MapNode, E>,
    nodes: &mut HashMap<String, NodeIndex>,
    w: &Workload,
    group: GroupBy,
    scratch: &mut String,
) -> NodeIndex {
    if let Some(&ix) = nodes.get(MapNode::id_of(w, group, scratch)) {
        return ix;
    }
    intern_node(graph, nodes, MapNode::for_workload(w, group))
}

/// The graph node with `node`'s id, added if new. Shared by the L4 and L7
/// maps, which key nodes the same way.
pub(crate) fn intern_node<E>(
    graph: &mut StableDiGraph<MapNode, E>,
    nodes: &mut HashMap<String, NodeIndex>,
    node: MapNode,
) -> NodeIndex {
    if let Some(&ix) = nodes.get(&node.id) {
        return ix;
    }
    let id = node.id.clone();
    let ix = graph.add_node(node);
    nodes.insert(id, ix);
    ix
}

/// Packets and bytes per second over a sliding window of one-second buckets.
#[derive(Clone, Debug)]
pub struct RateWindow {
    /// `(second, to_server, to_client)`, ring-indexed by second.
    buckets: Vec<(u64, DirCounters, DirCounters)>,
}

/// A rate in one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rate {
    pub packets_per_sec: f64,
    pub bytes_per_sec: f64,
}

impl RateWindow {
    pub fn new(window_secs: u32) -> Self {
        RateWindow {
            buckets: vec![(u64::MAX, DirCounters::default(), DirCounters::default()); window_secs.max(1) as usize],
        }
    }

    pub fn add(&mut self, ts: Timestamp, to_server: &DirCounters, to_client: &DirCounters) {
        let sec = ts.as_nanos() / NANOS_PER_SEC;
        let n = self.buckets.len() as u64;
        let b = &mut self.buckets[(sec % n) as usize];
        if b.0 != sec {
            *b = (sec, DirCounters::default(), DirCounters::default());
        }
        b.1.add(to_server);
        b.2.add(to_client);
    }

    /// Average rates over the window that ends at `now`.
    pub fn rates(&self, now: Timestamp) -> (Rate, Rate) {
        let now_sec = now.as_nanos() / NANOS_PER_SEC;
        let n = self.buckets.len() as u64;
        let (mut s, mut c) = (DirCounters::default(), DirCounters::default());
        for (sec, ts, tc) in &self.buckets {
            if *sec != u64::MAX && *sec <= now_sec && now_sec - sec < n {
                s.add(ts);
                c.add(tc);
            }
        }
        let rate = |d: DirCounters| Rate {
            packets_per_sec: d.packets as f64 / n as f64,
            bytes_per_sec: d.bytes as f64 / n as f64,
        };
        (rate(s), rate(c))
    }
}

/// An edge: all flows from one client group to one server group over one
/// transport.
#[derive(Clone, Debug)]
pub struct L4Edge {
    pub l4: L4Proto,
    pub flows: u64,
    pub to_server: DirCounters,
    pub to_client: DirCounters,
    pub window: RateWindow,
    /// TCP only: retransmissions, resets, failed connects, handshake RTT.
    pub health: EdgeHealth,
}

/// JSON form of an edge.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EdgeView {
    pub source: String,
    pub target: String,
    pub l4: L4Proto,
    pub flows: u64,
    pub to_server: DirCounters,
    pub to_client: DirCounters,
    pub rate: RateView,
    /// TCP edges only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_health: Option<HealthView>,
}

/// Rates of an edge at the time the view was taken.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RateView {
    pub window_secs: u32,
    pub to_server: Rate,
    pub to_client: Rate,
}

/// JSON form of the whole map.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MapView {
    pub nodes: Vec<MapNode>,
    pub edges: Vec<EdgeView>,
}

/// The L4 map model.
#[derive(Debug)]
pub struct L4Map {
    group: GroupBy,
    window_secs: u32,
    graph: StableDiGraph<MapNode, L4Edge>,
    nodes: HashMap<String, NodeIndex>,
    edges: HashMap<(NodeIndex, NodeIndex, L4Proto), EdgeIndex>,
    latest: Timestamp,
    /// Room to write a node's id in, to look it up.
    scratch: String,
}

impl L4Map {
    pub fn new(group: GroupBy, window_secs: u32) -> Self {
        L4Map {
            group,
            window_secs: window_secs.max(1),
            graph: StableDiGraph::new(),
            nodes: HashMap::new(),
            edges: HashMap::new(),
            scratch: String::new(),
            latest: Timestamp::ZERO,
        }
    }

    pub fn group(&self) -> GroupBy {
        self.group
    }

    pub fn graph(&self) -> &StableDiGraph<MapNode, L4Edge> {
        &self.graph
    }

    fn node(&mut self, w: &Workload) -> NodeIndex {
        intern_workload(&mut self.graph, &mut self.nodes, w, self.group, &mut self.scratch)
    }

    /// Adds one flow delta between two already-resolved workloads.
    pub fn apply(&mut self, d: &FlowDelta, client: &Workload, server: &Workload) {
        self.apply_closing(d, client, server, u64::from(d.closed));
    }

    /// Adds a delta that closes `closed_flows` flows at once (the closed
    /// flows of a conversation, merged elsewhere).
    pub fn apply_closing(&mut self, d: &FlowDelta, client: &Workload, server: &Workload, closed_flows: u64) {
        let (a, b) = (self.node(client), self.node(server));
        let window = self.window_secs;
        let ix = *self.edges.entry((a, b, d.l4)).or_insert_with(|| {
            self.graph.add_edge(
                a,
                b,
                L4Edge {
                    l4: d.l4,
                    flows: 0,
                    to_server: DirCounters::default(),
                    to_client: DirCounters::default(),
                    window: RateWindow::new(window),
                    health: EdgeHealth::default(),
                },
            )
        });
        if let Some(e) = self.graph.edge_weight_mut(ix) {
            e.flows += closed_flows;
            e.to_server.add(&d.to_server);
            e.to_client.add(&d.to_client);
            e.window.add(d.last_ts, &d.to_server, &d.to_client);
            e.health.add(&d.health);
        }
        self.latest = self.latest.max(d.last_ts);
    }

    /// Resolves both ends of a delta as of its time and adds it.
    pub fn apply_resolved(&mut self, d: &FlowDelta, identity: &Identity) {
        let client = identity.resolve(d.client.ip, d.first_ts);
        let server = identity.resolve_endpoint(d.server.ip, d.server.port, d.first_ts);
        self.apply(d, &client, &server);
    }

    /// A sorted, serialisable view with rates ending at the newest delta.
    pub fn view(&self) -> MapView {
        self.view_at(self.latest)
    }

    pub fn view_at(&self, now: Timestamp) -> MapView {
        let mut nodes: Vec<MapNode> = self.graph.node_weights().cloned().collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        let mut edges: Vec<EdgeView> = self.graph.edge_indices().filter_map(|ix| self.edge_view(ix, now)).collect();
        edges.sort_by(|a, b| (&a.source, &a.target, a.l4).cmp(&(&b.source, &b.target, b.l4)));
        MapView { nodes, edges }
    }

    /// One edge as [`L4Map::view_at`] shows it.
    pub fn edge_view(&self, ix: EdgeIndex, now: Timestamp) -> Option<EdgeView> {
        let (a, b) = self.graph.edge_endpoints(ix)?;
        let e = self.graph.edge_weight(ix)?;
        let (to_server, to_client) = e.window.rates(now);
        Some(EdgeView {
            source: self.graph[a].id.clone(),
            target: self.graph[b].id.clone(),
            l4: e.l4,
            flows: e.flows,
            to_server: e.to_server,
            to_client: e.to_client,
            rate: RateView { window_secs: self.window_secs, to_server, to_client },
            tcp_health: (e.l4 == L4Proto::Tcp).then(|| e.health.view()),
        })
    }

    /// The edge from node id `source` to node id `target` over `l4`.
    pub fn find_edge(&self, source: &str, target: &str, l4: L4Proto) -> Option<EdgeIndex> {
        let (a, b) = (self.nodes.get(source)?, self.nodes.get(target)?);
        self.edges.get(&(*a, *b, l4)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Endpoint, Orientation};
    use std::net::IpAddr;

    fn delta(c: &str, s: &str, bytes: u64, ts: u64, closed: bool) -> FlowDelta {
        let ep = |ip: &str, port| Endpoint { ip: ip.parse::<IpAddr>().unwrap(), port };
        FlowDelta {
            l4: L4Proto::Tcp,
            client: ep(c, 40000),
            server: ep(s, 80),
            to_server: DirCounters { packets: 1, bytes, ip_bytes: bytes - 14 },
            to_client: DirCounters::default(),
            first_ts: Timestamp(ts),
            last_ts: Timestamp(ts),
            orientation: Orientation::Syn,
            closed,
            health: Default::default(),
        }
    }

    #[test]
    fn groups_and_sums() {
        let id = Identity::new();
        let mut by_pod = L4Map::new(GroupBy::Pod, 10);
        let mut by_ns = L4Map::new(GroupBy::Namespace, 10);
        for d in [
            delta("10.0.0.1", "10.0.0.2", 100, NANOS_PER_SEC, false),
            delta("10.0.0.1", "10.0.0.2", 50, 2 * NANOS_PER_SEC, true),
            delta("10.0.0.3", "8.8.8.8", 70, 3 * NANOS_PER_SEC, true),
        ] {
            by_pod.apply_resolved(&d, &id);
            by_ns.apply_resolved(&d, &id);
        }
        let v = by_pod.view();
        assert_eq!(v.nodes.len(), 4);
        assert_eq!(v.edges.len(), 2);
        assert_eq!(v.edges[0].to_server.bytes, 150);
        assert_eq!(v.edges[0].flows, 1);
        let v = by_ns.view();
        assert_eq!(v.nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["internal", "public"]);
        assert_eq!(v.edges.len(), 2);
        let rate = v.edges[0].rate.to_server.bytes_per_sec;
        assert!((rate - 15.0).abs() < 1e-9, "{rate}");
    }
}

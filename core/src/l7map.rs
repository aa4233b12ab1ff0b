//! The L7 workload map: edges per (source, target, protocol) with request,
//! error and byte counts and latency percentiles, fed by L7 records.

use crate::identity::Workload;
use crate::map::{GroupBy, MapNode, intern_node};
use crate::record::L7Record;
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Latency samples kept exactly; beyond this a deterministic reservoir.
const MAX_SAMPLES: usize = 1 << 16;

/// Latency percentiles from exact samples (or a uniform reservoir).
#[derive(Clone, Debug, Default)]
pub struct Latency {
    samples: Vec<u64>,
    seen: u64,
    rng: u64,
}

impl Latency {
    pub fn add(&mut self, us: u64) {
        self.seen += 1;
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(us);
            return;
        }
        self.rng = self.rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let slot = (self.rng >> 33) % self.seen;
        if (slot as usize) < MAX_SAMPLES {
            self.samples[slot as usize] = us;
        }
    }

    /// Nearest-rank percentile `p` (0–100).
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.samples.is_empty() {
            return None;
        }
        let mut s = self.samples.clone();
        s.sort_unstable();
        let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
        Some(s[rank.min(s.len()) - 1])
    }
}

/// An edge of the L7 map.
#[derive(Clone, Debug, Default)]
pub struct L7Edge {
    pub protocol: String,
    pub requests: u64,
    pub errors: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub latency: Latency,
}

/// A protocol as the legend shows it; plugins supply these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LegendEntry {
    pub protocol: String,
    pub abbreviation: String,
    pub long_name: String,
    pub color: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyView {
    pub p50: Option<u64>,
    pub p99: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct L7EdgeView {
    pub source: String,
    pub target: String,
    pub protocol: String,
    pub requests: u64,
    pub errors: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub latency_us: LatencyView,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct L7MapView {
    pub nodes: Vec<MapNode>,
    pub edges: Vec<L7EdgeView>,
    pub legend: Vec<LegendEntry>,
}

/// The L7 map model.
#[derive(Debug)]
pub struct L7Map {
    group: GroupBy,
    graph: StableDiGraph<MapNode, L7Edge>,
    nodes: HashMap<String, NodeIndex>,
    edges: HashMap<(NodeIndex, NodeIndex, String), EdgeIndex>,
    legend: BTreeMap<String, LegendEntry>,
}

impl L7Map {
    pub fn new(group: GroupBy) -> Self {
        L7Map {
            group,
            graph: StableDiGraph::new(),
            nodes: HashMap::new(),
            edges: HashMap::new(),
            legend: BTreeMap::new(),
        }
    }

    /// Registers how a protocol looks in the legend.
    pub fn set_legend(&mut self, entry: LegendEntry) {
        self.legend.insert(entry.protocol.clone(), entry);
    }

    fn node(&mut self, w: &Workload) -> NodeIndex {
        intern_node(&mut self.graph, &mut self.nodes, MapNode::for_workload(w, self.group))
    }

    /// Adds a record between two resolved workloads.
    pub fn apply(&mut self, r: &L7Record, src: &Workload, dst: &Workload) {
        let (a, b) = (self.node(src), self.node(dst));
        let key = (a, b, r.protocol.clone());
        let ix = match self.edges.get(&key) {
            Some(&ix) => ix,
            None => {
                let ix = self.graph.add_edge(a, b, L7Edge { protocol: r.protocol.clone(), ..L7Edge::default() });
                self.edges.insert(key, ix);
                ix
            }
        };
        if let Some(e) = self.graph.edge_weight_mut(ix) {
            e.requests += 1;
            e.errors += u64::from(r.error);
            e.request_bytes += r.request_size;
            e.response_bytes += r.response_size;
            if let Some(us) = r.elapsed_us {
                e.latency.add(us);
            }
        }
    }

    /// Adds a node with no L7 edge (a workload seen only at L4), so the L7
    /// map shows the same nodes as the L4 map.
    pub fn add_node(&mut self, node: MapNode) {
        intern_node(&mut self.graph, &mut self.nodes, node);
    }

    pub fn view(&self) -> L7MapView {
        let mut nodes: Vec<MapNode> = self.graph.node_weights().cloned().collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        let mut edges: Vec<L7EdgeView> = self
            .graph
            .edge_indices()
            .filter_map(|ix| {
                let (a, b) = self.graph.edge_endpoints(ix)?;
                let e = &self.graph[ix];
                Some(L7EdgeView {
                    source: self.graph[a].id.clone(),
                    target: self.graph[b].id.clone(),
                    protocol: e.protocol.clone(),
                    requests: e.requests,
                    errors: e.errors,
                    request_bytes: e.request_bytes,
                    response_bytes: e.response_bytes,
                    latency_us: LatencyView { p50: e.latency.percentile(50.0), p99: e.latency.percentile(99.0) },
                })
            })
            .collect();
        edges.sort_by(|a, b| (&a.source, &a.target, &a.protocol).cmp(&(&b.source, &b.target, &b.protocol)));
        let used: std::collections::BTreeSet<&str> = edges.iter().map(|e| e.protocol.as_str()).collect();
        let legend = self.legend.values().filter(|l| used.contains(l.protocol.as_str())).cloned().collect();
        L7MapView { nodes, edges, legend }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut l = Latency::default();
        for v in 1..=100 {
            l.add(v);
        }
        assert_eq!(l.percentile(50.0), Some(50));
        assert_eq!(l.percentile(99.0), Some(99));
        assert_eq!(Latency::default().percentile(50.0), None);
    }
}

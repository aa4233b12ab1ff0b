//! The L7 workload map: edges per (source, target, protocol) with request,
//! error and byte counts and latency percentiles, fed by L7 records.

use crate::flow::DirCounters;
use crate::identity::Workload;
use crate::map::{GroupBy, MapNode, intern_node};
use crate::map::{Rate, RateWindow};
use crate::record::L7Record;
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};
use serde::Serialize;
use sketches_ddsketch::{Config, DDSketch};
use std::collections::{BTreeMap, HashMap};

/// Relative accuracy of latency quantiles (1 %).
const LATENCY_ALPHA: f64 = 0.01;
/// Bins per edge sketch: bounds memory at a few KiB per edge while
/// covering six decades of latency at 1 % before the low end folds.
const LATENCY_MAX_BINS: u32 = 1024;
/// Distinct methods/paths counted per edge; the rest fold into "other".
const MAX_TOP_KEYS: usize = 64;

/// Latency percentiles from a DDSketch: mergeable (per node, per worker),
/// bounded in memory, with relative error.
#[derive(Clone)]
pub struct Latency {
    sketch: DDSketch,
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latency").field("count", &self.sketch.count()).finish()
    }
}

impl Default for Latency {
    fn default() -> Self {
        Latency { sketch: DDSketch::new(Config::new(LATENCY_ALPHA, LATENCY_MAX_BINS, 1.0)) }
    }
}

impl Latency {
    pub fn add(&mut self, us: u64) {
        self.sketch.add(us as f64);
    }

    /// Folds another edge's (or worker's) latencies into this one.
    pub fn merge(&mut self, other: &Latency) {
        // Same config on both sides, so merging cannot fail.
        let _ = self.sketch.merge(&other.sketch);
    }

    pub fn count(&self) -> usize {
        self.sketch.count()
    }

    /// Percentile `p` (0–100), within 1 %.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        let q = self.sketch.quantile((p / 100.0).clamp(0.0, 1.0)).ok().flatten()?;
        Some(q.round().max(0.0) as u64)
    }
}

/// An edge of the L7 map.
#[derive(Clone, Debug)]
pub struct L7Edge {
    pub protocol: String,
    pub requests: u64,
    pub errors: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub latency: Latency,
    /// Requests (as packets) and request/response bytes per second.
    pub window: RateWindow,
    /// Requests per method and summary (path, command, topic).
    pub top: HashMap<String, u64>,
}

impl L7Edge {
    fn new(protocol: &str, window_secs: u32) -> Self {
        L7Edge {
            protocol: protocol.to_string(),
            requests: 0,
            errors: 0,
            request_bytes: 0,
            response_bytes: 0,
            latency: Latency::default(),
            window: RateWindow::new(window_secs),
            top: HashMap::new(),
        }
    }
}

/// Requests known by their counts only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct L7Counts {
    pub requests: u64,
    pub errors: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// What an edge was used for most.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TopEntry {
    pub name: String,
    pub count: u64,
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
    pub p95: Option<u64>,
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
    /// Requests per second and bytes per second each way, over the window.
    pub rate: L7RateView,
    pub top: Vec<TopEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct L7RateView {
    pub window_secs: u32,
    pub requests_per_sec: f64,
    pub request_bytes_per_sec: f64,
    pub response_bytes_per_sec: f64,
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
    window_secs: u32,
    latest: crate::time::Timestamp,
    graph: StableDiGraph<MapNode, L7Edge>,
    nodes: HashMap<String, NodeIndex>,
    edges: HashMap<(NodeIndex, NodeIndex, String), EdgeIndex>,
    legend: BTreeMap<String, LegendEntry>,
}

impl L7Map {
    pub fn new(group: GroupBy) -> Self {
        Self::with_window(group, 10)
    }

    /// A map whose rates are over `window_secs`.
    pub fn with_window(group: GroupBy, window_secs: u32) -> Self {
        L7Map {
            group,
            window_secs: window_secs.max(1),
            latest: crate::time::Timestamp::ZERO,
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

    /// The edge from `src` to `dst` over `protocol`, made if new.
    fn edge_mut(&mut self, src: &Workload, dst: &Workload, protocol: &str) -> Option<&mut L7Edge> {
        let (a, b) = (self.node(src), self.node(dst));
        let key = (a, b, protocol.to_string());
        let ix = match self.edges.get(&key) {
            Some(&ix) => ix,
            None => {
                let ix = self.graph.add_edge(a, b, L7Edge::new(protocol, self.window_secs));
                self.edges.insert(key, ix);
                ix
            }
        };
        self.graph.edge_weight_mut(ix)
    }

    /// Adds requests known only by their counts (a worker's requests that
    /// did not fit its record queue): numbers and rates, not latency or
    /// top calls.
    pub fn apply_counts(
        &mut self,
        protocol: &str,
        c: &L7Counts,
        ts: crate::time::Timestamp,
        src: &Workload,
        dst: &Workload,
    ) {
        if let Some(e) = self.edge_mut(src, dst, protocol) {
            e.requests += c.requests;
            e.errors += c.errors;
            e.request_bytes += c.request_bytes;
            e.response_bytes += c.response_bytes;
            e.window.add(
                ts,
                &DirCounters { packets: c.requests, bytes: c.request_bytes, ip_bytes: 0 },
                &DirCounters { packets: 0, bytes: c.response_bytes, ip_bytes: 0 },
            );
        }
        self.latest = self.latest.max(ts);
    }

    /// Adds a record between two resolved workloads.
    pub fn apply(&mut self, r: &L7Record, src: &Workload, dst: &Workload) {
        if let Some(e) = self.edge_mut(src, dst, &r.protocol) {
            e.requests += 1;
            e.errors += u64::from(r.error);
            e.request_bytes += r.request_size;
            e.response_bytes += r.response_size;
            if let Some(us) = r.elapsed_us {
                e.latency.add(us);
            }
            let ts = r.ts();
            e.window.add(
                ts,
                &DirCounters { packets: 1, bytes: r.request_size, ip_bytes: 0 },
                &DirCounters { packets: 0, bytes: r.response_size, ip_bytes: 0 },
            );
            let key = if r.method.is_empty() || r.method == r.summary {
                r.summary.clone()
            } else {
                format!("{} {}", r.method, r.summary)
            };
            let mut key = key;
            if let Some((cut, _)) = key.char_indices().nth(120) {
                key.truncate(cut);
            }
            if let Some(n) = e.top.get_mut(&key) {
                *n += 1;
            } else if e.top.len() < MAX_TOP_KEYS {
                e.top.insert(key, 1);
            } else {
                *e.top.entry("(other)".into()).or_default() += 1;
            }
            self.latest = self.latest.max(ts);
        }
    }

    /// The newest record time seen: where rates end.
    pub fn latest(&self) -> crate::time::Timestamp {
        self.latest
    }

    /// Adds a node with no L7 edge (a workload seen only at L4), so the L7
    /// map shows the same nodes as the L4 map.
    pub fn add_node(&mut self, node: MapNode) {
        intern_node(&mut self.graph, &mut self.nodes, node);
    }

    pub fn view(&self) -> L7MapView {
        self.view_at(self.latest)
    }

    /// The map with rates over the window ending at `now`.
    pub fn view_at(&self, now: crate::time::Timestamp) -> L7MapView {
        let mut nodes: Vec<MapNode> = self.graph.node_weights().cloned().collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        let mut edges: Vec<L7EdgeView> = self.graph.edge_indices().filter_map(|ix| self.edge_view(ix, now)).collect();
        edges.sort_by(|a, b| (&a.source, &a.target, &a.protocol).cmp(&(&b.source, &b.target, &b.protocol)));
        let used: std::collections::BTreeSet<&str> = edges.iter().map(|e| e.protocol.as_str()).collect();
        let legend = self.legend.values().filter(|l| used.contains(l.protocol.as_str())).cloned().collect();
        L7MapView { nodes, edges, legend }
    }

    /// One edge as [`L7Map::view_at`] shows it.
    pub fn edge_view(&self, ix: EdgeIndex, now: crate::time::Timestamp) -> Option<L7EdgeView> {
        let (a, b) = self.graph.edge_endpoints(ix)?;
        let e = self.graph.edge_weight(ix)?;
        let (req, resp): (Rate, Rate) = e.window.rates(now);
        let mut top: Vec<TopEntry> = e.top.iter().map(|(k, v)| TopEntry { name: k.clone(), count: *v }).collect();
        top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
        top.truncate(5);
        Some(L7EdgeView {
            source: self.graph[a].id.clone(),
            target: self.graph[b].id.clone(),
            protocol: e.protocol.clone(),
            requests: e.requests,
            errors: e.errors,
            request_bytes: e.request_bytes,
            response_bytes: e.response_bytes,
            latency_us: LatencyView {
                p50: e.latency.percentile(50.0),
                p95: e.latency.percentile(95.0),
                p99: e.latency.percentile(99.0),
            },
            rate: L7RateView {
                window_secs: self.window_secs,
                requests_per_sec: req.packets_per_sec,
                request_bytes_per_sec: req.bytes_per_sec,
                response_bytes_per_sec: resp.bytes_per_sec,
            },
            top,
        })
    }

    /// The edge from node id `source` to node id `target` for `protocol`.
    pub fn find_edge(&self, source: &str, target: &str, protocol: &str) -> Option<EdgeIndex> {
        let (a, b) = (self.nodes.get(source)?, self.nodes.get(target)?);
        self.edges.get(&(*a, *b, protocol.to_string())).copied()
    }

    pub fn graph(&self) -> &StableDiGraph<MapNode, L7Edge> {
        &self.graph
    }

    /// Legend entries of the protocols some edge uses.
    pub fn legend_in_use(&self) -> Vec<LegendEntry> {
        let used: std::collections::BTreeSet<&str> = self.graph.edge_weights().map(|e| e.protocol.as_str()).collect();
        self.legend.values().filter(|l| used.contains(l.protocol.as_str())).cloned().collect()
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
        let near = |got: Option<u64>, want: f64| (got.unwrap() as f64 - want).abs() <= want * 0.02 + 1.0;
        assert!(near(l.percentile(50.0), 50.0), "{:?}", l.percentile(50.0));
        assert!(near(l.percentile(99.0), 99.0), "{:?}", l.percentile(99.0));
        let mut other = Latency::default();
        for v in 1000..=1100 {
            other.add(v);
        }
        l.merge(&other);
        assert_eq!(l.count(), 201);
        assert!(near(l.percentile(99.0), 1098.0), "{:?}", l.percentile(99.0));
        assert_eq!(Latency::default().percentile(50.0), None);
    }
}

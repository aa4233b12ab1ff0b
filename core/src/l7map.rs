//! The L7 workload map: edges per (source, target, protocol) with request,
//! error and byte counts and latency percentiles, fed by L7 records.

use crate::flow::DirCounters;
use crate::identity::Workload;
use crate::map::{GroupBy, MapNode, intern_node, intern_workload};
use crate::map::{Rate, RateWindow};
use crate::record::L7Record;
use hashbrown::HashMap;
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};
use serde::Serialize;
use sketches_ddsketch::{Config, DDSketch};
use std::collections::BTreeMap;

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

    /// Percentile `p` (0–100), within 1 %, by nearest rank: the p99 of
    /// five requests is the slowest, as a Prometheus histogram reads it too
    /// (the sketch's own rank, `q·(n−1)` rounded down, would say the
    /// fourth).
    pub fn percentile(&self, p: f64) -> Option<u64> {
        let n = self.sketch.count();
        let rank = nearest_rank(p, n as u64)?;
        // The sketch's quantile at a fraction that floors to `rank`.
        let q = if n <= 1 { 0.0 } else { ((rank as f64 + 0.5) / (n - 1) as f64).min(1.0) };
        let q = self.sketch.quantile(q).ok().flatten()?;
        Some(q.round().max(0.0) as u64)
    }
}

/// The 0-based rank of percentile `p` (0–100) of `n` values by nearest
/// rank (`⌈p/100·n⌉`-th smallest), if there are any.
pub fn nearest_rank(p: f64, n: u64) -> Option<u64> {
    let k = ((p / 100.0).clamp(0.0, 1.0) * n as f64).ceil() as u64;
    (n > 0).then(|| k.clamp(1, n) - 1)
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
    /// The virtual host of an edge split by host (see [`crate::vhost`]).
    pub host: Option<String>,
    /// Requests that named no host: such an edge cannot be given to one
    /// host when its server turns out to serve several.
    hostless: u64,
    /// Requests read as TLS plaintext: the edge is encrypted on the wire.
    pub tls_requests: u64,
    /// p99 latency, worked out once per change (views read it each tick).
    p99: std::cell::OnceCell<Option<u64>>,
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
            host: None,
            hostless: 0,
            tls_requests: 0,
            p99: std::cell::OnceCell::new(),
        }
    }

    /// p99 latency in µs, if any request was timed.
    pub fn p99(&self) -> Option<u64> {
        *self.p99.get_or_init(|| self.latency.percentile(99.0))
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
    /// The virtual host, when the server serves several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Requests read as TLS plaintext (the UI marks the edge encrypted).
    #[serde(skip_serializing_if = "is_zero")]
    pub tls_requests: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
    edges: HashMap<EdgeKey, EdgeIndex>,
    legend: BTreeMap<String, LegendEntry>,
    /// Whether a server serving several hosts gets an edge per host.
    split_hosts: bool,
    hosts: crate::vhost::Hosts<NodeIndex>,
    /// Room to write a node's id in, to look it up.
    scratch: String,
    /// Room to write a call's key in, to count it.
    call_key: String,
}

/// Client, server, protocol and (split edges only) virtual host.
type EdgeKey = (NodeIndex, NodeIndex, String, Option<String>);

/// An [`EdgeKey`] borrowed, to look one up without building it. Its hash
/// is the key's: the same fields hashed in the same order, and a `&str`
/// hashes as the `String` it equals.
#[derive(Hash)]
struct EdgeRef<'a>(NodeIndex, NodeIndex, &'a str, Option<&'a str>);

impl hashbrown::Equivalent<EdgeKey> for EdgeRef<'_> {
    fn equivalent(&self, k: &EdgeKey) -> bool {
        self.0 == k.0 && self.1 == k.1 && self.2 == k.2 && self.3 == k.3.as_deref()
    }
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
            split_hosts: true,
            hosts: crate::vhost::Hosts::default(),
            scratch: String::new(),
            call_key: String::new(),
        }
    }

    /// Whether a server serving several virtual hosts gets an edge per
    /// host (on by default; `--split-hosts false`).
    pub fn set_split_hosts(&mut self, on: bool) {
        self.split_hosts = on;
    }

    /// Registers how a protocol looks in the legend.
    pub fn set_legend(&mut self, entry: LegendEntry) {
        self.legend.insert(entry.protocol.clone(), entry);
    }

    fn node(&mut self, w: &Workload) -> NodeIndex {
        intern_workload(&mut self.graph, &mut self.nodes, w, self.group, &mut self.scratch)
    }

    /// The edge from `src` to `dst` over `protocol` (for `host`, if the
    /// server serves several), made if new.
    fn edge_mut(&mut self, src: &Workload, dst: &Workload, protocol: &str, host: Option<&str>) -> Option<&mut L7Edge> {
        let (a, b) = (self.node(src), self.node(dst));
        let vhost = match host.filter(|_| self.split_hosts) {
            None => None,
            Some(h) => match self.hosts.note(&b, h) {
                crate::vhost::Note::Single => None,
                crate::vhost::Note::BecameMany { first } => {
                    self.split_server(b, &first);
                    Some(h.to_string())
                }
                crate::vhost::Note::Many => Some(h.to_string()),
                crate::vhost::Note::Other => Some(crate::vhost::OTHER_HOSTS.to_string()),
            },
        };
        let ix = match self.edges.get(&EdgeRef(a, b, protocol, vhost.as_deref())) {
            Some(&ix) => ix,
            None => {
                let mut edge = L7Edge::new(protocol, self.window_secs);
                edge.host = vhost.clone();
                let ix = self.graph.add_edge(a, b, edge);
                self.edges.insert((a, b, protocol.to_string(), vhost), ix);
                ix
            }
        };
        self.graph.edge_weight_mut(ix)
    }

    /// Server `b` just served a second host: its edges so far, whose every
    /// request asked for `first`, become `first`'s edges.
    fn split_server(&mut self, b: NodeIndex, first: &str) {
        let whole: Vec<EdgeKey> = self
            .edges
            .iter()
            .filter(|(k, ix)| {
                k.1 == b && k.3.is_none() && self.graph.edge_weight(**ix).is_some_and(|e| e.hostless == 0)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in whole {
            let Some(ix) = self.edges.remove(&key) else { continue };
            if let Some(e) = self.graph.edge_weight_mut(ix) {
                e.host = Some(first.to_string());
            }
            self.edges.insert((key.0, key.1, key.2, Some(first.to_string())), ix);
        }
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
        if let Some(e) = self.edge_mut(src, dst, protocol, None) {
            e.hostless += c.requests;
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
        self.apply_for_host(r, src, dst, crate::vhost::record_host(r).as_deref());
    }

    /// [`L7Map::apply`] with the record's virtual host already named
    /// ([`crate::vhost::record_host`]), for callers that feed several maps.
    pub fn apply_for_host(&mut self, r: &L7Record, src: &Workload, dst: &Workload, host: Option<&str>) {
        // The call's key is written here, so counting a call already known
        // allocates nothing.
        let mut key = std::mem::take(&mut self.call_key);
        if let Some(e) = self.edge_mut(src, dst, &r.protocol, host) {
            e.hostless += u64::from(host.is_none());
            e.requests += 1;
            e.tls_requests += u64::from(r.tls);
            e.errors += u64::from(r.error);
            e.request_bytes += r.request_size;
            e.response_bytes += r.response_size;
            if let Some(us) = r.elapsed_us {
                e.latency.add(us);
                e.p99.take();
            }
            let ts = r.ts();
            e.window.add(
                ts,
                &DirCounters { packets: 1, bytes: r.request_size, ip_bytes: 0 },
                &DirCounters { packets: 0, bytes: r.response_size, ip_bytes: 0 },
            );
            key.clear();
            if !(r.method.is_empty() || r.method == r.summary) {
                key.push_str(&r.method);
                key.push(' ');
            }
            key.push_str(&r.summary);
            if let Some((cut, _)) = key.char_indices().nth(120) {
                key.truncate(cut);
            }
            if let Some(n) = e.top.get_mut(key.as_str()) {
                *n += 1;
            } else if e.top.len() < MAX_TOP_KEYS {
                e.top.insert(key.clone(), 1);
            } else {
                *e.top.entry("(other)".into()).or_default() += 1;
            }
            self.latest = self.latest.max(ts);
        }
        self.call_key = key;
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
        edges.sort_by(|a, b| {
            (&a.source, &a.target, &a.protocol, &a.host).cmp(&(&b.source, &b.target, &b.protocol, &b.host))
        });
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
            host: e.host.clone(),
            tls_requests: e.tls_requests,
        })
    }

    /// The edge from node id `source` to node id `target` for `protocol`
    /// (and `host`, for an edge of one virtual host).
    pub fn find_edge(&self, source: &str, target: &str, protocol: &str, host: Option<&str>) -> Option<EdgeIndex> {
        let (a, b) = (self.nodes.get(source)?, self.nodes.get(target)?);
        self.edges.get(&EdgeRef(*a, *b, protocol, host)).copied()
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

    fn record(host: Option<&str>) -> L7Record {
        let end = |port| crate::record::RecordEndpoint {
            ip: [10, 0, 0, 1].into(),
            port,
            workload: None,
            resolution_status: crate::identity::ResolutionStatus::Unresolved,
        };
        let mut fields = trawl_sdk::Fields::new();
        if let Some(h) = host {
            fields.insert("host", h);
        }
        L7Record {
            protocol: "http".into(),
            transport: crate::decode::L4Proto::Tcp,
            method: "GET".into(),
            summary: "/".into(),
            status_code: Some(200),
            error: false,
            request_size: 100,
            response_size: 200,
            elapsed_us: Some(500),
            request_ts: Some(crate::time::Timestamp(1_000_000_000)),
            response_ts: None,
            src: end(40000),
            dst: end(80),
            plugin: crate::record::PluginRef { name: "http".into(), version: "1".into(), generation: 1 },
            fields,
            tls: false,
            tls_sni: None,
        }
    }

    #[test]
    fn a_server_of_two_hosts_gets_an_edge_per_host() {
        let (client, ingress) = (Workload::external([10, 0, 0, 1].into()), Workload::external([10, 0, 0, 2].into()));
        let mut map = L7Map::new(GroupBy::Pod);
        for _ in 0..3 {
            map.apply(&record(Some("A.example")), &client, &ingress);
        }
        let v = map.view();
        assert_eq!(
            (v.edges.len(), v.edges[0].host.as_deref(), v.edges[0].requests),
            (1, None, 3),
            "one host: no split"
        );
        for _ in 0..2 {
            map.apply(&record(Some("b.example")), &client, &ingress);
        }
        let v = map.view();
        let edges: Vec<(Option<&str>, u64)> = v.edges.iter().map(|e| (e.host.as_deref(), e.requests)).collect();
        assert_eq!(edges, [(Some("a.example"), 3), (Some("b.example"), 2)], "the first host's edge keeps its counts");
        let (s, t) = (&v.edges[0].source, &v.edges[0].target);
        assert!(map.find_edge(s, t, "http", Some("b.example")).is_some());

        let mut whole = L7Map::new(GroupBy::Pod);
        whole.set_split_hosts(false);
        for h in ["a.example", "b.example"] {
            whole.apply(&record(Some(h)), &client, &ingress);
        }
        assert_eq!(whole.view().edges.len(), 1, "split off: one edge");
    }

    /// Made-up `Host` headers cannot grow the map: past
    /// MAX_HOSTS_PER_SERVER a server's hosts share one edge, and every
    /// request is still counted.
    #[test]
    fn a_server_of_endless_hosts_has_bounded_edges() {
        let (client, server) = (Workload::external([10, 0, 0, 1].into()), Workload::external([10, 0, 0, 2].into()));
        let mut map = L7Map::new(GroupBy::Pod);
        for i in 0..1_000 {
            map.apply(&record(Some(&format!("h{i}.example"))), &client, &server);
        }
        let v = map.view();
        assert_eq!(v.edges.len(), crate::vhost::MAX_HOSTS_PER_SERVER + 1);
        assert_eq!(v.edges.iter().map(|e| e.requests).sum::<u64>(), 1_000);
        let other = v.edges.iter().find(|e| e.host.as_deref() == Some(crate::vhost::OTHER_HOSTS));
        assert_eq!(other.map(|e| e.requests), Some(1_000 - crate::vhost::MAX_HOSTS_PER_SERVER as u64));
    }

    #[test]
    fn a_percentile_is_read_by_nearest_rank() {
        let mut l = Latency::default();
        for us in [174, 223, 270, 288, 1042] {
            l.add(us);
        }
        // The p99 of five requests is the slowest; their median the third.
        assert_eq!(l.percentile(99.0), Some(1042));
        assert!(l.percentile(50.0).is_some_and(|p| p.abs_diff(270) <= 3), "{:?}", l.percentile(50.0));
        assert_eq!(nearest_rank(99.0, 0), None);
        assert_eq!(
            (nearest_rank(0.0, 5), nearest_rank(100.0, 5), nearest_rank(95.0, 100)),
            (Some(0), Some(4), Some(94))
        );
    }

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

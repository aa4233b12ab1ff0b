//! History: what each edge carried per interval, kept compact enough to
//! store for days, and the map of any window rebuilt from it.
//!
//! Edges are kept at the finest grain (one pod, service, node or address
//! at each end), so one store answers every grouping: a window's map
//! groups its samples as the live map groups flows and records.
//!
//! A sample is what an edge carried in one interval: L4 packets, bytes,
//! closed flows and TCP health each way; L7 requests, errors, bytes and a
//! latency histogram. Samples of one edge add up (intervals roll up into
//! coarser ones, windows sum them), so every measure is a sum or a
//! mergeable histogram.

use crate::decode::L4Proto;
use crate::flow::{DirCounters, FlowDelta};
use crate::identity::{Workload, WorkloadKind};
use crate::l7map::{L7Counts, LatencyView, LegendEntry};
use crate::map::{GroupBy, MapNode};
use crate::record::L7Record;
use crate::tcp_health::EdgeHealth;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

/// Relative accuracy of history's latency quantiles (2 %): half the
/// buckets of the live map's 1 %, which keeps a stored L7 sample small.
pub const LATENCY_ACCURACY: f64 = 0.02;

fn gamma() -> f64 {
    (1.0 + LATENCY_ACCURACY) / (1.0 - LATENCY_ACCURACY)
}

/// A mergeable latency histogram over logarithmic buckets (DDSketch's
/// mapping, as the live map uses): bucket `i` holds latencies in
/// `(γ^(i-1), γ^i]` µs, so any quantile is within [`LATENCY_ACCURACY`].
/// Sparse, and stored as gaps between bucket indexes, which are small.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<(u16, u64)>", into = "Vec<(u16, u64)>")]
pub struct LatencyHistogram {
    /// `(bucket, count)`, sorted by bucket.
    buckets: Vec<(u16, u64)>,
}

impl From<Vec<(u16, u64)>> for LatencyHistogram {
    fn from(gaps: Vec<(u16, u64)>) -> Self {
        let mut at = 0u16;
        let buckets = gaps
            .into_iter()
            .map(|(gap, n)| {
                at = at.saturating_add(gap);
                (at, n)
            })
            .collect();
        LatencyHistogram { buckets }
    }
}

impl From<LatencyHistogram> for Vec<(u16, u64)> {
    fn from(h: LatencyHistogram) -> Self {
        let mut at = 0u16;
        h.buckets
            .into_iter()
            .map(|(i, n)| {
                let gap = i - at;
                at = i;
                (gap, n)
            })
            .collect()
    }
}

impl LatencyHistogram {
    fn bucket(us: u64) -> u16 {
        if us <= 1 {
            return 0;
        }
        let i = ((us as f64).ln() / gamma().ln()).ceil();
        i.clamp(0.0, f64::from(u16::MAX)) as u16
    }

    pub fn add(&mut self, us: u64) {
        self.add_n(Self::bucket(us), 1);
    }

    fn add_n(&mut self, bucket: u16, n: u64) {
        match self.buckets.binary_search_by_key(&bucket, |b| b.0) {
            Ok(i) => self.buckets[i].1 += n,
            Err(i) => self.buckets.insert(i, (bucket, n)),
        }
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        if self.buckets.is_empty() {
            return self.buckets.clone_from(&other.buckets);
        }
        for &(b, n) in &other.buckets {
            self.add_n(b, n);
        }
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.1).sum()
    }

    /// Percentile `p` (0–100), within [`LATENCY_ACCURACY`], rounded to µs.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        // Nearest rank, as the live map's sketch reads it.
        let rank = crate::l7map::nearest_rank(p, self.count())?;
        let mut seen = 0;
        for &(b, n) in &self.buckets {
            seen += n;
            if seen > rank {
                if b == 0 {
                    return Some(1);
                }
                let g = gamma();
                return Some((2.0 * g.powi(i32::from(b)) / (g + 1.0)).round() as u64);
            }
        }
        None
    }

    pub fn view(&self) -> LatencyView {
        LatencyView { p50: self.percentile(50.0), p95: self.percentile(95.0), p99: self.percentile(99.0) }
    }
}

/// One end of a stored edge: the workload without its labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct End {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
}

impl End {
    pub fn of(w: &Workload) -> End {
        End { kind: w.kind, namespace: w.namespace.clone(), name: w.name.clone(), node: w.node.clone() }
    }

    pub fn workload(&self) -> Workload {
        Workload {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            node: self.node.clone(),
            labels: BTreeMap::new(),
            owner: None,
        }
    }
}

/// Which map an edge belongs to, and over what.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Layer {
    L4(L4Proto),
    L7(String),
}

/// A stored edge: its map, client and server, and for L7 the virtual
/// host asked for (a window's map splits a server's edges by host where
/// it served several, as the live map does).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EdgeKey {
    pub layer: Layer,
    pub src: End,
    pub dst: End,
    pub host: Option<String>,
}

/// An [`EdgeKey`] borrowed from a record and its workloads: ingest looks
/// an edge up by it, so a known edge costs no allocation. An `EdgeKey`
/// hashes as this view of it, so the two hash alike by construction.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct EdgeRef<'a> {
    layer: LayerRef<'a>,
    src: EndRef<'a>,
    dst: EndRef<'a>,
    host: Option<&'a str>,
}

#[derive(Debug, PartialEq, Eq, Hash)]
enum LayerRef<'a> {
    L4(L4Proto),
    L7(&'a str),
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct EndRef<'a> {
    kind: WorkloadKind,
    namespace: &'a str,
    name: &'a str,
    node: Option<&'a str>,
}

impl<'a> EndRef<'a> {
    fn of(w: &'a Workload) -> Self {
        EndRef { kind: w.kind, namespace: &w.namespace, name: &w.name, node: w.node.as_deref() }
    }

    fn of_end(e: &'a End) -> Self {
        EndRef { kind: e.kind, namespace: &e.namespace, name: &e.name, node: e.node.as_deref() }
    }

    fn to_end(&self) -> End {
        End {
            kind: self.kind,
            namespace: self.namespace.to_string(),
            name: self.name.to_string(),
            node: self.node.map(str::to_string),
        }
    }
}

impl<'a> EdgeRef<'a> {
    fn l4(l4: L4Proto, src: &'a Workload, dst: &'a Workload) -> Self {
        EdgeRef { layer: LayerRef::L4(l4), src: EndRef::of(src), dst: EndRef::of(dst), host: None }
    }

    fn l7(protocol: &'a str, src: &'a Workload, dst: &'a Workload, host: Option<&'a str>) -> Self {
        EdgeRef { layer: LayerRef::L7(protocol), src: EndRef::of(src), dst: EndRef::of(dst), host }
    }
}

impl EdgeKey {
    fn view(&self) -> EdgeRef<'_> {
        let layer = match &self.layer {
            Layer::L4(l4) => LayerRef::L4(*l4),
            Layer::L7(p) => LayerRef::L7(p),
        };
        EdgeRef { layer, src: EndRef::of_end(&self.src), dst: EndRef::of_end(&self.dst), host: self.host.as_deref() }
    }
}

impl std::hash::Hash for EdgeKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.view().hash(state);
    }
}

impl hashbrown::Equivalent<EdgeKey> for EdgeRef<'_> {
    fn equivalent(&self, key: &EdgeKey) -> bool {
        *self == key.view()
    }
}

impl From<&EdgeRef<'_>> for EdgeKey {
    fn from(r: &EdgeRef<'_>) -> Self {
        let layer = match r.layer {
            LayerRef::L4(l4) => Layer::L4(l4),
            LayerRef::L7(p) => Layer::L7(p.to_string()),
        };
        EdgeKey { layer, src: r.src.to_end(), dst: r.dst.to_end(), host: r.host.map(str::to_string) }
    }
}

/// One direction of an L4 edge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirSample {
    pub packets: u64,
    pub bytes: u64,
    pub ip_bytes: u64,
}

impl DirSample {
    fn add(&mut self, d: &DirCounters) {
        self.packets += d.packets;
        self.bytes += d.bytes;
        self.ip_bytes += d.ip_bytes;
    }

    fn merge(&mut self, o: &DirSample) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.ip_bytes += o.ip_bytes;
    }

    pub fn counters(&self) -> DirCounters {
        DirCounters { packets: self.packets, bytes: self.bytes, ip_bytes: self.ip_bytes }
    }
}

/// What an L4 edge carried in an interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct L4Sample {
    pub to_server: DirSample,
    pub to_client: DirSample,
    /// Flows that closed.
    pub flows: u64,
    /// Stored as an option: most samples of most edges have nothing to
    /// say about TCP health, and then cost one byte, not eight.
    #[serde(with = "health_or_none")]
    pub health: EdgeHealth,
}

mod health_or_none {
    use super::EdgeHealth;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(h: &EdgeHealth, s: S) -> Result<S::Ok, S::Error> {
        (*h != EdgeHealth::default()).then_some(h).serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<EdgeHealth, D::Error> {
        Ok(Option::<EdgeHealth>::deserialize(d)?.unwrap_or_default())
    }
}

/// What an L7 edge carried in an interval.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct L7Sample {
    pub requests: u64,
    pub errors: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub latency: LatencyHistogram,
}

/// What one edge carried in one interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sample {
    L4(L4Sample),
    L7(L7Sample),
}

impl Sample {
    /// Adds another sample of the same edge (a later delta, or a finer
    /// interval rolled up). Samples of another layer are ignored: an edge
    /// key fixes its layer.
    pub fn merge(&mut self, other: &Sample) {
        match (self, other) {
            (Sample::L4(a), Sample::L4(b)) => {
                a.to_server.merge(&b.to_server);
                a.to_client.merge(&b.to_client);
                a.flows += b.flows;
                a.health.merge(&b.health);
            }
            (Sample::L7(a), Sample::L7(b)) => {
                a.requests += b.requests;
                a.errors += b.errors;
                a.request_bytes += b.request_bytes;
                a.response_bytes += b.response_bytes;
                a.latency.merge(&b.latency);
            }
            _ => {}
        }
    }
}

/// Samples of one interval, by edge: what ingest fills.
#[derive(Clone, Debug)]
pub struct IntervalSamples {
    pub edges: hashbrown::HashMap<EdgeKey, Sample>,
    /// Distinct edges held at most; samples of further new edges are
    /// counted in `refused` and not kept.
    pub cap: usize,
    pub refused: u64,
}

impl Default for IntervalSamples {
    fn default() -> Self {
        Self::with_cap(usize::MAX)
    }
}

impl IntervalSamples {
    pub fn with_cap(cap: usize) -> Self {
        IntervalSamples { edges: hashbrown::HashMap::new(), cap, refused: 0 }
    }

    fn entry(&mut self, key: EdgeRef<'_>, empty: impl FnOnce() -> Sample) -> Option<&mut Sample> {
        // Looked up twice when known (a map cannot hand out an entry by a
        // borrowed key whose owned form it cannot borrow as), but never
        // built unless new.
        if !self.edges.contains_key(&key) {
            if self.edges.len() >= self.cap {
                self.refused += 1;
                return None;
            }
            self.edges.insert(EdgeKey::from(&key), empty());
        }
        self.edges.get_mut(&key)
    }

    /// A flow delta between two resolved workloads.
    pub fn add_delta(&mut self, d: &FlowDelta, client: &Workload, server: &Workload, closed_flows: u64) {
        let key = EdgeRef::l4(d.l4, client, server);
        if let Some(Sample::L4(s)) = self.entry(key, || Sample::L4(L4Sample::default())) {
            s.to_server.add(&d.to_server);
            s.to_client.add(&d.to_client);
            s.flows += closed_flows;
            s.health.add(&d.health);
        }
    }

    /// An L7 record between two resolved workloads.
    pub fn add_record(&mut self, r: &L7Record, src: &Workload, dst: &Workload) {
        self.add_record_for_host(r, src, dst, crate::vhost::record_host(r).as_deref());
    }

    /// [`IntervalSamples::add_record`] with the record's virtual host
    /// already named.
    pub fn add_record_for_host(&mut self, r: &L7Record, src: &Workload, dst: &Workload, host: Option<&str>) {
        let key = EdgeRef::l7(&r.protocol, src, dst, host);
        if let Some(Sample::L7(s)) = self.entry(key, || Sample::L7(L7Sample::default())) {
            s.requests += 1;
            s.errors += u64::from(r.error);
            s.request_bytes += r.request_size;
            s.response_bytes += r.response_size;
            if let Some(us) = r.elapsed_us {
                s.latency.add(us);
            }
        }
    }

    /// Requests known by their counts only.
    pub fn add_counts(&mut self, protocol: &str, c: &L7Counts, src: &Workload, dst: &Workload) {
        let key = EdgeRef::l7(protocol, src, dst, None);
        if let Some(Sample::L7(s)) = self.entry(key, || Sample::L7(L7Sample::default())) {
            s.requests += c.requests;
            s.errors += c.errors;
            s.request_bytes += c.request_bytes;
            s.response_bytes += c.response_bytes;
        }
    }

    /// Adds every sample of another interval (a finer one rolled up).
    pub fn merge(&mut self, other: &IntervalSamples) {
        for (k, s) in &other.edges {
            self.merge_sample(k, s);
        }
    }

    pub fn merge_sample(&mut self, key: &EdgeKey, s: &Sample) {
        let full = self.edges.len() >= self.cap;
        match self.edges.get_mut(key) {
            Some(mine) => mine.merge(s),
            None if full => self.refused += 1,
            None => {
                self.edges.insert(key.clone(), s.clone());
            }
        }
    }
}

/// Which map a window shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    L4,
    L7,
}

/// Sums samples into one map, grouped: the map of a window.
#[derive(Debug)]
pub struct WindowMap {
    kind: MapKind,
    group: GroupBy,
    nodes: BTreeMap<String, MapNode>,
    edges: BTreeMap<WindowEdge, Sample>,
    split_hosts: bool,
}

/// Client and server node ids, layer, virtual host.
type WindowEdge = (String, String, Layer, Option<String>);

impl WindowMap {
    pub fn new(kind: MapKind, group: GroupBy) -> Self {
        WindowMap { kind, group, nodes: BTreeMap::new(), edges: BTreeMap::new(), split_hosts: true }
    }

    /// Whether a server that served several hosts in the window gets an
    /// edge per host (as the live map's `--split-hosts`).
    pub fn with_split_hosts(mut self, on: bool) -> Self {
        self.split_hosts = on;
        self
    }

    fn node(&mut self, end: &End) -> String {
        let node = MapNode::for_workload(&end.workload(), self.group);
        let id = node.id.clone();
        self.nodes.entry(id.clone()).or_insert(node);
        id
    }

    /// Adds one edge's sample. As on the live maps, the L7 map shows the
    /// nodes of L4 edges too.
    pub fn add(&mut self, key: &EdgeKey, s: &Sample) {
        let (a, b) = (self.node(&key.src), self.node(&key.dst));
        let wanted = matches!((self.kind, &key.layer), (MapKind::L4, Layer::L4(_)) | (MapKind::L7, Layer::L7(_)));
        if !wanted {
            return;
        }
        let k = (a, b, key.layer.clone(), key.host.clone().filter(|_| self.split_hosts));
        match self.edges.get_mut(&k) {
            Some(mine) => mine.merge(s),
            None => {
                self.edges.insert(k, s.clone());
            }
        }
    }

    /// The edges, a server's hosts merged where it served only one.
    fn by_host(&self) -> BTreeMap<WindowEdge, Sample> {
        let mut hosts: HashMap<&str, std::collections::BTreeSet<&str>> = HashMap::new();
        for (_, b, _, h) in self.edges.keys() {
            if let Some(h) = h {
                hosts.entry(b.as_str()).or_default().insert(h.as_str());
            }
        }
        let mut out: BTreeMap<WindowEdge, Sample> = BTreeMap::new();
        for ((a, b, layer, host), s) in &self.edges {
            let served = hosts.get(b.as_str());
            let split = served.is_some_and(|h| h.len() > 1);
            // As on the live map, a server's hosts past the first
            // MAX_HOSTS_PER_SERVER (by name) share one edge.
            let host = host.as_deref().filter(|_| split).map(|h| {
                let kept = served.is_some_and(|hs| hs.iter().take(crate::vhost::MAX_HOSTS_PER_SERVER).any(|k| *k == h));
                if kept { h.to_string() } else { crate::vhost::OTHER_HOSTS.to_string() }
            });
            let k = (a.clone(), b.clone(), layer.clone(), host);
            match out.get_mut(&k) {
                Some(mine) => mine.merge(s),
                None => {
                    out.insert(k, s.clone());
                }
            }
        }
        out
    }

    /// Adds the nodes of an edge, not the edge.
    pub fn add_node_only(&mut self, key: &EdgeKey) {
        self.node(&key.src);
        self.node(&key.dst);
    }

    /// Edges in the map.
    pub fn edge_count(&self) -> usize {
        self.edges.len()
    }

    /// The map in `/api/map`'s shape (`nodes`, `edges`, `legend`), with
    /// rates over `secs` seconds. L7 edges carry no top calls: history
    /// keeps counts, not requests.
    pub fn to_json(&self, secs: f64, legend: &[LegendEntry]) -> Value {
        let secs_f = secs.max(1e-3);
        let window_secs = secs.round().max(1.0) as u64;
        let per_sec = |n: u64| n as f64 / secs_f;
        let mut used = std::collections::BTreeSet::new();
        let grouped = self.by_host();
        let edges: Vec<Value> = grouped
            .iter()
            .map(|((a, b, layer, host), s)| match (layer, s) {
                (Layer::L4(l4), Sample::L4(s)) => json!({
                    "source": a, "target": b, "l4": l4, "flows": s.flows,
                    "to_server": s.to_server.counters(), "to_client": s.to_client.counters(),
                    "rate": {
                        "window_secs": window_secs,
                        "to_server": {"packets_per_sec": per_sec(s.to_server.packets), "bytes_per_sec": per_sec(s.to_server.bytes)},
                        "to_client": {"packets_per_sec": per_sec(s.to_client.packets), "bytes_per_sec": per_sec(s.to_client.bytes)},
                    },
                    "tcp_health": (*l4 == L4Proto::Tcp).then(|| s.health.view()),
                }),
                (Layer::L7(p), Sample::L7(s)) => {
                    used.insert(p.as_str());
                    json!({
                        "source": a, "target": b, "protocol": p,
                        "requests": s.requests, "errors": s.errors,
                        "request_bytes": s.request_bytes, "response_bytes": s.response_bytes,
                        "latency_us": s.latency.view(),
                        "rate": {
                            "window_secs": window_secs,
                            "requests_per_sec": per_sec(s.requests),
                            "request_bytes_per_sec": per_sec(s.request_bytes),
                            "response_bytes_per_sec": per_sec(s.response_bytes),
                        },
                        "top": [],
                        "host": host,
                    })
                }
                _ => Value::Null,
            })
            .map(|mut e| {
                if let Some(o) = e.as_object_mut() {
                    o.retain(|_, v| !v.is_null());
                }
                e
            })
            .collect();
        let legend: Vec<&LegendEntry> = match self.kind {
            MapKind::L4 => Vec::new(),
            MapKind::L7 => legend.iter().filter(|l| used.contains(l.protocol.as_str())).collect(),
        };
        let nodes: Vec<&MapNode> = self.nodes.values().collect();
        json!({"nodes": nodes, "edges": edges, "legend": legend})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_are_within_accuracy_and_merge() {
        let mut h = LatencyHistogram::default();
        for us in 1..=10_000u64 {
            h.add(us);
        }
        for (p, want) in [(50.0, 5_000.0), (99.0, 9_900.0)] {
            let got = h.percentile(p).unwrap() as f64;
            assert!((got - want).abs() <= want * LATENCY_ACCURACY + 1.0, "p{p}: {got}");
        }
        let mut slow = LatencyHistogram::default();
        for _ in 0..10_000 {
            slow.add(1_000_000);
        }
        h.merge(&slow);
        assert_eq!(h.count(), 20_000);
        let p99 = h.percentile(99.0).unwrap() as f64;
        assert!((p99 - 1e6).abs() <= 1e6 * LATENCY_ACCURACY, "{p99}");
        assert_eq!(LatencyHistogram::default().percentile(50.0), None);
    }

    #[test]
    fn a_histogram_survives_its_stored_form() {
        let mut h = LatencyHistogram::default();
        for us in [0, 1, 2, 900, 1_000, 1_000, 50_000, u64::MAX] {
            h.add(us);
        }
        let bytes = postcard::to_allocvec(&h).unwrap();
        assert_eq!(postcard::from_bytes::<LatencyHistogram>(&bytes).unwrap(), h);
        // Gaps, not indexes: each bucket costs two bytes or so.
        assert!(bytes.len() <= 1 + 2 * h.buckets.len() + 4, "{} bytes for {:?}", bytes.len(), h.buckets);
    }

    #[test]
    fn a_quiet_l4_sample_is_small() {
        let quiet = Sample::L4(L4Sample {
            to_server: DirSample { packets: 40, bytes: 9_000, ip_bytes: 8_400 },
            to_client: DirSample { packets: 35, bytes: 52_000, ip_bytes: 50_000 },
            flows: 1,
            health: EdgeHealth::default(),
        });
        let bytes = postcard::to_allocvec(&quiet).unwrap();
        assert!(bytes.len() <= 18, "{} bytes", bytes.len());
        assert_eq!(postcard::from_bytes::<Sample>(&bytes).unwrap(), quiet);
        let mut retransmitting = quiet.clone();
        if let Sample::L4(s) = &mut retransmitting {
            s.health.retransmits_to_server = 3;
        }
        let bytes = postcard::to_allocvec(&retransmitting).unwrap();
        assert_eq!(postcard::from_bytes::<Sample>(&bytes).unwrap(), retransmitting);
    }

    fn pod(ns: &str, name: &str, node: &str) -> Workload {
        let mut w = Workload::external("10.0.0.1".parse().unwrap());
        w.kind = WorkloadKind::Pod;
        w.namespace = ns.into();
        w.name = name.into();
        w.node = Some(node.into());
        w
    }

    #[test]
    fn a_window_groups_its_samples_as_the_live_map_does() {
        let (a, b, c) = (pod("shop", "web-1", "n1"), pod("shop", "web-2", "n2"), pod("data", "db-0", "n1"));
        let mut iv = IntervalSamples::default();
        for (src, bytes) in [(&a, 100), (&b, 50)] {
            let ep = crate::flow::Endpoint { ip: "10.0.0.9".parse().unwrap(), port: 80 };
            let d = FlowDelta {
                l4: L4Proto::Tcp,
                client: ep,
                server: ep,
                to_server: DirCounters { packets: 2, bytes, ip_bytes: bytes - 28 },
                to_client: DirCounters::default(),
                first_ts: crate::Timestamp::ZERO,
                last_ts: crate::Timestamp::ZERO,
                orientation: crate::flow::Orientation::Syn,
                closed: true,
                health: Default::default(),
            };
            iv.add_delta(&d, src, &c, 1);
        }
        let mut by_ns = WindowMap::new(MapKind::L4, GroupBy::Namespace);
        for (k, s) in &iv.edges {
            by_ns.add(k, s);
        }
        let v = by_ns.to_json(10.0, &[]);
        assert_eq!(v["edges"].as_array().unwrap().len(), 1, "{v}");
        let e = &v["edges"][0];
        assert_eq!((e["source"].as_str(), e["target"].as_str()), (Some("shop"), Some("data")));
        assert_eq!((e["to_server"]["bytes"].as_u64(), e["flows"].as_u64()), (Some(150), Some(2)));
        assert_eq!(e["rate"]["to_server"]["bytes_per_sec"].as_f64(), Some(15.0));
        // The L7 map of the same window still shows the L4 map's nodes.
        let mut l7 = WindowMap::new(MapKind::L7, GroupBy::Pod);
        for (k, s) in &iv.edges {
            l7.add(k, s);
        }
        let v = l7.to_json(10.0, &[]);
        assert_eq!((v["nodes"].as_array().unwrap().len(), v["edges"].as_array().unwrap().len()), (3, 0));
    }

    #[test]
    fn a_window_splits_a_server_by_host_only_where_it_served_several() {
        let (client, ingress, api) =
            (pod("shop", "web-1", "n1"), pod("ing", "nginx-0", "n1"), pod("shop", "api-0", "n2"));
        let key = |dst: &Workload, host: &str| EdgeKey {
            layer: Layer::L7("http".into()),
            src: End::of(&client),
            dst: End::of(dst),
            host: Some(host.into()),
        };
        let one = Sample::L7(L7Sample { requests: 2, ..Default::default() });
        let edges = |split: bool| {
            let mut m = WindowMap::new(MapKind::L7, GroupBy::Pod).with_split_hosts(split);
            for k in
                [key(&ingress, "a.example"), key(&ingress, "b.example"), key(&api, "api"), key(&ingress, "a.example")]
            {
                m.add(&k, &one);
            }
            let v = m.to_json(10.0, &[]);
            let mut e: Vec<(String, Option<String>, u64)> = v["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["target"].as_str().unwrap().into(),
                        e["host"].as_str().map(Into::into),
                        e["requests"].as_u64().unwrap(),
                    )
                })
                .collect();
            e.sort();
            e
        };
        let (ing, api_id) = ("pod/ing/nginx-0".to_string(), "pod/shop/api-0".to_string());
        assert_eq!(
            edges(true),
            [
                (ing.clone(), Some("a.example".into()), 4),
                (ing.clone(), Some("b.example".into()), 2),
                (api_id.clone(), None, 2)
            ]
        );
        assert_eq!(edges(false), [(ing, None, 6), (api_id, None, 2)]);
    }
}

//! What one WebSocket client draws: a bounded view of a map, kept in step
//! by deltas that fit a byte budget.
//!
//! A cluster map can hold far more edges than a browser can draw or a link
//! can stream. So a client sees at most `max_edges` edges, the heaviest
//! ones (with hysteresis, so the set does not flicker), and each edge as a
//! summary: weight, bytes, packets or requests, errors. The details panel
//! asks for one edge's full numbers when it opens.
//!
//! Each tick compares the map with what this client was last sent, so
//! nothing ever queues. Changed edges go out largest relative change
//! first, and those that do not fit this tick's budget stay pending for
//! the next one (the delta says how many). Structure (added and removed
//! nodes and edges) always goes out at once. In rate mode numbers are
//! rounded to three significant digits, so a steady rate is not resent
//! for noise in its last digits.

use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use trawl_core::l7map::L7Map;
use trawl_core::map::{EdgeIndex, MapNode, NodeIndex};
use trawl_core::{L4Map, Timestamp};

/// Edges a client is shown unless it asks for another bound.
pub const DEFAULT_MAX_EDGES: usize = 5_000;
/// Bytes of added and changed edges per delta, leaving room for the
/// envelope and removals: at five deltas a second, under 100 KB/s.
pub const CHANGE_BUDGET: usize = 19_000;
/// A shown edge keeps its place until an unshown one outweighs it this
/// many times over.
const HYSTERESIS: f64 = 4.0;

/// How edges are weighed: the subscription's bandwidth options.
#[derive(Clone, Copy, Debug)]
pub struct Weighing {
    pub rate: bool,
    pub bandwidth: bool,
    pub request: bool,
    pub response: bool,
}

impl Weighing {
    pub(crate) fn both(&self, request: f64, response: f64) -> f64 {
        (if self.request { request } else { 0.0 }) + (if self.response { response } else { 0.0 })
    }

    /// Rates are rounded to three significant digits; totals stay exact.
    fn shown(&self, x: f64) -> f64 {
        if !self.rate || x == 0.0 || !x.is_finite() {
            return x;
        }
        let scale = 10f64.powi(2 - x.abs().log10().floor() as i32);
        (x * scale).round() / scale
    }
}

/// The numbers one edge is drawn with.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    /// What the edge's width follows: bytes, or packets (L4) or requests
    /// (L7), per second in rate mode.
    pub weight: f64,
    /// Bytes, or bytes per second in rate mode.
    pub bytes: f64,
    /// L4: packets (per second in rate mode). L7: requests, cumulative.
    pub count: f64,
    /// L7 only: errors, cumulative (with `count`, the error ratio).
    pub errors: u64,
    /// L7 only: p99 latency (µs), for the health colours.
    pub p99_us: Option<u64>,
}

impl Summary {
    /// How much this differs from `old`, 0 (same) to 1 (everything).
    fn change_from(&self, old: &Summary) -> f64 {
        let rel = |a: f64, b: f64| {
            let m = a.abs().max(b.abs());
            if m == 0.0 { 0.0 } else { (a - b).abs() / m }
        };
        let errors = if self.errors != old.errors { 1.0 } else { 0.0 };
        let p99 = rel(self.p99_us.unwrap_or(0) as f64, old.p99_us.unwrap_or(0) as f64);
        rel(self.weight, old.weight).max(rel(self.count, old.count)).max(errors).max(p99)
    }
}

/// The map a view is drawn from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    L4(&'a L4Map),
    L7(&'a L7Map),
}

#[derive(Clone, Copy, Debug)]
struct Candidate {
    ix: EdgeIndex,
    a: NodeIndex,
    b: NodeIndex,
    s: Summary,
    /// Ranking: weight, raised for edges already shown.
    score: f64,
    shown: bool,
}

impl Source<'_> {
    fn summaries(&self, w: Weighing, now: Timestamp, out: &mut Vec<Candidate>) {
        let mut push = |ix, a, b, s: Summary| {
            out.push(Candidate { ix, a, b, s, score: 0.0, shown: false });
        };
        match self {
            Source::L4(m) => {
                let g = m.graph();
                for ix in g.edge_indices() {
                    let (Some((a, b)), Some(e)) = (g.edge_endpoints(ix), g.edge_weight(ix)) else { continue };
                    let (bytes, packets) = if w.rate {
                        let (s, c) = e.window.rates(now);
                        (w.both(s.bytes_per_sec, c.bytes_per_sec), w.both(s.packets_per_sec, c.packets_per_sec))
                    } else {
                        (
                            w.both(e.to_server.bytes as f64, e.to_client.bytes as f64),
                            w.both(e.to_server.packets as f64, e.to_client.packets as f64),
                        )
                    };
                    let (bytes, count) = (w.shown(bytes), w.shown(packets));
                    push(
                        ix,
                        a,
                        b,
                        Summary {
                            weight: if w.bandwidth { bytes } else { count },
                            bytes,
                            count,
                            errors: 0,
                            p99_us: None,
                        },
                    );
                }
            }
            Source::L7(m) => {
                let g = m.graph();
                for ix in g.edge_indices() {
                    let (Some((a, b)), Some(e)) = (g.edge_endpoints(ix), g.edge_weight(ix)) else { continue };
                    let (bytes, per_sec) = if w.rate {
                        let (req, resp) = e.window.rates(now);
                        (w.both(req.bytes_per_sec, resp.bytes_per_sec), req.packets_per_sec)
                    } else {
                        (w.both(e.request_bytes as f64, e.response_bytes as f64), e.requests as f64)
                    };
                    let (bytes, per_sec) = (w.shown(bytes), w.shown(per_sec));
                    let weight = if w.bandwidth { bytes } else { per_sec };
                    let (count, errors, p99_us) = (e.requests as f64, e.errors, e.p99());
                    push(ix, a, b, Summary { weight, bytes, count, errors, p99_us });
                }
            }
        }
    }

    fn node(&self, ix: NodeIndex) -> Option<&MapNode> {
        match self {
            Source::L4(m) => m.graph().node_weight(ix),
            Source::L7(m) => m.graph().node_weight(ix),
        }
    }

    fn node_indices(&self) -> Vec<NodeIndex> {
        match self {
            Source::L4(m) => m.graph().node_indices().collect(),
            Source::L7(m) => m.graph().node_indices().collect(),
        }
    }

    fn node_count(&self) -> usize {
        match self {
            Source::L4(m) => m.graph().node_count(),
            Source::L7(m) => m.graph().node_count(),
        }
    }

    /// The edge's transport (L4) or protocol (L7), and the JSON key for it.
    fn protocol(&self, ix: EdgeIndex) -> (&'static str, &str) {
        match self {
            Source::L4(m) => ("l4", m.graph().edge_weight(ix).map_or("", |e| e.l4.as_str())),
            Source::L7(m) => ("protocol", m.graph().edge_weight(ix).map_or("", |e| e.protocol.as_str())),
        }
    }

    fn is_l7(&self) -> bool {
        matches!(self, Source::L7(_))
    }

    /// The virtual host of an L7 edge split by host.
    fn host(&self, ix: EdgeIndex) -> Option<&str> {
        match self {
            Source::L4(_) => None,
            Source::L7(m) => m.graph().edge_weight(ix).and_then(|e| e.host.as_deref()),
        }
    }
}

/// What a client has been sent for one edge.
#[derive(Debug)]
struct Sent {
    id: String,
    s: Summary,
    a: NodeIndex,
    b: NodeIndex,
    /// Deltas this edge's change has waited for: small changes gain
    /// priority as they wait, so none waits forever.
    waiting: u32,
}

/// One client's view: what it was sent, so the next delta is the
/// difference.
/// Most edges any client is shown.
pub const MAX_EDGES_CAP: usize = 50_000;

#[derive(Debug)]
pub struct ClientView {
    max_edges: usize,
    edges: HashMap<EdgeIndex, Sent>,
    nodes: HashMap<NodeIndex, String>,
    legend: Value,
    totals: Value,
    scratch: Vec<Candidate>,
}

impl ClientView {
    /// A view of at most `max_edges` edges, held to between 1 and
    /// [`MAX_EDGES_CAP`] (a client cannot ask for the whole of a huge map).
    pub fn new(max_edges: usize) -> Self {
        ClientView {
            max_edges: max_edges.clamp(1, MAX_EDGES_CAP),
            edges: HashMap::new(),
            nodes: HashMap::new(),
            legend: Value::Null,
            totals: Value::Null,
            scratch: Vec::new(),
        }
    }

    /// The edges to show now, heaviest first among equals; and the totals.
    fn select(&mut self, src: Source<'_>, w: Weighing, now: Timestamp) -> (usize, bool) {
        let mut all = std::mem::take(&mut self.scratch);
        all.clear();
        src.summaries(w, now, &mut all);
        let total = all.len();
        let truncated = total > self.max_edges;
        if truncated {
            // A bitmap of shown edges: a hash lookup per edge of a 100k
            // edge map costs more than the ranking itself.
            let mut shown = vec![false; all.iter().map(|c| c.ix.index() + 1).max().unwrap_or(0)];
            for ix in self.edges.keys() {
                if let Some(b) = shown.get_mut(ix.index()) {
                    *b = true;
                }
            }
            for c in &mut all {
                c.shown = shown[c.ix.index()];
                c.score = c.s.weight * if c.shown { HYSTERESIS } else { 1.0 };
            }
            // Heaviest first; among equals (idle edges in rate mode) the
            // ones already shown, so the set holds still.
            all.select_nth_unstable_by(self.max_edges - 1, |x, y| {
                y.score.total_cmp(&x.score).then(y.shown.cmp(&x.shown)).then(x.ix.cmp(&y.ix))
            });
            all.truncate(self.max_edges);
        }
        self.scratch = all;
        (total, truncated)
    }

    /// The nodes to show: the ends of the edges sent, or every node when
    /// nothing is cut (an L7 map also shows workloads seen only at L4), so
    /// a client never holds an edge without its ends.
    fn node_set(&self, src: Source<'_>, truncated: bool) -> HashSet<NodeIndex> {
        if truncated {
            self.edges.values().flat_map(|e| [e.a, e.b]).collect()
        } else {
            src.node_indices().into_iter().collect()
        }
    }

    fn edge_id(src: Source<'_>, c: &Candidate) -> String {
        let name = |ix| src.node(ix).map_or("", |n| n.id.as_str());
        trawl_core::vhost::l7_edge_id(name(c.a), name(c.b), src.protocol(c.ix).1, src.host(c.ix))
    }

    fn edge_json(src: Source<'_>, id: &str, c: &Candidate, full: bool) -> Value {
        let mut o = Map::new();
        o.insert("id".into(), id.into());
        if full {
            let name = |ix| src.node(ix).map_or("", |n| n.id.as_str());
            o.insert("source".into(), name(c.a).into());
            o.insert("target".into(), name(c.b).into());
            let (key, proto) = src.protocol(c.ix);
            o.insert(key.into(), proto.into());
            if let Some(h) = src.host(c.ix) {
                o.insert("host".into(), h.into());
            }
        }
        o.insert("weight".into(), json!(c.s.weight));
        o.insert("bytes".into(), json!(c.s.bytes));
        if src.is_l7() {
            o.insert("requests".into(), json!(c.s.count));
            o.insert("errors".into(), json!(c.s.errors));
            o.insert("latency_p99_us".into(), json!(c.s.p99_us));
        } else {
            o.insert("packets".into(), json!(c.s.count));
        }
        Value::Object(o)
    }

    fn totals(src: Source<'_>, total_edges: usize, shown_edges: usize, shown_nodes: usize) -> Value {
        json!({ "edges": total_edges, "nodes": src.node_count(), "edges_shown": shown_edges, "nodes_shown": shown_nodes })
    }

    /// Everything to draw, from scratch: `{nodes, edges, legend, totals}`.
    pub fn snapshot(&mut self, src: Source<'_>, w: Weighing, now: Timestamp, legend: Value) -> Value {
        self.edges.clear();
        self.nodes.clear();
        let (total, truncated) = self.select(src, w, now);
        let mut edges = Vec::with_capacity(self.scratch.len());
        for c in &self.scratch {
            let id = Self::edge_id(src, c);
            edges.push((Self::edge_json(src, &id, c, true), id.clone()));
            self.edges.insert(c.ix, Sent { id, s: c.s, a: c.a, b: c.b, waiting: 0 });
        }
        edges.sort_by(|a, b| a.1.cmp(&b.1));
        let mut nodes: Vec<(NodeIndex, &MapNode)> =
            self.node_set(src, truncated).into_iter().filter_map(|ix| Some((ix, src.node(ix)?))).collect();
        nodes.sort_by(|a, b| a.1.id.cmp(&b.1.id));
        self.nodes = nodes.iter().map(|(ix, n)| (*ix, n.id.clone())).collect();
        let nodes: Vec<&MapNode> = nodes.into_iter().map(|(_, n)| n).collect();
        self.totals = Self::totals(src, total, self.edges.len(), self.nodes.len());
        self.legend = legend.clone();
        json!({
            "nodes": nodes,
            "edges": edges.into_iter().map(|(e, _)| e).collect::<Vec<_>>(),
            "legend": legend,
            "totals": self.totals,
        })
    }

    /// What changed since the last snapshot or delta, or `None`. Added
    /// and changed edges beyond `budget` bytes wait for the next call,
    /// heaviest additions and largest changes first.
    pub fn delta(
        &mut self,
        src: Source<'_>,
        w: Weighing,
        now: Timestamp,
        legend: Value,
        budget: usize,
    ) -> Option<Value> {
        let (total, truncated) = self.select(src, w, now);
        let chosen: HashSet<EdgeIndex> = self.scratch.iter().map(|c| c.ix).collect();

        let mut edges_removed: Vec<String> = Vec::new();
        self.edges.retain(|ix, sent| {
            let keep = chosen.contains(ix);
            if !keep {
                edges_removed.push(std::mem::take(&mut sent.id));
            }
            keep
        });
        edges_removed.sort();

        let mut additions: Vec<usize> = Vec::new();
        let mut changes: Vec<(f64, f64, usize)> = Vec::new();
        for (k, c) in self.scratch.iter().enumerate() {
            match self.edges.get(&c.ix) {
                None => additions.push(k),
                Some(sent) if sent.s != c.s => {
                    let change = c.s.change_from(&sent.s);
                    changes.push((change * f64::from(1 + sent.waiting), change, k));
                }
                Some(_) => {}
            }
        }
        // Removals always go (a client must not keep a stale edge) and
        // count against the budget first.
        let mut used: usize = edges_removed.iter().map(|id| id.len() + 3).sum();
        let mut pending = 0usize;
        let mut largest_pending = 0.0f64;
        let mut fits = |cost: usize| {
            let ok = used + cost <= budget;
            if ok {
                used += cost;
            }
            ok
        };
        additions.sort_by(|&x, &y| self.scratch[y].s.weight.total_cmp(&self.scratch[x].s.weight).then(x.cmp(&y)));
        let mut edges_added = Vec::new();
        // Nodes this delta brings, so an edge pays for the ends it adds.
        let mut new_nodes: HashSet<NodeIndex> = HashSet::new();
        for k in additions {
            let c = self.scratch[k];
            let id = Self::edge_id(src, &c);
            let e = Self::edge_json(src, &id, &c, true);
            let ends: Vec<NodeIndex> =
                [c.a, c.b].into_iter().filter(|ix| !self.nodes.contains_key(ix) && !new_nodes.contains(ix)).collect();
            let cost = e.to_string().len()
                + ends.iter().filter_map(|&ix| src.node(ix)).map(|n| json!(n).to_string().len() + 1).sum::<usize>()
                + 1;
            if !fits(cost) {
                pending += 1;
                largest_pending = 1.0;
                continue;
            }
            new_nodes.extend(ends);
            edges_added.push((e, id.clone()));
            self.edges.insert(c.ix, Sent { id, s: c.s, a: c.a, b: c.b, waiting: 0 });
        }
        edges_added.sort_by(|a, b| a.1.cmp(&b.1));
        changes.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.2.cmp(&y.2)));
        let mut edges_changed = Vec::new();
        for &(_, change, k) in &changes {
            let c = self.scratch[k];
            let Some(sent) = self.edges.get_mut(&c.ix) else { continue };
            let e = Self::edge_json(src, &sent.id, &c, false);
            if !fits(e.to_string().len() + 1) {
                pending += 1;
                largest_pending = largest_pending.max(change);
                sent.waiting = sent.waiting.saturating_add(1);
                continue;
            }
            sent.s = c.s;
            sent.waiting = 0;
            edges_changed.push(e);
        }

        let shown = self.node_set(src, truncated);
        let mut nodes_added: Vec<(NodeIndex, &MapNode)> = shown
            .iter()
            .filter(|ix| !self.nodes.contains_key(ix))
            .filter_map(|&ix| Some((ix, src.node(ix)?)))
            .collect();
        nodes_added.sort_by(|a, b| a.1.id.cmp(&b.1.id));
        let mut nodes_removed: Vec<String> = Vec::new();
        self.nodes.retain(|ix, id| {
            let keep = shown.contains(ix);
            if !keep {
                nodes_removed.push(std::mem::take(id));
            }
            keep
        });
        nodes_removed.sort();
        for (ix, n) in &nodes_added {
            self.nodes.insert(*ix, n.id.clone());
        }
        let nodes_added: Vec<&MapNode> = nodes_added.into_iter().map(|(_, n)| n).collect();

        let totals = Self::totals(src, total, self.edges.len(), self.nodes.len());
        let quiet = nodes_added.is_empty()
            && nodes_removed.is_empty()
            && edges_added.is_empty()
            && edges_removed.is_empty()
            && edges_changed.is_empty();
        if quiet && legend == self.legend && totals == self.totals {
            return None;
        }
        let mut out = Map::new();
        out.insert("nodes_added".into(), json!(nodes_added));
        out.insert("nodes_changed".into(), json!([]));
        out.insert("nodes_removed".into(), json!(nodes_removed));
        out.insert("edges_added".into(), Value::Array(edges_added.into_iter().map(|(e, _)| e).collect()));
        out.insert("edges_changed".into(), Value::Array(edges_changed));
        out.insert("edges_removed".into(), json!(edges_removed));
        if pending > 0 {
            // How far the client's picture lags: edges left for the next
            // delta, and the largest relative change among them (1 for an
            // edge not yet added).
            out.insert("pending".into(), json!(pending));
            out.insert("pending_largest_change".into(), json!((largest_pending * 1000.0).round() / 1000.0));
        }
        if legend != self.legend {
            out.insert("legend".into(), legend.clone());
            self.legend = legend;
        }
        if totals != self.totals {
            out.insert("totals".into(), totals.clone());
            self.totals = totals;
        }
        Some(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::net::{IpAddr, Ipv4Addr};
    use trawl_core::flow::{DirCounters, Endpoint, FlowDelta, Orientation};
    use trawl_core::{GroupBy, Identity, L4Proto};

    const TOTALS: Weighing = Weighing { rate: false, bandwidth: true, request: true, response: true };

    /// Edge `i` runs from 10.0.0.i to 10.0.1.i.
    fn traffic(map: &mut L4Map, i: u8, bytes: u64) {
        let ep = |net: u8| Endpoint { ip: IpAddr::V4(Ipv4Addr::new(10, 0, net, i)), port: 80 };
        let d = FlowDelta {
            l4: L4Proto::Tcp,
            client: ep(0),
            server: ep(1),
            to_server: DirCounters { packets: 1, bytes, ip_bytes: bytes },
            to_client: DirCounters::default(),
            first_ts: Timestamp(1_000_000_000),
            last_ts: Timestamp(1_000_000_000),
            orientation: Orientation::Syn,
            closed: false,
            health: Default::default(),
        };
        map.apply_resolved(&d, &Identity::new());
    }

    fn id(i: u8) -> String {
        format!("internal/10.0.0.{i}|internal/10.0.1.{i}|tcp")
    }

    /// A client's copy, kept by applying snapshots and deltas.
    #[derive(Default)]
    struct Copy {
        nodes: BTreeMap<String, Value>,
        edges: BTreeMap<String, Value>,
    }

    impl Copy {
        fn snapshot(v: &Value) -> Copy {
            let index = |k: &str| {
                v[k].as_array().unwrap().iter().map(|x| (x["id"].as_str().unwrap().to_string(), x.clone())).collect()
            };
            Copy { nodes: index("nodes"), edges: index("edges") }
        }

        fn apply(&mut self, d: &Value) {
            for x in d["nodes_added"].as_array().unwrap() {
                self.nodes.insert(x["id"].as_str().unwrap().into(), x.clone());
            }
            for x in d["edges_added"].as_array().unwrap() {
                self.edges.insert(x["id"].as_str().unwrap().into(), x.clone());
            }
            for x in d["edges_changed"].as_array().unwrap() {
                let e = self.edges.get_mut(x["id"].as_str().unwrap()).unwrap();
                for (k, v) in x.as_object().unwrap() {
                    e[k] = v.clone();
                }
            }
            for x in d["edges_removed"].as_array().unwrap() {
                self.edges.remove(x.as_str().unwrap());
            }
            for x in d["nodes_removed"].as_array().unwrap() {
                self.nodes.remove(x.as_str().unwrap());
            }
            for e in self.edges.values() {
                assert!(self.nodes.contains_key(e["source"].as_str().unwrap()), "edge without its source: {e}");
                assert!(self.nodes.contains_key(e["target"].as_str().unwrap()), "edge without its target: {e}");
            }
        }
    }

    #[test]
    fn shows_the_heaviest_edges_and_their_nodes() {
        let mut map = L4Map::new(GroupBy::Pod, 10);
        for i in 1..=10 {
            traffic(&mut map, i, u64::from(i) * 100);
        }
        let mut view = ClientView::new(3);
        let snap = view.snapshot(Source::L4(&map), TOTALS, Timestamp(1_000_000_000), json!([]));
        let copy = Copy::snapshot(&snap);
        assert_eq!(copy.edges.keys().cloned().collect::<Vec<_>>(), [id(10), id(8), id(9)]);
        assert_eq!(copy.nodes.len(), 6);
        assert_eq!(snap["totals"], json!({"edges": 10, "nodes": 20, "edges_shown": 3, "nodes_shown": 6}));
        assert_eq!(copy.edges[&id(9)]["weight"], json!(900.0));
        assert_eq!(copy.edges[&id(9)]["source"], "internal/10.0.0.9");
    }

    #[test]
    fn a_shown_edge_stays_until_clearly_outweighed() {
        let mut map = L4Map::new(GroupBy::Pod, 10);
        for i in 1..=4 {
            traffic(&mut map, i, 1000);
        }
        let mut view = ClientView::new(2);
        let now = Timestamp(1_000_000_000);
        let mut copy = Copy::snapshot(&view.snapshot(Source::L4(&map), TOTALS, now, json!([])));
        let shown: Vec<String> = copy.edges.keys().cloned().collect();
        // A hidden edge a little heavier than the shown ones: no swap,
        // the shown edges do not change either, so nothing to send.
        let hidden: u8 = (1..=4).find(|i| !shown.contains(&id(*i))).unwrap();
        traffic(&mut map, hidden, 500);
        assert_eq!(view.delta(Source::L4(&map), TOTALS, now, json!([]), usize::MAX), None);
        // Far heavier: it replaces a shown edge, with its nodes.
        traffic(&mut map, hidden, 10_000);
        let d = view.delta(Source::L4(&map), TOTALS, now, json!([]), usize::MAX).unwrap();
        assert_eq!(d["edges_added"].as_array().unwrap().len(), 1, "{d}");
        assert_eq!(d["edges_removed"].as_array().unwrap().len(), 1, "{d}");
        assert_eq!(d["nodes_added"].as_array().unwrap().len(), 2, "{d}");
        assert_eq!(d["nodes_removed"].as_array().unwrap().len(), 2, "{d}");
        copy.apply(&d);
        assert!(copy.edges.contains_key(&id(hidden)));
    }

    #[test]
    fn changes_beyond_the_budget_wait_and_then_arrive() {
        let mut map = L4Map::new(GroupBy::Pod, 10);
        for i in 1..=40 {
            traffic(&mut map, i, 100);
        }
        let now = Timestamp(1_000_000_000);
        let mut view = ClientView::new(MAX_EDGES_CAP);
        let mut copy = Copy::snapshot(&view.snapshot(Source::L4(&map), TOTALS, now, json!([])));
        for i in 1..=40 {
            traffic(&mut map, i, u64::from(i) * 10);
        }
        let first = view.delta(Source::L4(&map), TOTALS, now, json!([]), 1_000).unwrap();
        let sent = first["edges_changed"].as_array().unwrap();
        assert!(!sent.is_empty() && sent.len() < 40, "{first}");
        assert!(first.to_string().len() < 1_400, "{} bytes", first.to_string().len());
        assert_eq!(first["pending"].as_u64().unwrap() as usize, 40 - sent.len());
        // Largest relative change first.
        assert_eq!(sent[0]["id"], id(40));
        copy.apply(&first);
        while let Some(d) = view.delta(Source::L4(&map), TOTALS, now, json!([]), 1_000) {
            copy.apply(&d);
        }
        let truth = Copy::snapshot(&ClientView::new(MAX_EDGES_CAP).snapshot(Source::L4(&map), TOTALS, now, json!([])));
        assert_eq!(copy.edges, truth.edges);
        assert_eq!(copy.nodes, truth.nodes);
    }

    #[test]
    fn rates_keep_three_significant_digits() {
        let w = Weighing { rate: true, ..TOTALS };
        assert_eq!(w.shown(123_456.0), 123_000.0);
        assert_eq!(w.shown(0.012_345), 0.0123);
        assert_eq!(w.shown(0.0), 0.0);
        assert_eq!(TOTALS.shown(123_456.0), 123_456.0);
    }
}

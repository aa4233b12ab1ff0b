//! A subscription: a map type, a grouping, a display filter and bandwidth
//! options; its snapshots, and the deltas between two of them.

use super::filter::{Filter, FilterError};
use super::view::{ClientView, DEFAULT_MAX_EDGES, Source, Weighing};
use super::{GraphState, slot};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use trawl_core::GroupBy;
use trawl_core::l7map::L7Map;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MapType {
    #[default]
    L4,
    L7,
}

/// Records a filtered subscription evaluates per read: bounds how long one
/// read holds the service lock (a few milliseconds of CEL).
pub const FOLD_CHUNK: usize = 2_000;

/// Time one read may spend evaluating a filter, whatever the records cost:
/// a filter over long lists stops early and goes on at the next read.
pub const FOLD_BUDGET: Duration = Duration::from_millis(5);

/// Whether edge weights are totals since the start or rates over the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Cumulative,
    Rate,
}

fn yes() -> bool {
    true
}

/// What a client asks for (WebSocket `subscribe` message, or the query of
/// `GET /api/map`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionSpec {
    #[serde(default)]
    pub map: MapType,
    #[serde(default = "default_group")]
    pub group_by: String,
    #[serde(default)]
    pub filter: String,
    #[serde(default)]
    pub mode: Mode,
    /// Edge weight is bytes (on) or packets/requests (off).
    #[serde(default = "yes")]
    pub bandwidth: bool,
    #[serde(default = "yes")]
    pub include_request: bool,
    #[serde(default = "yes")]
    pub include_response: bool,
    /// Most edges a WebSocket client is shown (the heaviest); 0 for no
    /// bound. `GET /api/map` always returns every edge.
    #[serde(default = "default_max_edges")]
    pub max_edges: usize,
    /// A past window instead of the live map (see [`crate::window`]):
    /// unix seconds, RFC 3339, `now` or `now-15m`; `to` defaults to now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

fn default_group() -> String {
    "pod".into()
}

fn default_max_edges() -> usize {
    DEFAULT_MAX_EDGES
}

impl Default for SubscriptionSpec {
    fn default() -> Self {
        SubscriptionSpec {
            map: MapType::L4,
            group_by: default_group(),
            filter: String::new(),
            mode: Mode::Cumulative,
            bandwidth: true,
            include_request: true,
            include_response: true,
            max_edges: DEFAULT_MAX_EDGES,
            from: None,
            to: None,
        }
    }
}

/// Why a subscription could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{0}")]
    Grouping(String),
    #[error("invalid filter: {0}")]
    Filter(#[from] FilterError),
}

/// A compiled subscription and the L7 map its filter selects.
#[derive(Debug)]
pub struct Subscription {
    pub spec: SubscriptionSpec,
    group: GroupBy,
    filter: Filter,
    /// Only for L7 with a display filter: records folded in so far.
    filtered: Option<(L7Map, u64)>,
    /// Records that left the log before this subscription read them.
    missed: u64,
    /// What this subscription's WebSocket client has been sent.
    view: ClientView,
}

impl Subscription {
    pub fn new(spec: SubscriptionSpec) -> Result<Self, SpecError> {
        Self::checked(spec, &crate::vocabulary::Vocabulary::open())
    }

    /// As [`Subscription::new`], its filter held to `vocabulary`: a name
    /// no plugin declares is refused, with the closest known ones.
    pub fn checked(spec: SubscriptionSpec, vocabulary: &crate::vocabulary::Vocabulary) -> Result<Self, SpecError> {
        let group: GroupBy = spec.group_by.parse().map_err(SpecError::Grouping)?;
        let filter = Filter::compile_in(&spec.filter, vocabulary)?;
        let view = ClientView::new(spec.max_edges);
        Ok(Subscription { spec, group, filter, filtered: None, missed: 0, view })
    }

    fn weighing(&self) -> Weighing {
        Weighing {
            rate: self.spec.mode == Mode::Rate,
            bandwidth: self.spec.bandwidth,
            request: self.spec.include_request,
            response: self.spec.include_response,
        }
    }

    /// The map this subscription reads, with its legend (a filtered L7
    /// map first folds in records it has not seen).
    fn source<'a>(&'a mut self, state: &'a GraphState) -> (Source<'a>, Value) {
        let filtered = self.spec.map == MapType::L7 && !self.filter.is_all();
        if filtered {
            self.fold(state);
        }
        match (self.spec.map, &self.filtered) {
            (MapType::L4, _) => (Source::L4(state.l4(self.group)), json!([])),
            (MapType::L7, Some((m, _))) if filtered => (Source::L7(m), json!(m.legend_in_use())),
            (MapType::L7, _) => {
                let m = state.l7(self.group);
                (Source::L7(m), json!(m.legend_in_use()))
            }
        }
    }

    /// The WebSocket snapshot: the bounded view of the map, edges as
    /// summaries (see [`super::view`]); the client's baseline for deltas.
    pub fn stream_snapshot(&mut self, state: &GraphState) -> Value {
        let w = self.weighing();
        let mut view = std::mem::replace(&mut self.view, ClientView::new(0));
        let (src, legend) = self.source(state);
        let mut v = view.snapshot(src, w, state.now, legend);
        self.view = view;
        v["health"] = json!(state.health);
        if self.missed > 0 {
            v["records_missed"] = json!(self.missed);
        }
        v
    }

    /// What changed for this client since its last snapshot or delta,
    /// holding changed edges to `budget` bytes.
    pub fn stream_delta(&mut self, state: &GraphState, budget: usize) -> Option<Value> {
        let w = self.weighing();
        let missed = self.missed;
        let mut view = std::mem::replace(&mut self.view, ClientView::new(0));
        let (src, legend) = self.source(state);
        let mut d = view.delta(src, w, state.now, legend, budget);
        self.view = view;
        if let Some(d) = d.as_mut().filter(|_| self.missed > missed) {
            d["records_missed"] = json!(self.missed);
        }
        d
    }

    /// One edge in full (as `GET /api/map` shows it), by its id.
    pub fn edge_detail(&mut self, state: &GraphState, id: &str) -> Option<Value> {
        // `source|target|kind`, and `|host` for an edge of one virtual host.
        let mut parts = id.splitn(4, '|');
        let (source, target, proto, host) = (parts.next()?, parts.next()?, parts.next()?, parts.next());
        let now = state.now;
        let mut v = match self.source(state).0 {
            Source::L4(m) => {
                let l4 = match proto {
                    "tcp" => trawl_core::L4Proto::Tcp,
                    "udp" => trawl_core::L4Proto::Udp,
                    _ => return None,
                };
                serde_json::to_value(m.edge_view(m.find_edge(source, target, l4)?, now)?).ok()?
            }
            Source::L7(m) => serde_json::to_value(m.edge_view(m.find_edge(source, target, proto, host)?, now)?).ok()?,
        };
        match self.spec.map {
            MapType::L4 => self.decorate_l4(&mut v),
            MapType::L7 => self.decorate_l7(&mut v),
        }
        Some(v)
    }

    /// The map now, as JSON: `{nodes, edges, legend}`, in the shape of
    /// `trawl replay --emit map`, with an `id` and a `weight` per edge.
    pub fn snapshot(&mut self, state: &GraphState) -> Value {
        match self.spec.map {
            MapType::L4 => {
                let view = state.l4(self.group).view_at(state.now);
                let mut v = serde_json::to_value(&view).unwrap_or(Value::Null);
                if let Some(edges) = v.get_mut("edges").and_then(Value::as_array_mut) {
                    for e in edges {
                        self.decorate_l4(e);
                    }
                }
                v["legend"] = json!([]);
                v["health"] = json!(state.health);
                v
            }
            MapType::L7 => {
                let view = if self.filter.is_all() {
                    state.l7(self.group).view_at(state.now)
                } else {
                    self.fold(state).view_at(state.now)
                };
                let mut v = serde_json::to_value(&view).unwrap_or(Value::Null);
                if let Some(edges) = v.get_mut("edges").and_then(Value::as_array_mut) {
                    for e in edges {
                        self.decorate_l7(e);
                    }
                }
                if self.missed > 0 {
                    v["records_missed"] = json!(self.missed);
                }
                v["health"] = json!(state.health);
                v
            }
        }
    }

    /// Folds records this subscription has not seen into its filtered map,
    /// at most [`FOLD_CHUNK`] records or [`FOLD_BUDGET`] per call so the
    /// service lock is never held for long; returns the map (see
    /// [`Subscription::caught_up`]).
    pub fn fold(&mut self, state: &GraphState) -> &L7Map {
        self.fold_within(state, FOLD_BUDGET)
    }

    /// [`Subscription::fold`] with a given time budget.
    pub fn fold_within(&mut self, state: &GraphState, budget: Duration) -> &L7Map {
        let (map, next) = self.filtered.get_or_insert_with(|| {
            let mut map = L7Map::with_window(self.group, state.window_secs);
            map.set_split_hosts(state.split_hosts);
            (map, 0)
        });
        // Plugins loaded later bring their legend entries along.
        for e in &state.legend {
            map.set_legend(e.clone());
        }
        let (start, records) = state.records_since(*next);
        if *next > 0 && start > *next {
            // Drops are data: the map says it lacks these.
            self.missed += start - *next;
        }
        let mut seq = start;
        let began = Instant::now();
        for (i, r) in records.take(FOLD_CHUNK).enumerate() {
            // Reading the clock costs about as much as a cheap filter.
            if i > 0 && i % 32 == 0 && began.elapsed() >= budget {
                break;
            }
            seq += 1;
            if self.filter.matches(r, &state.legend) {
                let at = r.ts();
                let src = state.identity.resolve(r.src.ip, at);
                let dst = state.identity.resolve(r.dst.ip, at);
                map.apply(r, &src, &dst);
            }
        }
        *next = seq.max(*next);
        map
    }

    /// Whether the map includes every record in the log (a filtered L7 map
    /// catches up [`FOLD_CHUNK`] records per read).
    pub fn caught_up(&self, state: &GraphState) -> bool {
        self.filter.is_all()
            || self.spec.map == MapType::L4
            || self.filtered.as_ref().is_some_and(|(_, next)| *next >= state.next_seq())
    }

    /// Records of the log this subscription's filter has read, and records
    /// the log holds now.
    pub fn progress(&self, state: &GraphState) -> (u64, u64) {
        let first = state.records_since(0).0;
        let next = self.filtered.as_ref().map_or(first, |(_, next)| (*next).max(first));
        (next - first, state.next_seq() - first)
    }

    fn included(&self, request: f64, response: f64) -> f64 {
        self.weighing().both(request, response)
    }

    /// The display filter.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Adds `id`, `weight` and the weights' parts to every edge of a map in
    /// `/api/map`'s shape.
    pub fn decorate(&self, map: &mut Value) {
        if let Some(edges) = map.get_mut("edges").and_then(Value::as_array_mut) {
            for e in edges {
                match self.spec.map {
                    MapType::L4 => self.decorate_l4(e),
                    MapType::L7 => self.decorate_l7(e),
                }
            }
        }
    }

    fn decorate_l4(&self, e: &mut Value) {
        let id = format!(
            "{}|{}|{}",
            e["source"].as_str().unwrap_or(""),
            e["target"].as_str().unwrap_or(""),
            e["l4"].as_str().unwrap_or("")
        );
        let num = |v: &Value| v.as_f64().unwrap_or(0.0);
        let (bytes, packets) = match self.spec.mode {
            Mode::Cumulative => (
                self.included(num(&e["to_server"]["bytes"]), num(&e["to_client"]["bytes"])),
                self.included(num(&e["to_server"]["packets"]), num(&e["to_client"]["packets"])),
            ),
            Mode::Rate => (
                self.included(
                    num(&e["rate"]["to_server"]["bytes_per_sec"]),
                    num(&e["rate"]["to_client"]["bytes_per_sec"]),
                ),
                self.included(
                    num(&e["rate"]["to_server"]["packets_per_sec"]),
                    num(&e["rate"]["to_client"]["packets_per_sec"]),
                ),
            ),
        };
        e["id"] = Value::from(id);
        e["bytes"] = json!(bytes);
        e["packets"] = json!(packets);
        e["weight"] = json!(if self.spec.bandwidth { bytes } else { packets });
    }

    fn decorate_l7(&self, e: &mut Value) {
        let id = trawl_core::vhost::l7_edge_id(
            e["source"].as_str().unwrap_or(""),
            e["target"].as_str().unwrap_or(""),
            e["protocol"].as_str().unwrap_or(""),
            e["host"].as_str(),
        );
        let num = |v: &Value| v.as_f64().unwrap_or(0.0);
        let (bytes, requests) = match self.spec.mode {
            Mode::Cumulative => {
                (self.included(num(&e["request_bytes"]), num(&e["response_bytes"])), num(&e["requests"]))
            }
            Mode::Rate => (
                self.included(num(&e["rate"]["request_bytes_per_sec"]), num(&e["rate"]["response_bytes_per_sec"])),
                num(&e["rate"]["requests_per_sec"]),
            ),
        };
        e["id"] = Value::from(id);
        e["bytes"] = json!(bytes);
        e["weight"] = json!(if self.spec.bandwidth { bytes } else { requests });
    }

    /// Which slot of the per-grouping maps this subscription reads.
    pub fn grouping(&self) -> GroupBy {
        self.group
    }

    #[doc(hidden)]
    pub fn slot(&self) -> usize {
        slot(self.group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CaptureFilter, Identity};
    use std::sync::Arc;

    fn state_with_records(n: u64) -> GraphState {
        let mut st = GraphState::new(Arc::new(Identity::new()), CaptureFilter::default(), 10);
        crate::add_http_records(&mut st, n, |i| format!("GET /{i}"));
        st
    }

    /// A read spends at most its time budget on the filter and goes on from
    /// there at the next read: with no time at all, each read still takes
    /// one step of 32 records, and the map ends with every match.
    #[test]
    fn a_filtered_read_stops_at_its_time_budget_and_resumes() {
        let st = state_with_records(100);
        let spec = SubscriptionSpec { map: MapType::L7, filter: "http".into(), ..Default::default() };
        let mut sub = Subscription::new(spec).unwrap();
        let mut reads = 0;
        while !sub.caught_up(&st) {
            sub.fold_within(&st, Duration::ZERO);
            reads += 1;
            assert!(reads <= 4, "a read made no progress");
        }
        assert_eq!(reads, 4, "32 records per read when out of time");
        let requests: f64 =
            sub.snapshot(&st)["edges"].as_array().unwrap().iter().map(|e| e["requests"].as_f64().unwrap()).sum();
        assert_eq!(requests, 100.0, "every record folded in once");
        // With time to spare, one read takes a whole chunk.
        let mut sub =
            Subscription::new(SubscriptionSpec { map: MapType::L7, filter: "http".into(), ..Default::default() })
                .unwrap();
        sub.fold_within(&st, Duration::from_secs(60));
        assert!(sub.caught_up(&st));
        assert_eq!(sub.progress(&st), (100, 100));
    }

    /// `GET /api/map` with a filter that cannot read the log in time is
    /// answered 503, not held for as long as the filter takes.
    #[test]
    fn a_map_request_past_its_deadline_is_refused() {
        use warp::Reply;
        let graph = crate::Graph::new(state_with_records(100));
        let spec = || SubscriptionSpec { map: MapType::L7, filter: "http".into(), ..Default::default() };
        let status = |deadline| crate::api::map_reply(spec(), &graph, deadline).into_response().status();
        assert_eq!(status(Duration::ZERO), warp::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(Duration::from_secs(60)), warp::http::StatusCode::OK);
    }
}

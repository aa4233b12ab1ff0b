//! A subscription: a map type, a grouping, a display filter and bandwidth
//! options; its snapshots, and the deltas between two of them.

use super::filter::{Filter, FilterError};
use super::{GraphState, slot};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
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
}

fn default_group() -> String {
    "pod".into()
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
}

impl Subscription {
    pub fn new(spec: SubscriptionSpec) -> Result<Self, SpecError> {
        let group: GroupBy = spec.group_by.parse().map_err(SpecError::Grouping)?;
        let filter = Filter::compile(&spec.filter)?;
        Ok(Subscription { spec, group, filter, filtered: None, missed: 0 })
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
                v
            }
        }
    }

    /// Folds records this subscription has not seen into its filtered map,
    /// at most [`FOLD_CHUNK`] per call so the service lock is never held
    /// for long; returns the map (see [`Subscription::caught_up`]).
    pub fn fold(&mut self, state: &GraphState) -> &L7Map {
        let (map, next) = self.filtered.get_or_insert_with(|| (L7Map::with_window(self.group, state.window_secs), 0));
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
        for r in records.take(FOLD_CHUNK) {
            seq += 1;
            if self.filter.matches(r) {
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

    fn included(&self, request: f64, response: f64) -> f64 {
        (if self.spec.include_request { request } else { 0.0 })
            + (if self.spec.include_response { response } else { 0.0 })
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
        let id = format!(
            "{}|{}|{}",
            e["source"].as_str().unwrap_or(""),
            e["target"].as_str().unwrap_or(""),
            e["protocol"].as_str().unwrap_or("")
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

/// What changed between two snapshots, keyed by node and edge id. Only
/// what changed is copied; unchanged entries are compared in place.
pub fn delta(old: &Value, new: &Value) -> Option<Value> {
    fn index<'a>(v: &'a Value, key: &str) -> std::collections::HashMap<&'a str, &'a Value> {
        v[key].as_array().into_iter().flatten().filter_map(|x| Some((x["id"].as_str()?, x))).collect()
    }
    let mut out = Map::new();
    let mut changed = false;
    for kind in ["nodes", "edges"] {
        let (a, b) = (index(old, kind), index(new, kind));
        let mut added = Vec::new();
        let mut updated = Vec::new();
        // In the new snapshot's (sorted) order, so deltas are deterministic.
        for x in new[kind].as_array().into_iter().flatten() {
            let Some(id) = x["id"].as_str() else { continue };
            match a.get(id) {
                None => added.push(x.clone()),
                Some(o) if *o != x => updated.push(x.clone()),
                Some(_) => {}
            }
        }
        let removed: Vec<Value> = old[kind]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x["id"].as_str())
            .filter(|id| !b.contains_key(id))
            .map(Value::from)
            .collect();
        changed |= !added.is_empty() || !updated.is_empty() || !removed.is_empty();
        out.insert(format!("{kind}_added"), Value::Array(added));
        out.insert(format!("{kind}_changed"), Value::Array(updated));
        out.insert(format!("{kind}_removed"), Value::Array(removed));
    }
    if old["legend"] != new["legend"] {
        out.insert("legend".into(), new["legend"].clone());
        changed = true;
    }
    changed.then_some(Value::Object(out))
}

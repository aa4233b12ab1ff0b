//! Maps of past windows (`GET /api/map?from=&to=`) and the diff of two
//! (`GET /api/diff?before=&after=`), read from history.
//!
//! Times are unix seconds, RFC 3339, `now`, or `now-15m` (`s`, `m`, `h`,
//! `d`), where `now` is the newest data's time: capture time in replay,
//! wall time live.
//!
//! History keeps per-edge counts, not requests. An L7 display filter over
//! a window is answered from the record log instead, which holds the
//! newest records: the reply says where the log starts when the window
//! begins before it.

use super::history::Covered;
use super::subscription::{MapType, SpecError, Subscription, SubscriptionSpec};
use super::{GraphState, SharedState, lock};
use serde_json::{Value, json};
use trawl_core::diff::{Thresholds, Window, diff};
use trawl_core::history::{IntervalSamples, MapKind, WindowMap};

/// Why a window or diff could not be answered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WindowError {
    #[error("{0}")]
    Bad(String),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("history is not kept here: start with --history-dir (or the default temporary store)")]
    NoHistory,
    #[error("history could not be read: {0}")]
    Store(String),
}

/// Unix seconds from `s`, given the data's `now` (seconds).
pub fn parse_time(s: &str, now: u64) -> Result<u64, WindowError> {
    let s = s.trim();
    let bad = || {
        WindowError::Bad(format!(
            "invalid time {s:?}: expected unix seconds, RFC 3339 (2026-12-07T10:00:00Z), now or now-15m"
        ))
    };
    if s == "now" {
        return Ok(now);
    }
    if let Some(ago) = s.strip_prefix("now-") {
        let split = ago.find(|c: char| !c.is_ascii_digit()).unwrap_or(ago.len());
        let (n, unit) = ago.split_at(split);
        let n: u64 = n.parse().map_err(|_| bad())?;
        let mult = match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        return Ok(now.saturating_sub(n.saturating_mul(mult)));
    }
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(secs as u64);
        }
        return Err(bad());
    }
    trawl_core::identity::parse_rfc3339(s).map(|t| t.as_nanos() / 1_000_000_000).ok_or_else(bad)
}

/// `T1,T2` as a window.
pub fn parse_range(s: &str, now: u64) -> Result<(u64, u64), WindowError> {
    let (a, b) =
        s.split_once(',').ok_or_else(|| WindowError::Bad(format!("invalid window {s:?}: expected FROM,TO")))?;
    checked(parse_time(a, now)?, parse_time(b, now)?)
}

fn checked(from: u64, to: u64) -> Result<(u64, u64), WindowError> {
    if from >= to {
        return Err(WindowError::Bad(format!("empty window: from ({from}) must be before to ({to})")));
    }
    Ok((from, to))
}

/// The window a spec asks for, if any (`from` and `to`; `to` defaults to now).
pub fn spec_window(spec: &SubscriptionSpec, now: u64) -> Result<Option<(u64, u64)>, WindowError> {
    match (&spec.from, &spec.to) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(WindowError::Bad("a window needs from= (to= defaults to now)".into())),
        (Some(from), to) => {
            let to = to.as_deref().map_or(Ok(now.max(1)), |t| parse_time(t, now))?;
            Ok(Some(checked(parse_time(from, now)?, to)?))
        }
    }
}

fn data_now(st: &GraphState) -> u64 {
    st.now().as_nanos().div_ceil(1_000_000_000)
}

/// The map of `[from, to)` for `spec` (grouping, map, filter, weights),
/// in `/api/map`'s shape, with the `window` history covered.
pub fn window_map(state: &SharedState, spec: SubscriptionSpec, from: u64, to: u64) -> Result<Value, WindowError> {
    let (sub, snapshot, legend, health, now, in_window, identity, split) = {
        let st = lock(state);
        let sub = Subscription::checked(spec, &st.vocabulary())?;
        let snapshot = st.history().ok_or(WindowError::NoHistory)?.snapshot();
        let filtered = sub.spec.map == MapType::L7 && !sub.filter().is_all();
        // A filtered L7 window reads the records in it (bounded by the
        // log). Only they are taken here; the filter runs after the state
        // is let go, so a costly filter never holds up ingest or readers.
        let in_window = filtered.then(|| {
            let secs = |r: &trawl_core::record::L7Record| r.ts().as_nanos() / 1_000_000_000;
            let (_, log) = st.records_since(0);
            let mut oldest = None;
            let records: Vec<std::sync::Arc<trawl_core::record::L7Record>> = log
                .inspect(|r| {
                    oldest.get_or_insert(secs(r));
                })
                .filter(|r| (from..to).contains(&secs(r)))
                .cloned()
                .collect();
            (records, oldest)
        });
        let identity = std::sync::Arc::clone(st.identity());
        (sub, snapshot, st.legend().to_vec(), st.health, data_now(&st), in_window, identity, st.split_hosts)
    };
    let records = in_window.map(|(records, oldest)| {
        let mut samples = IntervalSamples::default();
        for r in records.iter().filter(|r| sub.filter().matches(r, &legend)) {
            let at = r.ts();
            let (src, dst) = (identity.resolve(r.src.ip, at), identity.resolve(r.dst.ip, at));
            samples.add_record(r, &src, &dst);
        }
        (samples, oldest)
    });
    let kind = match sub.spec.map {
        MapType::L4 => MapKind::L4,
        MapType::L7 => MapKind::L7,
    };
    let mut map = WindowMap::new(kind, sub.grouping()).with_split_hosts(split);
    let covered = snapshot
        .window(from, to, now, |k, s| {
            // A filtered L7 map takes its edges from the records, and
            // every node from history (as the live map shows them all).
            if records.is_none() || matches!(k.layer, trawl_core::history::Layer::L4(_)) {
                map.add(k, s);
            } else {
                map.add_node_only(k);
            }
        })
        .map_err(|e| WindowError::Store(e.to_string()))?;
    let mut partial = None;
    if let Some((samples, oldest)) = &records {
        for (k, s) in &samples.edges {
            map.add(k, s);
        }
        if oldest.is_none_or(|o| o > from) {
            partial = Some(format!(
                "a filtered L7 map of a window reads the record log, which starts at {}: requests before it are not in this map",
                oldest.map_or("(empty)".to_string(), |o| o.to_string())
            ));
        }
    }
    // Rates are over the part of the asked window that history covers:
    // the intervals read may reach beyond it, the data may end before it.
    let secs = to.min(covered.to).saturating_sub(from.max(covered.from)).max(1);
    let mut v = map.to_json(secs as f64, &legend);
    sub.decorate(&mut v);
    v["window"] = window_json(&covered);
    v["window"]["secs"] = json!(secs);
    v["health"] = json!(health);
    if let Some(p) = partial {
        v["partial"] = json!(p);
    }
    Ok(v)
}

fn window_json(c: &Covered) -> Value {
    json!({"from": c.from, "to": c.to, "resolution_secs": c.resolution_secs, "intervals": c.intervals})
}

/// What `GET /api/diff` takes besides the map spec: the windows, and any
/// threshold to change (see [`Thresholds`]).
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct DiffQuery {
    pub before: Option<String>,
    pub after: Option<String>,
    pub min_change: Option<f64>,
    pub min_requests: Option<u64>,
    pub min_error_points: Option<f64>,
    pub min_latency_ms: Option<f64>,
    pub min_bytes: Option<u64>,
    pub min_packets: Option<u64>,
}

impl DiffQuery {
    pub fn thresholds(&self) -> Thresholds {
        let d = Thresholds::default();
        Thresholds {
            min_change: self.min_change.unwrap_or(d.min_change),
            min_requests: self.min_requests.unwrap_or(d.min_requests),
            min_error_points: self.min_error_points.unwrap_or(d.min_error_points),
            min_latency_ms: self.min_latency_ms.unwrap_or(d.min_latency_ms),
            min_bytes: self.min_bytes.unwrap_or(d.min_bytes),
            min_packets: self.min_packets.unwrap_or(d.min_packets),
            ..d
        }
    }
}

/// The diff of two windows' maps: `nodes`, `added`, `removed`, `changed`
/// (see [`trawl_core::diff`]), and the windows compared.
pub fn diff_windows(
    state: &SharedState,
    spec: SubscriptionSpec,
    before: &str,
    after: &str,
    thresholds: &Thresholds,
) -> Result<Value, WindowError> {
    let now = data_now(&lock(state));
    let (b, a) = (parse_range(before, now)?, parse_range(after, now)?);
    let mut spec = spec;
    spec.from = None;
    spec.to = None;
    let old = window_map(state, spec.clone(), b.0, b.1)?;
    let new = window_map(state, spec, a.0, a.1)?;
    let secs = |m: &Value| m["window"]["secs"].as_f64().unwrap_or(1.0).max(1.0);
    let mut v = diff(Window { map: &old, secs: secs(&old) }, Window { map: &new, secs: secs(&new) }, thresholds);
    v["before"] = old["window"].clone();
    v["after"] = new["window"].clone();
    v["thresholds"] = json!(thresholds);
    for m in [&old, &new] {
        if let Some(p) = m.get("partial") {
            v["partial"] = p.clone();
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_an_sre_writes_them() {
        let now = 1_700_000_000;
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("now-15m", now), Ok(now - 900));
        assert_eq!(parse_time("now-2h", now), Ok(now - 7200));
        assert_eq!(parse_time("1699990000", now), Ok(1_699_990_000));
        assert_eq!(parse_time("1699990000.5", now), Ok(1_699_990_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z", now), Ok(1_700_000_000));
        for bad in ["", "yesterday", "now-5y", "-3", "now-m"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
        assert_eq!(parse_range("now-10m,now", now), Ok((now - 600, now)));
        assert!(parse_range("now,now-10m", now).is_err(), "an empty window is an error");
        assert!(parse_range("now", now).is_err());
    }

    /// A filtered L7 window reads the record log: the filter picks its
    /// requests, and the map says where the log starts.
    #[test]
    fn a_filtered_window_reads_the_record_log() {
        use crate::{CaptureFilter, Graph, GraphState, history};
        let history = history::History::open(&history::HistoryConfig::default()).unwrap();
        let st = GraphState::new(std::sync::Arc::new(trawl_core::Identity::new()), CaptureFilter::default(), 10)
            .with_history(history);
        let state = Graph::new(st);
        crate::add_http_records(&mut lock(&state), 5, |i| format!("/p{i}"));
        let spec = |filter: &str| SubscriptionSpec { map: MapType::L7, filter: filter.into(), ..Default::default() };
        let requests =
            |v: &Value| v["edges"].as_array().unwrap().iter().filter_map(|e| e["requests"].as_u64()).sum::<u64>();
        let all = window_map(&state, spec("http"), 0, 10).unwrap();
        assert_eq!(requests(&all), 5, "{all}");
        assert!(all.get("partial").is_none(), "the log holds the whole window: {all}");
        let one = window_map(&state, spec("path == \"/p3\""), 0, 10).unwrap();
        assert_eq!(requests(&one), 1, "{one}");
        assert_eq!(requests(&window_map(&state, spec("dns"), 0, 10).unwrap()), 0);
    }
}

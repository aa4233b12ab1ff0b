//! Service-graph metrics: counters and latency histograms per client and
//! server *workload* (Deployment, StatefulSet, DaemonSet, CronJob…), under
//! the names Tempo's service-graph processor and Beyla use, so dashboards
//! and Grafana's service graph read them unchanged.
//!
//! One [`ServiceGraph`] sits where every flow and record arrives once (the
//! hub, or a standalone `serve`), so series from different nodes are summed
//! before they are exported and never collide. A cap on series folds the
//! long tail into one `other` pair and counts what it folded.

use crate::decode::L4Proto;
use crate::flow::FlowDelta;
use crate::identity::{Workload, WorkloadKind};
use crate::record::L7Record;
use crate::time::Timestamp;
use hashbrown::HashMap;
use std::borrow::Cow;
use std::hash::{Hash, Hasher};

/// Upper bounds (seconds) of the latency histograms' buckets. Finer than
/// Tempo's default (0.1 s to 12.8 s) at the low end, where in-cluster
/// calls sit: a quantile read from them is within one bucket of the map's.
/// Twelve, not more: each bucket is a line per series, twice (server and
/// client), and at 10,000 series every line costs a megabyte a scrape.
pub const LATENCY_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0];

/// Series kept by default (`--metrics-max-series`).
pub const DEFAULT_MAX_SERIES: usize = 10_000;

/// The name both ends of the folded series carry.
pub const OTHER: &str = "other";

/// A workload as the metrics name it: the controller of a pod, else the
/// service, node or address itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadName {
    pub namespace: String,
    pub name: String,
    /// `deployment`, `statefulset`, `daemonset`, `cronjob`, `job`,
    /// `replicaset`, `pod`, `service`, `node` or `external`.
    pub kind: String,
}

impl WorkloadName {
    fn other() -> Self {
        WorkloadName { namespace: OTHER.into(), name: OTHER.into(), kind: OTHER.into() }
    }

    /// What `w` is counted as: a pod by its controller (a ReplicaSet by
    /// its Deployment, a Job by its CronJob), so a rollout or a scale-up
    /// adds no series.
    pub fn of(w: &Workload) -> Self {
        NameRef::of(w).to_name()
    }

    fn view(&self) -> NameRef<'_> {
        NameRef { namespace: &self.namespace, name: &self.name, kind: Cow::Borrowed(&self.kind) }
    }
}

/// A [`WorkloadName`] borrowed from its workload: series are looked up by
/// it, so counting into a known series allocates nothing. The keys hash as
/// their borrowed views, so the two hash alike by construction.
#[derive(Debug, PartialEq, Eq, Hash)]
struct NameRef<'a> {
    namespace: &'a str,
    name: &'a str,
    kind: Cow<'a, str>,
}

impl<'a> NameRef<'a> {
    fn of(w: &'a Workload) -> Self {
        let (kind, name) = match w.kind {
            WorkloadKind::Pod => pod_controller(w),
            WorkloadKind::Service => ("service".into(), w.name.as_str()),
            WorkloadKind::Node => ("node".into(), w.name.as_str()),
            WorkloadKind::External => ("external".into(), w.name.as_str()),
        };
        NameRef { namespace: &w.namespace, name, kind }
    }

    fn to_name(&self) -> WorkloadName {
        WorkloadName { namespace: self.namespace.to_string(), name: self.name.to_string(), kind: self.kind.to_string() }
    }
}

/// A pod's controlling workload, as the OpenTelemetry Collector's
/// k8sattributes processor names it: a ReplicaSet's Deployment is its name
/// without the `pod-template-hash` suffix, a Job's CronJob its name
/// without the schedule's minute stamp.
fn pod_controller(w: &Workload) -> (Cow<'static, str>, &str) {
    let Some((kind, owner)) = w.owner.as_deref().and_then(|o| o.split_once('/')) else {
        return ("pod".into(), &w.name);
    };
    let strip = |suffix_ok: &dyn Fn(&str) -> bool| {
        owner.rsplit_once('-').filter(|(base, suffix)| !base.is_empty() && suffix_ok(suffix)).map(|(b, _)| b)
    };
    match kind {
        "ReplicaSet" => {
            let hash = w.labels.get("pod-template-hash").map(String::as_str);
            let by_label = hash.and_then(|h| owner.strip_suffix(h)?.strip_suffix('-'));
            let by_shape = || strip(&|s| (5..=10).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()));
            match by_label.filter(|b| !b.is_empty()).or_else(by_shape) {
                Some(deployment) => ("deployment".into(), deployment),
                None => ("replicaset".into(), owner),
            }
        }
        "Job" => match strip(&|s| s.len() >= 8 && s.bytes().all(|b| b.is_ascii_digit())) {
            Some(cronjob) => ("cronjob".into(), cronjob),
            None => ("job".into(), owner),
        },
        "StatefulSet" => ("statefulset".into(), owner),
        "DaemonSet" => ("daemonset".into(), owner),
        other => (other.to_ascii_lowercase().into(), owner),
    }
}

/// Tempo's `connection_type`: what kind of peer the server is, for the
/// first-party protocols the issue of service graphs names (plugins do not
/// declare it yet, so a pushed protocol's edges carry none).
pub fn connection_type(protocol: &str) -> Option<&'static str> {
    match protocol {
        "redis" => Some("database"),
        "kafka" => Some("messaging_system"),
        _ => None,
    }
}

/// A latency histogram in [`LATENCY_BUCKETS`] (plus +Inf), with its sum.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is +Inf.
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
    pub sum_seconds: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        let i = LATENCY_BUCKETS.iter().position(|&le| seconds <= le).unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }

    /// What `self` holds that `part` (a share of it) does not.
    pub fn without(&self, part: &Histogram) -> Histogram {
        let mut left = self.clone();
        for (b, p) in left.buckets.iter_mut().zip(&part.buckets) {
            *b = b.saturating_sub(*p);
        }
        left.sum_seconds = (left.sum_seconds - part.sum_seconds).max(0.0);
        left.count = left.count.saturating_sub(part.count);
        left
    }

    /// Counts at or below each bound, ending with +Inf (Prometheus' `le`).
    pub fn cumulative(&self) -> impl Iterator<Item = u64> + '_ {
        self.buckets.iter().scan(0, |acc, n| {
            *acc += n;
            Some(*acc)
        })
    }
}

/// An L7 series' key: who called whom, over which protocol.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct L7Key {
    pub client: WorkloadName,
    pub server: WorkloadName,
    pub protocol: String,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct L7Ref<'a> {
    client: NameRef<'a>,
    server: NameRef<'a>,
    protocol: &'a str,
}

impl Hash for L7Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        L7Ref { client: self.client.view(), server: self.server.view(), protocol: &self.protocol }.hash(state);
    }
}

impl hashbrown::Equivalent<L7Key> for L7Ref<'_> {
    fn equivalent(&self, key: &L7Key) -> bool {
        self.protocol == key.protocol && self.client == key.client.view() && self.server == key.server.view()
    }
}

impl From<&L7Ref<'_>> for L7Key {
    fn from(r: &L7Ref<'_>) -> Self {
        L7Key { client: r.client.to_name(), server: r.server.to_name(), protocol: r.protocol.to_string() }
    }
}

/// Requests between two workloads over one protocol.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct L7Series {
    pub requests: u64,
    pub failed: u64,
    /// Request-to-response time on the wire, where both were seen.
    pub latency: Histogram,
    /// The same, of the failed requests only (OTLP tells them apart by
    /// `error.type`).
    pub failed_latency: Histogram,
    /// When it last counted something (capture time).
    pub last: Timestamp,
}

/// An L4 series' key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct L4Key {
    pub client: WorkloadName,
    pub server: WorkloadName,
    pub transport: L4Proto,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct L4Ref<'a> {
    client: NameRef<'a>,
    server: NameRef<'a>,
    transport: L4Proto,
}

impl Hash for L4Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        L4Ref { client: self.client.view(), server: self.server.view(), transport: self.transport }.hash(state);
    }
}

impl hashbrown::Equivalent<L4Key> for L4Ref<'_> {
    fn equivalent(&self, key: &L4Key) -> bool {
        self.transport == key.transport && self.client == key.client.view() && self.server == key.server.view()
    }
}

impl From<&L4Ref<'_>> for L4Key {
    fn from(r: &L4Ref<'_>) -> Self {
        L4Key { client: r.client.to_name(), server: r.server.to_name(), transport: r.transport }
    }
}

/// Traffic between two workloads over one transport.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct L4Series {
    pub bytes_to_server: u64,
    pub bytes_to_client: u64,
    pub packets_to_server: u64,
    pub packets_to_client: u64,
    pub flows_closed: u64,
    pub retransmits: u64,
    pub resets: u64,
    pub failed_connects: u64,
    /// When it last counted something (capture time).
    pub last: Timestamp,
}

/// What the cap folded into the `other` series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Folded {
    pub requests: u64,
    pub flow_deltas: u64,
}

/// Every series, bounded by a cap on their number.
#[derive(Clone, Debug)]
pub struct ServiceGraph {
    l7: HashMap<L7Key, L7Series>,
    l4: HashMap<L4Key, L4Series>,
    max_series: usize,
    folded: Folded,
    /// Series let go for being idle.
    expired: u64,
}

impl Default for ServiceGraph {
    fn default() -> Self {
        ServiceGraph::new(DEFAULT_MAX_SERIES)
    }
}

impl ServiceGraph {
    /// At most `max_series` L7 and L4 series together, plus the folded
    /// `other` ones.
    pub fn new(max_series: usize) -> Self {
        ServiceGraph { l7: HashMap::new(), l4: HashMap::new(), max_series, folded: Folded::default(), expired: 0 }
    }

    fn full(&self) -> bool {
        self.l7.len() + self.l4.len() >= self.max_series
    }

    /// A record between two resolved workloads.
    pub fn add_record(&mut self, r: &L7Record, client: &Workload, server: &Workload) {
        let Some(s) = self.l7_series(client, server, &r.protocol, 1) else { return };
        s.last = s.last.max(r.ts());
        s.requests += 1;
        s.failed += u64::from(r.error);
        if let Some(us) = r.elapsed_us {
            s.latency.observe(us as f64 / 1e6);
            if r.error {
                s.failed_latency.observe(us as f64 / 1e6);
            }
        }
    }

    /// Requests known by their counts only (no latency), as of `ts`.
    pub fn add_counts(
        &mut self,
        protocol: &str,
        (requests, errors): (u64, u64),
        ts: Timestamp,
        client: &Workload,
        server: &Workload,
    ) {
        let Some(s) = self.l7_series(client, server, protocol, requests) else { return };
        s.last = s.last.max(ts);
        s.requests += requests;
        s.failed += errors;
    }

    fn l7_series(
        &mut self,
        client: &Workload,
        server: &Workload,
        protocol: &str,
        requests: u64,
    ) -> Option<&mut L7Series> {
        let key = L7Ref { client: NameRef::of(client), server: NameRef::of(server), protocol };
        if !self.l7.contains_key(&key) {
            if self.full() {
                self.folded.requests += requests;
                let other =
                    L7Key { client: WorkloadName::other(), server: WorkloadName::other(), protocol: protocol.into() };
                return Some(self.l7.entry(other).or_default());
            }
            self.l7.insert(L7Key::from(&key), L7Series::default());
        }
        // Looked up again rather than built: the owned key is made only
        // for a new series (a map cannot hand out an entry by a borrowed
        // key it cannot borrow its keys as).
        self.l7.get_mut(&key)
    }

    /// A flow delta between two resolved workloads.
    pub fn add_delta(&mut self, d: &FlowDelta, client: &Workload, server: &Workload, closed_flows: u64) {
        let key = L4Ref { client: NameRef::of(client), server: NameRef::of(server), transport: d.l4 };
        let known = self.l4.contains_key(&key);
        let s = if known {
            self.l4.get_mut(&key)
        } else if self.full() {
            self.folded.flow_deltas += 1;
            let other = L4Key { client: WorkloadName::other(), server: WorkloadName::other(), transport: d.l4 };
            Some(self.l4.entry(other).or_default())
        } else {
            Some(self.l4.entry(L4Key::from(&key)).or_default())
        };
        let Some(s) = s else { return };
        s.last = s.last.max(d.last_ts);
        s.bytes_to_server += d.to_server.bytes;
        s.bytes_to_client += d.to_client.bytes;
        s.packets_to_server += d.to_server.packets;
        s.packets_to_client += d.to_client.packets;
        s.flows_closed += closed_flows;
        let h = &d.health;
        s.retransmits += u64::from(h.retransmits_to_server) + u64::from(h.retransmits_to_client);
        s.resets += u64::from(h.reset_by_client) + u64::from(h.reset_by_server);
        s.failed_connects += u64::from(h.failed_connect);
    }

    /// Lets go of the series that counted nothing since `before`, as Tempo
    /// lets idle edges go: a workload long gone (a finished Job, a pod
    /// without a controller, an outside address) then holds no slot under
    /// the cap. A pair that comes back starts again from zero, which
    /// Prometheus reads as a counter reset.
    pub fn expire_idle(&mut self, before: Timestamp) -> usize {
        let n = self.l7.len() + self.l4.len();
        self.l7.retain(|_, s| s.last >= before);
        self.l4.retain(|_, s| s.last >= before);
        let gone = n - self.l7.len() - self.l4.len();
        self.expired += gone as u64;
        gone
    }

    /// Series let go for being idle, ever.
    pub fn expired(&self) -> u64 {
        self.expired
    }

    /// L7 series in a stable order (an exposition that does not reshuffle
    /// between scrapes).
    pub fn l7(&self) -> Vec<(&L7Key, &L7Series)> {
        let mut v: Vec<_> = self.l7.iter().collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v
    }

    pub fn l4(&self) -> Vec<(&L4Key, &L4Series)> {
        let mut v: Vec<_> = self.l4.iter().collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v
    }

    pub fn series(&self) -> usize {
        self.l7.len() + self.l4.len()
    }

    pub fn max_series(&self) -> usize {
        self.max_series
    }

    pub fn folded(&self) -> Folded {
        self.folded
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeMap;

    fn pod(ns: &str, name: &str, owner: Option<&str>, hash: Option<&str>) -> Workload {
        let mut labels = BTreeMap::new();
        if let Some(h) = hash {
            labels.insert("pod-template-hash".to_string(), h.to_string());
        }
        Workload {
            kind: WorkloadKind::Pod,
            namespace: ns.into(),
            name: name.into(),
            node: None,
            labels,
            owner: owner.map(str::to_string),
        }
    }

    fn named(w: &Workload) -> (String, String) {
        let n = WorkloadName::of(w);
        (n.kind, n.name)
    }

    #[test]
    fn pods_are_counted_as_their_controllers() {
        let s = |k: &str, n: &str| (k.to_string(), n.to_string());
        assert_eq!(
            named(&pod("shop", "api-5f6b-x1", Some("ReplicaSet/api-5f6b"), Some("5f6b"))),
            s("deployment", "api")
        );
        // Without the label, a ReplicaSet's hash suffix has its usual shape.
        assert_eq!(
            named(&pod("shop", "web-7d9c8f-abcde", Some("ReplicaSet/web-7d9c8f"), None)),
            s("deployment", "web")
        );
        assert_eq!(named(&pod("shop", "rs-1-abc", Some("ReplicaSet/rs-1"), None)), s("replicaset", "rs-1"));
        assert_eq!(named(&pod("shop", "db-0", Some("StatefulSet/db"), None)), s("statefulset", "db"));
        assert_eq!(named(&pod("kube-system", "cilium-x", Some("DaemonSet/cilium"), None)), s("daemonset", "cilium"));
        assert_eq!(named(&pod("ops", "backup-29123456-q", Some("Job/backup-29123456"), None)), s("cronjob", "backup"));
        assert_eq!(named(&pod("ops", "migrate-q", Some("Job/migrate"), None)), s("job", "migrate"));
        assert_eq!(named(&pod("ops", "debug", None, None)), s("pod", "debug"));
    }

    fn record(protocol: &str, error: bool, us: Option<u64>) -> L7Record {
        let end = crate::record::RecordEndpoint {
            ip: "10.0.0.1".parse().unwrap(),
            port: 1,
            workload: None,
            resolution_status: crate::identity::ResolutionStatus::Resolved,
        };
        L7Record {
            protocol: protocol.into(),
            transport: L4Proto::Tcp,
            method: "GET".into(),
            summary: "/".into(),
            status_code: None,
            error,
            request_size: 1,
            response_size: 1,
            elapsed_us: us,
            request_ts: None,
            response_ts: None,
            src: end.clone(),
            dst: end,
            plugin: crate::record::PluginRef { name: protocol.into(), version: "1".into(), generation: 1 },
            fields: Default::default(),
            tls: false,
            tls_sni: None,
        }
    }

    #[test]
    fn replicas_share_a_series_and_latency_falls_in_its_bucket() {
        let mut g = ServiceGraph::default();
        let db = pod("shop", "db-0", Some("StatefulSet/db"), None);
        for i in 0..10 {
            let client = pod("shop", &format!("api-5f6b-{i}"), Some("ReplicaSet/api-5f6b"), Some("5f6b"));
            g.add_record(&record("redis", i == 3, Some(300)), &client, &db);
        }
        assert_eq!(g.series(), 1);
        let (key, s) = g.l7()[0];
        assert_eq!((key.client.name.as_str(), key.server.name.as_str()), ("api", "db"));
        assert_eq!((s.requests, s.failed, s.latency.count), (10, 1, 10));
        // 300 µs: at or below 0.5 ms, the first bucket.
        assert_eq!(s.latency.buckets[0], 10);
        assert_eq!(s.latency.cumulative().last(), Some(10));
        assert_eq!(connection_type("redis"), Some("database"));
    }

    #[test]
    fn idle_series_go_and_free_their_slot_under_the_cap() {
        let mut g = ServiceGraph::new(2);
        let server = pod("shop", "db-0", Some("StatefulSet/db"), None);
        let at = |secs: u64| {
            let mut r = record("http", false, None);
            r.request_ts = Some(Timestamp(secs * 1_000_000_000));
            r
        };
        g.add_record(&at(10), &pod("shop", "old", None, None), &server);
        g.add_record(&at(500), &pod("shop", "busy", None, None), &server);
        assert_eq!(g.expire_idle(Timestamp(100 * 1_000_000_000)), 1, "the one idle since 10 s goes");
        assert_eq!((g.series(), g.expired()), (1, 1));
        // Its slot is free: a new pair gets a series of its own, not `other`.
        g.add_record(&at(600), &pod("shop", "new", None, None), &server);
        assert!(g.l7().iter().all(|(k, _)| k.client.name != OTHER), "{:?}", g.l7());
    }

    #[test]
    fn the_cap_folds_new_pairs_into_other_and_counts_them() {
        let mut g = ServiceGraph::new(3);
        let server = pod("shop", "db-0", Some("StatefulSet/db"), None);
        for i in 0..10 {
            let client = pod("shop", &format!("c{i}"), None, None);
            g.add_record(&record("http", false, None), &client, &server);
        }
        let l7 = g.l7();
        assert_eq!(l7.len(), 4, "three series, and the folded one");
        let other = l7.iter().find(|(k, _)| k.client.name == OTHER).unwrap();
        assert_eq!(other.1.requests, 7);
        assert_eq!(g.folded().requests, 7);
        assert_eq!(l7.iter().map(|(_, s)| s.requests).sum::<u64>(), 10, "nothing lost");
        // A series already kept still counts after the cap is reached.
        g.add_record(&record("http", false, None), &pod("shop", "c0", None, None), &server);
        assert_eq!(g.folded().requests, 7);
    }
}

//! The graph service: what the capture side feeds (flow deltas, L7
//! records, plugin status) and what subscribers read (maps per map type,
//! grouping, display filter and bandwidth options).
//!
//! The capture side never does per-subscriber work. It keeps one L4 map and
//! one unfiltered L7 map per grouping, plus a bounded log of recent L7
//! records. A subscription with a display filter folds the records it has
//! not seen yet into its own L7 map when it is read, so a busy capture
//! costs subscribers only at their own pace.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod externals;
pub mod filter;
pub mod history;
pub mod metrics;
pub mod nodegraph;
pub mod otlp;
pub mod packets;
pub mod pcap_api;
pub mod pcapng;
mod plugin_api;
pub mod protocol;
pub mod pushed;
pub mod records_api;
mod service_graph;
pub mod subscription;
pub mod view;
pub mod vocabulary;
pub mod window;
pub mod workers;

use regex::Regex;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use trawl_core::engine::ConnInfo;
use trawl_core::l7map::{L7Map, LegendEntry};
use trawl_core::record::L7Record;
use trawl_core::{FlowDelta, GroupBy, Identity, L4Map, Timestamp, Workload};
use trawl_runtime::Targeting;
use trawl_runtime::registry::PluginStatus;

pub use filter::{Filter, FilterError};
pub use subscription::{MapType, Mode, Subscription, SubscriptionSpec};

/// L7 records kept for subscriptions that start (or change filter) later.
pub const DEFAULT_RECORD_LOG: usize = 200_000;
/// Bytes those records may hold: small requests fill the count, large
/// ones this (200k records of 5.7 KB each held 1.1 GiB).
pub const DEFAULT_RECORD_LOG_BYTES: usize = 128 << 20;

/// When the map calls an L7 edge degraded or failing: by its share of
/// errors (`--health`; Kiali's defaults: 0.1 % and 20 %), or by its p99
/// latency (`--health-latency`; 1 s and 5 s), whichever is worse. Sent
/// with every snapshot so the UI draws what the operator set.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct HealthThresholds {
    pub degraded: f64,
    pub failing: f64,
    pub latency_degraded_ms: f64,
    pub latency_failing_ms: f64,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        HealthThresholds { degraded: 0.001, failing: 0.2, latency_degraded_ms: 1_000.0, latency_failing_ms: 5_000.0 }
    }
}

impl HealthThresholds {
    /// The latency thresholds from `DEGRADED_MS,FAILING_MS` (`--health-latency`).
    pub fn with_latency(mut self, s: &str) -> Result<Self, String> {
        let bad = || format!("invalid latency thresholds {s:?}: DEGRADED_MS,FAILING_MS (p99), as 1000,5000");
        let (d, f) = s.split_once(',').ok_or_else(bad)?;
        let (d, f): (f64, f64) = (d.trim().parse().map_err(|_| bad())?, f.trim().parse().map_err(|_| bad())?);
        if !(d > 0.0 && d < f && f.is_finite()) {
            return Err(format!("invalid latency thresholds {s:?}: need 0 < degraded < failing"));
        }
        self.latency_degraded_ms = d;
        self.latency_failing_ms = f;
        Ok(self)
    }
}

impl std::str::FromStr for HealthThresholds {
    type Err = String;

    /// `DEGRADED,FAILING` in percent of requests: `0.1,20`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid health thresholds {s:?}: DEGRADED,FAILING in percent, as 0.1,20");
        let (d, f) = s.split_once(',').ok_or_else(bad)?;
        let (d, f): (f64, f64) = (d.trim().parse().map_err(|_| bad())?, f.trim().parse().map_err(|_| bad())?);
        if !(d > 0.0 && d < f && f <= 100.0) {
            return Err(format!("invalid health thresholds {s:?}: need 0 < degraded < failing <= 100"));
        }
        Ok(HealthThresholds { degraded: d / 100.0, failing: f / 100.0, ..HealthThresholds::default() })
    }
}

const GROUPINGS: [GroupBy; 3] = [GroupBy::Pod, GroupBy::Namespace, GroupBy::Node];

fn slot(g: GroupBy) -> usize {
    match g {
        GroupBy::Pod => 0,
        GroupBy::Namespace => 1,
        GroupBy::Node => 2,
    }
}

/// Which workloads get L7 dissection: a pod-name regex and included or
/// excluded namespaces (Kubeshark's capture filters). They gate L7 only;
/// the L4 map counts every flow.
#[derive(Clone, Debug, Default)]
pub struct CaptureFilter {
    pub pod_regex: Option<Regex>,
    pub namespaces: Vec<String>,
    pub exclude_namespaces: Vec<String>,
}

impl CaptureFilter {
    pub fn is_open(&self) -> bool {
        self.pod_regex.is_none() && self.namespaces.is_empty() && self.exclude_namespaces.is_empty()
    }

    /// The filters as JSON (`GET /api/capture-filters`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "pod_regex": self.pod_regex.as_ref().map(|r| r.as_str().to_string()),
            "namespaces": self.namespaces,
            "exclude_namespaces": self.exclude_namespaces,
        })
    }

    /// Filters from JSON (`PUT /api/capture-filters`); a bad regex is an
    /// error that says so.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, String> {
        let list = |k: &str| -> Result<Vec<String>, String> {
            match &v[k] {
                serde_json::Value::Null => Ok(Vec::new()),
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map(str::to_string).ok_or_else(|| format!("{k}: expected strings")))
                    .collect(),
                _ => Err(format!("{k}: expected a list of namespaces")),
            }
        };
        let pod_regex = match &v["pod_regex"] {
            serde_json::Value::Null => None,
            serde_json::Value::String(r) if r.is_empty() => None,
            serde_json::Value::String(r) => Some(Regex::new(r).map_err(|e| format!("pod_regex: {e}"))?),
            _ => return Err("pod_regex: expected a string".into()),
        };
        Ok(CaptureFilter {
            pod_regex,
            namespaces: list("namespaces")?,
            exclude_namespaces: list("exclude_namespaces")?,
        })
    }

    /// Whether a workload is targeted.
    pub fn targets(&self, w: &Workload) -> bool {
        (self.namespaces.is_empty() || self.namespaces.contains(&w.namespace))
            && !self.exclude_namespaces.contains(&w.namespace)
            && self.pod_regex.as_ref().is_none_or(|r| r.is_match(&w.name))
    }

    /// A record is dissected when either end is a targeted workload.
    pub fn admits(&self, src: &Workload, dst: &Workload) -> bool {
        self.is_open() || self.targets(src) || self.targets(dst)
    }

    /// Whether a connection's payload is dissected: either end, resolved
    /// as of `ts` (the way its records' ends will be), is targeted.
    pub fn admits_conn(&self, identity: &Identity, conn: &ConnInfo, ts: Timestamp) -> bool {
        if self.is_open() {
            return true;
        }
        let end = |e: trawl_core::Endpoint| identity.resolve_endpoint_status(e.ip, e.port, ts).0;
        self.admits(&end(conn.client), &end(conn.server))
    }
}

/// The service's capture filters and identity as the dispatcher asks them,
/// once per new connection: untargeted streams are never reassembled nor
/// dissected.
///
/// Asked on the capture thread, it never waits for the service's readers:
/// when the state is held, the filters and identity last seen answer.
pub fn targeting(state: &SharedState) -> Targeting {
    let snapshot = |st: &GraphState| (st.identity.clone(), st.capture_filter.clone());
    let mut seen = snapshot(&lock(state));
    let state = state.clone();
    Box::new(move |conn, ts| {
        if let Some(st) = state.try_lock() {
            seen = snapshot(&st);
        }
        seen.1.admits_conn(&seen.0, conn, ts)
    })
}

/// Counters for `/metrics` and the UI's status line. Drops are data.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub packets_dropped: u64,
    pub flows: u64,
    pub records: u64,
    /// Records of workloads the capture filters exclude.
    pub records_not_targeted: u64,
    /// Connections the capture filters kept from reassembly and plugins.
    pub streams_not_targeted: u64,
    /// Requests known by counts only: workers' records beyond their
    /// queues, which count in the L7 map but not in filtered maps, latency
    /// or top calls.
    pub records_unsampled: u64,
    pub matched_pairs: u64,
    pub plugin_faults: u64,
    pub subscribers: u64,
    /// Times the replay started over (`--loop`).
    pub replay_loops: u64,
    /// Live payload capture: packets the AF_PACKET rings dropped (full).
    pub ring_drops: u64,
    /// Records that left the log for its count or byte budget (their
    /// counts stay in the maps).
    pub records_log_evicted: u64,
    /// Flows and records drawn on an `other addresses` node because the
    /// maps already name as many outside addresses as they keep apart.
    pub external_addresses_folded: u64,
    /// OTLP pushes the collector took, and those that failed.
    pub otlp_exports: u64,
    pub otlp_failures: u64,
    /// What capture and dissection lost, by cause (on a hub, the
    /// workers' sum is in `/metrics` and each worker's in its health).
    pub losses: workers::Losses,
}

/// Everything subscribers read, behind one lock.
#[derive(Debug)]
pub struct GraphState {
    identity: Arc<Identity>,
    capture_filter: CaptureFilter,
    window_secs: u32,
    l4: Vec<L4Map>,
    l7: Vec<L7Map>,
    /// Recent records, oldest first; `first_seq` numbers the front one.
    records: VecDeque<(Arc<L7Record>, usize)>,
    first_seq: u64,
    record_log: usize,
    record_log_bytes: usize,
    /// What the UI calls degraded and failing.
    pub health: HealthThresholds,
    /// Whether a server serving several virtual hosts gets an L7 edge per
    /// host (`--split-hosts`).
    pub split_hosts: bool,
    /// Bytes the record log holds now.
    records_held: usize,
    legend: Vec<LegendEntry>,
    plugins: Vec<PluginStatus>,
    counters: Counters,
    /// Capture time of the newest input: where rate windows end.
    now: Timestamp,
    /// Live capture: the interfaces counted (eBPF) and captured (payloads).
    live: LiveInterfaces,
    /// A hub's workers by `node/worker id`: connected, counters, lag.
    workers: std::collections::BTreeMap<String, workers::WorkerHealth>,
    workers_gone: workers::WorkerCounters,
    /// Plugins an operator asked to take out of quarantine: for this
    /// process's pipeline, and numbered for a hub's workers.
    resets: PluginResets,
    externals: externals::Externals,
    /// Each edge's metrics per interval, on disk (`None`: not kept).
    history: Option<history::History>,
    /// A hub's pushed plugins (`None`: not a hub), and the statuses of
    /// the plugins they replaced, to show again when they are deleted.
    pushed: Option<pushed::HubPlugins>,
    replaced: std::collections::BTreeMap<String, PluginStatus>,
    /// Per-workload series for `/metrics` (Tempo's service-graph names).
    service_graph: trawl_core::servicegraph::ServiceGraph,
    /// Recent whole packets for `/api/pcap` (`None`: not kept).
    packets: Option<packets::SharedRing>,
    /// A hub's requests for its workers' packets, and their answers.
    pcap_fanout: pcap_api::PcapFanout,
    series_idle_secs: u64,
}

/// Requests to take a plugin out of quarantine (`POST
/// /api/plugins/NAME/reset`), as a pipeline here and each worker of a hub
/// pick them up. Bounded: only the newest few are kept.
#[derive(Debug, Default)]
struct PluginResets {
    local: Vec<String>,
    numbered: VecDeque<(u64, String)>,
    next: u64,
}

const PLUGIN_RESETS_KEPT: usize = 64;

/// What live capture is attached to, for `/api/health`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LiveInterfaces {
    pub counted: Vec<String>,
    pub payload: Vec<String>,
    /// TLS plaintext capture, when live capture asked for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsStatus>,
}

/// TLS plaintext capture (OpenSSL uprobes), for `/api/health`; a worker
/// sends it to the hub in postcard, so no field is ever skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsStatus {
    /// Capturing now.
    pub active: bool,
    /// Why not, when it was asked for and cannot run here.
    pub unavailable: Option<String>,
    /// How the socket under an SSL call is seen on this kernel.
    pub learner: Option<String>,
    /// Targeted network namespaces and the processes in them.
    pub namespaces: usize,
    pub processes: usize,
    /// Files with OpenSSL probed: how many, and the first of them
    /// (`dev:inode`, or `pid@dev:inode` per process).
    pub probed_files: usize,
    pub files: Vec<String>,
    /// Files that could not be probed, and why.
    pub failed: Vec<String>,
    /// SSL calls seen in targeted processes, and plaintext bytes dissected.
    pub calls: u64,
    pub bytes: u64,
    /// TLS streams dissected, and connections the capture filters left out.
    pub streams: u64,
    pub untargeted: u64,
    /// Chunks left out because the connection's other end, on this node,
    /// already gave them.
    pub duplicate_chunks: u64,
    /// Streams ended early because the most were open (their records may
    /// be cut short).
    pub evicted: u64,
}

impl GraphState {
    /// Who an address was, as of a time.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// A newer identity (an inventory reloaded, the Kubernetes API).
    pub fn set_identity(&mut self, identity: Arc<Identity>) {
        self.identity = identity;
    }

    pub fn capture_filter(&self) -> &CaptureFilter {
        &self.capture_filter
    }

    pub fn set_capture_filter(&mut self, filter: CaptureFilter) {
        self.capture_filter = filter;
    }

    /// The rate window, in seconds.
    pub fn window_secs(&self) -> u32 {
        self.window_secs
    }

    pub fn legend(&self) -> &[LegendEntry] {
        &self.legend
    }

    pub fn plugins(&self) -> &[PluginStatus] {
        &self.plugins
    }

    pub fn set_plugins(&mut self, plugins: Vec<PluginStatus>) {
        self.plugins = plugins;
    }

    /// The names a display filter may use: KFL2's, the protocols, and the
    /// fields the plugins here and on every worker declare (rejected
    /// plugins produce nothing and do not count).
    pub fn vocabulary(&self) -> vocabulary::Vocabulary {
        let mut plugins: Vec<(String, Option<Vec<String>>)> = self
            .plugins
            .iter()
            .filter(|p| !matches!(p.state, trawl_runtime::registry::PluginState::Rejected { .. }))
            .map(|p| (p.name.clone(), p.fields.clone()))
            .collect();
        for p in self.workers.values().flat_map(|w| &w.plugins).filter(|p| p["state"] != "rejected") {
            let fields =
                p["fields"].as_array().map(|f| f.iter().filter_map(|n| n.as_str().map(str::to_string)).collect());
            plugins.push((p["name"].as_str().unwrap_or_default().to_string(), fields));
        }
        vocabulary::Vocabulary::new(plugins.iter().map(|(name, fields)| (name.as_str(), fields.as_deref())))
            .with_names(self.legend.iter().map(|l| l.protocol.clone()))
    }

    /// Whether a plugin of this name runs here or on any worker.
    pub fn knows_plugin(&self, name: &str) -> bool {
        self.plugins.iter().any(|p| p.name == name)
            || self.workers.values().any(|w| w.plugins.iter().any(|p| p["name"] == name))
    }

    /// Asks every pipeline (this process's, and each worker's through a
    /// hub) to take plugin `name` out of quarantine.
    pub fn request_plugin_reset(&mut self, name: &str) {
        let r = &mut self.resets;
        if r.local.len() < PLUGIN_RESETS_KEPT {
            r.local.push(name.to_string());
        }
        r.numbered.push_back((r.next, name.to_string()));
        r.next += 1;
        while r.numbered.len() > PLUGIN_RESETS_KEPT {
            r.numbered.pop_front();
        }
    }

    /// The resets asked for since the last call, for this process's
    /// pipeline.
    pub fn take_plugin_resets(&mut self) -> Vec<String> {
        std::mem::take(&mut self.resets.local)
    }

    /// The resets numbered `from` and later, and the number to ask from
    /// next time (a hub's connection to one worker keeps its own).
    pub fn plugin_resets_since(&self, from: u64) -> (Vec<String>, u64) {
        let names = self.resets.numbered.iter().filter(|(n, _)| *n >= from).map(|(_, name)| name.clone()).collect();
        (names, self.resets.next)
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }

    /// Capture time of the newest input: where rate windows end.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Input up to `ts` has arrived (time never goes back).
    pub fn advance_to(&mut self, ts: Timestamp) {
        self.now = self.now.max(ts);
    }

    pub fn live(&self) -> &LiveInterfaces {
        &self.live
    }

    pub fn live_mut(&mut self) -> &mut LiveInterfaces {
        &mut self.live
    }

    pub fn workers(&self) -> &std::collections::BTreeMap<String, workers::WorkerHealth> {
        &self.workers
    }

    pub fn workers_mut(&mut self) -> &mut std::collections::BTreeMap<String, workers::WorkerHealth> {
        &mut self.workers
    }

    /// Lets go of workers disconnected and silent since before `silent_since`
    /// (wall-clock ns). What they counted stays in the hub's totals, so
    /// `/metrics` counters never go back.
    pub fn prune_workers(&mut self, silent_since: u64) -> usize {
        let gone: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, h)| !h.connected && h.last_seen_ns < silent_since)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            if let Some(h) = self.workers.remove(id) {
                self.workers_gone.add_totals(&h.counters);
            }
        }
        gone.len()
    }

    /// What the workers the hub let go had counted.
    pub fn workers_gone(&self) -> &workers::WorkerCounters {
        &self.workers_gone
    }

    pub fn new(identity: Arc<Identity>, capture_filter: CaptureFilter, window_secs: u32) -> Self {
        GraphState {
            identity,
            capture_filter,
            window_secs,
            l4: GROUPINGS.iter().map(|&g| L4Map::new(g, window_secs)).collect(),
            l7: GROUPINGS.iter().map(|&g| L7Map::with_window(g, window_secs)).collect(),
            records: VecDeque::new(),
            first_seq: 0,
            record_log: DEFAULT_RECORD_LOG,
            record_log_bytes: DEFAULT_RECORD_LOG_BYTES,
            health: HealthThresholds::default(),
            split_hosts: true,
            records_held: 0,
            legend: Vec::new(),
            plugins: Vec::new(),
            resets: PluginResets::default(),
            externals: externals::Externals::default(),
            counters: Counters::default(),
            now: Timestamp::ZERO,
            live: LiveInterfaces::default(),
            workers: std::collections::BTreeMap::new(),
            workers_gone: workers::WorkerCounters::default(),
            history: None,
            pushed: None,
            replaced: std::collections::BTreeMap::new(),
            service_graph: trawl_core::servicegraph::ServiceGraph::default(),
            packets: None,
            pcap_fanout: pcap_api::PcapFanout::default(),
            series_idle_secs: 0,
        }
    }

    pub fn pcap_fanout(&self) -> &pcap_api::PcapFanout {
        &self.pcap_fanout
    }

    pub fn pcap_fanout_mut(&mut self) -> &mut pcap_api::PcapFanout {
        &mut self.pcap_fanout
    }

    /// Keeps recent packets, up to `bytes`, for `/api/pcap` (0: none).
    pub fn with_packet_ring(mut self, bytes: usize) -> Self {
        self.packets = (bytes > 0).then(|| packets::PacketRing::shared(bytes));
        self
    }

    pub fn packet_ring(&self) -> Option<&packets::SharedRing> {
        self.packets.as_ref()
    }

    /// Keeps at most `max` service-graph series (`--metrics-max-series`);
    /// the rest fold into `other`.
    pub fn with_metrics_max_series(mut self, max: usize) -> Self {
        self.service_graph = trawl_core::servicegraph::ServiceGraph::new(max);
        self
    }

    /// Lets service-graph series idle for `secs` of data time go
    /// (`--metrics-series-idle`; 0 keeps them).
    pub fn with_metrics_series_idle(mut self, secs: u64) -> Self {
        self.series_idle_secs = secs;
        self
    }

    /// Lets go of the service-graph series idle for longer than
    /// `--metrics-series-idle` of data time; how many went.
    pub fn expire_series(&mut self) -> usize {
        let idle = self.series_idle_secs;
        match self.now.as_nanos().checked_sub(idle.saturating_mul(1_000_000_000)) {
            Some(before) if idle > 0 => self.service_graph.expire_idle(Timestamp(before)),
            _ => 0,
        }
    }

    pub fn service_graph(&self) -> &trawl_core::servicegraph::ServiceGraph {
        &self.service_graph
    }

    /// Keeps each edge's metrics per interval in `history`.
    pub fn with_history(mut self, history: history::History) -> Self {
        self.history = Some(history);
        self
    }

    pub fn history(&self) -> Option<&history::History> {
        self.history.as_ref()
    }

    /// Closes every open interval of history: the end of a replay.
    pub fn flush_history(&mut self) {
        if let Some(h) = &mut self.history {
            h.flush();
        }
    }

    /// Time has passed with or without data: closes history's intervals
    /// that ended. `wall` (unix seconds) counts when the data's time is
    /// wall time (live capture, live workers: within an hour of it);
    /// otherwise (a replay of an old capture) the data's own time does.
    pub fn tick_history(&mut self, wall: u64) {
        let data = self.now.as_nanos() / 1_000_000_000;
        if let Some(h) = &mut self.history {
            h.advance(if data + 3_600 >= wall && data > 0 { wall.max(data) } else { data });
            h.merge_late();
        }
    }

    /// Keeps at most `bytes` of recent records for subscriptions that start
    /// later (`--record-log-mib`).
    pub fn with_record_log_bytes(mut self, bytes: usize) -> Self {
        self.record_log_bytes = bytes;
        self
    }

    pub fn with_health(mut self, health: HealthThresholds) -> Self {
        self.health = health;
        self
    }

    /// Splits (or not) a server's L7 edges by virtual host.
    pub fn with_split_hosts(mut self, on: bool) -> Self {
        self.split_hosts = on;
        for m in &mut self.l7 {
            m.set_split_hosts(on);
        }
        self
    }

    pub fn set_legend(&mut self, legend: Vec<LegendEntry>) {
        for m in &mut self.l7 {
            for e in &legend {
                m.set_legend(e.clone());
            }
        }
        self.legend = legend;
    }

    /// Adds or replaces one protocol's legend entry (a plugin loaded live).
    pub fn upsert_legend(&mut self, entry: LegendEntry) {
        for m in &mut self.l7 {
            m.set_legend(entry.clone());
        }
        self.legend.retain(|e| e.protocol != entry.protocol);
        self.legend.push(entry);
    }

    /// A flow delta from the flow table: into every grouping's L4 map.
    pub fn add_delta(&mut self, d: &FlowDelta) {
        self.add_closing(d, u64::from(d.closed));
    }

    /// A delta that closes `closed_flows` flows at once (a conversation's
    /// closed flows, from a worker).
    pub fn add_closing(&mut self, d: &FlowDelta, closed_flows: u64) {
        let client = self.identity.resolve(d.client.ip, d.first_ts);
        let server = self.identity.resolve_endpoint(d.server.ip, d.server.port, d.first_ts);
        let folded = &mut self.counters.external_addresses_folded;
        let (client, server) = (self.externals.fold(&client, folded), self.externals.fold(&server, folded));
        for m in &mut self.l4 {
            m.apply_closing(d, &client, &server, closed_flows);
        }
        if let Some(h) = &mut self.history {
            h.add_delta(d, &client, &server, closed_flows);
        }
        self.service_graph.add_delta(d, &client, &server, closed_flows);
        self.counters.flows += closed_flows;
        self.now = self.now.max(d.last_ts);
    }

    /// An L7 record with its resolved ends. Records of untargeted
    /// workloads are counted and dropped.
    pub fn add_record(&mut self, r: L7Record, src: &Workload, dst: &Workload) {
        if !self.capture_filter.admits(src, dst) {
            self.counters.records_not_targeted += 1;
            return;
        }
        self.counters.records += 1;
        if r.response_ts.is_some() && r.request_ts.is_some() {
            self.counters.matched_pairs += 1;
        }
        let folded = &mut self.counters.external_addresses_folded;
        let (src, dst) = (self.externals.fold(src, folded), self.externals.fold(dst, folded));
        // Named once, for every grouping's map and history.
        let host = trawl_core::vhost::record_host(&r);
        for m in &mut self.l7 {
            m.apply_for_host(&r, &src, &dst, host.as_deref());
        }
        if let Some(h) = &mut self.history {
            h.add_record(&r, &src, &dst, host.as_deref());
        }
        self.service_graph.add_record(&r, &src, &dst);
        self.now = self.now.max(r.ts());
        let bytes = r.approx_size();
        self.records_held += bytes;
        self.records.push_back((Arc::new(r), bytes));
        // Counts are in the maps already: leaving the log only means a
        // subscription that starts later folds fewer records in.
        while self.records.len() > self.record_log || self.records_held > self.record_log_bytes {
            let Some((_, b)) = self.records.pop_front() else { break };
            self.records_held -= b;
            self.first_seq += 1;
            self.counters.records_log_evicted += 1;
        }
    }

    /// Requests a worker counted but did not send as records.
    pub fn add_l7_counts(
        &mut self,
        protocol: &str,
        counts: &trawl_core::l7map::L7Counts,
        ts: Timestamp,
        src: &Workload,
        dst: &Workload,
    ) {
        if !self.capture_filter.admits(src, dst) {
            self.counters.records_not_targeted += counts.requests;
            return;
        }
        self.counters.records += counts.requests;
        self.counters.records_unsampled += counts.requests;
        let folded = &mut self.counters.external_addresses_folded;
        let (src, dst) = (self.externals.fold(src, folded), self.externals.fold(dst, folded));
        for m in &mut self.l7 {
            m.apply_counts(protocol, counts, ts, &src, &dst);
        }
        if let Some(h) = &mut self.history {
            h.add_counts(protocol, counts, ts, &src, &dst);
        }
        self.service_graph.add_counts(protocol, (counts.requests, counts.errors), ts, &src, &dst);
        self.now = self.now.max(ts);
    }

    pub fn l4(&self, g: GroupBy) -> &L4Map {
        &self.l4[slot(g)]
    }

    pub fn l7(&self, g: GroupBy) -> &L7Map {
        &self.l7[slot(g)]
    }

    /// Sequence number after the newest record.
    pub fn next_seq(&self) -> u64 {
        self.first_seq + self.records.len() as u64
    }

    /// Records from `seq` on (or from the oldest kept, if `seq` is older),
    /// with the sequence number of the first one returned.
    pub fn records_since(&self, seq: u64) -> (u64, impl DoubleEndedIterator<Item = &Arc<L7Record>>) {
        let start = seq.max(self.first_seq);
        let skip = (start - self.first_seq) as usize;
        (start, self.records.iter().skip(skip).map(|(r, _)| r))
    }
}

/// Changes queued while the state is held, at most.
pub const MAX_PENDING: usize = 4096;

/// A change to the state, queued while someone else holds it.
type Update = Box<dyn FnOnce(&mut GraphState) + Send>;

/// The graph state as the capture side, the hub and the API share it.
///
/// Ingest never waits on readers: [`Graph::update`] applies a change at
/// once when the state is free, and otherwise queues it for whoever holds
/// the state next (a reader applies every queued change, in order, before
/// it reads). Readers (subscription ticks, `/api/map`) therefore slow
/// nothing but each other, and always see every change made before they
/// locked.
pub struct Graph {
    state: Mutex<GraphState>,
    pending: Mutex<Vec<Update>>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph").field("pending", &self.pending_len()).finish()
    }
}

impl Graph {
    pub fn new(state: GraphState) -> SharedState {
        Arc::new(Graph { state: Mutex::new(state), pending: Mutex::new(Vec::new()) })
    }

    /// Applies `change` now if nobody holds the state, else queues it:
    /// never waits for a reader.
    ///
    /// The queue is bounded: past [`MAX_PENDING`] changes (a reader that
    /// holds the state far longer than a tick), ingest waits for the state
    /// rather than grow memory without end.
    pub fn update(&self, change: impl FnOnce(&mut GraphState) + Send + 'static) {
        if let Some(mut st) = self.try_lock() {
            return change(&mut st);
        }
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() < MAX_PENDING {
            return pending.push(Box::new(change));
        }
        drop(pending);
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.apply_pending(&mut st);
        change(&mut st);
    }

    /// The state, every queued change applied, if nobody holds it now:
    /// for callers that must not wait.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, GraphState>> {
        let mut st = match self.state.try_lock() {
            Ok(st) => st,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        self.apply_pending(&mut st);
        Some(st)
    }

    /// Changes waiting for the state.
    pub fn pending_len(&self) -> usize {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn apply_pending(&self, st: &mut GraphState) {
        let queued = std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        for change in queued {
            change(st);
        }
    }
}

/// The shared handle the capture side and the API hold.
pub type SharedState = Arc<Graph>;

/// Holds the state, every queued change applied; a panic elsewhere while
/// holding it leaves data still consistent enough to read (counters and
/// maps), so carry on.
pub fn lock(state: &SharedState) -> MutexGuard<'_, GraphState> {
    let mut st = state.state.lock().unwrap_or_else(PoisonError::into_inner);
    state.apply_pending(&mut st);
    st
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) use tests::add_http_records;

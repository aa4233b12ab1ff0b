//! `trawl worker --live`: eBPF counters on every workload of this node and
//! payload capture on the targeted ones, sent to the hub until the process
//! is stopped (its programs go with it).
//!
//! Counting once across nodes: the worker takes its node's pods (from the
//! inventory, or from the Kubernetes API with `--kube`, kept current), and
//! packets from other nodes' pods are left to their own workers, which
//! count them at their senders' interfaces.

use super::outbox::Outbox;
use super::proto::{WirePluginStatus, WorkerCounters, WorkerStatus};
use super::worker::{Link, WorkerHealth, WorkerOptions, serve_health};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;
use trawl_core::{FlowDelta, Identity, Timestamp};
use trawl_pipeline::live::LiveOptions;
use trawl_service::CaptureFilter;

/// Who is where, as this worker sees the cluster.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ClusterSplit {
    /// Addresses of this node's pods.
    pub local: Vec<IpAddr>,
    /// Addresses of other nodes' pods (their workers count them).
    pub remote: Vec<IpAddr>,
    /// Remote pods the capture filters target: a conversation they start
    /// is reported by their node's worker, not again here.
    pub remote_targeted: HashSet<IpAddr>,
}

/// The split for `node`, or `None` when the identity knows no pods yet
/// (then every workload found here is counted).
pub fn split(identity: &Identity, node: &str, filter: &CaptureFilter, now: Timestamp) -> Option<ClusterSplit> {
    let pods = identity.pod_addresses(now);
    if pods.is_empty() {
        return None;
    }
    let mut s = ClusterSplit::default();
    for (ip, pod_node) in pods {
        if pod_node.as_deref() == Some(node) {
            s.local.push(ip);
        } else {
            s.remote.push(ip);
            if filter.targets(&identity.resolve(ip, now)) {
                s.remote_targeted.insert(ip);
            }
        }
    }
    s.local.sort();
    s.remote.sort();
    Some(s)
}

/// The worker's outbox as the sink of live capture.
struct WorkerSink {
    out: Mutex<Outbox>,
    node: String,
    identity: RwLock<Arc<Identity>>,
    filter: RwLock<CaptureFilter>,
    split: RwLock<Option<ClusterSplit>>,
    /// The split changed and the counters have not taken it yet.
    split_changed: AtomicBool,
    packets: AtomicU64,
    /// Bytes of the flows counted, as the hub's `/metrics` sums them.
    bytes: AtomicU64,
    ring_drops: AtomicU64,
    health: Arc<WorkerHealth>,
    /// The plugins' status, as of the last records taken.
    plugins: Mutex<Vec<WirePluginStatus>>,
    losses: Mutex<trawl_service::workers::Losses>,
    tls: Mutex<Option<trawl_service::TlsStatus>>,
}

impl WorkerSink {
    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Recomputes who is where after the identity or the filters changed.
    fn refresh(&self) {
        let identity = self.identity.read().unwrap_or_else(PoisonError::into_inner).clone();
        let filter = self.filter.read().unwrap_or_else(PoisonError::into_inner).clone();
        let new = split(&identity, &self.node, &filter, trawl_pipeline::live::wall_now());
        let mut current = self.split.write().unwrap_or_else(PoisonError::into_inner);
        if *current != new {
            tracing::debug!(
                local = new.as_ref().map_or(0, |s| s.local.len()),
                remote = new.as_ref().map_or(0, |s| s.remote.len()),
                "cluster view changed"
            );
            *current = new;
            self.split_changed.store(true, Ordering::Relaxed);
        }
    }

    fn set_identity(&self, identity: Arc<Identity>) {
        *self.health.identity.lock().unwrap_or_else(PoisonError::into_inner) = Some(identity.clone());
        *self.identity.write().unwrap_or_else(PoisonError::into_inner) = identity;
        self.refresh();
    }

    /// Takes capture filters the hub sent, if any.
    fn take_hub_filters(&self) {
        let sent = self.health.hub_filters.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(f) = sent {
            tracing::info!(filters = %f.to_json(), "capture filters from the hub");
            *self.filter.write().unwrap_or_else(PoisonError::into_inner) = f;
            self.refresh();
        }
    }
}

impl trawl_pipeline::live::LiveSink for WorkerSink {
    fn targeting(&self) -> (Arc<Identity>, CaptureFilter) {
        let identity = self.identity.read().unwrap_or_else(PoisonError::into_inner).clone();
        (identity, self.filter.read().unwrap_or_else(PoisonError::into_inner).clone())
    }

    fn packet_ring(&self) -> Option<trawl_service::packets::SharedRing> {
        self.health.packets.clone()
    }

    fn cluster(&self) -> Option<(Vec<IpAddr>, Vec<IpAddr>)> {
        if !self.split_changed.swap(false, Ordering::Relaxed) {
            return None;
        }
        let split = self.split.read().unwrap_or_else(PoisonError::into_inner);
        split.as_ref().map(|s| (s.local.clone(), s.remote.clone()))
    }

    fn flows(&self, deltas: Vec<FlowDelta>, stats: trawl_ebpf::EbpfStats, _now: Timestamp) {
        let bytes: u64 = deltas.iter().map(|d| d.to_server.bytes + d.to_client.bytes).sum();
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let mut out = self.outbox();
        for d in deltas {
            out.add_delta(&d);
        }
        self.packets.store(stats.packets, Ordering::Relaxed);
        let mut losses = self.losses.lock().unwrap_or_else(PoisonError::into_inner);
        losses.ebpf_map_full = stats.map_full;
        losses.ebpf_evicted = stats.evicted;
    }

    fn batch(&self, batch: trawl_pipeline::pipeline::Batch, report: &trawl_pipeline::pipeline::Report<'_>) {
        let records = batch.records;
        *self.plugins.lock().unwrap_or_else(PoisonError::into_inner) =
            report.plugins().into_iter().chain(self.health.pushed.rejected()).map(Into::into).collect();
        self.losses.lock().unwrap_or_else(PoisonError::into_inner).set_engine(&report.losses());
        let split = self.split.read().unwrap_or_else(PoisonError::into_inner);
        let remote = |ip: &IpAddr| split.as_ref().is_some_and(|s| s.remote_targeted.contains(ip));
        let mut out = self.outbox();
        for h in records.into_iter().filter(|h| !remote(&h.conn.client.ip)) {
            out.add_record(h);
        }
    }

    fn plugin_resets(&self) -> Vec<String> {
        self.health.take_resets()
    }

    fn plugin_changes(&self) -> Vec<trawl_pipeline::pipeline::PluginChange> {
        self.health.pushed.take_changes()
    }

    fn interfaces(&self, counted: Vec<String>, payload: Vec<String>, ring_drops: u64, reorder_overflow: u64) {
        tracing::debug!(counted = counted.len(), payload = payload.len(), ring_drops, "live interfaces");
        self.ring_drops.store(ring_drops, Ordering::Relaxed);
        self.losses.lock().unwrap_or_else(PoisonError::into_inner).reorder_overflow = reorder_overflow;
    }

    fn tls(&self, status: trawl_service::TlsStatus, ring_full: u64, lost_bytes: u64) {
        tracing::debug!(streams = status.streams, calls = status.calls, "TLS capture");
        *self.tls.lock().unwrap_or_else(PoisonError::into_inner) = Some(status);
        let mut losses = self.losses.lock().unwrap_or_else(PoisonError::into_inner);
        losses.tls_ring_full = ring_full;
        losses.tls_lost_bytes = lost_bytes;
    }
}

pub fn run_live(opts: WorkerOptions, live: LiveOptions) -> anyhow::Result<()> {
    let identity = Arc::new(trawl_pipeline::replay::load_identity(&live.replay.inventories)?);
    let health = Arc::new(WorkerHealth::with_packet_ring(opts.replay.pcap_ring_bytes));
    *health.identity.lock().unwrap_or_else(PoisonError::into_inner) = Some(identity.clone());
    if let Some(addr) = opts.health_listen {
        serve_health(addr, health.clone())?;
    }
    let sink = Arc::new(WorkerSink {
        out: Mutex::new(Outbox::new(opts.limits)),
        node: opts.node.clone(),
        identity: RwLock::new(identity),
        filter: RwLock::new(live.capture_filter.clone()),
        split: RwLock::new(None),
        split_changed: AtomicBool::new(false),
        packets: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        ring_drops: AtomicU64::new(0),
        health: health.clone(),
        plugins: Mutex::new(Vec::new()),
        losses: Mutex::new(Default::default()),
        tls: Mutex::new(None),
    });
    sink.refresh();
    if live.kube {
        let sink = sink.clone();
        let base = trawl_pipeline::replay::load_identity(&live.replay.inventories)?;
        trawl_pipeline::live::watch_kubernetes(base, move |identity| sink.set_identity(identity))?;
    }
    let mut counters = trawl_capture::live::LiveCounters::start(&live.discovery, live.max_flows)?;
    if let Some((local, remote)) = trawl_pipeline::live::LiveSink::cluster(&*sink) {
        counters.set_cluster(local, remote)?;
    }
    health.capturing.store(true, Ordering::Relaxed);
    eprintln!("trawl worker: counting on {} interfaces: {}", counters.attached().len(), counters.attached().join(" "));
    let pods = Arc::new(Mutex::new(counters.pods().to_vec()));
    // Ctrl-C and SIGTERM stop the capture threads and this loop alike.
    let stop = super::worker::stop_on_signals()?;
    {
        let (sink, pods, stop) = (sink.clone(), pods.clone(), stop.clone());
        std::thread::Builder::new()
            .name("live-l4".into())
            .spawn(move || trawl_pipeline::live::count(counters, &*sink, &pods, &stop))?;
    }
    {
        let (sink, pods, stop, live) = (sink.clone(), pods.clone(), stop.clone(), live.clone());
        std::thread::Builder::new().name("live-l7".into()).spawn(move || {
            if let Err(e) = trawl_pipeline::live::dissect(&live, &*sink, &pods, &stop) {
                eprintln!("trawl worker: L7 capture stopped: {e:#}");
            }
        })?;
    }
    let mut link = Link::new(opts, None, health);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        sink.take_hub_filters();
        let status = WorkerStatus {
            counters: WorkerCounters {
                packets: sink.packets.load(Ordering::Relaxed),
                bytes: sink.bytes.load(Ordering::Relaxed),
                ring_drops: sink.ring_drops.load(Ordering::Relaxed),
                losses: *sink.losses.lock().unwrap_or_else(PoisonError::into_inner),
                tls: sink.tls.lock().unwrap_or_else(PoisonError::into_inner).clone().map(Box::new),
                ..Default::default()
            },
            plugins: sink.plugins.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        };
        link.flush(&sink.out, status)?;
    }
    link.close();
    Ok(())
}

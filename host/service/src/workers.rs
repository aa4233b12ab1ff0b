//! What the hub knows of each worker, as `/api/health` shows it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A worker's own counters, as it sends them (drops are data).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCounters {
    pub packets: u64,
    pub bytes: u64,
    pub open_flows: u64,
    pub conversations: u64,
    pub records_queued: u64,
    /// Records folded into counts because the queue was full.
    pub records_unsampled: u64,
    /// Records lost outright (the counts too had no room).
    pub records_dropped: u64,
    pub conversations_dropped: u64,
    /// Flows lost outright: the worker's outbox held its most flows (the
    /// hub away or behind while flows churned).
    pub flows_dropped: u64,
    pub journal_evicted: u64,
    /// Packets the kernel dropped before capture (AF_PACKET rings).
    pub ring_drops: u64,
    /// A replay that has sent everything.
    pub done: bool,
    pub losses: Losses,
    /// Its TLS plaintext capture, when live (what runs, or why not).
    pub tls: Option<Box<crate::TlsStatus>>,
}

impl WorkerCounters {
    /// Adds the counters of a worker the hub let go (its gauges, such as
    /// open flows and queued records, are not summed: they are gone).
    pub fn add_totals(&mut self, o: &WorkerCounters) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.records_unsampled += o.records_unsampled;
        self.records_dropped += o.records_dropped;
        self.conversations_dropped += o.conversations_dropped;
        self.flows_dropped += o.flows_dropped;
        self.journal_evicted += o.journal_evicted;
        self.ring_drops += o.ring_drops;
        self.losses.add(&o.losses);
    }
}

/// What capture and dissection lost or shed on the way, by cause, so a
/// thin map can be told from a quiet cluster. Drops are data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Losses {
    /// Flows the kernel's flow map had no room for: their packets are
    /// not in the L4 map.
    pub ebpf_map_full: u64,
    /// Flows the kernel's full (LRU) flow map evicted: what they carried
    /// since the last read is not in the L4 map.
    pub ebpf_evicted: u64,
    /// Connections the L7 flow table let go to make room (`--max-flows`):
    /// their next bytes start mid-stream.
    pub flows_evicted: u64,
    /// Holes in reassembled streams: bytes never captured.
    pub reassembly_gaps: u64,
    /// Times a connection gave up waiting for its holes because all
    /// connections together held the reassembly budget.
    pub reassembly_budget_releases: u64,
    /// Connections a plugin let go of: a fault, a gap it could not cross,
    /// or a message over its buffer.
    pub plugin_detaches: u64,
    /// Packets the live reorder buffer let go early, over its budget.
    pub reorder_overflow: u64,
    /// TLS plaintext chunks the kernel's ring had no room for.
    pub tls_ring_full: u64,
    /// TLS plaintext bytes not captured: ring full, unreadable memory,
    /// calls over 64 KiB, or bytes moved before the socket was known.
    pub tls_lost_bytes: u64,
}

/// A loss cause: its metric name, what it means, and its count.
pub type LossField = (&'static str, &'static str, fn(&Losses) -> u64);

impl Losses {
    /// Each cause with its name and what it means, for `/metrics`.
    pub const FIELDS: [LossField; 9] = [
        ("ebpf_map_full", "Flows the kernel's eBPF flow map had no room for (uncounted in L4).", |l| l.ebpf_map_full),
        ("ebpf_evicted", "Flows the kernel's full eBPF flow map evicted (their latest packets uncounted).", |l| {
            l.ebpf_evicted
        }),
        ("flows_evicted", "Connections the L7 flow table evicted to stay within --max-flows.", |l| l.flows_evicted),
        ("reassembly_gaps", "Holes in reassembled TCP streams (bytes never captured).", |l| l.reassembly_gaps),
        (
            "reassembly_budget_releases",
            "Connections that gave up their out-of-order bytes because the reassembly budget was full.",
            |l| l.reassembly_budget_releases,
        ),
        ("plugin_detaches", "Connections detached from their plugin (fault, gap or buffer over the limit).", |l| {
            l.plugin_detaches
        }),
        ("reorder_overflow", "Packets the live reorder buffer released early because it was over its budget.", |l| {
            l.reorder_overflow
        }),
        ("tls_ring_full", "TLS plaintext chunks dropped because the kernel's TLS ring was full.", |l| l.tls_ring_full),
        (
            "tls_lost_bytes",
            "TLS plaintext bytes not captured (ring full, unreadable memory, calls over 64 KiB, socket not yet known).",
            |l| l.tls_lost_bytes,
        ),
    ];

    /// The engine's share (from a pipeline's report), keeping the
    /// capture-side causes (eBPF map, reorder buffer) as they are.
    pub fn set_engine(&mut self, engine: &Losses) {
        self.flows_evicted = engine.flows_evicted;
        self.reassembly_gaps = engine.reassembly_gaps;
        self.reassembly_budget_releases = engine.reassembly_budget_releases;
        self.plugin_detaches = engine.plugin_detaches;
    }

    /// Field-wise sum (a hub's total over its workers).
    pub fn add(&mut self, o: &Losses) {
        self.ebpf_map_full += o.ebpf_map_full;
        self.ebpf_evicted += o.ebpf_evicted;
        self.flows_evicted += o.flows_evicted;
        self.reassembly_gaps += o.reassembly_gaps;
        self.reassembly_budget_releases += o.reassembly_budget_releases;
        self.plugin_detaches += o.plugin_detaches;
        self.reorder_overflow += o.reorder_overflow;
        self.tls_ring_full += o.tls_ring_full;
        self.tls_lost_bytes += o.tls_lost_bytes;
    }
}

/// One worker's health on the hub.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WorkerHealth {
    pub node: String,
    pub worker_id: String,
    pub boot_id: String,
    pub epoch: String,
    pub connected: bool,
    /// Connections so far (reconnects count).
    pub connections: u64,
    /// Wall-clock time of its last frame (ns).
    pub last_seen_ns: u64,
    pub flows_received: u64,
    pub records_received: u64,
    /// Records the hub already had (resends), over all workers.
    pub duplicate_records: u64,
    pub hub_open_flows: u64,
    /// Its newest packet's time, and how far that is behind the wall clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest_ts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
    #[serde(flatten)]
    pub counters: WorkerCounters,
    /// Its plugins, as its own `GET /api/plugins` lists them.
    pub plugins: Vec<Value>,
}

impl WorkerHealth {
    /// Faults over its plugins.
    pub fn plugin_faults(&self) -> u64 {
        self.plugins.iter().map(|p| p["faults"].as_u64().unwrap_or(0)).sum()
    }
}

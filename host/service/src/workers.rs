//! What the hub knows of each worker, as `/api/health` shows it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A worker's own counters, as it sends them (drops are data).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCounters {
    pub packets: u64,
    pub open_flows: u64,
    pub conversations: u64,
    pub records_queued: u64,
    /// Records folded into counts because the queue was full.
    pub records_unsampled: u64,
    /// Records lost outright (the counts too had no room).
    pub records_dropped: u64,
    pub conversations_dropped: u64,
    pub journal_evicted: u64,
    /// Packets the kernel dropped before capture (AF_PACKET rings).
    pub ring_drops: u64,
    /// A replay that has sent everything.
    pub done: bool,
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

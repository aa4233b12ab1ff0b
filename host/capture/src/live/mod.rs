//! Live capture on a node: eBPF flow counters on every workload's
//! host-side interface (L4, cluster-wide), kept in step with the
//! workloads that come and go.

pub mod discover;
pub mod packet;
pub mod tls;

use anyhow::{Context, Result};
use discover::{Discovery, PodInterface};
use std::collections::BTreeSet;
use std::net::IpAddr;
use trawl_core::counters::{CounterTable, DirectionalReading};
use trawl_core::{FlowDelta, ServicePorts, Timestamp};
use trawl_ebpf::{EbpfStats, FlowCounters};

/// Flows idle this long leave the kernel map (and close on the map).
pub const IDLE_FLOW_SECS: u64 = 60;

/// The eBPF counters on this node's workloads and the table that turns
/// their totals into deltas.
#[derive(Debug)]
pub struct LiveCounters {
    counters: FlowCounters,
    table: CounterTable,
    discovery: Discovery,
    pods: Vec<PodInterface>,
    /// IPs whose sent packets are counted elsewhere in the cluster (a
    /// worker on another node); the local workloads are added to these.
    remote_senders: Vec<IpAddr>,
    /// Only workloads with an address here are this node's (a worker
    /// picks its node's pods from the inventory); `None`: all of them.
    only: Option<std::collections::HashSet<IpAddr>>,
}

impl LiveCounters {
    /// Loads the programs and attaches to the workloads found as
    /// `discovery` says.
    pub fn start(discovery: &Discovery, max_flows: u32) -> Result<Self> {
        let counters = FlowCounters::load(max_flows).context("eBPF flow counters")?;
        let mut live = LiveCounters {
            counters,
            table: CounterTable::new(ServicePorts::default()),
            discovery: discovery.clone(),
            pods: Vec::new(),
            remote_senders: Vec::new(),
            only: None,
        };
        live.rescan()?;
        Ok(live)
    }

    /// Attaches to new workloads, lets go of gone ones, and updates which
    /// senders are counted at their own interface.
    pub fn rescan(&mut self) -> Result<()> {
        let mut pods = discover::discover(&self.discovery)?;
        if let Some(only) = &self.only {
            pods.retain(|p| p.ips.iter().any(|ip| only.contains(ip)));
        }
        let want: BTreeSet<&str> = pods.iter().map(|p| p.host_iface.as_str()).collect();
        for gone in self.counters.attached().into_iter().filter(|i| !want.contains(i.as_str())) {
            self.counters.detach(&gone);
        }
        for p in &pods {
            if let Err(e) = self.counters.attach(&p.host_iface) {
                // A pod that went away between listing and attaching.
                tracing::warn!(iface = p.host_iface, error = %e, "cannot count on interface");
            }
        }
        let mut senders: Vec<IpAddr> = pods.iter().flat_map(|p| p.ips.iter().copied()).collect();
        senders.extend(self.remote_senders.iter().copied());
        self.counters.set_counted_senders(&senders)?;
        self.pods = pods;
        Ok(())
    }

    /// The cluster's view for counting once across nodes: `local` are the
    /// addresses of this node's workloads (others found here are left to
    /// their own node's worker), `remote` the workloads that other
    /// workers count at their senders' interfaces.
    pub fn set_cluster(&mut self, local: Vec<IpAddr>, remote: Vec<IpAddr>) -> Result<()> {
        self.only = Some(local.into_iter().collect());
        self.remote_senders = remote;
        self.rescan()
    }

    pub fn pods(&self) -> &[PodInterface] {
        &self.pods
    }

    pub fn attached(&self) -> Vec<String> {
        self.counters.attached()
    }

    /// Totals per direction right now (for `trawl count`).
    pub fn readings(&self) -> Result<Vec<DirectionalReading>> {
        Ok(self.counters.read()?)
    }

    /// What grew since the last poll, and closing deltas for flows idle
    /// longer than [`IDLE_FLOW_SECS`] (dropped from the kernel map too).
    pub fn poll(&mut self, now: Timestamp) -> Result<Vec<FlowDelta>> {
        let mut deltas = self.table.update(self.counters.read()?);
        // The read had every flow in the map: the ones it lacked were
        // evicted by the kernel (a full LRU map), and end here too.
        deltas.extend(self.table.forget_unread());
        let idle_before = Timestamp(now.0.saturating_sub(IDLE_FLOW_SECS * 1_000_000_000));
        for gone in self.table.expire(idle_before) {
            self.counters.forget(gone.l4, gone.a, gone.b);
            deltas.push(gone.closing);
        }
        Ok(deltas)
    }

    pub fn stats(&self) -> EbpfStats {
        EbpfStats { evicted: self.table.stats().evicted, ..self.counters.stats() }
    }
}

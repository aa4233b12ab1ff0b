//! `trawl serve --live`: the map of this node's workloads, live.
//!
//! - **L4**: eBPF counters on every workload's host-side interface, read
//!   each second (see `trawl_ebpf`); cluster-wide, regardless of filters.
//! - **L7**: AF_PACKET rings on the *targeted* workloads' interfaces only
//!   (those the capture filters select), fed through reassembly and the
//!   plugins exactly as a capture file is.
//!
//! A packet between two captured pods of this node crosses both of their
//! interfaces; the L7 path keeps the copy at the sender's interface (and
//! at the receiver's only when the sender is not captured here), so every
//! request is dissected once.

use crate::pipeline::{Batch, Cadence, Pipeline, Report, Sink, TickClock};
use crate::replay::{ReplayOptions, load_identity};
use crate::replay_l7::plugins_for;
use crate::serve::serve_state;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trawl_capture::live::LiveCounters;
use trawl_capture::live::discover::PodInterface;
use trawl_capture::live::packet::{PacketRing, wait_any};
use trawl_core::{LinkType, Timestamp};
use trawl_service::{CaptureFilter, SharedState, TlsStatus, lock};

/// Where live capture delivers: the graph service (`trawl serve --live`)
/// or a worker's outbox for the hub (`trawl worker --live`).
pub trait LiveSink: Send + Sync {
    /// Identity and capture filters: which workloads get payload capture.
    fn targeting(&self) -> (Arc<trawl_core::Identity>, CaptureFilter);
    /// The legend of the plugins in use at the start.
    fn legend(&self, _entries: Vec<trawl_core::l7map::LegendEntry>) {}
    /// A plugin loaded later.
    fn upsert_legend(&self, _entry: trawl_core::l7map::LegendEntry) {}
    fn flows(&self, deltas: Vec<trawl_core::FlowDelta>, stats: trawl_ebpf::EbpfStats, now: Timestamp);
    /// The pipeline's records; its flow deltas are dropped (L4 comes from
    /// the eBPF counters, which see every workload).
    fn batch(&self, batch: Batch, report: &Report<'_>);
    /// The interfaces counted and captured, and what capture lost: packets
    /// the rings dropped and packets the reorder buffer let go early.
    fn interfaces(&self, counted: Vec<String>, payload: Vec<String>, ring_drops: u64, reorder_overflow: u64);
    /// Plugins an operator asked to take out of quarantine since the last
    /// call.
    fn plugin_resets(&self) -> Vec<String> {
        Vec::new()
    }
    /// Plugins a hub pushed or took back since the last call.
    fn plugin_changes(&self) -> Vec<crate::pipeline::PluginChange> {
        Vec::new()
    }
    /// A new view of the cluster for counting once across nodes (this
    /// node's workload addresses, other nodes'), when it changed.
    fn cluster(&self) -> Option<(Vec<IpAddr>, Vec<IpAddr>)> {
        None
    }
    /// TLS capture's state, and what its kernel side lost (chunks the ring
    /// had no room for, plaintext bytes lost for any reason).
    fn tls(&self, _status: TlsStatus, _ring_full: u64, _lost_bytes: u64) {}
    /// Where whole packets are kept for `/api/pcap`, if anywhere.
    fn packet_ring(&self) -> Option<trawl_service::packets::SharedRing> {
        None
    }
}

/// Batches the L7 thread may hand the ingest thread before it waits for
/// it (each is at most a collect period of records).
const INGEST_QUEUE: usize = 64;

type Change = Box<dyn FnOnce(&mut trawl_service::GraphState) + Send>;

/// The graph service as a live sink. With an ingest thread
/// ([`ServiceSink::with_ingest_thread`]), records reach the service from
/// there: resolving and filing them (a third of the live L7 thread's time)
/// no longer holds up reading the rings, which drop what waits too long.
#[derive(Debug, Clone)]
pub struct ServiceSink(pub SharedState, Option<std::sync::mpsc::SyncSender<Change>>);

impl ServiceSink {
    /// A sink that applies every change on the calling thread.
    pub fn new(state: SharedState) -> Self {
        ServiceSink(state, None)
    }

    /// A sink whose batches are applied, in order, by a thread of their
    /// own; it ends when the last clone of the sink is dropped. A full
    /// queue makes the caller wait: memory stays bounded, and what capture
    /// loses meanwhile is counted as ring drops.
    pub fn with_ingest_thread(state: SharedState) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Change>(INGEST_QUEUE);
        let applied = state.clone();
        std::thread::Builder::new().name("live-ingest".into()).spawn(move || {
            while let Ok(change) = rx.recv() {
                applied.update(change);
            }
        })?;
        Ok(ServiceSink(state, Some(tx)))
    }
}

impl LiveSink for ServiceSink {
    fn targeting(&self) -> (Arc<trawl_core::Identity>, CaptureFilter) {
        let st = lock(&self.0);
        (st.identity().clone(), st.capture_filter().clone())
    }

    fn legend(&self, entries: Vec<trawl_core::l7map::LegendEntry>) {
        lock(&self.0).set_legend(entries);
    }

    fn packet_ring(&self) -> Option<trawl_service::packets::SharedRing> {
        lock(&self.0).packet_ring().cloned()
    }

    fn flows(&self, deltas: Vec<trawl_core::FlowDelta>, stats: trawl_ebpf::EbpfStats, now: Timestamp) {
        self.0.update(move |st| {
            for d in &deltas {
                st.add_delta(d);
                st.counters_mut().bytes += d.to_server.bytes + d.to_client.bytes;
            }
            st.counters_mut().packets = stats.packets;
            st.counters_mut().packets_dropped = stats.skipped + stats.map_full;
            st.counters_mut().losses.ebpf_map_full = stats.map_full;
            st.counters_mut().losses.ebpf_evicted = stats.evicted;
            st.advance_to(now);
        });
    }

    fn upsert_legend(&self, entry: trawl_core::l7map::LegendEntry) {
        lock(&self.0).upsert_legend(entry);
    }

    fn plugin_resets(&self) -> Vec<String> {
        lock(&self.0).take_plugin_resets()
    }

    fn batch(&self, batch: Batch, report: &Report<'_>) {
        let change = crate::serve::batch_change(batch, report, false);
        match &self.1 {
            // The ingest thread is gone only if it panicked: apply here.
            Some(ingest) => {
                if let Err(std::sync::mpsc::SendError(change)) = ingest.send(Box::new(change)) {
                    self.0.update(change);
                }
            }
            None => self.0.update(change),
        }
    }

    fn interfaces(&self, counted: Vec<String>, mut payload: Vec<String>, ring_drops: u64, reorder_overflow: u64) {
        payload.sort();
        let mut st = lock(&self.0);
        let live = st.live_mut();
        (live.counted, live.payload) = (counted, payload);
        st.counters_mut().ring_drops = ring_drops;
        st.counters_mut().losses.reorder_overflow = reorder_overflow;
    }

    fn tls(&self, status: TlsStatus, ring_full: u64, lost_bytes: u64) {
        let mut st = lock(&self.0);
        st.live_mut().tls = Some(status);
        st.counters_mut().losses.tls_ring_full = ring_full;
        st.counters_mut().losses.tls_lost_bytes = lost_bytes;
    }
}

/// How often the counters are read and the pods listed again.
const POLL: Duration = Duration::from_secs(1);
const RESCAN_EVERY: u32 = 3;
/// Ring size per targeted interface: 8 blocks of 1 MiB.
const RING_BLOCK: usize = 1 << 20;
const RING_BLOCKS: usize = 8;

/// The kernel's TLS plaintext ring: room for about 500 full TLS records
/// between two drains.
const TLS_RING_BYTES: u32 = 8 << 20;

/// How often live records reach the sink.
const PUBLISH_EVERY: Duration = Duration::from_millis(200);

/// A live sink as a pipeline's sink.
struct LiveOut<'a>(&'a dyn LiveSink);

impl Sink for LiveOut<'_> {
    fn legend(&mut self, entry: trawl_core::l7map::LegendEntry) {
        self.0.upsert_legend(entry);
    }

    fn batch(&mut self, batch: Batch, report: &Report<'_>) {
        self.0.batch(batch, report);
    }

    fn plugin_resets(&mut self) -> Vec<String> {
        self.0.plugin_resets()
    }

    fn plugin_changes(&mut self) -> Vec<crate::pipeline::PluginChange> {
        self.0.plugin_changes()
    }
}

#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// How this node's workloads are found.
    pub discovery: trawl_capture::live::discover::Discovery,
    /// Inventories, plugins and rate window (the capture path is unused).
    pub replay: ReplayOptions,
    /// Where the API listens, and who may use it.
    pub api: trawl_service::auth::Access,
    pub capture_filter: CaptureFilter,
    pub max_flows: u32,
    /// Also take identity from the Kubernetes API (in-cluster config or
    /// kubeconfig), on top of the inventories.
    pub kube: bool,
    /// TLS plaintext capture through OpenSSL uprobes.
    pub tls: crate::tls::TlsOptions,
}

/// Keeps an identity in step with the Kubernetes API, on a thread of its
/// own: `publish` gets each new one (the service's, or a worker's).
pub fn watch_kubernetes(
    base: trawl_core::Identity,
    mut publish: impl FnMut(Arc<trawl_core::Identity>) + Send + 'static,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = runtime
        .block_on(kube::Client::try_default())
        .map_err(|e| anyhow::anyhow!("cannot reach the Kubernetes API (in-cluster config or kubeconfig): {e}"))?;
    std::thread::Builder::new().name("kube-watch".into()).spawn(move || {
        runtime.block_on(trawl_k8s::watch(client, base, move |identity, kube| {
            tracing::debug!(events = kube.events, namespaces = kube.namespaces.len(), "identity updated from the API");
            publish(identity);
        }));
    })?;
    Ok(())
}

/// [`watch_kubernetes`] into a graph service's identity.
pub fn watch_kubernetes_into(state: SharedState, base: trawl_core::Identity) -> anyhow::Result<()> {
    watch_kubernetes(base, move |identity| state.update(move |st| st.set_identity(identity)))
}

/// Now, by the wall clock: where live rate windows end.
pub fn wall_now() -> Timestamp {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp(d.as_nanos() as u64)
}

/// Starts the counters (failing at once if eBPF cannot run), then serves.
pub fn run(opts: LiveOptions) -> anyhow::Result<()> {
    let identity = Arc::new(load_identity(&opts.replay.inventories)?);
    let state = crate::serve::new_state(&opts.replay, identity, opts.capture_filter.clone())?;
    if opts.kube {
        let base = load_identity(&opts.replay.inventories)?;
        watch_kubernetes_into(state.clone(), base)?;
    }
    let counters = LiveCounters::start(&opts.discovery, opts.max_flows)?;
    eprintln!(
        "trawl: counting L4 on {} workload interfaces: {}",
        counters.attached().len(),
        counters.attached().join(" ")
    );
    let pods = Arc::new(Mutex::new(counters.pods().to_vec()));
    let stop = Arc::new(AtomicBool::new(false));
    let l7 = {
        let sink = ServiceSink::with_ingest_thread(state.clone())?;
        let (pods, stop, opts) = (pods.clone(), stop.clone(), opts.clone());
        std::thread::Builder::new().name("live-l7".into()).spawn(move || {
            if let Err(e) = dissect(&opts, &sink, &pods, &stop) {
                eprintln!("trawl: L7 capture stopped: {e:#}");
            }
        })?
    };
    let feeder = {
        let (sink, stop) = (ServiceSink::new(state.clone()), stop.clone());
        move || count(counters, &sink, &pods, &stop)
    };
    let served = serve_state(state, opts.api.clone(), opts.replay.otlp.clone(), "live-l4", feeder);
    stop.store(true, Ordering::Relaxed);
    let _ = l7.join();
    served
}

/// The L4 side: read the counters every second into the sink.
pub fn count(mut counters: LiveCounters, sink: &dyn LiveSink, pods: &Mutex<Vec<PodInterface>>, stop: &AtomicBool) {
    let mut rounds = 0u32;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(POLL);
        rounds += 1;
        if rounds.is_multiple_of(RESCAN_EVERY) {
            let rescanned = match sink.cluster() {
                Some((local, remote)) => counters.set_cluster(local, remote),
                None => counters.rescan(),
            };
            match rescanned {
                Ok(()) => *pods.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = counters.pods().to_vec(),
                Err(e) => tracing::warn!(error = %e, "cannot list workloads"),
            }
        }
        let now = wall_now();
        match counters.poll(now) {
            Ok(deltas) => sink.flows(deltas, counters.stats(), now),
            Err(e) => tracing::warn!(error = %e, "cannot read the flow counters"),
        }
    }
}

/// The source IP of an Ethernet frame, if it carries IP.
fn frame_source(frame: &[u8]) -> Option<IpAddr> {
    match frame.get(12..14)? {
        [0x08, 0x00] => {
            let b: [u8; 4] = frame.get(26..30)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        [0x86, 0xdd] => {
            let b: [u8; 16] = frame.get(22..38)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

/// How long a packet waits for older ones from other rings: a ring hands
/// over a block at the latest `RETIRE_MS` (50 ms) after its first packet.
const REORDER_NS: u64 = 250_000_000;
/// Packets held at most; beyond this the oldest go on regardless.
const REORDER_MAX: usize = 100_000;
/// Bytes of packets held at most (a flood of full-sized frames reaches
/// this long before the packet cap).
const REORDER_MAX_BYTES: usize = 16 << 20;

/// The live L7 flow table: `--max-flows` connections at most (the least
/// recently active goes first), idle ones ended as the eBPF counters end
/// theirs. TCP gets longer: a keep-alive connection idle for a minute
/// would otherwise come back mid-stream, and some protocols (HTTP/2's
/// header compression) cannot be picked up there.
pub fn live_flow_config(max_flows: u32) -> trawl_core::flow::FlowTableConfig {
    trawl_core::flow::FlowTableConfig {
        max_flows: max_flows.max(1),
        udp_idle_timeout_secs: trawl_capture::live::IDLE_FLOW_SECS,
        tcp_idle_timeout_secs: 5 * 60,
        ..trawl_core::flow::FlowTableConfig::default()
    }
}

/// Puts packets from several rings back in time order. Each ring is in
/// order, but one pod's SYN can sit in its ring's block while the other
/// pod's SYN-ACK is read first; reassembly and the dissectors want the
/// conversation as it happened.
///
/// Packets held are kept sorted, by time then arrival. Those read in one
/// round are sorted together (a few runs already in order, one per ring:
/// the sort merges them) and merged into the held ones from the first
/// they precede, which for a round newer than all held is an append. A
/// binary heap over every held packet took 5 % of a busy agent's time.
#[derive(Debug)]
struct Reorder {
    held: VecDeque<Held>,
    /// Read since the last [`Reorder::settle`], in arrival order.
    incoming: Vec<Held>,
    /// Room for the held packets a round merges with (kept, not
    /// reallocated per round).
    older: Vec<Held>,
    newest: u64,
    seq: u64,
    bytes: usize,
    max_bytes: usize,
    /// Packets let go before their time because the buffer was full.
    overflow: u64,
}

/// A held packet: timestamp, arrival order, frame, wire length.
type Held = (u64, u64, Vec<u8>, u32);

impl Default for Reorder {
    fn default() -> Self {
        Reorder {
            held: VecDeque::new(),
            incoming: Vec::new(),
            older: Vec::new(),
            newest: 0,
            seq: 0,
            bytes: 0,
            max_bytes: REORDER_MAX_BYTES,
            overflow: 0,
        }
    }
}

impl Reorder {
    fn push(&mut self, ts: u64, frame: &[u8], wire_len: u32) {
        self.seq += 1;
        self.newest = self.newest.max(ts);
        self.bytes += frame.len();
        self.incoming.push((ts, self.seq, frame.to_vec(), wire_len));
    }

    /// Files the packets read since the last call among the held ones.
    fn settle(&mut self) {
        if self.incoming.is_empty() {
            return;
        }
        // Stable: equal times keep their arrival order.
        self.incoming.sort_by_key(|h| h.0);
        let first = self.incoming[0].0;
        // Held packets up to the first new one's time stay as they are
        // (at equal times they arrived first).
        let from = self.held.partition_point(|h| h.0 <= first);
        if from == self.held.len() {
            self.held.extend(self.incoming.drain(..));
            return;
        }
        let mut buf = std::mem::take(&mut self.older);
        buf.extend(self.held.drain(from..));
        let mut older = buf.drain(..).peekable();
        let mut newer = self.incoming.drain(..).peekable();
        loop {
            let take_older = match (older.peek(), newer.peek()) {
                (Some(o), Some(n)) => (o.0, o.1) <= (n.0, n.1),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_older { older.next() } else { newer.next() };
            self.held.extend(next);
        }
        drop(older);
        self.older = buf;
    }

    /// The oldest packet if it has waited long enough (or `all`), or if
    /// the buffer is over its packet or byte budget (counted).
    fn pop_due(&mut self, all: bool) -> Option<(u64, Vec<u8>, u32)> {
        self.settle();
        let &(ts, ..) = self.held.front()?;
        let due = all || ts.saturating_add(REORDER_NS) <= self.newest;
        let over = self.held.len() > REORDER_MAX || self.bytes > self.max_bytes;
        if due || over {
            if !due {
                self.overflow += 1;
            }
            let (ts, _, frame, wire_len) = self.held.pop_front()?;
            self.bytes -= frame.len();
            return Some((ts, frame, wire_len));
        }
        None
    }
}

/// The L7 side: rings on the targeted pods' interfaces into the engine.
pub fn dissect(
    opts: &LiveOptions,
    sink: &dyn LiveSink,
    pods: &Mutex<Vec<PodInterface>>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let (plugins, reloader, _rejected) = plugins_for(&opts.replay)?;
    let cadence = Cadence { wall: Some(PUBLISH_EVERY), ..Cadence::default() };
    let mut replay = opts.replay.clone();
    replay.flows = live_flow_config(opts.max_flows);
    let mut pipeline = Pipeline::new(&replay, plugins, reloader, cadence)
        .with_tick_clock(TickClock::Wall)
        .without_flow_deltas()
        .with_packet_ring(sink.packet_ring());
    sink.legend(pipeline.legend());
    let mut out = LiveOut(sink);
    // The dispatcher asks the filters as of the last retarget: the rings
    // bring only targeted pods' traffic, and of it only the connections
    // with a targeted end are dissected.
    let targets: Arc<Mutex<(Arc<trawl_core::Identity>, CaptureFilter)>> = Arc::new(Mutex::new(sink.targeting()));
    {
        let targets = targets.clone();
        pipeline.set_targeting(Box::new(move |conn, ts| {
            let t = targets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            t.1.admits_conn(&t.0, conn, ts)
        }));
    }
    let mut tls = match crate::tls::TlsLive::start(opts.tls, TLS_RING_BYTES) {
        Ok(tls) => tls,
        Err(e) if opts.tls.mode == crate::tls::TlsMode::On => return Err(e.context("--tls on")),
        Err(e) => {
            let why = format!("{e:#}");
            eprintln!("trawl: TLS plaintext capture is off: {why}");
            sink.tls(crate::tls::unavailable(why), 0, 0);
            None
        }
    };
    let mut rings: Vec<PacketRing> = Vec::new();
    let mut captured: HashSet<IpAddr> = HashSet::new();
    let mut drops_before: HashMap<String, u64> = HashMap::new();
    let mut retarget = Instant::now() - POLL * RESCAN_EVERY;
    let mut last_interfaces = Instant::now();
    let mut reorder = Reorder::default();
    let mut counted: Vec<String> = Vec::new();
    let mut last_packet = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if retarget.elapsed() >= POLL * RESCAN_EVERY {
            retarget = Instant::now();
            let pods = pods.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            let (identity, filter) = sink.targeting();
            *targets.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (identity.clone(), filter.clone());
            let now = wall_now();
            let targeted: Vec<&PodInterface> =
                pods.iter().filter(|p| p.ips.iter().any(|&ip| filter.targets(&identity.resolve(ip, now)))).collect();
            let want: HashSet<&str> = targeted.iter().map(|p| p.host_iface.as_str()).collect();
            rings.retain(|r| want.contains(r.iface.as_str()));
            for p in &targeted {
                if rings.iter().any(|r| r.iface == p.host_iface) {
                    continue;
                }
                match PacketRing::open(&p.host_iface, RING_BLOCK, RING_BLOCKS) {
                    Ok(r) => rings.push(r),
                    Err(e) => tracing::warn!(iface = p.host_iface, error = %e, "cannot capture payloads"),
                }
            }
            captured = targeted.iter().flat_map(|p| p.ips.iter().copied()).collect();
            if let Some(tls) = &mut tls {
                tls.retarget(&targeted);
            }
            counted = pods.iter().map(|p| p.host_iface.clone()).collect();
            tracing::debug!(rings = rings.len(), "L7 capture retargeted");
        }
        let mut got = 0;
        for ring in &mut rings {
            got += ring.read_block(|p| {
                // Received by a pod from a pod captured here: its copy at
                // the sender's interface is the one dissected.
                if p.outgoing && frame_source(p.data).is_some_and(|ip| captured.contains(&ip)) {
                    return;
                }
                reorder.push(p.ts_ns, p.data, p.wire_len);
            });
        }
        // Rings quiet for longer than a block's retire time have handed
        // over all they hold: release everything.
        if got > 0 {
            last_packet = Instant::now();
        }
        let quiet = last_packet.elapsed() > Duration::from_nanos(REORDER_NS);
        while let Some((ts, frame, wire_len)) = reorder.pop_due(quiet) {
            pipeline.frame_owned(LinkType::Ethernet, Timestamp(ts), frame, wire_len, &mut out);
        }
        // TLS plaintext goes straight to the dispatcher: it needs no
        // reordering (a process's calls come in order).
        if let Some(tls) = &mut tls {
            got += tls.pump(&mut pipeline);
        }
        if got == 0 {
            wait_any(&rings, 100);
        }
        // Plugins tick by the wall clock, so connections that went quiet
        // finish their records.
        pipeline.idle(&mut out)?;
        if last_interfaces.elapsed() >= PUBLISH_EVERY {
            last_interfaces = Instant::now();
            for r in &mut rings {
                let d = r.drops();
                *drops_before.entry(r.iface.clone()).or_default() = d;
            }
            let dropped = drops_before.values().sum();
            let payload = rings.iter().map(|r| r.iface.clone()).collect();
            sink.interfaces(counted.clone(), payload, dropped, reorder.overflow);
            if let Some(tls) = &tls {
                let (status, ring_full, lost) = tls.status();
                sink.tls(status, ring_full, lost);
            }
        }
    }
    if let Some(tls) = &mut tls {
        tls.finish(&mut pipeline);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_come_out_in_time_order() {
        let mut r = Reorder::default();
        r.push(300, b"c", 1);
        r.push(100, b"a", 1);
        assert_eq!(r.pop_due(false), None, "nothing has waited long enough");
        r.push(REORDER_NS + 200, b"d", 1);
        assert_eq!(r.pop_due(false).map(|p| p.1), Some(b"a".to_vec()));
        assert_eq!(r.pop_due(false), None);
        assert_eq!(r.pop_due(true).map(|p| p.1), Some(b"c".to_vec()));
        assert_eq!(r.pop_due(true).map(|p| p.1), Some(b"d".to_vec()));
    }

    #[test]
    fn rounds_of_interleaved_rings_come_out_by_time_then_arrival() {
        // Three rings, each in time order, read in rounds that overlap in
        // time; some times repeat. Nothing is due until the end.
        let mut r = Reorder::default();
        let mut all = Vec::new();
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        let mut clock = [0u64; 3];
        for _round in 0..50 {
            for (ring, t) in clock.iter_mut().enumerate() {
                for _ in 0..next() % 5 {
                    *t += next() % 3;
                    let id = all.len() as u32;
                    r.push(*t, &id.to_le_bytes(), ring as u32);
                    all.push((*t, id));
                }
            }
            // A round's packets are filed when anything is asked for.
            assert_eq!(r.pop_due(false), None);
        }
        let mut want = all.clone();
        want.sort_by_key(|&(t, id)| (t, id));
        let got: Vec<(u64, u32)> = std::iter::from_fn(|| r.pop_due(true))
            .map(|(t, f, _)| (t, u32::from_le_bytes(f.try_into().unwrap())))
            .collect();
        assert_eq!(got, want);
        assert_eq!(r.bytes, 0);
    }

    #[test]
    fn a_full_reorder_buffer_lets_the_oldest_go_and_counts_it() {
        let mut r = Reorder { max_bytes: 10, ..Reorder::default() };
        r.push(100, &[0; 6], 6);
        r.push(200, &[0; 6], 6);
        assert_eq!(r.pop_due(false).map(|p| p.0), Some(100), "12 bytes held, over 10");
        assert_eq!(r.pop_due(false), None, "6 bytes: within the budget, and not yet due");
        assert_eq!(r.overflow, 1);
    }

    #[test]
    fn frame_sources() {
        let mut f = vec![0u8; 40];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[26..30].copy_from_slice(&[10, 213, 0, 5]);
        assert_eq!(frame_source(&f), Some("10.213.0.5".parse().unwrap()));
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(frame_source(&f), None);
        assert_eq!(frame_source(&f[..10]), None);
    }
}

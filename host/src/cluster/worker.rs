//! `trawl worker`: captures (here: replays its part of a capture),
//! reassembles and dissects locally, and sends the hub cumulative flow
//! totals and L7 records.
//!
//! Memory is bounded: records wait in a queue of `max_records` and the
//! newest are dropped (and counted) when the hub cannot keep up, and a
//! flow's totals are kept only until the hub has them closed. When the
//! connection breaks the worker reconnects with backoff and sends every
//! open flow's totals again, which the hub counts only as far as they grew.

use super::proto::{FlowTotals, PROTOCOL_VERSION, ToHub, ToWorker, WireRecord, read_frame, write_frame};
use crate::capture::CaptureFile;
use crate::plugins::HostRecord;
use crate::replay::ReplayOptions;
use crate::replay_l7::{engine_for, plugins_for, wait_until_due};
use anyhow::{Context, bail};
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::io::BufReader;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use trawl_core::decode::{Decoded, decode};
use trawl_core::flow::Orientation;
use trawl_core::{FlowDelta, L4Proto, Timestamp};
use trawl_sdk::abi::Dir;

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub hub: SocketAddr,
    pub token: String,
    pub node: String,
    pub worker_id: String,
    /// The capture and plugins (inventories are the hub's business).
    pub replay: ReplayOptions,
    pub speed: Option<f64>,
    /// `(i, n)`: this worker replays the flows whose endpoint hash is `i`
    /// modulo `n`, so `n` workers split one capture without overlap.
    pub part: (u32, u32),
    pub max_records: usize,
}

type Key = (bool, (IpAddr, u16), (IpAddr, u16), u64);

/// What the worker has counted and not yet sent.
#[derive(Debug, Default)]
struct Outbox {
    totals: HashMap<Key, FlowTotals>,
    dirty: HashSet<Key>,
    records: VecDeque<WireRecord>,
    records_dropped: u64,
}

impl Outbox {
    fn add_delta(&mut self, d: &FlowDelta) {
        let key = (d.l4 == L4Proto::Tcp, (d.client.ip, d.client.port), (d.server.ip, d.server.port), d.first_ts.0);
        let t = self.totals.entry(key).or_insert_with(|| FlowTotals {
            tcp: key.0,
            client: key.1,
            server: key.2,
            first_ts: key.3,
            last_ts: 0,
            to_server: [0; 3],
            to_client: [0; 3],
            syn: d.orientation == Orientation::Syn,
            closed: false,
        });
        for (acc, c) in [(&mut t.to_server, &d.to_server), (&mut t.to_client, &d.to_client)] {
            acc[0] += c.packets;
            acc[1] += c.bytes;
            acc[2] += c.ip_bytes;
        }
        t.last_ts = t.last_ts.max(d.last_ts.0);
        t.closed |= d.closed;
        self.dirty.insert(key);
    }

    fn add_record(&mut self, h: &HostRecord, max: usize) {
        if self.records.len() >= max {
            self.records_dropped += 1;
            return;
        }
        let r = &h.record;
        let (src, dst) = match r.request_dir {
            Dir::ToServer => (h.conn.client, h.conn.server),
            Dir::ToClient => (h.conn.server, h.conn.client),
        };
        let (record, _, _) = crate::records::to_l7(h, &trawl_core::Identity::new());
        self.records.push_back(WireRecord {
            protocol: record.protocol,
            tcp: h.conn.l4 == L4Proto::Tcp,
            method: record.method,
            summary: record.summary,
            status_code: record.status_code,
            error: record.error,
            request_size: record.request_size,
            response_size: record.response_size,
            elapsed_us: record.elapsed_us,
            request_ts: record.request_ts.map(|t| t.0),
            response_ts: record.response_ts.map(|t| t.0),
            src: (src.ip, src.port),
            dst: (dst.ip, dst.port),
            plugin: (record.plugin.name, record.plugin.version, record.plugin.generation),
            fields: serde_json::Value::Object(record.fields).to_string(),
        });
    }
}

/// The connection to the hub, reopened with backoff when it breaks.
struct Link {
    opts: WorkerOptions,
    boot_id: String,
    stream: Option<TcpStream>,
    next_try: Instant,
    backoff: Duration,
}

impl Link {
    /// A link not yet connected; the boot id tells the hub this run from
    /// an earlier one of the same worker.
    fn new(opts: WorkerOptions) -> Self {
        let boot_id = format!("{}-{}", std::process::id(), crate::live::wall_now().0);
        Link { opts, boot_id, stream: None, next_try: Instant::now(), backoff: Duration::from_millis(200) }
    }

    fn connect(&mut self) -> anyhow::Result<TcpStream> {
        let stream = TcpStream::connect_timeout(&self.opts.hub, Duration::from_secs(2))?;
        let mut w = stream.try_clone()?;
        write_frame(
            &mut w,
            &ToHub::Hello {
                version: PROTOCOL_VERSION,
                node: self.opts.node.clone(),
                worker_id: self.opts.worker_id.clone(),
                boot_id: self.boot_id.clone(),
                token: self.opts.token.clone(),
            },
        )?;
        match read_frame::<ToWorker>(&mut BufReader::new(stream.try_clone()?))? {
            ToWorker::Welcome { .. } => Ok(stream),
            ToWorker::Refused { reason } => bail!("the hub refused this worker: {reason}"),
        }
    }

    /// Sends what is due; on a broken link, keeps it for the next try.
    fn flush(&mut self, out: &mut Outbox, packets: u64, done: bool) -> anyhow::Result<bool> {
        if self.stream.is_none() {
            if Instant::now() < self.next_try {
                return Ok(false);
            }
            match self.connect() {
                Ok(s) => {
                    self.stream = Some(s);
                    self.backoff = Duration::from_millis(200);
                    // A new connection gets every flow's totals again.
                    out.dirty.extend(out.totals.keys().copied());
                }
                Err(e) if e.to_string().contains("refused this worker") => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, hub = %self.opts.hub, "cannot reach the hub; retrying");
                    self.next_try = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
                    return Ok(false);
                }
            }
        }
        let Some(stream) = self.stream.as_mut() else { return Ok(false) };
        let flows: Vec<FlowTotals> = out.dirty.iter().filter_map(|k| out.totals.get(k).cloned()).collect();
        let records: Vec<WireRecord> = out.records.iter().take(5_000).cloned().collect();
        let sent = (|| -> std::io::Result<()> {
            for chunk in flows.chunks(20_000) {
                write_frame(stream, &ToHub::Flows(chunk.to_vec()))?;
            }
            if !records.is_empty() {
                write_frame(stream, &ToHub::Records(records.clone()))?;
            }
            write_frame(stream, &ToHub::Status { packets, records_dropped: out.records_dropped, done })
        })();
        match sent {
            Ok(()) => {
                out.dirty.clear();
                out.records.drain(..records.len());
                // A closed flow the hub has will not grow again: memory
                // stays with the open flows.
                out.totals.retain(|_, t| !t.closed);
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "lost the hub; reconnecting");
                self.stream = None;
                Ok(false)
            }
        }
    }
}

/// Whether the frame belongs to part `i` of `n`: by a hash of its two
/// endpoints, the same both ways, so a flow stays in one part.
fn in_part(link: trawl_core::LinkType, frame: &[u8], (i, n): (u32, u32)) -> bool {
    if n <= 1 {
        return true;
    }
    let Decoded::Packet(p) = decode(link, frame) else { return i == 0 };
    let (a, b) = ((p.src, p.src_port), (p.dst, p.dst_port));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (a.min(b), a.max(b)).hash(&mut h);
    (h.finish() % u64::from(n)) as u32 == i
}

/// Replays this worker's part of the capture to the hub, then waits until
/// everything is sent.
pub fn run(opts: WorkerOptions) -> anyhow::Result<()> {
    let (plugins, _reloader, _rejected) = plugins_for(&opts.replay)?;
    let mut engine = engine_for(&opts.replay, plugins);
    let mut link = Link::new(opts.clone());
    let mut out = Outbox::default();
    let mut capture = CaptureFile::open(&opts.replay.capture)?;
    let started = Instant::now();
    let mut first: Option<u64> = None;
    let mut last_flush = Instant::now();
    let mut failure: Option<anyhow::Error> = None;
    let collect = |engine: &mut trawl_core::engine::Engine<crate::plugins::Dispatcher>, out: &mut Outbox| {
        let now = engine.now();
        engine.sink_mut().tick(now);
        for h in engine.sink_mut().take_records() {
            out.add_record(&h, opts.max_records);
        }
        for d in engine.take_deltas() {
            out.add_delta(&d);
        }
    };
    capture.for_each_frame(|frame| {
        if failure.is_some() || !in_part(frame.link, frame.data, opts.part) {
            return;
        }
        let first_ts = *first.get_or_insert(frame.ts.0);
        if let Some(speed) = opts.speed {
            wait_until_due(started, Duration::from_nanos(frame.ts.0.saturating_sub(first_ts)), speed, || {});
        }
        engine.process(frame.link, Timestamp(frame.ts.0), frame.data, frame.wire_len);
        if last_flush.elapsed() >= Duration::from_millis(100) {
            last_flush = Instant::now();
            collect(&mut engine, &mut out);
            if let Err(e) = link.flush(&mut out, engine.stats().frames, false) {
                failure = Some(e);
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    engine.finish();
    collect(&mut engine, &mut out);
    // Keep trying until the hub has everything.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = out.records.is_empty();
        if link.flush(&mut out, engine.stats().frames, last)? && out.records.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("the hub at {} did not take the last counts within 60 s", opts.hub);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // One more Status with done set, now that the queue is empty.
    link.flush(&mut out, engine.stats().frames, true).context("final status")?;
    Ok(())
}

/// The worker's outbox as the sink of live capture.
struct WorkerSink {
    out: std::sync::Mutex<Outbox>,
    identity: std::sync::Arc<trawl_core::Identity>,
    filter: crate::service::CaptureFilter,
    max_records: usize,
    packets: std::sync::atomic::AtomicU64,
    /// Targeted pods on other nodes: a conversation they started is
    /// reported by their node's worker (the client's side), not twice.
    remote_pods: HashSet<IpAddr>,
}

impl WorkerSink {
    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl crate::live::LiveSink for WorkerSink {
    fn targeting(&self) -> (std::sync::Arc<trawl_core::Identity>, crate::service::CaptureFilter) {
        (self.identity.clone(), self.filter.clone())
    }

    fn flows(&self, deltas: &[FlowDelta], stats: trawl_ebpf::EbpfStats, _now: Timestamp) {
        let mut out = self.outbox();
        for d in deltas {
            out.add_delta(d);
        }
        self.packets.store(stats.packets, std::sync::atomic::Ordering::Relaxed);
    }

    fn records(
        &self,
        engine: &mut trawl_core::engine::Engine<crate::plugins::Dispatcher>,
        _reloader: Option<&crate::plugins::registry::Reloader>,
    ) {
        let records = engine.sink_mut().take_records();
        drop(engine.take_deltas());
        let mut out = self.outbox();
        for h in records.iter().filter(|h| !self.remote_pods.contains(&h.conn.client.ip)) {
            out.add_record(h, self.max_records);
        }
    }

    fn interfaces(&self, counted: Vec<String>, payload: Vec<String>, ring_drops: u64) {
        tracing::debug!(counted = counted.len(), payload = payload.len(), ring_drops, "live interfaces");
    }
}

/// `trawl worker --live`: eBPF counters on every workload of this node
/// and payload capture on the targeted ones, sent to the hub until the
/// process is stopped (its programs go with it).
pub fn run_live(opts: WorkerOptions, live: crate::live::LiveOptions) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let identity = Arc::new(crate::replay::load_identity(&live.replay.inventories)?);
    let mut counters = crate::capture::live::LiveCounters::start(&live.netns_prefix, live.max_flows)?;
    // Counting once across nodes: this worker takes its node's pods; the
    // other nodes' pods are counted by their workers at their own
    // interfaces, so packets from them are not counted again here.
    let now = crate::live::wall_now();
    let pods_known = identity.pod_addresses(now);
    let mut remote_pods = HashSet::new();
    if !pods_known.is_empty() {
        let (local, remote): (Vec<_>, Vec<_>) =
            pods_known.into_iter().partition(|(_, node)| node.as_deref() == Some(opts.node.as_str()));
        let remote: Vec<IpAddr> = remote.into_iter().map(|(ip, _)| ip).collect();
        // Their workers capture payloads only of the pods the filters target.
        remote_pods
            .extend(remote.iter().copied().filter(|&ip| live.capture_filter.targets(&identity.resolve(ip, now))));
        counters.set_cluster(local.into_iter().map(|(ip, _)| ip).collect(), remote)?;
    }
    eprintln!("trawl worker: counting on {} interfaces: {}", counters.attached().len(), counters.attached().join(" "));
    let sink = Arc::new(WorkerSink {
        out: Mutex::new(Outbox::default()),
        identity,
        filter: live.capture_filter.clone(),
        max_records: opts.max_records,
        packets: std::sync::atomic::AtomicU64::new(0),
        remote_pods,
    });
    let pods = Arc::new(Mutex::new(counters.pods().to_vec()));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (sink, pods, stop) = (sink.clone(), pods.clone(), stop.clone());
        std::thread::Builder::new()
            .name("live-l4".into())
            .spawn(move || crate::live::count(counters, &*sink, &pods, &stop))?;
    }
    {
        let (sink, pods, stop, live) = (sink.clone(), pods.clone(), stop.clone(), live.clone());
        std::thread::Builder::new().name("live-l7".into()).spawn(move || {
            if let Err(e) = crate::live::dissect(&live, &*sink, &pods, &stop) {
                eprintln!("trawl worker: L7 capture stopped: {e:#}");
            }
        })?;
    }
    let mut link = Link::new(opts);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let packets = sink.packets.load(Ordering::Relaxed);
        link.flush(&mut sink.outbox(), packets, false)?;
    }
    Ok(())
}

//! `trawl worker`: captures (live, or its part of a capture replayed),
//! reassembles and dissects locally, and sends the hub cumulative flow
//! totals and L7 records.
//!
//! Memory is bounded by [`OutboxLimits`]: records wait in a queue and the
//! newest are dropped (and counted) when the hub cannot keep up, and open
//! flows are bounded by the capture (the eBPF map's size). When the
//! connection breaks the worker reconnects with backoff and sends every
//! open flow's totals and every conversation's closed totals again, which
//! the hub counts only as far as they grew.

use super::outbox::{Batch, Outbox, OutboxLimits};
use super::proto::{PROTOCOL_VERSION, ToHub, ToWorker, WorkerCounters, WorkerStatus, read_frame, write_frame};
use super::tls::WriteHalf;
use anyhow::{Context, bail};
use std::hash::{Hash, Hasher};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trawl_pipeline::pipeline::{self, Cadence, FileSource, Pipeline, Report, Sink};
use trawl_pipeline::replay::ReplayOptions;
use trawl_pipeline::replay_l7::plugins_for;
use trawl_service::CaptureFilter;

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The hub's worker address, `HOST:PORT` (a Service name is looked up
    /// again on every connect).
    pub hub: String,
    /// The credential the worker presents: the shared token, this node's
    /// own, or (read again on every connect, as it rotates) a Kubernetes
    /// ServiceAccount token from `token_file`.
    pub token: String,
    pub token_file: Option<std::path::PathBuf>,
    /// TLS to the hub: the CA that signed its certificate, and the name it
    /// must carry. `None`: plain TCP (loopback, or insisted on).
    pub tls: Option<HubTls>,
    pub node: String,
    pub worker_id: String,
    /// The capture and plugins (inventories are the hub's business).
    pub replay: ReplayOptions,
    pub speed: Option<f64>,
    /// `(i, n)`: this worker replays the flows whose endpoint hash is `i`
    /// modulo `n`, so `n` workers split one capture without overlap.
    pub part: (u32, u32),
    pub limits: OutboxLimits,
    /// After a replay, stay connected until stopped (as a live worker
    /// does), so a restarted hub is given the totals again.
    pub stay: bool,
    /// Where `/healthz` and `/readyz` are served (the DaemonSet's probes).
    pub health_listen: Option<SocketAddr>,
}

/// How a worker checks the hub it talks to.
#[derive(Clone)]
pub struct HubTls {
    pub config: Arc<super::tls::Reloading<rustls::ClientConfig>>,
    pub name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for HubTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubTls").field("name", &self.name).finish()
    }
}

/// What the worker's probes and the hub's health show.
#[derive(Debug, Default)]
pub struct WorkerHealth {
    pub connected: AtomicBool,
    /// Capture is running (live: the eBPF programs are attached).
    pub capturing: AtomicBool,
    pub flushes: AtomicU64,
    pub status: Mutex<WorkerStatus>,
    /// Capture filters the hub sent, not yet taken by the capture.
    pub hub_filters: Mutex<Option<CaptureFilter>>,
    /// Plugins the hub asked to take out of quarantine, not yet taken.
    pub hub_resets: Mutex<Vec<String>>,
    /// Plugins the hub pushed.
    pub pushed: super::pushed::WorkerPushed,
    /// Recent whole packets for the hub's `/api/pcap` (`None`: not kept),
    /// and who addresses were (live: the cluster's identity), to pick an
    /// L4 edge's packets by its map nodes.
    pub packets: Option<trawl_service::packets::SharedRing>,
    pub identity: Mutex<Option<Arc<trawl_core::Identity>>>,
    /// Answers to the hub's packet requests, sent with the next flush.
    pub replies: Mutex<Vec<ToHub>>,
}

/// Most bytes of packets one answer to the hub carries (a frame holds 16 MiB).
const MAX_PACKETS_ANSWER: usize = 12 << 20;

impl WorkerHealth {
    /// Health for a worker keeping `ring_bytes` of recent packets.
    pub fn with_packet_ring(ring_bytes: usize) -> Self {
        let packets = (ring_bytes > 0).then(|| trawl_service::packets::PacketRing::shared(ring_bytes));
        WorkerHealth { packets, ..WorkerHealth::default() }
    }

    /// Answers the hub's request `id` from the ring: the newest frames it
    /// selects, up to [`MAX_PACKETS_ANSWER`] bytes.
    fn answer_packets(&self, id: u64, selection: trawl_service::pcap_api::WireSelection) {
        let mut frames = Vec::new();
        if let Some(ring) = &self.packets {
            let identity = self.identity.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            let selection = trawl_service::pcap_api::Selection::from_wire(selection, identity.is_some());
            let identity = identity.unwrap_or_default();
            // Decoded outside the ring's lock: capture keeps adding to it.
            let frames_now = trawl_service::packets::PacketRing::snapshot(ring);
            let (picked, _) = selection.pick(&identity, frames_now.iter());
            let mut bytes = 0;
            for (_, _, f) in picked.iter().rev() {
                // A frame's fields cost a few bytes of postcard beside its data.
                bytes += f.data.len() + 32;
                if bytes > MAX_PACKETS_ANSWER {
                    break;
                }
                frames.push(super::proto::WireFrame::from(f));
            }
            frames.reverse();
        }
        let mut replies = self.replies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A hub that floods requests gets answers to the newest few.
        if replies.len() >= 4 {
            replies.remove(0);
        }
        replies.push(ToHub::Packets { id, frames });
    }
}

impl WorkerHealth {
    /// The plugin resets the hub asked for since the last call.
    pub fn take_resets(&self) -> Vec<String> {
        std::mem::take(&mut *self.hub_resets.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

impl WorkerHealth {
    pub fn ready(&self) -> bool {
        self.connected.load(Ordering::Relaxed) && self.capturing.load(Ordering::Relaxed)
    }

    fn json(&self) -> serde_json::Value {
        let status = self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        serde_json::json!({
            "ready": self.ready(),
            "connected": self.connected.load(Ordering::Relaxed),
            "capturing": self.capturing.load(Ordering::Relaxed),
            "flushes": self.flushes.load(Ordering::Relaxed),
            "status": status,
        })
    }
}

/// Serves `/healthz` (the process is up) and `/readyz` (connected to the
/// hub and capturing: 200, else 503) on a thread of its own.
pub fn serve_health(addr: SocketAddr, health: Arc<WorkerHealth>) -> anyhow::Result<SocketAddr> {
    use warp::Filter;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("cannot serve worker health on {addr}"))?;
    let bound = listener.local_addr()?;
    let (live, ready) = (health.clone(), health);
    let healthz = warp::path!("healthz").map(move || warp::reply::json(&live.json()));
    let readyz = warp::path!("readyz").map(move || {
        let code = if ready.ready() { warp::http::StatusCode::OK } else { warp::http::StatusCode::SERVICE_UNAVAILABLE };
        warp::reply::with_status(warp::reply::json(&ready.json()), code)
    });
    let routes = warp::get().and(healthz.or(readyz));
    std::thread::Builder::new().name("worker-health".into()).spawn(move || {
        runtime.block_on(warp::serve(routes).incoming(listener).run());
    })?;
    Ok(bound)
}

/// The connection to the hub, reopened with backoff when it breaks.
#[derive(Debug)]
pub struct Link {
    opts: WorkerOptions,
    boot_id: String,
    epoch: String,
    stream: Option<WriteHalf>,
    next_try: Instant,
    backoff: Duration,
    pub health: Arc<WorkerHealth>,
    /// Reads what the hub says; ends when the hub closes the connection.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Link {
    /// A link not yet connected; the boot id tells the hub this run from
    /// an earlier one of the same worker.
    pub fn new(opts: WorkerOptions, epoch: Option<String>, health: Arc<WorkerHealth>) -> Self {
        let boot_id = format!("{}-{}", std::process::id(), trawl_pipeline::live::wall_now().0);
        let epoch = epoch.unwrap_or_else(|| boot_id.clone());
        Link {
            opts,
            boot_id,
            epoch,
            stream: None,
            next_try: Instant::now(),
            backoff: Duration::from_millis(200),
            health,
            reader: None,
        }
    }

    fn connect(&mut self) -> anyhow::Result<WriteHalf> {
        let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(self.opts.hub.as_str())
            .with_context(|| format!("cannot resolve the hub address {}", self.opts.hub))?
            .collect();
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(stream) = stream else {
            bail!(
                "cannot connect to the hub at {}: {}",
                self.opts.hub,
                last.map_or("no address".into(), |e| e.to_string())
            )
        };
        let (mut reader, mut w) = match &self.opts.tls {
            Some(tls) => super::tls::connect(stream, tls.config.get(), tls.name.clone())
                .with_context(|| format!("TLS to the hub at {} failed", self.opts.hub))?,
            None => super::tls::plain(stream)?,
        };
        let token = match &self.opts.token_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the worker's credential {}", path.display()))?
                .trim()
                .to_string(),
            None => self.opts.token.clone(),
        };
        write_frame(
            &mut w,
            &ToHub::Hello {
                version: PROTOCOL_VERSION,
                node: self.opts.node.clone(),
                worker_id: self.opts.worker_id.clone(),
                boot_id: self.boot_id.clone(),
                epoch: self.epoch.clone(),
                token,
            },
        )?;
        match read_frame::<ToWorker>(&mut reader)? {
            ToWorker::Welcome { .. } => {}
            ToWorker::Refused { reason } => bail!("the hub refused this worker: {reason}"),
            _ => bail!("the hub sent something other than Welcome first"),
        }
        // Answers meant for a hub before this one (whose request numbers
        // start again) must not answer this one's.
        self.health.replies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        // What the hub says after Welcome (capture filters) is read on a
        // thread of its own until the connection goes.
        let health = self.health.clone();
        self.reader = Some(std::thread::Builder::new().name("hub-reader".into()).spawn(move || {
            while let Ok(msg) = read_frame::<ToWorker>(&mut reader) {
                match msg {
                    ToWorker::CaptureFilters { json } => {
                        let parsed = serde_json::from_str(&json).map_err(|e| e.to_string());
                        match parsed.and_then(|v| CaptureFilter::from_json(&v)) {
                            Ok(f) => {
                                *health.hub_filters.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(f)
                            }
                            Err(e) => tracing::warn!(error = e, "the hub sent capture filters that do not parse"),
                        }
                    }
                    ToWorker::ResetPlugin { name } => {
                        let mut resets = health.hub_resets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        // A hub that floods resets gets the newest few.
                        if resets.len() < 64 {
                            resets.push(name);
                        }
                    }
                    // Compiled here, off the capture's thread.
                    ToWorker::InstallPlugin { name, sha256, module } => health.pushed.install(&name, &sha256, &module),
                    ToWorker::PushedPlugins { plugins } => health.pushed.keep_only(&plugins),
                    ToWorker::PcapRequest { id, selection } => health.answer_packets(id, selection),
                    ToWorker::Welcome { .. } | ToWorker::Refused { .. } => {}
                }
            }
        })?);
        Ok(w)
    }

    /// Closes the connection once the hub has read everything: this side
    /// stops writing, and the hub closes its side after the last frame.
    /// (Exiting with unread bytes from the hub would reset the connection,
    /// and a reset can throw away frames the hub has not read yet.)
    pub fn close(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            stream.close();
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.reader.as_ref().is_some_and(|r| !r.is_finished()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.health.connected.store(false, Ordering::Relaxed);
    }

    /// Sends what is due; on a broken link, keeps it for the next try.
    /// The outbox is locked to take a batch and to mark it sent, never
    /// while writing: capture keeps adding to it while a slow hub reads.
    pub fn flush(&mut self, shared: &Mutex<Outbox>, mut status: WorkerStatus) -> anyhow::Result<bool> {
        let lock = || shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.stream.is_none() {
            if Instant::now() < self.next_try {
                return Ok(false);
            }
            match self.connect() {
                Ok(s) => {
                    self.stream = Some(s);
                    self.backoff = Duration::from_millis(200);
                    self.health.connected.store(true, Ordering::Relaxed);
                    lock().resend_all();
                }
                Err(e) if is_final(&e) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, hub = %self.opts.hub, "cannot reach the hub; retrying");
                    self.next_try = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
                    return Ok(false);
                }
            }
        }
        let Some(stream) = self.stream.as_mut() else { return Ok(false) };
        let batch: Batch = {
            let out = lock();
            status.counters.open_flows = out.totals.len() as u64;
            status.counters.conversations = out.conversations.len() as u64;
            status.counters.records_queued = out.records.len() as u64;
            status.counters.records_dropped = out.records_dropped;
            status.counters.records_unsampled = out.records_unsampled;
            status.counters.conversations_dropped = out.conversations_dropped;
            status.counters.flows_dropped = out.flows_dropped;
            status.counters.journal_evicted = out.journal_evicted;
            // Records go in batches that fit a frame with room to spare.
            out.batch(5_000, super::proto::MAX_FRAME / 2)
        };
        *self.health.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = status.clone();
        let sent = (|| -> std::io::Result<()> {
            for chunk in batch.flows.chunks(20_000) {
                write_frame(stream, &ToHub::Flows(chunk.to_vec()))?;
            }
            for chunk in batch.closed.chunks(20_000) {
                write_frame(stream, &ToHub::Closed(chunk.to_vec()))?;
            }
            if !batch.records.is_empty() {
                write_frame(stream, &ToHub::Records(batch.records.clone()))?;
            }
            for chunk in batch.unsampled.chunks(20_000) {
                write_frame(stream, &ToHub::Unsampled(chunk.to_vec()))?;
            }
            let replies =
                std::mem::take(&mut *self.health.replies.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
            for reply in &replies {
                write_frame(stream, reply)?;
            }
            write_frame(stream, &ToHub::Status(status))
        })();
        match sent {
            Ok(()) => {
                lock().sent(&batch);
                self.health.flushes.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "lost the hub; reconnecting");
                self.stream = None;
                self.health.connected.store(false, Ordering::Relaxed);
                Ok(false)
            }
        }
    }
}

/// Errors that trying again cannot mend: the hub refused this worker's
/// credential, or the hub's certificate is not one the worker trusts.
fn is_final(e: &anyhow::Error) -> bool {
    e.to_string().contains("refused this worker")
        || e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .is_some_and(|r| {
                    matches!(
                        r,
                        rustls::Error::InvalidCertificate(_)
                            | rustls::Error::NoCertificatesPresented
                            | rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate)
                    )
                })
        })
}

/// A flag raised by Ctrl-C (SIGINT) or SIGTERM, for loops that run until
/// stopped and then leave cleanly (the link closed, exit status 0).
pub fn stop_on_signals() -> anyhow::Result<Arc<std::sync::atomic::AtomicBool>> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("cannot handle Ctrl-C and SIGTERM")?;
    }
    Ok(stop)
}

/// How often, in capture time, a replaying worker ticks its plugins and
/// takes their records.
const COLLECT_EVERY: Duration = Duration::from_millis(100);

/// A replay's counting epoch: the same capture and part count the same
/// traffic, however often the worker restarts.
fn replay_epoch(opts: &WorkerOptions) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (std::fs::canonicalize(&opts.replay.capture).unwrap_or_else(|_| opts.replay.capture.clone()), opts.part)
        .hash(&mut h);
    format!("replay-{:016x}", h.finish())
}

/// The worker's side of a replay: records and flow totals into the
/// outbox, sent to the hub every 100 ms of wall time.
struct ToHubSink {
    out: Mutex<Outbox>,
    link: Link,
}

impl Sink for ToHubSink {
    fn batch(&mut self, batch: pipeline::Batch, _report: &Report<'_>) {
        for h in batch.records {
            self.out.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).add_record(h);
        }
        for d in &batch.deltas {
            self.out.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).add_delta(d);
        }
    }

    fn idle(&mut self, report: &Report<'_>) -> anyhow::Result<()> {
        let mut status = replay_status(report, false);
        status.plugins.extend(self.link.health.pushed.rejected().into_iter().map(Into::into));
        self.link.flush(&self.out, status).map(drop)
    }

    fn plugin_resets(&mut self) -> Vec<String> {
        self.link.health.take_resets()
    }

    fn plugin_changes(&mut self) -> Vec<pipeline::PluginChange> {
        self.link.health.pushed.take_changes()
    }
}

fn replay_status(report: &Report<'_>, done: bool) -> WorkerStatus {
    WorkerStatus {
        counters: WorkerCounters {
            packets: report.stats().frames,
            bytes: report.stats().frame_bytes,
            done,
            losses: report.losses(),
            ..Default::default()
        },
        plugins: report.plugins().into_iter().map(Into::into).collect(),
    }
}

/// Replays this worker's part of the capture to the hub, then waits until
/// everything is sent (and, with `stay`, keeps the link until stopped).
pub fn run(opts: WorkerOptions) -> anyhow::Result<()> {
    let (plugins, _reloader, _rejected) = plugins_for(&opts.replay)?;
    // Plugins tick and records are numbered by capture time, never by the
    // wall clock: a restarted replay then numbers every record as before,
    // and the hub drops exactly the ones it has.
    let cadence = Cadence { capture: Some(COLLECT_EVERY), ..Cadence::default() };
    let health = Arc::new(WorkerHealth::with_packet_ring(opts.replay.pcap_ring_bytes));
    let mut pipeline = Pipeline::new(&opts.replay, plugins, None, cadence).with_packet_ring(health.packets.clone());
    if let Some(addr) = opts.health_listen {
        serve_health(addr, health.clone())?;
    }
    let link = Link::new(opts.clone(), Some(replay_epoch(&opts)), health.clone());
    let mut sink = ToHubSink { out: Mutex::new(Outbox::new(opts.limits)), link };
    let source = FileSource { speed: opts.speed, part: opts.part, ..FileSource::new(&opts.replay.capture) };
    health.capturing.store(true, Ordering::Relaxed);
    let ran = source.run(&mut pipeline, &mut sink, || {})?;
    if let Some(e) = ran.partial {
        eprintln!("trawl worker: warning: {e}; everything before it was sent");
    }
    let status = |pipeline: &Pipeline, sink: &ToHubSink, done: bool| {
        let mut status = replay_status(&pipeline.report(), done);
        status.plugins.extend(sink.link.health.pushed.rejected().into_iter().map(Into::into));
        status
    };
    let drained =
        |sink: &ToHubSink| sink.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner).records.is_empty();
    // Keep trying until the hub has everything.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = drained(&sink);
        if sink.link.flush(&sink.out, status(&pipeline, &sink, last))? && drained(&sink) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the hub at {} did not take the last counts within 60 s", opts.hub);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // One more Status with done set, now that the queue is empty.
    sink.link.flush(&sink.out, status(&pipeline, &sink, true)).context("final status")?;
    if opts.stay {
        // Until stopped (Ctrl-C or SIGTERM), like a live worker: plugins
        // the hub pushes are still taken, and show in the status.
        let stop = stop_on_signals()?;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            pipeline.collect(&mut sink);
            sink.link.flush(&sink.out, status(&pipeline, &sink, true))?;
        }
    }
    sink.link.close();
    Ok(())
}

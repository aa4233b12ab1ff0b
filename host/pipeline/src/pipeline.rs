//! One pipeline for every mode. A source feeds frames to the engine (flow
//! table, reassembly, dispatch to the plugins); what comes out goes to a
//! [`Sink`]. The pipeline alone owns the engine: plugin reloads, ticks and
//! the collection of records and flow deltas happen here, and no sink ever
//! touches the engine; sinks get records and deltas by value and read-only
//! reports.
//!
//! Sources: a capture file ([`FileSource`]: paced, at full speed, looped,
//! or one part of N) and, in `live`, the AF_PACKET rings behind the reorder
//! buffer. The eBPF counters bypass the engine: they are flow deltas
//! already.

use crate::replay::ReplayOptions;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use trawl_capture::{CaptureError, CaptureFile};
use trawl_core::decode::{Decoded, decode};
use trawl_core::l7map::LegendEntry;
use trawl_core::{Engine, EngineConfig, EngineStats, FlowDelta, LinkType, ServicePorts, Timestamp};
use trawl_runtime::registry::{PluginStatus, ReloadEvent, Reloader};
use trawl_runtime::{DispatchStats, Dispatcher, HostRecord, SharedPlugin, Targeting};

/// How a plugin's protocol appears in map legends.
pub fn legend(p: &SharedPlugin) -> LegendEntry {
    trawl_runtime::registry::legend_entry(&p.info)
}

/// What the engine handed out since the last collection, in the order it
/// produced it.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<HostRecord>,
    pub deltas: Vec<FlowDelta>,
}

/// What the engine and its plugins have done so far, for a sink to read.
#[derive(Debug)]
pub struct Report<'a> {
    engine: &'a Engine<Dispatcher>,
}

impl Report<'_> {
    pub fn stats(&self) -> EngineStats {
        self.engine.stats()
    }

    pub fn dispatch(&self) -> DispatchStats {
        self.engine.sink().stats()
    }

    pub fn plugins(&self) -> Vec<PluginStatus> {
        self.engine.sink().status()
    }

    /// The newest capture time seen.
    pub fn now(&self) -> Timestamp {
        self.engine.now()
    }

    /// What the engine and the plugins lost so far, by cause.
    pub fn losses(&self) -> trawl_service::workers::Losses {
        let (stats, dispatch) = (self.stats(), self.dispatch());
        trawl_service::workers::Losses {
            flows_evicted: stats.flow_table.flows_evicted,
            reassembly_gaps: stats.reassembly.gaps,
            reassembly_budget_releases: stats.reassembly.budget_releases,
            plugin_detaches: dispatch.detached_by_fault
                + dispatch.detached_by_gap
                + dispatch.detached_by_buffer
                + dispatch.detached_by_budget,
            ..Default::default()
        }
    }
}

/// A plugin change that comes from outside the pipeline: a plugin a hub
/// pushed, or took back.
#[derive(Debug)]
pub enum PluginChange {
    /// New connections go to it; open ones finish on the version before.
    Install(SharedPlugin),
    /// Unloaded after its connections drain; a plugin of that name the
    /// pipeline started with takes over again.
    Remove(String),
}

/// Where a pipeline's results go.
pub trait Sink {
    /// A plugin was loaded (at start, or hot-reloaded): its legend entry.
    fn legend(&mut self, _entry: LegendEntry) {}
    /// Records and flow deltas collected from the engine.
    fn batch(&mut self, batch: Batch, report: &Report<'_>);
    /// Plugins an operator asked to take out of quarantine since the last
    /// call (`POST /api/plugins/NAME/reset`, here or through a hub).
    fn plugin_resets(&mut self) -> Vec<String> {
        Vec::new()
    }
    /// Plugins pushed or taken back since the last call (a worker hears
    /// of them from its hub).
    fn plugin_changes(&mut self) -> Vec<PluginChange> {
        Vec::new()
    }
    /// Wall-clock housekeeping between frames (a worker sends to its hub);
    /// an error stops the source.
    fn idle(&mut self, _report: &Report<'_>) -> anyhow::Result<()> {
        Ok(())
    }
}

/// When the pipeline collects (runs reloads, ticks the plugins, takes
/// records and deltas): whichever trigger comes first.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cadence {
    /// Every this many frames.
    pub frames: Option<u32>,
    /// Every this much capture time: deterministic, so a replay collects
    /// (and its plugins tick) at the same places every run.
    pub capture: Option<Duration>,
    /// Every this much wall-clock time (a paced or live source).
    pub wall: Option<Duration>,
}

/// Which clock plugins tick by. Live frames carry wall-clock stamps, and
/// while none arrives the plugins must still see time pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TickClock {
    #[default]
    Capture,
    Wall,
}

/// How often a sink's `idle` runs.
const IDLE_EVERY: Duration = Duration::from_millis(100);
/// Frames between two looks at the wall clock on a source that does not
/// wait (a replay at full speed), so no clock is read per packet.
const CLOCK_EVERY: u32 = 64;

/// The engine, its plugins and the reloader, driven by a source.
#[derive(Debug)]
pub struct Pipeline {
    engine: Engine<Dispatcher>,
    reloader: Option<Reloader>,
    /// The plugins it started with, by name: what a removed push falls
    /// back to.
    base: std::collections::BTreeMap<String, SharedPlugin>,
    /// Started with no plugin at all, so it reassembles nothing (until a
    /// plugin is pushed).
    l4_only: bool,
    cadence: Cadence,
    clock: TickClock,
    since_collect: u32,
    next_capture: u64,
    last_collect: Instant,
    last_idle: Instant,
    /// Whole frames for `/api/pcap`, when a ring keeps them.
    ring: Option<trawl_service::packets::RingFeeder>,
    /// Server names of TLS connections by connection id, for their
    /// records; those of closed connections go after the next collect.
    tls_names: std::collections::HashMap<u64, String>,
    tls_closed: Vec<u64>,
}

impl Pipeline {
    /// A pipeline over `plugins` (none: L4 only), their ports as
    /// service-port hints, and the flow table and dispatch options.
    pub fn new(opts: &ReplayOptions, plugins: Vec<SharedPlugin>, reloader: Option<Reloader>, cadence: Cadence) -> Self {
        let mut ports = ServicePorts::default();
        for p in &plugins {
            for &port in p.info.tcp_ports.iter().chain(&p.info.udp_ports) {
                ports.insert(port);
            }
        }
        let l4_only = plugins.is_empty() && reloader.is_none();
        let base = plugins.iter().map(|p| (p.info.name.clone(), p.clone())).collect();
        let mut dispatcher = Dispatcher::new(opts.dispatch.clone(), plugins);
        if l4_only {
            // Nothing could dissect a stream: reassemble none.
            dispatcher.set_targeting(Box::new(|_, _| false));
        }
        let config = EngineConfig { flows: opts.flows.clone(), ..EngineConfig::default() };
        Pipeline {
            engine: Engine::new(config, ports, dispatcher),
            reloader,
            base,
            l4_only,
            cadence,
            clock: TickClock::Capture,
            since_collect: 0,
            next_capture: 0,
            last_collect: Instant::now(),
            last_idle: Instant::now(),
            ring: None,
            tls_names: std::collections::HashMap::new(),
            tls_closed: Vec::new(),
        }
    }

    /// Keeps a copy of every frame in `ring` (handed over at each
    /// collection): the packets `/api/pcap` serves.
    pub fn with_packet_ring(mut self, ring: Option<trawl_service::packets::SharedRing>) -> Self {
        self.ring = ring.map(trawl_service::packets::RingFeeder::new);
        self
    }

    pub fn with_tick_clock(mut self, clock: TickClock) -> Self {
        self.clock = clock;
        self
    }

    /// Gathers no flow deltas: live L7 capture, whose L4 numbers come from
    /// the eBPF counters, would drop them anyway.
    pub fn without_flow_deltas(mut self) -> Self {
        self.engine.set_export_deltas(false);
        self
    }

    /// Dissects only the connections `targeting` admits.
    pub fn set_targeting(&mut self, targeting: Targeting) {
        self.engine.sink_mut().set_targeting(targeting);
    }

    /// The legend entries of the plugins in use.
    pub fn legend(&self) -> Vec<LegendEntry> {
        self.engine.sink().plugins().map(legend).collect()
    }

    pub fn report(&self) -> Report<'_> {
        Report { engine: &self.engine }
    }

    /// Flows that ended, taken from the flow table (`--emit flows`).
    pub fn take_finished_flows(&mut self) -> Vec<trawl_core::flow::FlowRecord> {
        self.engine.flows_mut().drain_finished().collect()
    }

    pub fn flows_created(&self) -> u64 {
        self.engine.flows().stats().flows_created
    }

    /// Streams from outside the engine (TLS plaintext) go straight to the
    /// dispatcher, as reassembled ones do.
    fn dispatcher(&mut self) -> &mut Dispatcher {
        self.engine.sink_mut()
    }

    /// One frame through the engine; collects when the cadence says so.
    pub fn frame(&mut self, link: LinkType, ts: Timestamp, data: &[u8], wire_len: u32, sink: &mut dyn Sink) {
        self.engine.process(link, ts, data, wire_len);
        if let Some(ring) = &mut self.ring {
            ring.frame(link, ts, wire_len, data);
        }
        self.after_frame(ts, sink);
    }

    /// [`Self::frame`] of a frame the caller gives up (live capture's own
    /// copy): the packet ring keeps it without copying it again.
    pub fn frame_owned(&mut self, link: LinkType, ts: Timestamp, data: Vec<u8>, wire_len: u32, sink: &mut dyn Sink) {
        self.engine.process(link, ts, &data, wire_len);
        if let Some(ring) = &mut self.ring {
            ring.frame_owned(link, ts, wire_len, data);
        }
        self.after_frame(ts, sink);
    }

    fn after_frame(&mut self, ts: Timestamp, sink: &mut dyn Sink) {
        self.since_collect += 1;
        let by_frames = self.cadence.frames.is_some_and(|n| self.since_collect >= n);
        let by_capture = self.cadence.capture.is_some() && ts.0 >= self.next_capture;
        // The wall clock is read every CLOCK_EVERY frames, not per packet.
        let by_wall = self.since_collect.is_multiple_of(CLOCK_EVERY) && self.wall_due();
        if by_frames || by_capture || by_wall {
            if let Some(every) = self.cadence.capture {
                self.next_capture = ts.0.saturating_add(every.as_nanos() as u64);
            }
            self.collect(sink);
        }
    }

    fn wall_due(&self) -> bool {
        self.cadence.wall.is_some_and(|every| self.last_collect.elapsed() >= every)
    }

    /// Between frames (waiting for a paced frame's time, or for a ring):
    /// collects when the wall-clock cadence is due, and lets the sink do
    /// its housekeeping.
    pub fn idle(&mut self, sink: &mut dyn Sink) -> anyhow::Result<()> {
        if self.wall_due() {
            self.collect(sink);
        } else {
            // A plugin pushed while no frame comes (a quiet node, a paced
            // replay between frames) is installed now, not at the next
            // frame: new connections find it there.
            for change in sink.plugin_changes() {
                self.apply_change(change, sink);
            }
        }
        if self.last_idle.elapsed() >= IDLE_EVERY {
            self.last_idle = Instant::now();
            sink.idle(&self.report())?;
        }
        Ok(())
    }

    /// Installs what the reloader found, ticks the plugins, and hands the
    /// records and flow deltas to the sink.
    pub fn collect(&mut self, sink: &mut dyn Sink) {
        self.since_collect = 0;
        self.last_collect = Instant::now();
        if let Some(ring) = &mut self.ring {
            ring.flush();
        }
        self.apply_reloads(sink);
        for change in sink.plugin_changes() {
            self.apply_change(change, sink);
        }
        for name in sink.plugin_resets() {
            let n = self.engine.sink_mut().reset(&name);
            tracing::info!(plugin = %name, generations = n, "plugin reset");
        }
        let now = match self.clock {
            TickClock::Capture => self.engine.now(),
            TickClock::Wall => crate::live::wall_now(),
        };
        self.engine.sink_mut().tick(now);
        let mut records = self.engine.sink_mut().take_records();
        if !self.tls_names.is_empty() {
            for r in records.iter_mut().filter(|r| r.conn.tls) {
                r.tls_sni = self.tls_names.get(&r.conn.id).cloned();
            }
        }
        for id in self.tls_closed.drain(..) {
            self.tls_names.remove(&id);
        }
        let batch = Batch { records, deltas: self.engine.take_deltas() };
        sink.batch(batch, &Report { engine: &self.engine });
    }

    /// The source is done (or starts over): every flow ends and everything
    /// left is collected.
    pub fn finish(&mut self, sink: &mut dyn Sink) {
        self.engine.finish();
        self.collect(sink);
    }

    fn apply_change(&mut self, change: PluginChange, sink: &mut dyn Sink) {
        match change {
            PluginChange::Install(plugin) => {
                tracing::info!(plugin = %plugin.info.name, version = %plugin.info.version, hash = %plugin.hash, "pushed plugin installed");
                sink.legend(legend(&plugin));
                let ports = plugin.info.tcp_ports.iter().chain(&plugin.info.udp_ports);
                ports.for_each(|&p| self.engine.flows_mut().service_ports_mut().insert(p));
                if std::mem::take(&mut self.l4_only) {
                    self.engine.sink_mut().clear_targeting();
                }
                self.engine.sink_mut().install(plugin);
            }
            PluginChange::Remove(name) => match self.base.get(&name).cloned() {
                Some(base) => {
                    tracing::info!(plugin = %name, "pushed plugin removed; the one started with takes over");
                    sink.legend(legend(&base));
                    self.engine.sink_mut().install_fresh(base);
                }
                None => {
                    tracing::info!(plugin = %name, "pushed plugin removed");
                    self.engine.sink_mut().remove(&name);
                }
            },
        }
    }

    fn apply_reloads(&mut self, sink: &mut dyn Sink) {
        let Some(r) = &self.reloader else { return };
        for event in r.poll() {
            match event {
                ReloadEvent::Loaded { path, plugin } => {
                    tracing::info!(
                        path = %path.display(),
                        plugin = %plugin.info.name,
                        version = %plugin.info.version,
                        capture_ts = %self.engine.now(),
                        "hot reload"
                    );
                    sink.legend(legend(&plugin));
                    self.engine.sink_mut().install(plugin);
                }
                ReloadEvent::Removed { path, name } => {
                    tracing::info!(path = %path.display(), plugin = %name, "plugin removed");
                    self.engine.sink_mut().remove(&name);
                }
                ReloadEvent::Rejected(r) => {
                    eprintln!("warning: plugin {} rejected: {}", r.path.display(), r.error);
                }
            }
        }
    }
}

/// A capture file as a source.
#[derive(Clone, Debug)]
pub struct FileSource {
    pub path: PathBuf,
    /// A multiple of the recorded pace; `None`: as fast as it goes.
    pub speed: Option<f64>,
    /// Start over at the end, forever.
    pub repeat: bool,
    /// `(i, n)`: only the flows whose endpoint hash is `i` of `n`.
    pub part: (u32, u32),
}

/// How a file source ended.
#[derive(Debug, Default)]
pub struct FileOutcome {
    /// Set when the capture ended early; everything before it went through.
    pub partial: Option<CaptureError>,
    pub elapsed: Duration,
}

impl FileSource {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSource { path: path.into(), speed: None, repeat: false, part: (0, 1) }
    }

    /// Feeds the file through `pipeline` into `sink`: once, or forever with
    /// `repeat` (each pass shifted to start after the last one ended, so
    /// time, flow ages and rate windows keep moving forward; `on_loop`
    /// hears of every new pass). A capture cut short ends the source,
    /// after everything before the cut went through.
    pub fn run(
        &self,
        pipeline: &mut Pipeline,
        sink: &mut dyn Sink,
        mut on_loop: impl FnMut(),
    ) -> anyhow::Result<FileOutcome> {
        let started = Instant::now();
        let mut offset: u64 = 0;
        loop {
            let mut capture = CaptureFile::open(&self.path)?;
            let pass_started = Instant::now();
            let (mut first, mut last): (Option<u64>, u64) = (None, 0);
            let mut failure: Option<anyhow::Error> = None;
            let mut frames = 0u32;
            let read = capture.for_each_frame(|frame| {
                // Time runs from the capture's first frame, whichever part
                // it is in: the workers of a split replay keep the
                // capture's own clock together.
                let first_ts = *first.get_or_insert(frame.ts.0);
                last = last.max(frame.ts.0);
                if failure.is_some() || !in_part(frame.link, frame.data, self.part) {
                    return;
                }
                if let Some(speed) = self.speed {
                    let since_first = Duration::from_nanos(frame.ts.0.saturating_sub(first_ts));
                    wait_until_due(pass_started, since_first, speed, || {
                        if failure.is_none() {
                            failure = pipeline.idle(sink).err();
                        }
                    });
                }
                pipeline.frame(frame.link, Timestamp(frame.ts.0 + offset), frame.data, frame.wire_len, sink);
                frames = frames.wrapping_add(1);
                if frames.is_multiple_of(CLOCK_EVERY) && failure.is_none() {
                    failure = pipeline.idle(sink).err();
                }
            });
            if let Some(e) = failure {
                return Err(e);
            }
            // Each pass ends its flows: the next one replays the same
            // connections from their start, sequence numbers starting over.
            pipeline.finish(sink);
            let partial = match read {
                Ok(()) => None,
                Err(e) if e.is_partial() => Some(e),
                Err(e) => return Err(e.into()),
            };
            if !self.repeat || first.is_none() || partial.is_some() {
                return Ok(FileOutcome { partial, elapsed: started.elapsed() });
            }
            on_loop();
            offset += last.saturating_sub(first.unwrap_or(last)) + 1_000_000_000;
            // At the recorded pace, keep the gap between passes too.
            if self.speed.is_some() {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Whether the frame belongs to part `i` of `n`: by a hash of its two
/// endpoints, so both directions of a flow land in the same part. Frames
/// that are not IP go to part 0.
pub fn in_part(link: LinkType, frame: &[u8], (i, n): (u32, u32)) -> bool {
    if n <= 1 {
        return true;
    }
    let Decoded::Packet(p) = decode(link, frame) else { return i == 0 };
    let (a, b) = ((p.src, p.src_port), (p.dst, p.dst_port));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (a.min(b), a.max(b)).hash(&mut h);
    (h.finish() % u64::from(n)) as u32 == i
}

/// Paced replay: waits until `since_first` of capture time, divided by
/// `speed`, has passed since `started`, running `idle` every 20 ms or so
/// (saturating: `idle` may itself overrun the deadline).
pub fn wait_until_due(started: Instant, since_first: Duration, speed: f64, mut idle: impl FnMut()) {
    let due = since_first.div_f64(speed.max(1e-6));
    while started.elapsed() < due {
        idle();
        std::thread::sleep(due.saturating_sub(started.elapsed()).min(Duration::from_millis(20)));
    }
}

impl crate::tls::StreamTarget for Pipeline {
    fn wants(&mut self, conn: &trawl_core::engine::ConnInfo, ts: Timestamp) -> bool {
        trawl_core::engine::StreamSink::wants(self.dispatcher(), conn, ts)
    }

    fn event(
        &mut self,
        conn: &trawl_core::engine::ConnInfo,
        dir: trawl_core::flow::Direction,
        ts: Timestamp,
        event: trawl_core::reassembly::StreamEvent<'_>,
    ) {
        trawl_core::engine::StreamSink::on_stream(self.dispatcher(), conn, dir, ts, event);
    }

    fn close(&mut self, conn: &trawl_core::engine::ConnInfo) {
        trawl_core::engine::StreamSink::on_close(self.dispatcher(), conn);
        if self.tls_names.contains_key(&conn.id) {
            self.tls_closed.push(conn.id);
        }
    }

    fn server_name(&mut self, conn: &trawl_core::engine::ConnInfo, name: &str) {
        // Bounded by the open TLS streams (at most tls::MAX_STREAMS).
        if self.tls_names.len() < 2 * crate::tls::MAX_STREAMS {
            self.tls_names.insert(conn.id, name.to_string());
        }
    }
}

//! `trawl serve` and `trawl demo`: a capture replayed at its recorded pace
//! (or as fast as it reads, or in a loop) into the graph service, which
//! serves the web UI and its API while the replay runs.

use crate::pipeline::{Batch, Cadence, FileSource, Pipeline, Report, Sink};
use crate::replay::{ReplayOptions, load_identity};
use crate::replay_l7::plugins_for;
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use trawl_capture::CaptureFile;
use trawl_core::l7map::LegendEntry;
use trawl_runtime::records::to_l7;
use trawl_service::auth::Access;
use trawl_service::{CaptureFilter, Graph, GraphState, SharedState, api, lock};

/// The capture the demo serves (real nginx, redis-server and dnsmasq in
/// network namespaces; see `examples/demo/README.md`) and its inventory.
pub const DEMO_CAPTURE: &[u8] = include_bytes!("../../../examples/demo/demo.pcap");
pub const DEMO_INVENTORY: &str = include_str!("../../../examples/demo/inventory.json");

/// How often the replay hands what it found to the service.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Replay options: capture, inventories, plugins, window.
    pub replay: ReplayOptions,
    /// Replay speed: `Some(1.0)` is the recorded pace, `None` as fast as possible.
    pub speed: Option<f64>,
    /// Start over at the end, with time carrying on.
    pub repeat: bool,
    /// Where the API listens, and who may use it.
    pub api: Access,
    pub capture_filter: CaptureFilter,
}

/// Opens the served map's history, saying where it is kept.
pub fn open_history(config: &trawl_service::history::HistoryConfig) -> anyhow::Result<trawl_service::history::History> {
    let history = trawl_service::history::History::open(config).context("cannot keep the map's history")?;
    match &config.dir {
        Some(_) => eprintln!("trawl: history in {} (at most {} bytes)", history.path().display(), config.budget),
        None => {
            tracing::info!(path = %history.path().display(), "history in a temporary file; --history-dir keeps it across restarts")
        }
    }
    Ok(history)
}

/// A served map's state as the options ask: record log, health,
/// virtual hosts, history and the metrics' series cap.
pub fn new_state(
    opts: &ReplayOptions,
    identity: Arc<trawl_core::Identity>,
    capture_filter: trawl_service::CaptureFilter,
) -> anyhow::Result<SharedState> {
    Ok(Graph::new(
        GraphState::new(identity, capture_filter, opts.rate_window_secs)
            .with_record_log_bytes(opts.record_log_bytes)
            .with_health(opts.health)
            .with_split_hosts(opts.split_hosts)
            .with_metrics_max_series(opts.metrics_max_series)
            .with_metrics_series_idle(opts.metrics_series_idle_secs)
            .with_packet_ring(opts.pcap_ring_bytes)
            .with_history(open_history(&opts.history)?),
    ))
}

/// Runs the replay into a fresh service and serves it until Ctrl-C.
pub fn run(opts: ServeOptions) -> anyhow::Result<()> {
    let identity = Arc::new(load_identity(&opts.replay.inventories)?);
    // Fail on a bad capture before anything is served.
    CaptureFile::open(&opts.replay.capture)?;
    let state = new_state(&opts.replay, identity, opts.capture_filter.clone())?;
    let feeder = {
        let state = state.clone();
        let opts = opts.clone();
        move || {
            if let Err(e) = feed(&opts, &state) {
                eprintln!("trawl: replay stopped: {e:#}");
            }
        }
    };
    serve_state(state, opts.api.clone(), opts.replay.otlp.clone(), "replay", feeder)
}

/// Serves `state` on the API's address, under its access rules, until
/// Ctrl-C (or SIGTERM), with `feeder` filling it on a thread of its own.
pub fn serve_state(
    state: SharedState,
    mut api: Access,
    otlp: Option<trawl_service::otlp::OtlpConfig>,
    feeder_name: &str,
    feeder: impl FnOnce() + Send + 'static,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let listen = api.listen();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(listen))
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    api.set_listen(addr);
    let how = if api.has_tokens() { "tokens needed" } else { "open: no token configured" };
    eprintln!("trawl: serving the map on http://{addr}/ ({how}; Ctrl-C stops)");
    let feeder = std::thread::Builder::new().name(feeder_name.into()).spawn(feeder)?;
    if let Some(config) = otlp {
        let state = state.clone();
        eprintln!("trawl: pushing metrics over OTLP to {} every {:?}", config.endpoint, config.interval);
        runtime.spawn(async move {
            if let Err(e) = trawl_service::otlp::run(state, config).await {
                eprintln!("trawl: no OTLP export: {e}");
            }
        });
    }
    // History's intervals close as time passes, data or not.
    runtime.spawn({
        let state = state.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(2));
            loop {
                every.tick().await;
                let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                state.update(move |st| {
                    st.tick_history(wall.as_secs());
                    st.expire_series();
                });
            }
        }
    });
    runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        warp::serve(api::routes(state, api, shutdown.clone()))
            .incoming(listener)
            .graceful(async move {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
                }
                // Open MCP event streams end, so shutting down waits on none.
                shutdown.cancel();
            })
            .run()
            .await;
    });
    drop(feeder);
    Ok(())
}

/// Replays the capture (once, or forever with `repeat`) into the service.
pub fn feed(opts: &ServeOptions, state: &SharedState) -> anyhow::Result<()> {
    let (plugins, reloader, _rejected) = plugins_for(&opts.replay)?;
    let cadence = Cadence { wall: Some(PUBLISH_EVERY), ..Cadence::default() };
    let ring = lock(state).packet_ring().cloned();
    let mut pipeline = Pipeline::new(&opts.replay, plugins, reloader, cadence).with_packet_ring(ring);
    lock(state).set_legend(pipeline.legend());
    pipeline.set_targeting(trawl_service::targeting(state));
    let mut sink = Publisher { state: state.clone(), with_l4: true };
    let source = FileSource { speed: opts.speed, repeat: opts.repeat, ..FileSource::new(&opts.replay.capture) };
    let ran = source.run(&mut pipeline, &mut sink, || lock(state).counters_mut().replay_loops += 1)?;
    // Nothing more comes: the last intervals close now, not in 30 s of
    // capture time that will never pass.
    state.update(GraphState::flush_history);
    if let Some(e) = ran.partial {
        tracing::warn!(error = %e, "capture ends early; the records before the cut are kept");
    }
    Ok(())
}

/// The graph service as a pipeline's sink: records (their ends resolved
/// here), flow deltas, plugin status and counters.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub state: SharedState,
    /// Without it the flow deltas are dropped: live capture takes L4 from
    /// the eBPF counters, which see every workload, not only the targeted
    /// ones, and leaves the packet counters to the live side.
    pub with_l4: bool,
}

impl Sink for Publisher {
    fn legend(&mut self, entry: LegendEntry) {
        lock(&self.state).upsert_legend(entry);
    }

    fn plugin_resets(&mut self) -> Vec<String> {
        lock(&self.state).take_plugin_resets()
    }

    /// Never waits for the service's readers (see `Graph::update`).
    fn batch(&mut self, batch: Batch, report: &Report<'_>) {
        self.state.update(batch_change(batch, report, self.with_l4));
    }
}

/// What a pipeline's batch changes in the graph service, ready to apply on
/// any thread: its records (their ends resolved then), and with `with_l4`
/// its flow deltas and packet counters; plugin status and counters.
pub fn batch_change(batch: Batch, report: &Report<'_>, with_l4: bool) -> impl FnOnce(&mut GraphState) + Send + 'static {
    let (stats, dispatch, status, now) = (report.stats(), report.dispatch(), report.plugins(), report.now());
    let losses = report.losses();
    move |st: &mut GraphState| {
        for h in batch.records {
            let (record, src, dst) = to_l7(h, st.identity());
            st.add_record(record, &src, &dst);
        }
        if with_l4 {
            for d in &batch.deltas {
                st.add_delta(d);
            }
            st.counters_mut().packets = stats.frames;
            st.counters_mut().bytes = stats.frame_bytes;
            st.counters_mut().packets_dropped = stats.skipped_malformed
                + stats.skipped_non_ip
                + stats.skipped_other_ip_protocol
                + stats.skipped_unsupported_link
                + stats.skipped_unattributed_fragments;
        }
        st.counters_mut().plugin_faults = status.iter().map(|p| p.faults).sum();
        st.counters_mut().streams_not_targeted = dispatch.not_targeted;
        st.counters_mut().losses.set_engine(&losses);
        st.set_plugins(status);
        st.advance_to(now);
    }
}

/// Where `trawl demo` writes its embedded capture for the replay to read.
pub fn demo_files() -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = std::env::temp_dir().join(format!("trawl-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (pcap, inventory) = (dir.join("demo.pcap"), dir.join("inventory.json"));
    std::fs::write(&pcap, DEMO_CAPTURE).context("cannot write the demo capture")?;
    std::fs::write(&inventory, DEMO_INVENTORY).context("cannot write the demo inventory")?;
    Ok((pcap, inventory))
}

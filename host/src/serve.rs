//! `trawl serve` and `trawl demo`: a capture replayed at its recorded pace
//! (or as fast as it reads, or in a loop) into the graph service, which
//! serves the web UI and its API while the replay runs.

use crate::capture::CaptureFile;
use crate::plugins::Dispatcher;
use crate::records::to_l7;
use crate::replay::{ReplayOptions, load_identity};
use crate::replay_l7::{apply_reloads, engine_for, legend, plugins_for, wait_until_due};
use crate::service::{CaptureFilter, GraphState, SharedState, api, lock};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trawl_core::Timestamp;
use trawl_core::engine::Engine;

/// The capture the demo serves (real nginx, redis-server and dnsmasq in
/// network namespaces; see `examples/demo/README.md`) and its inventory.
pub const DEMO_CAPTURE: &[u8] = include_bytes!("../../examples/demo/demo.pcap");
pub const DEMO_INVENTORY: &str = include_str!("../../examples/demo/inventory.json");

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
    pub listen: SocketAddr,
    pub capture_filter: CaptureFilter,
}

/// Runs the replay into a fresh service and serves it until Ctrl-C.
pub fn run(opts: ServeOptions) -> anyhow::Result<()> {
    let identity = Arc::new(load_identity(&opts.replay.inventories)?);
    // Fail on a bad capture before anything is served.
    CaptureFile::open(&opts.replay.capture)?;
    let state: SharedState =
        Arc::new(Mutex::new(GraphState::new(identity, opts.capture_filter.clone(), opts.replay.rate_window_secs)));
    let feeder = {
        let state = state.clone();
        let opts = opts.clone();
        move || {
            if let Err(e) = feed(&opts, &state) {
                eprintln!("trawl: replay stopped: {e:#}");
            }
        }
    };
    serve_state(state, opts.listen, "replay", feeder)
}

/// Serves `state` on `listen` until Ctrl-C (or SIGTERM), with `feeder`
/// filling it on a thread of its own.
pub fn serve_state(
    state: SharedState,
    listen: SocketAddr,
    feeder_name: &str,
    feeder: impl FnOnce() + Send + 'static,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(listen))
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    eprintln!("trawl: serving the map on http://{addr}/ (Ctrl-C stops)");
    let feeder = std::thread::Builder::new().name(feeder_name.into()).spawn(feeder)?;
    runtime.block_on(async move {
        warp::serve(api::routes(state))
            .incoming(listener)
            .graceful(async {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
                }
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
    lock(state).set_legend(plugins.iter().map(legend).collect());
    let mut engine = engine_for(&opts.replay, plugins);
    engine.sink_mut().set_targeting(crate::service::targeting(state));
    // Each pass is shifted to start after the previous one ended, so time
    // (and with it flow ages and rate windows) keeps moving forward.
    let mut offset: u64 = 0;
    loop {
        let mut capture = CaptureFile::open(&opts.replay.capture)?;
        let started = Instant::now();
        let mut last_publish = Instant::now();
        let (mut first, mut last): (Option<u64>, u64) = (None, 0);
        let read = capture.for_each_frame(|frame| {
            let first_ts = *first.get_or_insert(frame.ts.0);
            last = last.max(frame.ts.0);
            let mut publish_due = |engine: &mut Engine<Dispatcher>| {
                if last_publish.elapsed() >= PUBLISH_EVERY {
                    publish(engine, state, reloader.as_ref());
                    last_publish = Instant::now();
                }
            };
            if let Some(speed) = opts.speed {
                let since_first = Duration::from_nanos(frame.ts.0.saturating_sub(first_ts));
                wait_until_due(started, since_first, speed, || publish_due(&mut engine));
            }
            engine.process(frame.link, Timestamp(frame.ts.0 + offset), frame.data, frame.wire_len);
            publish_due(&mut engine);
        });
        if let Err(e) = read {
            if !e.is_partial() {
                return Err(e.into());
            }
            tracing::warn!(error = %e, "capture ends early; the records before the cut are kept");
        }
        // Each pass ends its flows: the next one replays the same
        // connections from their start, with sequence numbers starting over.
        engine.finish();
        publish(&mut engine, state, reloader.as_ref());
        if !opts.repeat || first.is_none() {
            return Ok(());
        }
        lock(state).counters.replay_loops += 1;
        let span = last.saturating_sub(first.unwrap_or(last));
        offset += span + 1_000_000_000;
        // At the recorded pace, keep the gap between passes too.
        if opts.speed.is_some() {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Hands records, flow deltas, plugin status and counters to the service.
fn publish(
    engine: &mut Engine<Dispatcher>,
    state: &SharedState,
    reloader: Option<&crate::plugins::registry::Reloader>,
) {
    publish_from(engine, state, reloader, true);
}

/// As [`publish`]; without `with_l4` the engine's flow deltas are dropped
/// (live capture takes L4 from the eBPF counters, which see every
/// workload, not only the targeted ones) and the packet counters are left
/// to the live side.
pub(crate) fn publish_from(
    engine: &mut Engine<Dispatcher>,
    state: &SharedState,
    reloader: Option<&crate::plugins::registry::Reloader>,
    with_l4: bool,
) {
    apply_reloads(engine, reloader, |entry| lock(state).upsert_legend(entry));
    let now = engine.now();
    engine.sink_mut().tick(now);
    let records = engine.sink_mut().take_records();
    let deltas = engine.take_deltas();
    let stats = engine.stats();
    let status = engine.sink().status();
    let mut st = lock(state);
    for h in records {
        let (record, src, dst) = to_l7(h, &st.identity);
        st.add_record(record, &src, &dst);
    }
    if with_l4 {
        for d in &deltas {
            st.add_delta(d);
        }
        st.counters.packets = stats.frames;
        st.counters.bytes = stats.frame_bytes;
        st.counters.packets_dropped = stats.skipped_malformed
            + stats.skipped_non_ip
            + stats.skipped_other_ip_protocol
            + stats.skipped_unsupported_link
            + stats.skipped_unattributed_fragments;
    }
    st.counters.plugin_faults = status.iter().map(|p| p.faults).sum();
    st.counters.streams_not_targeted = engine.sink().stats().not_targeted;
    st.plugins = status;
    st.now = st.now.max(now);
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

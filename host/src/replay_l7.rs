//! `trawl replay --emit records` and `--emit map --map l7`: the capture
//! through the engine with reassembly on and the plugins attached.

use crate::capture::CaptureFile;
use crate::plugins::registry::{PluginSet, PluginStatus, ReloadEvent, Reloader};
use crate::plugins::wasm::{SandboxLimits, WasmRuntime};
use crate::plugins::{Dispatcher, SharedPlugin};
use crate::records::to_l7;
use crate::replay::{Emit, ReplayOptions, ReplayOutcome, load_identity, write_json_line};
use anyhow::Context;
use std::io::Write;
use std::time::{Duration, Instant};
use trawl_core::engine::Engine;
use trawl_core::l7map::{L7Map, LegendEntry};
use trawl_core::{EngineConfig, Identity, L4Map, ServicePorts, Timestamp};

/// Frames between record flushes and plugin housekeeping when not paced.
const FLUSH_EVERY: u32 = 1024;

/// The plugins a replay starts with, and the watcher if asked for.
pub fn plugins_for(opts: &ReplayOptions) -> anyhow::Result<(Vec<SharedPlugin>, Option<Reloader>, Vec<PluginStatus>)> {
    if opts.native_plugins {
        #[cfg(feature = "native-plugins")]
        {
            let plugins = crate::plugins::native::first_party().into_iter().map(std::sync::Arc::new).collect();
            return Ok((only_enabled(plugins, opts.enabled_plugins.as_deref())?, None, Vec::new()));
        }
        #[cfg(not(feature = "native-plugins"))]
        anyhow::bail!(
            "this trawl loads its plugins and links none; --native-plugins needs a build with \
             `--features native-plugins` (benchmarks)"
        );
    }
    let runtime = WasmRuntime::new(SandboxLimits::default())?;
    let mut set = PluginSet::embedded(runtime)?;
    for dir in &opts.plugin_dirs {
        set.add_dir(dir)?;
    }
    for r in set.rejected() {
        eprintln!("warning: plugin {} rejected: {}", r.path.display(), r.error);
    }
    let reloader = if opts.watch { Some(set.watch()?) } else { None };
    let rejected = set.rejected().iter().map(|r| r.status()).collect();
    Ok((only_enabled(set.plugins(), opts.enabled_plugins.as_deref())?, reloader, rejected))
}

/// The plugins named in `enabled` (all when `None`); a name that matches
/// no plugin is an error, so a typo in a ConfigMap does not go unnoticed.
fn only_enabled(plugins: Vec<SharedPlugin>, enabled: Option<&[String]>) -> anyhow::Result<Vec<SharedPlugin>> {
    let Some(enabled) = enabled else { return Ok(plugins) };
    if let Some(unknown) = enabled.iter().find(|n| !plugins.iter().any(|p| &p.info.name == *n)) {
        let mut known: Vec<&str> = plugins.iter().map(|p| p.info.name.as_str()).collect();
        known.sort_unstable();
        anyhow::bail!("no plugin is named {unknown:?}; there are: {}", known.join(", "));
    }
    Ok(plugins.into_iter().filter(|p| enabled.contains(&p.info.name)).collect())
}

/// How a plugin's protocol appears in map legends.
pub fn legend(p: &SharedPlugin) -> LegendEntry {
    LegendEntry {
        protocol: p.info.name.clone(),
        abbreviation: p.info.abbreviation.clone(),
        long_name: p.info.long_name.clone(),
        color: p.info.color.clone(),
    }
}

struct Output<'a> {
    emit: Emit,
    out: &'a mut dyn Write,
    identity: &'a Identity,
    map: L7Map,
    error: Option<anyhow::Error>,
    /// Paced replays show records as they happen, not when a buffer fills.
    flush_each: bool,
    /// The L4 map alongside, so the L7 map can show the same nodes.
    l4: L4Map,
}

impl Output<'_> {
    fn flush_records(&mut self, engine: &mut Engine<Dispatcher>) {
        for h in engine.sink_mut().take_records() {
            let (record, src, dst) = to_l7(h, self.identity);
            match self.emit {
                Emit::Records => {
                    if self.error.is_none()
                        && let Err(e) = write_json_line(self.out, &record)
                    {
                        self.error = Some(e);
                    }
                }
                _ => self.map.apply(&record, &src, &dst),
            }
        }
        if self.flush_each
            && self.emit == Emit::Records
            && self.error.is_none()
            && let Err(e) = self.out.flush()
        {
            self.error = Some(e.into());
        }
    }
}

/// The engine a replay runs: the plugins' ports as service-port hints, the
/// dispatcher over the plugins, and the flow table options.
pub fn engine_for(opts: &ReplayOptions, plugins: Vec<SharedPlugin>) -> Engine<Dispatcher> {
    let mut ports = ServicePorts::default();
    for p in &plugins {
        for &port in p.info.tcp_ports.iter().chain(&p.info.udp_ports) {
            ports.insert(port);
        }
    }
    let dispatcher = Dispatcher::new(opts.dispatch.clone(), plugins);
    let config = EngineConfig { flows: opts.flows.clone(), ..EngineConfig::default() };
    Engine::new(config, ports, dispatcher)
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

/// Installs and removes the plugins the watcher reports; `loaded` hears
/// of each new plugin's legend entry.
pub fn apply_reloads(
    engine: &mut Engine<Dispatcher>,
    reloader: Option<&Reloader>,
    mut loaded: impl FnMut(LegendEntry),
) {
    let Some(r) = reloader else { return };
    for event in r.poll() {
        match event {
            ReloadEvent::Loaded { path, plugin } => {
                tracing::info!(
                    path = %path.display(),
                    plugin = %plugin.info.name,
                    version = %plugin.info.version,
                    capture_ts = %engine.now(),
                    "hot reload"
                );
                loaded(legend(&plugin));
                engine.sink_mut().install(plugin);
            }
            ReloadEvent::Removed { path, name } => {
                tracing::info!(path = %path.display(), plugin = %name, "plugin removed");
                engine.sink_mut().remove(&name);
            }
            ReloadEvent::Rejected(r) => {
                eprintln!("warning: plugin {} rejected: {}", r.path.display(), r.error);
            }
        }
    }
}

pub fn run(opts: &ReplayOptions, out: &mut dyn Write) -> anyhow::Result<ReplayOutcome> {
    let identity = load_identity(&opts.inventories)?;
    let mut capture = CaptureFile::open(&opts.capture)?;
    let (plugins, reloader, rejected) = plugins_for(opts)?;
    let mut map = L7Map::new(opts.group_by);
    for p in &plugins {
        map.set_legend(legend(p));
    }
    let mut engine = engine_for(opts, plugins);
    let mut output = Output {
        emit: opts.emit,
        out,
        identity: &identity,
        map,
        error: None,
        flush_each: opts.pace.is_some(),
        l4: L4Map::new(opts.group_by, opts.rate_window_secs),
    };

    let started = Instant::now();
    let mut first_ts: Option<Timestamp> = None;
    let mut since_flush = 0u32;
    let read = capture.for_each_frame(|frame| {
        if let Some(speed) = opts.pace {
            let first = *first_ts.get_or_insert(frame.ts);
            let since_first = Duration::from_nanos(frame.ts.saturating_sub(first));
            // Stay responsive to reloads while waiting for the frame's time.
            wait_until_due(started, since_first, speed, || housekeeping(&mut engine, &mut output, reloader.as_ref()));
        }
        engine.process(frame.link, frame.ts, frame.data, frame.wire_len);
        since_flush += 1;
        if opts.pace.is_some() || since_flush >= FLUSH_EVERY {
            since_flush = 0;
            housekeeping(&mut engine, &mut output, reloader.as_ref());
        }
    });
    engine.finish();
    output.flush_records(&mut engine);
    let elapsed = started.elapsed();
    let partial = match read {
        Ok(()) => None,
        Err(e) if e.is_partial() => Some(e),
        Err(e) => return Err(e.into()),
    };
    if let Some(e) = output.error.take() {
        return Err(e);
    }
    if opts.emit != Emit::Records {
        // The L7 map shows the same nodes as the L4 map.
        for d in engine.take_deltas() {
            output.l4.apply_resolved(&d, output.identity);
        }
        for node in output.l4.view().nodes {
            output.map.add_node(node);
        }
        serde_json::to_writer_pretty(&mut *output.out, &output.map.view()).context("cannot write map")?;
        writeln!(output.out).context("cannot write map")?;
    }
    output.out.flush().context("cannot write output")?;
    if let Some(path) = &opts.plugin_status {
        let mut status = engine.sink().status();
        status.extend(rejected);
        let json = serde_json::to_string_pretty(&status)?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let flows = engine.flows().stats().flows_created as usize;
    Ok(ReplayOutcome {
        stats: engine.stats(),
        elapsed,
        flows_reported: flows,
        dispatch: Some(engine.sink().stats()),
        partial,
    })
}

fn housekeeping(engine: &mut Engine<Dispatcher>, output: &mut Output<'_>, reloader: Option<&Reloader>) {
    output.flush_records(engine);
    let deltas = engine.take_deltas();
    if output.emit != Emit::Records {
        for d in &deltas {
            output.l4.apply_resolved(d, output.identity);
        }
    }
    apply_reloads(engine, reloader, |entry| output.map.set_legend(entry));
    let now = engine.now();
    engine.sink_mut().tick(now);
}

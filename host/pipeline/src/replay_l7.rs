//! `trawl replay --emit records` and `--emit map --map l7`: the capture
//! through the pipeline with reassembly on and the plugins attached.

use crate::pipeline::{Batch, Cadence, FileSource, Pipeline, Report, Sink, legend};
use crate::replay::{Emit, ReplayOptions, ReplayOutcome, load_identity};
use anyhow::Context;
use std::io::Write;
use std::time::Duration;
use trawl_core::l7map::{L7Map, LegendEntry};
use trawl_core::{Identity, L4Map};
use trawl_runtime::SharedPlugin;
use trawl_runtime::records::to_l7;
use trawl_runtime::registry::{PluginSet, PluginStatus, Reloader};
use trawl_runtime::wasm::{SandboxLimits, WasmRuntime};

/// Frames between record flushes and plugin housekeeping when not paced.
const FLUSH_EVERY: u32 = 1024;

/// The plugins a replay starts with, and the watcher if asked for.
pub fn plugins_for(opts: &ReplayOptions) -> anyhow::Result<(Vec<SharedPlugin>, Option<Reloader>, Vec<PluginStatus>)> {
    if opts.native_plugins {
        #[cfg(feature = "native-plugins")]
        {
            let plugins = trawl_runtime::native::first_party().into_iter().map(std::sync::Arc::new).collect();
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

/// Bytes of JSON lines gathered before they are written.
const LINES_FLUSH_AT: usize = 1 << 16;

/// Where `trawl replay`'s L7 output goes: records one per line, or the
/// L7 map (with the L4 map's nodes).
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
    /// Records kept rather than printed (`--write-pcap`).
    collected: Option<Vec<trawl_core::record::L7Record>>,
    /// A batch's JSON lines, written out in one call: serde_json writing
    /// straight to a `dyn Write` made a dynamic call per token, a fifth
    /// of a Redis replay.
    lines: Vec<u8>,
}

impl Output<'_> {
    fn write_lines(&mut self) {
        if self.error.is_none()
            && !self.lines.is_empty()
            && let Err(e) = self.out.write_all(&self.lines)
        {
            self.error = Some(anyhow::Error::new(e).context("cannot write output"));
        }
        self.lines.clear();
    }
}

impl Sink for Output<'_> {
    fn legend(&mut self, entry: LegendEntry) {
        self.map.set_legend(entry);
    }

    fn batch(&mut self, batch: Batch, _report: &Report<'_>) {
        for h in batch.records {
            let (record, src, dst) = to_l7(h, self.identity);
            if let Some(kept) = &mut self.collected {
                kept.push(record);
                continue;
            }
            match self.emit {
                Emit::Records => {
                    if self.error.is_none() {
                        // Writing to a vector cannot fail; a record that
                        // cannot be serialised is a bug, reported once.
                        if let Err(e) = serde_json::to_writer(&mut self.lines, &record) {
                            self.error = Some(anyhow::Error::new(e).context("cannot write output"));
                        }
                        self.lines.push(b'\n');
                        if self.lines.len() >= LINES_FLUSH_AT {
                            self.write_lines();
                        }
                    }
                }
                _ => self.map.apply(&record, &src, &dst),
            }
        }
        self.write_lines();
        if self.emit != Emit::Records {
            for d in &batch.deltas {
                self.l4.apply_resolved(d, self.identity);
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

pub fn run(opts: &ReplayOptions, out: &mut dyn Write) -> anyhow::Result<ReplayOutcome> {
    Ok(replay(opts, out, false)?.0)
}

/// Every record of the capture, with the plugins' legend entries.
pub fn records(
    opts: &ReplayOptions,
) -> anyhow::Result<(Vec<trawl_core::record::L7Record>, Vec<LegendEntry>, ReplayOutcome)> {
    let only_records = ReplayOptions { emit: Emit::Records, ..opts.clone() };
    let (outcome, records, legend) = replay(&only_records, &mut std::io::sink(), true)?;
    Ok((records, legend, outcome))
}

fn replay(
    opts: &ReplayOptions,
    out: &mut dyn Write,
    collect: bool,
) -> anyhow::Result<(ReplayOutcome, Vec<trawl_core::record::L7Record>, Vec<LegendEntry>)> {
    let identity = load_identity(&opts.inventories)?;
    let (plugins, reloader, rejected) = plugins_for(opts)?;
    let mut map = L7Map::new(opts.group_by);
    map.set_split_hosts(opts.split_hosts);
    let legends: Vec<LegendEntry> = plugins.iter().map(legend).collect();
    for entry in &legends {
        map.set_legend(entry.clone());
    }
    // Paced, records show as they happen and reloads are picked up while
    // waiting for a frame's time.
    let cadence = match opts.pace {
        Some(_) => Cadence { frames: Some(1), wall: Some(Duration::from_millis(20)), ..Cadence::default() },
        None => Cadence { frames: Some(FLUSH_EVERY), ..Cadence::default() },
    };
    let mut pipeline = Pipeline::new(opts, plugins, reloader, cadence);
    let mut output = Output {
        emit: opts.emit,
        out,
        identity: &identity,
        map,
        error: None,
        flush_each: opts.pace.is_some(),
        l4: L4Map::new(opts.group_by, opts.rate_window_secs),
        collected: collect.then(Vec::new),
        lines: Vec::new(),
    };
    let source = FileSource { speed: opts.pace, ..FileSource::new(&opts.capture) };
    let ran = source.run(&mut pipeline, &mut output, || {})?;
    if let Some(e) = output.error.take() {
        return Err(e);
    }
    let collected = output.collected.take().unwrap_or_default();
    if opts.emit != Emit::Records {
        // The L7 map shows the same nodes as the L4 map.
        for node in output.l4.view().nodes {
            output.map.add_node(node);
        }
        serde_json::to_writer_pretty(&mut *output.out, &output.map.view()).context("cannot write map")?;
        writeln!(output.out).context("cannot write map")?;
    }
    output.out.flush().context("cannot write output")?;
    let report = pipeline.report();
    let plugins = report.plugins();
    if let Some(path) = &opts.plugin_status {
        let mut status = plugins.clone();
        status.extend(rejected);
        let json = serde_json::to_string_pretty(&status)?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let outcome = ReplayOutcome {
        stats: report.stats(),
        elapsed: ran.elapsed,
        flows_reported: pipeline.flows_created() as usize,
        dispatch: Some(report.dispatch()),
        plugins,
        partial: ran.partial,
    };
    Ok((outcome, collected, legends))
}

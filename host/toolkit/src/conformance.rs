//! `trawl plugin test PLUGIN.wasm CAPTURE… [--expect GOLDEN.jsonl]
//! [--bless]`: the plugin alone, in the agent's sandbox and under its
//! dispatch rules, over captures. Prints the records (one JSON object per
//! line, as `trawl replay --emit records` does), then a conformance
//! report: faults, time per call, throughput, peak memory, amplification,
//! records per connection and requests left unanswered. Fails on a fault,
//! on a difference from the golden records, or on an amplification over
//! [`MAX_AMPLIFICATION`]: a plugin's CI.

use crate::builder;
use anyhow::{Context, bail};
use sketches_ddsketch::{Config, DDSketch};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trawl_core::Identity;
use trawl_pipeline::pipeline::{Batch, Cadence, FileSource, Pipeline, Report, Sink};
use trawl_pipeline::replay::ReplayOptions;
use trawl_runtime::records::to_l7;
use trawl_runtime::wasm::{SandboxLimits, WasmRuntime};
use trawl_runtime::{InstanceFactory, LoadError, LoadedPlugin, PluginFault, PluginInstance};
use trawl_sdk::abi::{ConnMeta, DataResult, Dir, L4, Probe};

/// Bytes copied into a plugin per stream byte, beyond which it fails: a
/// parser that re-reads its input (see the wire-speed work).
pub const MAX_AMPLIFICATION: f64 = 2.0;

#[derive(Clone, Debug, Default)]
pub struct TestOptions {
    pub plugin: PathBuf,
    pub captures: Vec<PathBuf>,
    pub expect: Option<PathBuf>,
    /// Write the records to `expect` instead of comparing.
    pub bless: bool,
}

/// Time and memory of every call into the plugin.
struct CallStats {
    sketch: DDSketch,
    busy: Duration,
    peak_memory: u64,
}

type Shared = Arc<Mutex<CallStats>>;

struct TimedFactory {
    inner: Box<dyn InstanceFactory>,
    stats: Shared,
}

impl InstanceFactory for TimedFactory {
    fn instantiate(&self) -> Result<Box<dyn PluginInstance>, LoadError> {
        Ok(Box::new(Timed { inner: self.inner.instantiate()?, stats: Arc::clone(&self.stats) }))
    }
}

/// An instance whose every call is timed.
struct Timed {
    inner: Box<dyn PluginInstance>,
    stats: Shared,
}

impl Timed {
    fn time<T>(&mut self, call: impl FnOnce(&mut dyn PluginInstance) -> T) -> T {
        let start = Instant::now();
        let out = call(self.inner.as_mut());
        let took = start.elapsed();
        let memory = self.inner.memory_bytes().unwrap_or(0);
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        s.sketch.add(took.as_nanos() as f64);
        s.busy += took;
        s.peak_memory = s.peak_memory.max(memory);
        out
    }
}

impl PluginInstance for Timed {
    fn configure(&mut self, config: &trawl_sdk::redact::PluginConfig) -> Result<(), PluginFault> {
        self.inner.configure(config)
    }
    fn probe(&mut self, l4: L4, dir: Dir, bytes: &[u8]) -> Result<Probe, PluginFault> {
        self.time(|i| i.probe(l4, dir, bytes))
    }
    fn open(&mut self, conn: u64, meta: &ConnMeta) -> Result<DataResult, PluginFault> {
        self.time(|i| i.open(conn, meta))
    }
    fn data(
        &mut self,
        conn: u64,
        dir: Dir,
        flags: u32,
        ts: u64,
        bytes: &[u8],
        gap: u64,
    ) -> Result<DataResult, PluginFault> {
        self.time(|i| i.data(conn, dir, flags, ts, bytes, gap))
    }
    fn datagram(&mut self, conn: u64, dir: Dir, ts: u64, bytes: &[u8]) -> Result<DataResult, PluginFault> {
        self.time(|i| i.datagram(conn, dir, ts, bytes))
    }
    fn close(&mut self, conn: u64, ts: u64) -> Result<DataResult, PluginFault> {
        self.time(|i| i.close(conn, ts))
    }
    fn tick(&mut self, ts: u64) -> Result<DataResult, PluginFault> {
        self.time(|i| i.tick(ts))
    }
    fn memory_bytes(&self) -> Option<u64> {
        self.inner.memory_bytes()
    }
}

/// Collects the records of a run as JSON lines.
struct Collect<'a> {
    identity: &'a Identity,
    lines: Vec<String>,
    unanswered: u64,
}

impl Sink for Collect<'_> {
    fn batch(&mut self, batch: Batch, _report: &Report<'_>) {
        for h in batch.records {
            if h.record.request_ts.is_some() && h.record.response_ts.is_none() {
                self.unanswered += 1;
            }
            let (record, _, _) = to_l7(h, self.identity);
            self.lines.push(serde_json::to_string(&record).unwrap_or_default());
        }
    }
}

/// What `trawl plugin test` found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Conformance {
    pub plugin: String,
    pub version: String,
    pub abi: u32,
    pub captures: usize,
    pub connections: u64,
    pub records: u64,
    pub records_per_connection: f64,
    pub unanswered_requests: u64,
    pub faults: u64,
    pub last_fault: Option<String>,
    pub calls: u64,
    pub call_p50_us: f64,
    pub call_p99_us: f64,
    /// Stream bytes dissected per second of time spent inside the plugin.
    pub mb_per_s: f64,
    pub peak_memory_bytes: u64,
    pub amplification: f64,
    pub stream_bytes: u64,
    /// How the records compare with `--expect` (None: not asked).
    pub golden: Option<String>,
    /// Why it fails; empty: it passes.
    pub failures: Vec<String>,
}

impl std::fmt::Display for Conformance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "conformance of {} {} (plugin ABI v{}) over {} capture(s):",
            self.plugin, self.version, self.abi, self.captures
        )?;
        writeln!(
            f,
            "  records        {} from {} connections ({:.2} per connection), {} requests unanswered",
            self.records, self.connections, self.records_per_connection, self.unanswered_requests
        )?;
        writeln!(
            f,
            "  faults         {}{}",
            self.faults,
            self.last_fault.as_ref().map(|e| format!(" (last: {e})")).unwrap_or_default()
        )?;
        writeln!(
            f,
            "  time per call  p50 {:.1} µs, p99 {:.1} µs over {} calls",
            self.call_p50_us, self.call_p99_us, self.calls
        )?;
        writeln!(
            f,
            "  throughput     {:.1} MB/s of stream inside the plugin ({} stream bytes)",
            self.mb_per_s, self.stream_bytes
        )?;
        writeln!(f, "  peak memory    {:.1} MiB of linear memory", self.peak_memory_bytes as f64 / (1 << 20) as f64)?;
        writeln!(
            f,
            "  amplification  {:.3} bytes copied in per stream byte (limit {MAX_AMPLIFICATION})",
            self.amplification
        )?;
        if let Some(g) = &self.golden {
            writeln!(f, "  golden         {g}")?;
        }
        match self.failures.as_slice() {
            [] => write!(f, "PASS"),
            failures => write!(f, "FAIL: {}", failures.join("; ")),
        }
    }
}

/// Loads the plugin wrapped for timing.
fn load_timed(path: &Path) -> anyhow::Result<(LoadedPlugin, Shared)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let runtime = WasmRuntime::new(SandboxLimits::default())?;
    let name = path.display().to_string();
    let loaded = builder::check_with(&runtime, &bytes, &name)?;
    let stats = Arc::new(Mutex::new(CallStats {
        sketch: DDSketch::new(Config::defaults()),
        busy: Duration::ZERO,
        peak_memory: 0,
    }));
    let timed =
        LoadedPlugin { factory: Box::new(TimedFactory { inner: loaded.factory, stats: Arc::clone(&stats) }), ..loaded };
    Ok((timed, stats))
}

/// Compares records with a golden file: the first difference, if any.
fn compare(got: &[String], golden: &str) -> Option<String> {
    let want: Vec<&str> = golden.lines().filter(|l| !l.trim().is_empty()).collect();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let (gv, wv) =
            (serde_json::from_str::<serde_json::Value>(g).ok(), serde_json::from_str::<serde_json::Value>(w).ok());
        if gv != wv {
            return Some(format!("record {} differs:\n    want {w}\n    got  {g}", i + 1));
        }
    }
    (got.len() != want.len()).then(|| format!("{} records, the golden file has {}", got.len(), want.len()))
}

/// Runs the test; records go to `out`. The result says whether it passed.
pub fn run(opts: &TestOptions, out: &mut dyn Write) -> anyhow::Result<Conformance> {
    if opts.captures.is_empty() {
        bail!("name at least one capture to run the plugin over");
    }
    if opts.bless && opts.expect.is_none() {
        bail!("--bless writes the golden records to the --expect file: name one");
    }
    let (plugin, stats) = load_timed(&opts.plugin)?;
    let mut report = Conformance {
        plugin: plugin.info.name.clone(),
        version: plugin.info.version.clone(),
        abi: plugin.abi,
        captures: opts.captures.len(),
        ..Conformance::default()
    };
    let plugin = Arc::new(plugin);
    let identity = Identity::new();
    let mut sink = Collect { identity: &identity, lines: Vec::new(), unanswered: 0 };
    let (mut bytes_in, mut calls) = (0u64, 0u64);
    for capture in &opts.captures {
        let replay = ReplayOptions::new(capture);
        let cadence = Cadence { frames: Some(1024), ..Cadence::default() };
        let mut pipeline = Pipeline::new(&replay, vec![Arc::clone(&plugin)], None, cadence);
        let ran = FileSource::new(capture).run(&mut pipeline, &mut sink, || {})?;
        if let Some(partial) = ran.partial {
            eprintln!("warning: {} ends early: {partial}", capture.display());
        }
        let r = pipeline.report();
        report.connections += r.dispatch().attached;
        for p in r.plugins() {
            report.faults += p.faults;
            report.records += p.records;
            report.stream_bytes += p.stream_bytes;
            bytes_in += p.bytes_in + p.probe_bytes;
            calls += p.calls;
            if p.last_error.is_some() {
                report.last_fault = p.last_error;
            }
        }
    }
    for line in &sink.lines {
        writeln!(out, "{line}").context("cannot write records")?;
    }
    out.flush().context("cannot write records")?;
    let s = stats.lock().unwrap_or_else(|e| e.into_inner());
    let quantile = |q: f64| s.sketch.quantile(q).ok().flatten().unwrap_or(0.0) / 1000.0;
    report.calls = calls;
    report.call_p50_us = quantile(0.5);
    report.call_p99_us = quantile(0.99);
    report.peak_memory_bytes = s.peak_memory;
    report.mb_per_s = report.stream_bytes as f64 / 1e6 / s.busy.as_secs_f64().max(1e-9);
    report.amplification = if report.stream_bytes == 0 { 0.0 } else { bytes_in as f64 / report.stream_bytes as f64 };
    report.records_per_connection =
        if report.connections == 0 { 0.0 } else { report.records as f64 / report.connections as f64 };
    report.unanswered_requests = sink.unanswered;
    if report.faults > 0 {
        report.failures.push(format!("{} fault(s)", report.faults));
    }
    if report.amplification > MAX_AMPLIFICATION {
        report.failures.push(format!("amplification {:.2} is over {MAX_AMPLIFICATION}", report.amplification));
    }
    if let Some(golden) = &opts.expect {
        if opts.bless {
            let mut text = sink.lines.join("\n");
            text.push('\n');
            std::fs::write(golden, text).with_context(|| format!("cannot write {}", golden.display()))?;
            report.golden = Some(format!("{} records written to {}", sink.lines.len(), golden.display()));
        } else {
            let want = std::fs::read_to_string(golden)
                .with_context(|| format!("cannot read {} (write it with --bless)", golden.display()))?;
            match compare(&sink.lines, &want) {
                None => report.golden = Some(format!("all {} records as in {}", sink.lines.len(), golden.display())),
                Some(diff) => {
                    report.golden = Some(diff);
                    report.failures.push(format!("records differ from {}", golden.display()));
                }
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_records_compare_as_json_and_say_where_they_differ() {
        let got = vec![r#"{"a":1,"b":2}"#.to_string(), r#"{"a":2}"#.to_string()];
        assert_eq!(compare(&got, "{\"b\":2,\"a\":1}\n{\"a\":2}\n"), None);
        assert!(compare(&got, "{\"a\":1,\"b\":2}\n{\"a\":3}\n").is_some_and(|d| d.starts_with("record 2 differs")));
        assert!(compare(&got, "{\"a\":1,\"b\":2}\n").is_some_and(|d| d.contains("2 records, the golden file has 1")));
    }
}

//! `trawl replay`: a capture file through the engine, out as flows or a map.

use crate::pipeline::{Batch, Cadence, FileSource, Pipeline, Report, Sink};
use anyhow::Context;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use trawl_capture::CaptureError;
use trawl_core::flow::FlowTableConfig;
use trawl_core::{EngineStats, GroupBy, Identity, L4Map};
use trawl_runtime::DispatchStats;

/// What `trawl replay` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    /// One JSON line per flow.
    Flows,
    /// One JSON document: the workload map.
    Map,
    /// One JSON line per L7 record (request/response pair).
    Records,
    /// One JSON document: what changed from this capture's map to that of
    /// the `--diff` capture.
    Diff,
    /// The map (`--map`, `--group-by`) as Graphviz DOT.
    Dot,
    /// The map as GraphML (networkx, yEd, Gephi).
    Graphml,
    /// The map as GEXF (Gephi).
    Gexf,
    /// The map as Cytoscape JSON, in Kiali's shape.
    Cytoscape,
}

impl Emit {
    /// The graph format, when this is a map export.
    pub fn export_format(self) -> Option<trawl_core::export::Format> {
        use trawl_core::export::Format;
        match self {
            Emit::Dot => Some(Format::Dot),
            Emit::Graphml => Some(Format::GraphMl),
            Emit::Gexf => Some(Format::Gexf),
            Emit::Cytoscape => Some(Format::Cytoscape),
            _ => None,
        }
    }
}

/// Which map `--emit map` draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MapKind {
    /// Every TCP/UDP connection between workloads.
    #[default]
    L4,
    /// Dissected requests between workloads, per protocol.
    L7,
}

/// Settings of one replay.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub capture: PathBuf,
    pub inventories: Vec<PathBuf>,
    pub emit: Emit,
    pub map: MapKind,
    pub group_by: GroupBy,
    pub rate_window_secs: u32,
    pub flows: FlowTableConfig,
    /// Extra plugin directories; they add to or override embedded plugins.
    pub plugin_dirs: Vec<PathBuf>,
    /// Run only these plugins (by name); `None`: all of them.
    pub enabled_plugins: Option<Vec<String>>,
    /// Run the first-party dissectors linked natively instead of as wasm.
    pub native_plugins: bool,
    /// Replay at this multiple of capture speed (1.0 = real time).
    pub pace: Option<f64>,
    /// Reload plugins from `plugin_dirs` when their files change.
    pub watch: bool,
    /// Where to write the plugins' final status as JSON.
    pub plugin_status: Option<PathBuf>,
    /// Fault handling and draining of plugins.
    pub dispatch: trawl_runtime::dispatch::DispatchConfig,
    /// Bytes of recent records the graph service keeps for filters set
    /// later (its maps keep every count regardless).
    pub record_log_bytes: usize,
    /// Most service-graph series on `/metrics` (`--metrics-max-series`).
    pub metrics_max_series: usize,
    /// Seconds a service-graph series may count nothing before it goes.
    pub metrics_series_idle_secs: u64,
    /// Bytes of recent packets kept for `/api/pcap` (`--pcap-ring-mib`).
    pub pcap_ring_bytes: usize,
    /// Push the service-graph series over OTLP (`--otlp-endpoint`).
    pub otlp: Option<trawl_service::otlp::OtlpConfig>,
    /// `--emit diff`: the capture after the change, and when a difference
    /// counts as one.
    pub diff_against: Option<PathBuf>,
    /// What the served map calls degraded and failing (`--health`).
    pub health: trawl_service::HealthThresholds,
    pub diff_thresholds: trawl_core::diff::Thresholds,
    /// Where the served map keeps its history, and how much
    /// (`--history-dir`, `--history-bytes`).
    pub history: trawl_service::history::HistoryConfig,
    /// An L7 edge per virtual host of a server that serves several.
    pub split_hosts: bool,
}

impl ReplayOptions {
    pub fn new(capture: impl Into<PathBuf>) -> Self {
        ReplayOptions {
            capture: capture.into(),
            inventories: Vec::new(),
            emit: Emit::Flows,
            map: MapKind::L4,
            group_by: GroupBy::Pod,
            rate_window_secs: 10,
            flows: FlowTableConfig::default(),
            plugin_dirs: Vec::new(),
            enabled_plugins: None,
            native_plugins: false,
            pace: None,
            watch: false,
            plugin_status: None,
            dispatch: Default::default(),
            record_log_bytes: trawl_service::DEFAULT_RECORD_LOG_BYTES,
            metrics_max_series: trawl_core::servicegraph::DEFAULT_MAX_SERIES,
            metrics_series_idle_secs: 900,
            pcap_ring_bytes: trawl_service::packets::DEFAULT_RING_BYTES,
            otlp: None,
            diff_against: None,
            health: Default::default(),
            diff_thresholds: Default::default(),
            history: Default::default(),
            split_hosts: true,
        }
    }
}

/// What a replay did, for `--stats` and for the exit code.
#[derive(Debug)]
pub struct ReplayOutcome {
    pub stats: EngineStats,
    pub elapsed: Duration,
    pub flows_reported: usize,
    pub dispatch: Option<DispatchStats>,
    /// Each plugin's final status (L7 replays).
    pub plugins: Vec<trawl_runtime::registry::PluginStatus>,
    /// Set when the capture ended early; everything before it was reported.
    pub partial: Option<CaptureError>,
}

impl ReplayOutcome {
    /// The `--stats` line.
    pub fn stats_line(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let s = &self.stats;
        format!(
            "trawl replay: {} packets, {} bytes in {:.3} s = {:.1} MB/s, {:.2} Mpps; {} flows ({} evicted, {} expired); \
             skipped {} non-IP, {} other IP protocol, {} malformed, {} unattributed fragments",
            s.frames,
            s.frame_bytes,
            secs,
            s.frame_bytes as f64 / secs / 1e6,
            s.frames as f64 / secs / 1e6,
            self.flows_reported,
            s.flow_table.flows_evicted,
            s.flow_table.flows_expired,
            s.skipped_non_ip,
            s.skipped_other_ip_protocol,
            s.skipped_malformed,
            s.skipped_unattributed_fragments,
        ) + &self
            .dispatch
            .map(|d| {
                format!(
                    "; {} records from {} connections ({} attached, {} unknown, {} desyncs, {} detached by faults)",
                    d.records, d.connections, d.attached, d.unknown, d.desyncs, d.detached_by_fault
                )
            })
            .unwrap_or_default()
            + &self
                .plugins
                .iter()
                .filter_map(|p| {
                    Some(format!(
                        "; {}: {} stream bytes, {} copied in, {} skipped, amplification {:.2}",
                        p.name,
                        p.stream_bytes,
                        p.bytes_in,
                        p.skipped_bytes,
                        p.amplification()?
                    ))
                })
                .collect::<String>()
    }
}

/// The documents of an inventory file: JSON, or YAML by extension (one
/// or more `---`-separated documents), as `kubectl get -o` writes them.
pub fn inventory_documents(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read inventory {}", path.display()))?;
    // kubectl on Windows writes a byte-order mark.
    let text = text.trim_start_matches('\u{feff}');
    if !path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
        let doc = serde_json::from_str(text).with_context(|| format!("bad JSON in inventory {}", path.display()))?;
        return Ok(vec![doc]);
    }
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = <serde_json::Value as serde::Deserialize>::deserialize(doc)
            .with_context(|| format!("bad YAML in inventory {}", path.display()))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// Loads inventory files into one identity.
pub fn load_identity(paths: &[PathBuf]) -> anyhow::Result<Identity> {
    let mut identity = Identity::new();
    for path in paths {
        let mut n = 0;
        for doc in inventory_documents(path)? {
            n += identity.load_value(&doc).with_context(|| format!("bad inventory {}", path.display()))?;
        }
        tracing::debug!(path = %path.display(), workloads = n, "inventory loaded");
    }
    Ok(identity)
}

/// Replays a capture and writes the chosen output to `out`.
///
/// A capture that cannot be opened is an error. A capture that breaks off
/// part-way is not: everything before the break is written, and the break
/// comes back in [`ReplayOutcome::partial`].
pub fn run(opts: &ReplayOptions, out: &mut dyn Write) -> anyhow::Result<ReplayOutcome> {
    if let Some(format) = opts.emit.export_format() {
        // The map as `--emit map` gives it, then in the format asked for.
        let as_map = ReplayOptions { emit: Emit::Map, ..opts.clone() };
        let mut json = Vec::new();
        let outcome = run(&as_map, &mut json)?;
        let map: serde_json::Value = serde_json::from_slice(&json).context("the map did not parse")?;
        let graph = trawl_core::export::ExportGraph::from_map_json(&map);
        out.write_all(graph.render(format).as_bytes()).context("cannot write output")?;
        out.flush().context("cannot write output")?;
        return Ok(outcome);
    }
    if opts.emit == Emit::Diff {
        let after = opts.diff_against.as_deref().context("--emit diff needs --diff AFTER.pcap")?;
        return crate::diff::run(opts, after, out);
    }
    if opts.emit == Emit::Records || (opts.emit == Emit::Map && opts.map == MapKind::L7) {
        return crate::replay_l7::run(opts, out);
    }
    let identity = load_identity(&opts.inventories)?;
    let want_map = opts.emit == Emit::Map;
    let mut map = MapSink { map: L4Map::new(opts.group_by, opts.rate_window_secs), identity: &identity, want_map };
    // No plugins: L4 only, nothing reassembled.
    let cadence = Cadence { frames: Some(4096), ..Cadence::default() };
    // A replay reports its flows: the table keeps the ended ones.
    let mut with_records = opts.clone();
    with_records.flows.keep_finished = true;
    let mut pipeline = Pipeline::new(&with_records, Vec::new(), None, cadence);
    let ran = FileSource::new(&opts.capture).run(&mut pipeline, &mut map, || {})?;
    let (elapsed, partial) = (ran.elapsed, ran.partial);
    let map = map.map;
    let mut records = pipeline.take_finished_flows();
    records.sort_by_key(|r| r.first_ts);
    match opts.emit {
        Emit::Flows => {
            for r in &records {
                write_json_line(out, r)?;
            }
        }
        // (Exports were turned into Map above.)
        _ => {
            serde_json::to_writer_pretty(&mut *out, &map.view()).context("cannot write map")?;
            writeln!(out).context("cannot write map")?;
        }
    }
    out.flush().context("cannot write output")?;
    Ok(ReplayOutcome {
        stats: pipeline.report().stats(),
        elapsed,
        flows_reported: records.len(),
        dispatch: None,
        plugins: Vec::new(),
        partial,
    })
}

/// The L4 map of `trawl replay --emit map`.
struct MapSink<'a> {
    map: L4Map,
    identity: &'a Identity,
    want_map: bool,
}

impl Sink for MapSink<'_> {
    fn batch(&mut self, batch: Batch, _report: &Report<'_>) {
        if self.want_map {
            for d in &batch.deltas {
                self.map.apply_resolved(d, self.identity);
            }
        }
    }
}

pub(crate) fn write_json_line(out: &mut dyn Write, value: &impl Serialize) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, value).context("cannot write output")?;
    out.write_all(b"\n").context("cannot write output")
}

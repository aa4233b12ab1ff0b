//! The `trawl` command line.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::{BufWriter, ErrorKind};
use std::path::PathBuf;
use std::process::ExitCode;
use trawl_core::GroupBy;
use trawl_host::capture::live::discover::Discovery;
use trawl_host::config::{Config, merge_capture_filter};
use trawl_host::replay::{self, Emit, MapKind, ReplayOptions};
use trawl_host::service::auth::Access;
use trawl_sdk::redact::{Level, Policy};

/// Every allocation the agent makes (see the workspace's Cargo.toml for why).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cluster_args;
mod mcp_cmd;
mod plugin_cmd;
mod source;
mod transport;

/// trawl draws live L4/L7 workload maps from captured traffic.
#[derive(Debug, Parser)]
#[command(name = "trawl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay a pcap/pcapng capture through the engine.
    Replay(ReplayArgs),
    /// List the dissector plugins: the embedded ones plus those in DIR.
    Plugins(PluginsArgs),
    /// Serve the live map (web UI, REST and WebSocket API) while a capture replays.
    Serve(ServeArgs),
    /// Serve the map of the embedded demo capture, replayed in a loop.
    Demo(DemoArgs),
    /// Count L4 flows live with eBPF on the workloads in named network
    /// namespaces (/run/netns), then print each direction's totals.
    Count(CountArgs),
    /// One node's worker: dissect locally and send counts and records to a hub.
    Worker(cluster_args::WorkerArgs),
    /// Merge the workers of a cluster and serve the map.
    Hub(cluster_args::HubArgs),
    /// Write, build, test and sign dissector plugins.
    #[command(subcommand)]
    Plugin(plugin_cmd::PluginCommand),
    /// Serve trawl's map to an AI assistant: an MCP server over stdio,
    /// reading a hub's API.
    Mcp(mcp_cmd::McpArgs),
}

/// A size in bytes: `1048576`, `64M`, `1G`, `512KiB`.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("invalid size {s:?}: expected a number, optionally with K, M or G"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("invalid size {s:?}: unit must be K, M, G or T")),
    };
    let bytes = n.checked_shl(shift).filter(|b| b >> shift == n).ok_or_else(|| format!("size {s:?} is too large"))?;
    if bytes < 1 << 20 {
        return Err(format!("size {s:?} is too small: history needs at least 1M"));
    }
    Ok(bytes)
}

/// `IP:PORT`, `[IPv6]:PORT` or an IPv6 address and port without brackets.
fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    let (ip, port) = s.rsplit_once(':').ok_or_else(|| format!("{s:?} is not IP:PORT"))?;
    let ip: std::net::IpAddr = ip.parse().map_err(|_| format!("{s:?} is not IP:PORT"))?;
    let port: u16 = port.parse().map_err(|_| format!("{s:?} has no valid port"))?;
    Ok(std::net::SocketAddr::new(ip, port))
}

fn parse_part(s: &str) -> Result<(u32, u32), String> {
    let (i, n) = s.split_once('/').ok_or("expected I/N, for example 0/3")?;
    let (i, n): (u32, u32) = (i.parse().map_err(|_| "bad I")?, n.parse().map_err(|_| "bad N")?);
    if n == 0 || i >= n {
        return Err(format!("part {i}/{n}: need 0 <= I < N"));
    }
    Ok((i, n))
}

#[derive(Debug, clap::Args)]
struct CountArgs {
    /// Only namespaces whose name starts with this.
    #[arg(long, default_value = "", conflicts_with = "routes")]
    netns_prefix: String,
    /// Workloads are the veths that host routes point at (routed CNIs).
    #[arg(long)]
    routes: bool,
    /// How long to count.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Room in the kernel map, in directional flows.
    #[arg(long, default_value_t = 65_536)]
    max_flows: u32,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    source: source::SourceArgs,
    /// With --live: take workload identity from the Kubernetes API too
    /// (in-cluster service account, or the kubeconfig), kept current by
    /// watches on pods, services, endpointslices, nodes and namespaces.
    #[arg(long, requires = "live")]
    kube: bool,
    /// With --live: room in the kernel's flow map (directional flows), and
    /// the most connections the L7 side tracks (the least recently active
    /// is evicted beyond it, and counted).
    #[arg(long, default_value_t = 65_536, requires = "live", value_parser = clap::value_parser!(u32).range(1..))]
    max_flows: u32,
    /// Start over at the end of the capture (time keeps moving forward).
    #[arg(long = "loop")]
    repeat: bool,
    /// Replay speed: a multiple of the recorded pace, or `max`.
    #[arg(long, default_value = "1.0", value_parser = parse_speed)]
    speed: Speed,
    /// Workload inventory (`kubectl get pods,services,nodes -A -o json`). May repeat.
    #[arg(long, value_name = "FILE")]
    inventory: Vec<PathBuf>,
    #[command(flatten)]
    common: ServiceArgs,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Insist on the live mini-cluster (root, clang-built eBPF, the demo's
    /// servers); fail with the reason otherwise.
    #[arg(long, conflicts_with = "replay")]
    live: bool,
    /// Serve the embedded capture in a loop even where live would work.
    #[arg(long)]
    replay: bool,
    /// Install the live demo's servers and clients (Debian packages and a
    /// Python virtualenv), then exit.
    #[arg(long, conflicts_with_all = ["live", "replay"])]
    install_deps: bool,
    /// Replay speed: a multiple of the recorded pace, or `max`.
    #[arg(long, default_value = "1.0", value_parser = parse_speed)]
    speed: Speed,
    #[command(flatten)]
    common: ServiceArgs,
}

#[derive(Debug, Clone, clap::Args)]
struct ServiceArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8899")]
    listen: std::net::SocketAddr,
    /// Token that grants reading the API: maps, records, details, plugins, metrics.
    #[arg(long, env = "TRAWL_API_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    api_token: Option<String>,
    /// Token that grants reading and changing: capture filters too.
    #[arg(long, env = "TRAWL_ADMIN_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    admin_token: Option<String>,
    /// With no token, on loopback: another Host name to accept (the API refuses
    /// others, which stops DNS rebinding). May repeat.
    #[arg(long = "allowed-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
    /// Serve the API without a token on a non-loopback address: anyone who can
    /// reach it reads every request and can retarget dissection.
    #[arg(long)]
    insecure_no_auth: bool,
    /// A directory of `*.wasm` plugins, added to the embedded ones and
    /// watched for changes (hot reload). May repeat.
    #[arg(long = "plugins", value_name = "DIR")]
    plugin_dirs: Vec<PathBuf>,
    /// Capture filter: dissect L7 only for pods whose name matches this regex.
    #[arg(long, value_name = "REGEX")]
    capture_filter: Option<String>,
    /// Capture filter: dissect L7 only in these namespaces. May repeat.
    #[arg(long = "namespace", value_name = "NS")]
    namespaces: Vec<String>,
    /// Capture filter: never dissect L7 in these namespaces. May repeat.
    #[arg(long = "exclude-namespace", value_name = "NS")]
    exclude_namespaces: Vec<String>,
    /// Width of the sliding window for rates, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=3600))]
    rate_window: u32,
    /// Capture filters and plugins from a file (YAML or JSON; a ConfigMap). Flags win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// MiB of recent records kept for filters and subscriptions set later
    /// (the maps keep every count; `records_log_evicted_total` counts what
    /// leaves).
    #[arg(long, value_name = "MIB", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    record_log_mib: u64,
    /// Most service-graph series on `/metrics` (per client and server
    /// workload and protocol); pairs past it are counted under
    /// client="other", server="other".
    #[arg(long, value_name = "N", default_value_t = trawl_core::servicegraph::DEFAULT_MAX_SERIES)]
    metrics_max_series: usize,
    /// Seconds a service-graph series may count nothing before it goes from
    /// `/metrics` (as Tempo lets idle edges go); 0 keeps every series.
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    metrics_series_idle: u64,
    /// MiB of recent whole packets kept for `GET /api/pcap` (an edge's or a
    /// filter's packets as pcapng); 0 keeps none. Live, only targeted
    /// workloads' packets are captured whole.
    #[arg(long, value_name = "MIB", default_value_t = 16, value_parser = clap::value_parser!(u64).range(0..=65_536))]
    pcap_ring_mib: u64,
    /// Push the service-graph metrics to this OpenTelemetry collector over
    /// OTLP/HTTP (protobuf): `http://HOST:4318`, or the full metrics URL.
    #[arg(long, value_name = "URL", env = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Seconds between OTLP pushes.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    otlp_interval: u64,
    /// `k8s.cluster.name` on the pushed resources.
    #[arg(long, value_name = "NAME")]
    cluster_name: Option<String>,
    /// When the map calls an L7 edge degraded and failing, in percent of
    /// requests that failed (Kiali's defaults).
    #[arg(long, value_name = "DEGRADED,FAILING", default_value = "0.1,20")]
    health: trawl_host::service::HealthThresholds,
    /// When the map calls an L7 edge degraded and failing by its p99
    /// latency, in milliseconds (the worse of this and `--health` counts).
    #[arg(long, value_name = "DEGRADED_MS,FAILING_MS", default_value = "1000,5000")]
    health_latency: String,
    /// Keep the map's history (each edge per 10 s, 1 min and 10 min) in
    /// DIR, so a restart keeps it. Without it, history lives in a temporary
    /// file removed at exit.
    #[arg(long, value_name = "DIR", env = "TRAWL_HISTORY_DIR")]
    history_dir: Option<PathBuf>,
    /// Disk the history may take (the oldest tier goes first beyond it):
    /// bytes, or with K, M, G (KiB, MiB, GiB).
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    history_bytes: u64,
    /// Seconds a history interval waits past its end for late data (a
    /// worker's lag, a slow response); later data is counted, not added.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    history_grace: u64,
    /// A server that serves several virtual hosts (an ingress) gets an L7
    /// edge per host (`Host`, `:authority`); `false` keeps one edge.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    split_hosts: bool,
    #[command(flatten)]
    redact: RedactArgs,
}

/// What records may show: `--redact` and `--redact-header`.
#[derive(Debug, Clone, clap::Args)]
struct RedactArgs {
    /// What to hide from records, at the source: `default` hides credentials,
    /// tokens, cookies and query values; `strict` hides values and previews
    /// too; `off` hides nothing.
    #[arg(long, value_name = "LEVEL", default_value = "default", value_parser = parse_redact)]
    redact: Level,
    /// One more header whose value is secret (any case). May repeat.
    #[arg(long = "redact-header", value_name = "NAME")]
    redact_headers: Vec<String>,
}

impl RedactArgs {
    fn policy(&self) -> Policy {
        if self.redact == Level::Off {
            eprintln!("trawl: --redact off: records show credentials, tokens and cookies as sent");
        }
        Policy::new(self.redact, &self.redact_headers)
    }
}

fn parse_redact(s: &str) -> Result<Level, String> {
    s.parse()
}

/// Replay speed.
#[derive(Debug, Clone, Copy)]
struct Speed(Option<f64>);

fn parse_speed(s: &str) -> Result<Speed, String> {
    if s == "max" {
        return Ok(Speed(None));
    }
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(Speed(Some(v))),
        _ => Err(format!("invalid speed {s:?}: a positive number or `max`")),
    }
}

#[derive(Debug, clap::Args)]
struct PluginsArgs {
    /// A plugin directory (`*.wasm`); its plugins add to or override the embedded ones.
    dir: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// Capture file (pcap or pcapng).
    file: PathBuf,
    /// Workload inventory: `kubectl get pods,services,nodes -A -o json` output.
    /// May be given more than once.
    #[arg(long, value_name = "FILE")]
    inventory: Vec<PathBuf>,
    /// What to print.
    #[arg(long, value_enum, default_value_t = Emit::Flows)]
    emit: Emit,
    /// Which map `--emit map` prints.
    #[arg(long, value_enum, default_value_t = MapKind::L4)]
    map: MapKind,
    /// How map nodes are grouped: pod (pods, services, nodes), namespace or node.
    #[arg(long, default_value = "pod", value_parser = parse_group_by)]
    group_by: GroupBy,
    /// Width of the sliding window for map rates, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=3600))]
    rate_window: u32,
    /// Most flows held at once; the least recently active is evicted beyond it.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(1..))]
    max_flows: u32,
    /// Seconds a UDP flow may be idle before it ends.
    #[arg(long, default_value_t = 180)]
    udp_timeout: u64,
    /// Print packets, bytes, elapsed time and throughput to stderr.
    #[arg(long)]
    stats: bool,
    /// A directory of `*.wasm` dissector plugins, added to the embedded ones
    /// (a plugin with the same name overrides). May be given more than once.
    #[arg(long = "plugins", value_name = "DIR")]
    plugin_dirs: Vec<PathBuf>,
    /// Reload plugins from the `--plugins` directories when their files change.
    #[arg(long)]
    watch: bool,
    /// Replay at this multiple of the capture's own speed (1 = real time).
    #[arg(long, value_name = "SPEED")]
    pace: Option<f64>,
    /// Run the first-party dissectors linked natively instead of sandboxed
    /// (for comparison and benchmarks).
    #[arg(long)]
    native_plugins: bool,
    /// Delay before a faulted plugin is re-instantiated (doubles per fault).
    #[arg(long, value_name = "MS", default_value_t = 50)]
    plugin_backoff_ms: u64,
    /// Write the plugins' final status (state, faults, records) as JSON here.
    #[arg(long, value_name = "FILE")]
    plugin_status: Option<PathBuf>,
    #[command(flatten)]
    redact: RedactArgs,
    /// The capture after a change: `--emit diff` prints which edges it
    /// added, removed and changed against FILE's map (of `--map`'s kind).
    #[arg(long, value_name = "AFTER")]
    diff: Option<PathBuf>,
    #[command(flatten)]
    thresholds: DiffArgs,
    /// A server that serves several virtual hosts (an ingress) gets an L7
    /// edge per host (`Host`, `:authority`); `false` keeps one edge.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    split_hosts: bool,
    /// Write the packets of the flows behind the records `--filter`
    /// matches (all records' without it) to OUT as pcapng, with names for
    /// Wireshark: a Name Resolution Block, and a comment per flow naming
    /// its workloads. Prints what it wrote instead of `--emit`'s output.
    #[arg(long, value_name = "OUT.pcapng")]
    write_pcap: Option<PathBuf>,
    /// With --write-pcap: a KFL2 display filter choosing the records, e.g.
    /// `http && status_code >= 500`.
    #[arg(long, value_name = "KFL2", requires = "write_pcap")]
    filter: Option<String>,
}

/// When `--emit diff` calls a difference a change (defaults ignore noise).
#[derive(Debug, clap::Args)]
struct DiffArgs {
    /// A rate changed when one side is this share more than the other [0.5].
    #[arg(long, value_name = "SHARE")]
    diff_min_change: Option<f64>,
    /// Requests an edge needs on both sides before its request rate, error
    /// rate and latency are compared [10].
    #[arg(long, value_name = "N")]
    diff_min_requests: Option<u64>,
    /// Least change of the error rate, as a share of requests [0.02].
    #[arg(long, value_name = "SHARE")]
    diff_min_error_points: Option<f64>,
    /// Least change of p99 latency [5].
    #[arg(long, value_name = "MS")]
    diff_min_latency_ms: Option<f64>,
    /// Bytes an edge needs before its byte rate is compared [65536].
    #[arg(long, value_name = "BYTES")]
    diff_min_bytes: Option<u64>,
}

impl DiffArgs {
    fn thresholds(&self) -> trawl_core::diff::Thresholds {
        let mut t = trawl_core::diff::Thresholds::default();
        t.min_change = self.diff_min_change.unwrap_or(t.min_change);
        t.min_requests = self.diff_min_requests.unwrap_or(t.min_requests);
        t.min_error_points = self.diff_min_error_points.unwrap_or(t.min_error_points);
        t.min_latency_ms = self.diff_min_latency_ms.unwrap_or(t.min_latency_ms);
        t.min_bytes = self.diff_min_bytes.unwrap_or(t.min_bytes);
        t
    }
}

fn parse_group_by(s: &str) -> Result<GroupBy, String> {
    s.parse()
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // TRAWL_LOG, else RUST_LOG (what Kubernetes manifests usually set).
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRAWL_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`trawl … | head`) is not a failure.
            if e.chain()
                .any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == ErrorKind::BrokenPipe))
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Replay(args) => {
            let mut opts = ReplayOptions::new(args.file);
            opts.inventories = args.inventory;
            opts.emit = args.emit;
            opts.map = args.map;
            opts.group_by = args.group_by;
            opts.rate_window_secs = args.rate_window;
            opts.flows.max_flows = args.max_flows;
            opts.flows.udp_idle_timeout_secs = args.udp_timeout;
            opts.plugin_dirs = args.plugin_dirs;
            opts.watch = args.watch;
            opts.pace = args.pace;
            opts.native_plugins = args.native_plugins;
            opts.plugin_status = args.plugin_status;
            opts.dispatch.backoff = std::time::Duration::from_millis(args.plugin_backoff_ms);
            opts.dispatch.redact = args.redact.policy();
            opts.diff_against = args.diff;
            opts.diff_thresholds = args.thresholds.thresholds();
            opts.split_hosts = args.split_hosts;
            if let Some(path) = &args.write_pcap {
                let summary = trawl_host::pcap_export::write(&opts, args.filter.as_deref(), path)
                    .context("cannot write the pcapng")?;
                println!("{}", serde_json::to_string(&summary)?);
                return Ok(ExitCode::SUCCESS);
            }
            let stdout = std::io::stdout();
            let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
            let outcome = replay::run(&opts, &mut out).context("replay failed")?;
            if args.stats {
                eprintln!("{}", outcome.stats_line());
            }
            if let Some(partial) = outcome.partial {
                eprintln!("warning: {partial}; reported the {} frames before it", outcome.stats.frames);
                return Ok(ExitCode::from(3));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            match args.source.replay {
                Some(capture) => serve(capture, args.inventory, args.speed, args.repeat, args.common)?,
                None => serve_live(
                    args.source.discovery(),
                    args.source.tls(),
                    args.kube,
                    args.max_flows,
                    args.inventory,
                    args.common,
                )?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            if args.install_deps {
                trawl_host::demo::install_deps()?;
                return Ok(ExitCode::SUCCESS);
            }
            let why_not_live =
                if args.replay { Some("--replay".to_string()) } else { trawl_host::demo::live_unavailable() };
            match why_not_live {
                None => {
                    let (replay, capture_filter, api) = service_options(PathBuf::new(), Vec::new(), args.common)?;
                    trawl_host::demo::run(api, replay, capture_filter)?;
                }
                Some(why) if args.live => anyhow::bail!("cannot run the live demo: {why}"),
                Some(why) => {
                    if !args.replay {
                        eprintln!("trawl: {why}; serving the recorded demo instead (trawl demo --live insists)");
                    }
                    let (pcap, inventory) = trawl_host::serve::demo_files()?;
                    serve(pcap, vec![inventory], args.speed, true, args.common)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker(a) => {
            let config = a.config.as_deref().map(Config::load).transpose()?;
            let mut replay = ReplayOptions::new(a.source.replay.clone().unwrap_or_default());
            replay.plugin_dirs = a.plugin_dirs;
            replay.inventories = a.inventory;
            replay.enabled_plugins = config.as_ref().and_then(|c| c.plugins.clone());
            replay.dispatch.redact = a.redact.policy();
            replay.pcap_ring_bytes = (a.pcap_ring_mib as usize) << 20;
            let (token, token_file, tls) = a.transport.settings(&a.hub)?;
            let opts = trawl_host::cluster::worker::WorkerOptions {
                hub: a.hub,
                token,
                token_file,
                tls,
                node: a.node,
                worker_id: a.worker_id.unwrap_or_else(|| std::process::id().to_string()),
                replay: replay.clone(),
                speed: a.speed.0,
                part: a.part,
                limits: trawl_host::cluster::outbox::OutboxLimits {
                    max_records: a.max_records,
                    journal: a.journal,
                    max_conversations: a.max_conversations,
                    max_record_bytes: a.max_record_mib << 20,
                    journal_bytes: a.journal_mib << 20,
                    // Live: the kernel map's flows, open and just closed,
                    // with room for the hub to fall behind. A replay is
                    // finite and its flows are the capture's.
                    max_flows: if a.source.live { (a.max_flows as usize).saturating_mul(4) } else { usize::MAX },
                },
                stay: a.stay,
                health_listen: a.health_listen,
            };
            if a.source.live {
                let flags = capture_filter(a.capture_filter, Vec::new(), a.exclude_namespaces)?;
                let live = trawl_host::live::LiveOptions {
                    discovery: a.source.discovery(),
                    replay,
                    api: Access::loopback(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
                    capture_filter: merge_capture_filter(flags, config.as_ref())?,
                    max_flows: a.max_flows,
                    kube: a.kube,
                    tls: a.source.tls(),
                };
                trawl_host::cluster::worker_live::run_live(opts, live)?;
            } else {
                trawl_host::cluster::worker::run(opts)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Hub(a) => {
            let access = a.transport.access(a.workers)?;
            let (replay, capture_filter, api) = service_options(PathBuf::new(), a.inventory, a.common)?;
            trawl_host::cluster::hub::run(trawl_host::cluster::hub::HubOptions {
                workers: a.workers,
                access,
                api,
                replay,
                capture_filter,
                kube: a.kube,
                worker_grace: std::time::Duration::from_secs(a.worker_grace),
                push: trawl_host::service::pushed::PushConfig {
                    store: a.plugin_store,
                    key: match &a.plugin_key {
                        Some(path) => Some(
                            trawl_host::plugins::signature::PublicKey::parse(
                                &std::fs::read_to_string(path)
                                    .with_context(|| format!("cannot read --plugin-key {}", path.display()))?,
                            )
                            .with_context(|| format!("--plugin-key {}", path.display()))?,
                        ),
                        None => None,
                    },
                    max_bytes: a.plugin_max_bytes,
                },
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Count(args) => {
            count(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin(command) => plugin_cmd::run(command),
        Command::Mcp(args) => {
            mcp_cmd::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins(args) => {
            let statuses = trawl_host::plugins::registry::list(args.dir.as_deref())?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&statuses)?);
            } else {
                println!("{:<12} {:<10} {:<14} {:<12} {:<14} SOURCE", "NAME", "VERSION", "HASH", "STATE", "PORTS");
                for s in &statuses {
                    let state = match &s.state {
                        trawl_host::plugins::PluginState::Rejected { reason } => {
                            format!("rejected: {reason}")
                        }
                        other => serde_json::to_value(other)?["state"].as_str().unwrap_or("?").to_string(),
                    };
                    println!(
                        "{:<12} {:<10} {:<14} {:<12} {:<14} {}",
                        s.name,
                        s.version,
                        s.hash.get(..12).unwrap_or(&s.hash),
                        state,
                        s.ports,
                        s.source
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `trawl count`: attach, say so on stderr (scripts wait for that line),
/// count, print one JSON line per direction.
fn count(a: CountArgs) -> anyhow::Result<()> {
    let live =
        trawl_host::capture::live::LiveCounters::start(&source::discovery(a.routes, &a.netns_prefix), a.max_flows)?;
    eprintln!("trawl count: counting on {} interfaces: {}", live.attached().len(), live.attached().join(" "));
    std::thread::sleep(std::time::Duration::from_secs_f64(a.seconds.max(0.0)));
    let mut readings = live.readings()?;
    readings.sort_by_key(|r| (r.src.ip, r.src.port, r.dst.ip, r.dst.port));
    let out = std::io::stdout();
    let mut out = out.lock();
    for r in readings {
        let line = serde_json::json!({
            "l4": r.l4, "src": r.src.ip, "sport": r.src.port, "dst": r.dst.ip, "dport": r.dst.port,
            "packets": r.counters.packets, "bytes": r.counters.bytes, "ip_bytes": r.counters.ip_bytes,
        });
        std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes())?;
    }
    let s = live.stats();
    eprintln!(
        "trawl count: {} packets seen, {} not counted (not TCP/UDP over IP), {} lost to a full map",
        s.packets, s.skipped, s.map_full
    );
    Ok(())
}

/// Capture filters from the command line.
fn capture_filter(
    regex: Option<String>,
    namespaces: Vec<String>,
    exclude_namespaces: Vec<String>,
) -> anyhow::Result<trawl_host::service::CaptureFilter> {
    let pod_regex = match regex {
        Some(r) => Some(regex::Regex::new(&r).with_context(|| format!("invalid --capture-filter {r:?}"))?),
        None => None,
    };
    Ok(trawl_host::service::CaptureFilter { pod_regex, namespaces, exclude_namespaces })
}

/// Replay options (inventories, plugins, window) and capture filters from
/// the command line.
fn service_options(
    capture: PathBuf,
    inventory: Vec<PathBuf>,
    a: ServiceArgs,
) -> anyhow::Result<(ReplayOptions, trawl_host::service::CaptureFilter, Access)> {
    let config = a.config.as_deref().map(Config::load).transpose()?;
    let mut replay = ReplayOptions::new(capture);
    replay.inventories = inventory;
    replay.rate_window_secs = a.rate_window;
    replay.watch = !a.plugin_dirs.is_empty();
    replay.plugin_dirs = a.plugin_dirs;
    replay.enabled_plugins = config.as_ref().and_then(|c| c.plugins.clone());
    replay.dispatch.redact = a.redact.policy();
    replay.record_log_bytes = (a.record_log_mib as usize) << 20;
    replay.metrics_max_series = a.metrics_max_series;
    replay.metrics_series_idle_secs = a.metrics_series_idle;
    replay.pcap_ring_bytes = (a.pcap_ring_mib as usize) << 20;
    if let Some(endpoint) = a.otlp_endpoint.filter(|e| !e.is_empty()) {
        let config = trawl_host::service::otlp::OtlpConfig {
            endpoint,
            interval: std::time::Duration::from_secs(a.otlp_interval),
            cluster: a.cluster_name,
        };
        // A bad endpoint stops the start, not the first push.
        config.url().map_err(anyhow::Error::msg)?;
        replay.otlp = Some(config);
    }
    replay.health = a.health.with_latency(&a.health_latency).map_err(anyhow::Error::msg)?;
    replay.split_hosts = a.split_hosts;
    replay.history = trawl_host::service::history::HistoryConfig {
        dir: a.history_dir,
        budget: a.history_bytes,
        grace_secs: a.history_grace,
    };
    let flags = capture_filter(a.capture_filter, a.namespaces, a.exclude_namespaces)?;
    let capture_filter = merge_capture_filter(flags, config.as_ref())?;
    let access = Access::new(a.listen, a.api_token, a.admin_token, a.allowed_hosts, a.insecure_no_auth)?;
    if a.insecure_no_auth && !access.has_tokens() && !a.listen.ip().is_loopback() {
        eprintln!(
            "trawl: WARNING: --insecure-no-auth: the API on {} is open to anyone who can reach it, \
             who can read every request and retarget dissection",
            a.listen
        );
    }
    Ok((replay, capture_filter, access))
}

fn serve(capture: PathBuf, inventory: Vec<PathBuf>, speed: Speed, repeat: bool, a: ServiceArgs) -> anyhow::Result<()> {
    let (replay, capture_filter, api) = service_options(capture, inventory, a)?;
    trawl_host::serve::run(trawl_host::serve::ServeOptions { replay, speed: speed.0, repeat, api, capture_filter })
}

fn serve_live(
    discovery: Discovery,
    tls: trawl_host::tls::TlsOptions,
    kube: bool,
    max_flows: u32,
    inventory: Vec<PathBuf>,
    a: ServiceArgs,
) -> anyhow::Result<()> {
    let (replay, capture_filter, api) = service_options(PathBuf::new(), inventory, a)?;
    trawl_host::live::run(trawl_host::live::LiveOptions {
        discovery,
        replay,
        api,
        capture_filter,
        max_flows,
        kube,
        tls,
    })
}

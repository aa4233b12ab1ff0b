//! The `worker` and `hub` commands' flags.

use super::{RedactArgs, ServiceArgs, Speed, parse_listen, parse_part, parse_speed, source, transport};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    /// The hub's worker address, HOST:PORT (a Kubernetes Service name works).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) hub: String,
    #[command(flatten)]
    pub(crate) transport: transport::WorkerTransportArgs,
    /// This node's name.
    #[arg(long)]
    pub(crate) node: String,
    /// This worker's id (default: the process id).
    #[arg(long)]
    pub(crate) worker_id: Option<String>,
    #[command(flatten)]
    pub(crate) source: source::SourceArgs,
    /// With --live: inventory for deciding which workloads are targeted. May repeat.
    #[arg(long, value_name = "FILE", requires = "live")]
    pub(crate) inventory: Vec<PathBuf>,
    /// With --live: dissect L7 only for pods whose name matches this regex.
    #[arg(long, value_name = "REGEX", requires = "live")]
    pub(crate) capture_filter: Option<String>,
    /// With --live: never dissect L7 in these namespaces. May repeat.
    #[arg(long = "exclude-namespace", value_name = "NS", requires = "live")]
    pub(crate) exclude_namespaces: Vec<String>,
    /// Replay only part I of N of the flows (`I/N`), so N workers split a capture.
    #[arg(long, default_value = "0/1", value_parser = parse_part)]
    pub(crate) part: (u32, u32),
    /// Replay speed: a multiple of the recorded pace, or `max`.
    #[arg(long, default_value = "max", value_parser = parse_speed)]
    pub(crate) speed: Speed,
    /// Records held for the hub at most; beyond, new ones are dropped and counted.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) max_records: usize,
    /// Records kept after sending, so a restarted hub gets them again.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) journal: usize,
    /// Bytes the queued records may hold, in MiB; beyond, only their counts go.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub(crate) max_record_mib: usize,
    /// MiB of recent whole packets kept for the hub's `GET /api/pcap`; 0
    /// keeps none (live, only targeted workloads' packets are kept).
    #[arg(long, value_name = "MIB", default_value_t = 16, value_parser = clap::value_parser!(u64).range(0..=65_536))]
    pub(crate) pcap_ring_mib: u64,
    /// Bytes the journal may hold, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub(crate) journal_mib: usize,
    /// Conversations whose closed flows are kept for a restarted hub.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) max_conversations: usize,
    /// With --live: room in the kernel's flow map, in directional flows.
    #[arg(long, default_value_t = 65_536, requires = "live")]
    pub(crate) max_flows: u32,
    /// With --live: learn which pods are on which node (and their names) from the
    /// Kubernetes API, kept current by watches.
    #[arg(long, requires = "live")]
    pub(crate) kube: bool,
    /// After a replay, stay connected until stopped, as a live worker does.
    #[arg(long, conflicts_with = "live")]
    pub(crate) stay: bool,
    /// Serve /healthz and /readyz here (for Kubernetes probes).
    /// (`IP:PORT`; an IPv6 address may come without brackets, as the
    /// downward API's `$(POD_IP)` gives it.)
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub(crate) health_listen: Option<std::net::SocketAddr>,
    /// Capture filters and plugins from a file (YAML or JSON; a ConfigMap). Flags win.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// A directory of `*.wasm` plugins, added to the embedded ones. May repeat.
    #[arg(long = "plugins", value_name = "DIR")]
    pub(crate) plugin_dirs: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) redact: RedactArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct HubArgs {
    /// Where workers connect.
    #[arg(long, default_value = "0.0.0.0:9797")]
    pub(crate) workers: std::net::SocketAddr,
    #[command(flatten)]
    pub(crate) transport: transport::HubTransportArgs,
    /// Workload inventory. May repeat.
    #[arg(long, value_name = "FILE")]
    pub(crate) inventory: Vec<PathBuf>,
    /// Take workload identity from the Kubernetes API too, kept current by watches.
    #[arg(long)]
    pub(crate) kube: bool,
    /// Seconds a silent worker's state (open flows, conversations, health
    /// entry) is kept; a worker back within this long adds nothing twice.
    #[arg(long, value_name = "SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) worker_grace: u64,
    /// Keep plugins pushed with `PUT /api/plugins/NAME` here, so they
    /// survive a restart (default: in memory only).
    #[arg(long, value_name = "DIR", env = "TRAWL_PLUGIN_STORE")]
    pub(crate) plugin_store: Option<PathBuf>,
    /// Require an Ed25519 signature (`X-Trawl-Signature`) from this public
    /// key (SPKI PEM, or 32 bytes in base64) on every pushed plugin.
    #[arg(long, value_name = "FILE", env = "TRAWL_PLUGIN_KEY")]
    pub(crate) plugin_key: Option<PathBuf>,
    /// The largest plugin module a push may carry.
    #[arg(long, value_name = "BYTES", default_value_t = trawl_host::service::pushed::DEFAULT_MAX_BYTES)]
    pub(crate) plugin_max_bytes: usize,
    #[command(flatten)]
    pub(crate) common: ServiceArgs,
}

//! Where traffic comes from: a capture replayed, or this node live, with
//! how live capture finds workloads and reads TLS plaintext.

use std::path::PathBuf;
use trawl_host::capture::live::discover::Discovery;

/// Where traffic comes from: a capture replayed, or this node live.
#[derive(Debug, clap::Args)]
pub(crate) struct SourceArgs {
    /// Capture file (pcap or pcapng) to replay.
    #[arg(long, value_name = "FILE", required_unless_present = "live", conflicts_with = "live")]
    pub(crate) replay: Option<PathBuf>,
    /// Capture live on this node (root): eBPF L4 counters on every
    /// workload's interface, payloads of the targeted ones for L7.
    #[arg(long)]
    pub(crate) live: bool,
    /// With --live: workloads are the network namespaces under /run/netns
    /// whose name starts with this (entering them needs CAP_SYS_ADMIN).
    #[arg(long, default_value = "", requires = "live", conflicts_with = "routes")]
    netns_prefix: String,
    /// With --live: workloads are the veths that host routes point at
    /// (routed CNIs: Calico, Cilium, kindnet, AWS VPC), found without
    /// entering their namespaces.
    #[arg(long, requires = "live")]
    routes: bool,
    /// With --live: read TLS plaintext of the targeted pods at OpenSSL
    /// (uprobes on SSL_read/SSL_write), so HTTPS, Redis and Kafka over TLS
    /// are dissected too. `auto` captures where the kernel and capabilities
    /// allow and says why not in /api/health otherwise; `on` refuses to
    /// start without it.
    #[arg(long, value_enum, default_value_t = TlsArg::Auto)]
    tls: TlsArg,
    /// With --tls: `file` probes OpenSSL for every process mapping a
    /// targeted pod's libssl (short-lived clients are captured, but
    /// untargeted processes sharing that file pay the breakpoints);
    /// `process` probes only the targeted processes each scan finds
    /// (nothing for the others; a process is captured from the next scan).
    #[arg(long, value_enum, default_value_t = TlsScopeArg::File)]
    tls_scope: TlsScopeArg,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum TlsScopeArg {
    File,
    Process,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum TlsArg {
    Auto,
    On,
    Off,
}

impl SourceArgs {
    pub(crate) fn discovery(&self) -> Discovery {
        discovery(self.routes, &self.netns_prefix)
    }

    pub(crate) fn tls(&self) -> trawl_host::tls::TlsOptions {
        use trawl_host::tls::{ProbeScope, TlsMode};
        let mode = match self.tls {
            TlsArg::Auto => TlsMode::Auto,
            TlsArg::On => TlsMode::On,
            TlsArg::Off => TlsMode::Off,
        };
        let scope = match self.tls_scope {
            TlsScopeArg::File => ProbeScope::File,
            TlsScopeArg::Process => ProbeScope::Process,
        };
        trawl_host::tls::TlsOptions { mode, scope }
    }
}

/// How workloads are found, from `--routes` and `--netns-prefix`.
pub(crate) fn discovery(routes: bool, netns_prefix: &str) -> Discovery {
    if routes { Discovery::Routes } else { Discovery::Netns { prefix: netns_prefix.to_string() } }
}

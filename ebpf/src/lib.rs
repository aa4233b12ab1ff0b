//! trawl's eBPF side: the L4 flow counters in `src/bpf/flows.bpf.c` (C,
//! built by `build.rs` with clang) and their loader on aya.
//!
//! The programs count packets and bytes per directional 5-tuple on each
//! workload's host-side interface, before any targeting: that is what
//! makes the L4 map cluster-wide. See the C file for the rule that makes
//! every packet count once. Tracepoint programs add each socket's TCP
//! health (segments sent again, failed connects, handshake round trips),
//! keyed like the flows. [`FlowCounters::read`] returns cumulative
//! totals, which `trawl_core::counters::CounterTable` turns into deltas.
//!
//! [`TlsCapture`] (`src/bpf/tls.bpf.c`, a separate object so that a
//! failure there never costs the counters) copies the plaintext targeted
//! processes hand to OpenSSL, tied to each connection's TCP 4-tuple.
//!
//! Attachments are TCX links held by this process: they go away when it
//! exits, even on `kill -9`, so no stale program outlives trawl.

mod loader;
pub mod tls;

pub use loader::{CounterReadings, EbpfStats, FlowCounters, LoadError, tcx_programs};
pub use tls::{TlsCapture, TlsStats};

/// The compiled object, or `None` when clang was missing at build time.
pub fn object() -> Option<&'static [u8]> {
    #[cfg(trawl_ebpf_built)]
    {
        Some(include_bytes!(concat!(env!("OUT_DIR"), "/flows.bpf.o")))
    }
    #[cfg(not(trawl_ebpf_built))]
    {
        None
    }
}

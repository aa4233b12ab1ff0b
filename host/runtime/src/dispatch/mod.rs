//! Dispatch: which plugin gets a connection, feeding it, and what happens
//! when a plugin misbehaves or is replaced.
//!
//! A new connection is probed (plugins whose port hints match first, then
//! every plugin by priority) until one matches; its bytes are queued
//! meanwhile and replayed into the winner. The host keeps what a plugin did
//! not consume and calls again once `needed` bytes are there. A protocol
//! violation detaches the plugin and the stream is probed again. Bad
//! output (malformed, too deep, too much) detaches only the connection
//! that produced it: the instance is intact. A trap or a timeout leaves
//! the instance's memory in an unknown state, so it is dropped with its
//! connections and re-instantiated with backoff. Too many faults in a
//! window quarantine the plugin; it is tried again after a growing wait
//! (or at once on `POST /api/plugins/NAME/reset`), on probation.

mod probing;
mod routing;
mod supervision;

use super::{PluginFault, PluginInstance, SharedPlugin};
use crate::registry::{PluginState, PluginStatus};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trawl_core::engine::{ConnInfo, StreamSink};
use trawl_core::reassembly::StreamEvent;
use trawl_core::{Direction, Endpoint, L4Proto, Timestamp};
use trawl_sdk::abi::{self, ConnMeta, DataResult, Dir, Event, L4, Record, Status};
use trawl_sdk::stream::{Feed, Offer};

/// Dispatcher settings.
#[derive(Clone, Debug)]
pub struct DispatchConfig {
    /// This many faults within `quarantine_window` quarantine a plugin.
    pub quarantine_after: usize,
    pub quarantine_window: Duration,
    /// First re-instantiation delay after a fault; doubles each time.
    pub backoff: Duration,
    /// How long a quarantined plugin waits before it is tried again (on
    /// probation: one fault within `quarantine_window` sends it back);
    /// doubles with each quarantine, up to 64 times.
    pub quarantine_retry: Duration,
    /// Connections still on a replaced plugin are closed after this long.
    pub drain_deadline: Duration,
    /// A new version quarantined within this long of replacing another is
    /// rolled back to it (proxy-wasm's fail-reload); later, a quarantine
    /// is only a quarantine.
    pub rollback_window: Duration,
    /// Bytes a connection may queue while it is being probed.
    pub max_probe_bytes: usize,
    /// Bytes all connections together may hold (probe queues, unconsumed
    /// tails); the connection that crosses it is let go and counted.
    pub max_held_bytes: usize,
    /// What plugins are asked to redact, and what the host scrubs from
    /// every record again.
    pub redact: trawl_sdk::redact::Policy,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            quarantine_after: 3,
            quarantine_window: Duration::from_secs(60),
            backoff: Duration::from_millis(50),
            quarantine_retry: Duration::from_secs(30),
            drain_deadline: Duration::from_secs(30),
            rollback_window: Duration::from_secs(600),
            max_probe_bytes: 16 * 1024,
            max_held_bytes: 64 << 20,
            redact: trawl_sdk::redact::Policy::default(),
        }
    }
}

/// A record as it leaves a plugin, with the connection it came from.
#[derive(Clone, Debug)]
pub struct HostRecord {
    pub conn: ConnInfo,
    pub plugin: Arc<str>,
    pub plugin_version: Arc<str>,
    pub generation: u64,
    pub record: Record,
    /// The server name (SNI) of a connection read as TLS plaintext.
    pub tls_sni: Option<String>,
}

impl HostRecord {
    /// A record of a TCP connection from `client` to `server`, as plugin
    /// `plugin` (version `version`, first generation) reported it.
    pub fn tcp(client: Endpoint, server: Endpoint, plugin: &str, version: &str, record: Record) -> Self {
        HostRecord {
            conn: ConnInfo { id: 0, l4: L4Proto::Tcp, client, server, tls: false },
            plugin: plugin.into(),
            plugin_version: version.into(),
            generation: 0,
            record,
            tls_sni: None,
        }
    }

    /// Who sent the request, and to whom: the plugin says which way the
    /// request went (a DNS flow seen only from its answer, say).
    pub fn src_dst(&self) -> (Endpoint, Endpoint) {
        match self.record.request_dir {
            Dir::ToServer => (self.conn.client, self.conn.server),
            Dir::ToClient => (self.conn.server, self.conn.client),
        }
    }

    /// The record's protocol: its own, or else its plugin's name.
    pub fn protocol(&self) -> &str {
        if self.record.protocol.is_empty() { &self.plugin } else { &self.record.protocol }
    }
}

/// Connection-level counters. Drops are data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DispatchStats {
    pub connections: u64,
    pub attached: u64,
    /// No plugin recognised the bytes.
    pub unknown: u64,
    pub desyncs: u64,
    pub handovers: u64,
    pub detached_by_fault: u64,
    pub detached_by_gap: u64,
    pub detached_by_buffer: u64,
    /// Connections let go because all of them together held the dispatch
    /// byte budget.
    pub detached_by_budget: u64,
    pub records: u64,
    /// Connections the capture filters kept from every plugin.
    pub not_targeted: u64,
}

enum Queued {
    Data { dir: Dir, ts: u64, bytes: Vec<u8>, fin: bool },
    Datagram { dir: Dir, ts: u64, bytes: Vec<u8> },
}

#[derive(Default)]
struct Probing {
    queue: Vec<Queued>,
    queued_bytes: usize,
    seen: [Vec<u8>; 2],
    /// Plugins still in the running, with the directions they refused.
    candidates: Option<Vec<(usize, u8)>>,
    weak: Option<usize>,
}

struct Attached {
    slot: usize,
    /// Leftover bytes, `needed` and skips per direction: the SDK's one
    /// implementation, which plugin tests and the fuzz driver use too.
    feeds: [Feed; 2],
}

impl Attached {
    fn new(slot: usize) -> Self {
        Attached { slot, feeds: [Feed::default(), Feed::default()] }
    }
}

enum State {
    Probing(Probing),
    Attached(Attached),
    /// Nothing more will be dissected on this connection.
    Done,
}

struct Conn {
    info: ConnInfo,
    meta: ConnMeta,
    state: State,
    /// Plugins that already gave this connection up.
    excluded: Vec<String>,
    /// The flow table guessed client and server the wrong way round (no
    /// handshake seen); a plugin recognised a request going the other way.
    flipped: bool,
    /// Bytes it held at the last count (see `Dispatcher::account`).
    held: usize,
}

impl Conn {
    /// Bytes this connection holds in the host now.
    fn buffered(&self) -> usize {
        match &self.state {
            State::Probing(p) => p.queued_bytes + p.seen[0].len() + p.seen[1].len(),
            State::Attached(a) => a.feeds[0].held() + a.feeds[1].held(),
            State::Done => 0,
        }
    }
}

struct Slot {
    plugin: SharedPlugin,
    /// The plugin's name and version, shared by every record it makes
    /// rather than copied into each.
    name: Arc<str>,
    version: Arc<str>,
    generation: u64,
    /// The version this one replaced, and when: what a rollback returns to.
    replaced: Option<(SharedPlugin, u64)>,
    installed_at: Instant,
    instance: Option<Box<dyn PluginInstance>>,
    state: PluginState,
    draining_since: Option<Instant>,
    crashes: VecDeque<Instant>,
    consecutive_faults: u32,
    /// When an instance may be made again (after a fault's backoff, or at
    /// the end of a quarantine).
    retry_at: Option<Instant>,
    /// Quarantines so far (each one waits twice as long as the last).
    quarantines: u32,
    /// Back from quarantine: a fault before this sends it back at once.
    probation_until: Option<Instant>,
    live: u64,
    records: u64,
    faults: u64,
    detached: u64,
    /// Calls on connections (probe, open, data, datagram, close; not ticks).
    calls: u64,
    /// Bytes copied into the plugin by data and datagram calls, and by
    /// probes; and the stream bytes its connections carried. `bytes_in /
    /// stream_bytes` is its amplification: 1 when each byte crosses once.
    bytes_in: u64,
    probe_bytes: u64,
    stream_bytes: u64,
    /// Stream bytes the plugin asked to skip: counted, never copied.
    skipped_bytes: u64,
    last_error: Option<String>,
}

/// Decides, once per new connection (at its first packet's time), whether
/// its payload is dissected at all: the capture filters. A connection it
/// refuses is never reassembled nor shown to a plugin, and is counted.
pub type Targeting = Box<dyn FnMut(&ConnInfo, Timestamp) -> bool + Send>;

/// Routes connections to plugins; a [`StreamSink`] for the engine.
pub struct Dispatcher {
    config: DispatchConfig,
    targeting: Option<Targeting>,
    slots: Vec<Slot>,
    conns: HashMap<u64, Conn>,
    records: Vec<HostRecord>,
    stats: DispatchStats,
    next_generation: u64,
    /// Capture time of the newest event, for calls that have none.
    now: u64,
    /// Bytes all connections hold (see `Dispatcher::account`).
    held: usize,
    /// Connections that started mid-stream and have no state yet.
    midstream: std::collections::HashSet<u64>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("slots", &self.slots.len()).field("conns", &self.conns.len()).finish()
    }
}

fn dir_of(d: Direction) -> Dir {
    match d {
        Direction::ToServer => Dir::ToServer,
        Direction::ToClient => Dir::ToClient,
    }
}

fn l4_of(l4: L4Proto) -> L4 {
    match l4 {
        L4Proto::Tcp => L4::Tcp,
        L4Proto::Udp => L4::Udp,
    }
}

enum Step {
    Continue,
    Stop,
}

impl Dispatcher {
    pub fn new(config: DispatchConfig, plugins: impl IntoIterator<Item = SharedPlugin>) -> Self {
        let mut d = Dispatcher {
            config,
            targeting: None,
            slots: Vec::new(),
            conns: HashMap::new(),
            records: Vec::new(),
            stats: DispatchStats::default(),
            next_generation: 1,
            now: 0,
            held: 0,
            midstream: std::collections::HashSet::new(),
        };
        for p in plugins {
            d.install(p);
        }
        d
    }

    pub fn stats(&self) -> DispatchStats {
        self.stats
    }

    /// Dissects only the connections `targeting` admits (all, by default).
    pub fn set_targeting(&mut self, targeting: Targeting) {
        self.targeting = Some(targeting);
    }

    /// Dissects every connection again (a pipeline that started with no
    /// plugin, and so reassembled nothing, got one).
    pub fn clear_targeting(&mut self) {
        self.targeting = None;
    }

    /// Records produced since the last call. The next batch starts with
    /// room for as many: growing it from empty again, by doubling, copied
    /// every record and touched fresh memory each time. A burst does not
    /// set the room for good: it is capped.
    pub fn take_records(&mut self) -> Vec<HostRecord> {
        const MOST_ROOM: usize = 16 * 1024;
        let room = self.records.len().min(MOST_ROOM);
        std::mem::replace(&mut self.records, Vec::with_capacity(room))
    }

    /// The plugins in use, including those being drained.
    pub fn plugins(&self) -> impl Iterator<Item = &SharedPlugin> {
        self.slots.iter().filter(|s| s.state != PluginState::Retired).map(|s| &s.plugin)
    }
}

#[cfg(test)]
mod tests;

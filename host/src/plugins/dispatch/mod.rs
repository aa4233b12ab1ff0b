//! Dispatch: which plugin gets a connection, feeding it, and what happens
//! when a plugin misbehaves or is replaced.
//!
//! A new connection is probed (plugins whose port hints match first, then
//! every plugin by priority) until one matches; its bytes are queued
//! meanwhile and replayed into the winner. The host keeps what a plugin did
//! not consume and calls again once `needed` bytes are there. A protocol
//! violation detaches the plugin and the stream is probed again. A fault
//! (trap, timeout, bad output) drops the instance, detaches only its
//! connections, and re-instantiates it with backoff, until too many faults
//! in a window quarantine it.

mod probing;

use super::{PluginFault, PluginInstance, SharedPlugin};
use crate::plugins::registry::{PluginState, PluginStatus};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use trawl_core::engine::{ConnInfo, StreamSink};
use trawl_core::reassembly::StreamEvent;
use trawl_core::{Direction, L4Proto, Timestamp};
use trawl_sdk::abi::{self, ConnMeta, DataResult, Dir, Event, L4, Record, Status};

/// Dispatcher settings.
#[derive(Clone, Debug)]
pub struct DispatchConfig {
    /// This many faults within `quarantine_window` quarantine a plugin.
    pub quarantine_after: usize,
    pub quarantine_window: Duration,
    /// First re-instantiation delay after a fault; doubles each time.
    pub backoff: Duration,
    /// Connections still on a replaced plugin are closed after this long.
    pub drain_deadline: Duration,
    /// Bytes a connection may queue while it is being probed.
    pub max_probe_bytes: usize,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            quarantine_after: 3,
            quarantine_window: Duration::from_secs(60),
            backoff: Duration::from_millis(50),
            drain_deadline: Duration::from_secs(30),
            max_probe_bytes: 16 * 1024,
        }
    }
}

/// A record as it leaves a plugin, with the connection it came from.
#[derive(Clone, Debug)]
pub struct HostRecord {
    pub conn: ConnInfo,
    pub plugin: String,
    pub plugin_version: String,
    pub generation: u64,
    pub record: Record,
}

/// Connection-level counters. Drops are data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DispatchStats {
    pub connections: u64,
    pub attached: u64,
    /// No plugin recognised the bytes.
    pub unknown: u64,
    pub violations: u64,
    pub handovers: u64,
    pub detached_by_fault: u64,
    pub detached_by_gap: u64,
    pub detached_by_buffer: u64,
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
    tails: [Vec<u8>; 2],
    needed: [usize; 2],
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
}

struct Slot {
    plugin: SharedPlugin,
    generation: u64,
    instance: Option<Box<dyn PluginInstance>>,
    state: PluginState,
    draining_since: Option<Instant>,
    crashes: VecDeque<Instant>,
    consecutive_faults: u32,
    retry_at: Option<Instant>,
    live: u64,
    records: u64,
    faults: u64,
    detached: u64,
    /// Calls on connections (probe, open, data, datagram, close; not ticks)
    /// and the bytes they copied into the plugin.
    calls: u64,
    bytes_in: u64,
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

fn opposite(d: Dir) -> Dir {
    match d {
        Dir::ToServer => Dir::ToClient,
        Dir::ToClient => Dir::ToServer,
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

    /// Records produced since the last call.
    pub fn take_records(&mut self) -> Vec<HostRecord> {
        std::mem::take(&mut self.records)
    }

    /// The plugins in use, including those being drained.
    pub fn plugins(&self) -> impl Iterator<Item = &SharedPlugin> {
        self.slots.iter().filter(|s| s.state != PluginState::Retired).map(|s| &s.plugin)
    }

    /// Installs a plugin. One with the same name becomes the previous
    /// generation: it keeps its open connections until they close or the
    /// drain deadline passes; new connections go to the new one.
    pub fn install(&mut self, plugin: SharedPlugin) -> u64 {
        self.retire_name(&plugin.info.name);
        let generation = self.next_generation;
        self.next_generation += 1;
        tracing::info!(plugin = %plugin.info.name, version = %plugin.info.version, generation, "plugin installed");
        self.slots.push(Slot {
            plugin,
            generation,
            instance: None,
            state: PluginState::Active,
            draining_since: None,
            crashes: VecDeque::new(),
            consecutive_faults: 0,
            retry_at: None,
            live: 0,
            records: 0,
            faults: 0,
            detached: 0,
            calls: 0,
            bytes_in: 0,
            last_error: None,
        });
        generation
    }

    /// Unloads a plugin by name after its connections drain.
    pub fn remove(&mut self, name: &str) {
        self.retire_name(name);
    }

    fn retire_name(&mut self, name: &str) {
        let now = Instant::now();
        for s in &mut self.slots {
            if s.plugin.info.name == name && matches!(s.state, PluginState::Active | PluginState::Quarantined { .. }) {
                s.state = PluginState::Draining;
                s.draining_since = Some(now);
            }
        }
    }

    /// Status of every plugin generation still known.
    pub fn status(&self) -> Vec<PluginStatus> {
        self.slots
            .iter()
            .filter(|s| s.state != PluginState::Retired)
            .map(|s| PluginStatus {
                name: s.plugin.info.name.clone(),
                version: s.plugin.info.version.clone(),
                hash: s.plugin.hash.clone(),
                generation: s.generation,
                source: s.plugin.source.to_string(),
                state: s.state.clone(),
                live_connections: s.live,
                records: s.records,
                faults: s.faults,
                detached_connections: s.detached,
                calls: s.calls,
                bytes_in: s.bytes_in,
                last_error: s.last_error.clone(),
                ports: crate::plugins::registry::port_list(&s.plugin.info),
            })
            .collect()
    }

    /// Housekeeping: finishes drains that are done or overdue.
    pub fn tick(&mut self, ts: Timestamp) {
        // Plugins with timers (expiring unanswered requests, say) get a turn.
        for slot in 0..self.slots.len() {
            if self.slots[slot].state != PluginState::Active || self.slots[slot].instance.is_none() {
                continue;
            }
            let ticked = match self.slots[slot].instance.as_mut() {
                Some(inst) => inst.tick(ts.as_nanos()),
                None => continue,
            };
            match ticked {
                Ok(r) => {
                    let info = ConnInfo {
                        id: 0,
                        l4: L4Proto::Tcp,
                        client: trawl_core::Endpoint { ip: std::net::Ipv4Addr::UNSPECIFIED.into(), port: 0 },
                        server: trawl_core::Endpoint { ip: std::net::Ipv4Addr::UNSPECIFIED.into(), port: 0 },
                    };
                    // Records from a tick belong to no connection we can name;
                    // plugins report connection records from data and close.
                    if !r.events.is_empty() {
                        self.emit(slot, &info, r.events);
                    }
                }
                Err(fault) => self.fault(slot, fault),
            }
        }
        let deadline = self.config.drain_deadline;
        let overdue: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.state == PluginState::Draining && s.draining_since.is_some_and(|t| t.elapsed() >= deadline)
            })
            .map(|(i, _)| i)
            .collect();
        for slot in overdue {
            let ids = self.conns_on(slot);
            for id in ids {
                self.close_attached(id, ts.as_nanos());
                if let Some(c) = self.conns.get_mut(&id) {
                    c.state = State::Done;
                }
            }
        }
        for s in &mut self.slots {
            if s.state == PluginState::Draining && s.live == 0 {
                s.state = PluginState::Retired;
                s.instance = None;
                tracing::info!(plugin = %s.plugin.info.name, generation = s.generation, "plugin generation retired");
            }
        }
    }

    /// Connections attached to a plugin slot.
    fn conns_on(&self, slot: usize) -> Vec<u64> {
        self.conns
            .iter()
            .filter(|(_, c)| matches!(&c.state, State::Attached(a) if a.slot == slot))
            .map(|(id, _)| *id)
            .collect()
    }

    /// An instance of `slot`, made on demand unless quarantined or backing
    /// off, for one call that hands it `bytes` (counted: calls and bytes
    /// copied in are what a connection costs a plugin).
    fn instance(&mut self, slot: usize, bytes: usize) -> Option<&mut Box<dyn PluginInstance>> {
        let s = &mut self.slots[slot];
        if matches!(s.state, PluginState::Quarantined { .. } | PluginState::Retired) {
            return None;
        }
        s.calls += 1;
        s.bytes_in += bytes as u64;
        if s.instance.is_none() {
            if s.retry_at.is_some_and(|t| Instant::now() < t) {
                return None;
            }
            match s.plugin.factory.instantiate() {
                Ok(i) => s.instance = Some(i),
                Err(e) => {
                    s.last_error = Some(e.to_string());
                    s.state = PluginState::Quarantined { reason: format!("cannot instantiate: {e}") };
                    return None;
                }
            }
        }
        s.instance.as_mut()
    }

    fn fault(&mut self, slot: usize, fault: PluginFault) {
        let now = Instant::now();
        let config = self.config.clone();
        let s = &mut self.slots[slot];
        tracing::warn!(plugin = %s.plugin.info.name, generation = s.generation, %fault, "plugin fault");
        s.instance = None;
        s.faults += 1;
        s.last_error = Some(fault.to_string());
        s.crashes.push_back(now);
        while s.crashes.front().is_some_and(|t| now.duration_since(*t) > config.quarantine_window) {
            s.crashes.pop_front();
        }
        if s.crashes.len() >= config.quarantine_after {
            s.state = PluginState::Quarantined {
                reason: format!("{} faults within {:?}; last: {fault}", s.crashes.len(), config.quarantine_window),
            };
        } else {
            let backoff = config.backoff.saturating_mul(1 << s.consecutive_faults.min(10));
            s.retry_at = Some(now + backoff);
            s.consecutive_faults += 1;
        }
        let ids = self.conns_on(slot);
        for id in ids {
            if let Some(c) = self.conns.get_mut(&id) {
                c.state = State::Done;
            }
            self.slots[slot].live -= 1;
            self.slots[slot].detached += 1;
            self.stats.detached_by_fault += 1;
        }
    }

    fn conn(&mut self, info: &ConnInfo) -> &mut Conn {
        self.conns.entry(info.id).or_insert_with(|| {
            self.stats.connections += 1;
            Conn {
                info: *info,
                meta: ConnMeta {
                    l4: l4_of(info.l4),
                    client: info.client.ip,
                    client_port: info.client.port,
                    server: info.server.ip,
                    server_port: info.server.port,
                    midstream: false,
                },
                state: State::Probing(Probing::default()),
                excluded: Vec::new(),
                flipped: false,
            }
        })
    }

    fn emit(&mut self, slot: usize, conn: &ConnInfo, events: Vec<Event>) {
        for e in events {
            match e {
                Event::Record(record) => {
                    let s = &mut self.slots[slot];
                    s.records += 1;
                    self.stats.records += 1;
                    self.records.push(HostRecord {
                        conn: *conn,
                        plugin: s.plugin.info.name.clone(),
                        plugin_version: s.plugin.info.version.clone(),
                        generation: s.generation,
                        record,
                    });
                }
                Event::Upgrade { protocol } => {
                    tracing::debug!(conn = conn.id, %protocol, "connection upgraded");
                }
            }
        }
    }

    fn attach(&mut self, id: u64, slot: usize) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let State::Probing(p) = std::mem::replace(&mut conn.state, State::Done) else {
            return;
        };
        let (info, meta) = (conn.info, conn.meta.clone());
        let opened = match self.instance(slot, 0) {
            Some(inst) => inst.open(id, &meta),
            None => return,
        };
        match opened {
            Ok(r) if r.status == Status::Ok => self.emit(slot, &info, r.events),
            Ok(_) => return,
            Err(fault) => return self.fault(slot, fault),
        }
        self.slots[slot].live += 1;
        self.stats.attached += 1;
        tracing::debug!(conn = id, plugin = %self.slots[slot].plugin.info.name, "connection attached");
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.state = State::Attached(Attached { slot, tails: [Vec::new(), Vec::new()], needed: [0, 0] });
        }
        for q in p.queue {
            let step = match q {
                Queued::Data { dir, ts, bytes, fin } => self.attached_data(id, dir, ts, &bytes, fin),
                Queued::Datagram { dir, ts, bytes } => self.attached_datagram(id, dir, ts, &bytes),
            };
            if let Step::Stop = step {
                break;
            }
        }
    }

    /// Gives up a connection's plugin and starts probing again, starting
    /// with `rest`. After a violation the plugin is not asked again; after
    /// a handover (a CONNECT tunnel, an upgrade) it may be, since a tunnel
    /// can carry its protocol anew.
    fn reprobe(&mut self, id: u64, slot: usize, ts: u64, dir: Dir, rest: Vec<u8>, exclude: bool) {
        let name = self.slots[slot].plugin.info.name.clone();
        self.close_attached(id, ts);
        if let Some(c) = self.conns.get_mut(&id) {
            if exclude {
                c.excluded.push(name);
            }
            c.state = State::Probing(Probing::default());
        }
        if !rest.is_empty() {
            self.data(id, dir, ts, &rest, false);
        }
    }

    /// Closes the plugin side of an attached connection, keeping its records.
    fn close_attached(&mut self, id: u64, ts: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let State::Attached(a) = std::mem::replace(&mut conn.state, State::Done) else {
            return;
        };
        let info = conn.info;
        self.slots[a.slot].live -= 1;
        self.slots[a.slot].calls += 1;
        let closed = match self.slots[a.slot].instance.as_mut() {
            Some(inst) => inst.close(id, ts),
            None => return,
        };
        match closed {
            Ok(r) => self.emit(a.slot, &info, r.events),
            Err(fault) => self.fault(a.slot, fault),
        }
    }

    fn handle_result(
        &mut self,
        id: u64,
        slot: usize,
        dir: Dir,
        ts: u64,
        result: Result<DataResult, PluginFault>,
        window: &[u8],
    ) -> Step {
        let info = match self.conns.get(&id) {
            Some(c) => c.info,
            None => return Step::Stop,
        };
        let r = match result {
            Ok(r) => r,
            Err(fault) => {
                self.fault(slot, fault);
                return Step::Stop;
            }
        };
        self.emit(slot, &info, r.events);
        let rest = &window[(r.consumed as usize).min(window.len())..];
        match r.status {
            Status::Ok => {
                let max_buffer = self.slots[slot].plugin.info.max_buffer as usize;
                if let Some(Conn { state: State::Attached(a), .. }) = self.conns.get_mut(&id) {
                    let d = dir.code() as usize;
                    a.tails[d] = rest.to_vec();
                    a.needed[d] =
                        (r.needed as usize).max(if r.consumed == 0 && !rest.is_empty() { rest.len() + 1 } else { 0 });
                    if a.tails[d].len() > max_buffer {
                        return self.detach_overflow(id, slot, ts);
                    }
                }
                Step::Continue
            }
            Status::Violation => {
                self.stats.violations += 1;
                self.slots[slot].detached += 1;
                self.reprobe(id, slot, ts, dir, Vec::new(), true);
                Step::Stop
            }
            Status::Handover => {
                self.stats.handovers += 1;
                let rest = rest.to_vec();
                self.reprobe(id, slot, ts, dir, rest, false);
                Step::Stop
            }
        }
    }

    fn attached_data(&mut self, id: u64, dir: Dir, ts: u64, bytes: &[u8], fin: bool) -> Step {
        let Some(Conn { state: State::Attached(a), meta, .. }) = self.conns.get_mut(&id) else {
            return Step::Stop;
        };
        let slot = a.slot;
        let d = dir.code() as usize;
        let midstream = meta.midstream;
        // Most segments arrive with nothing left over from the last call:
        // hand them over as they are instead of copying them first.
        let tail = std::mem::take(&mut a.tails[d]);
        let window: std::borrow::Cow<'_, [u8]> = if tail.is_empty() {
            std::borrow::Cow::Borrowed(bytes)
        } else {
            let mut tail = tail;
            tail.extend_from_slice(bytes);
            std::borrow::Cow::Owned(tail)
        };
        if !fin && window.len() < a.needed[d] {
            a.tails[d] = window.into_owned();
            if a.tails[d].len() > self.slots[slot].plugin.info.max_buffer as usize {
                return self.detach_overflow(id, slot, ts);
            }
            return Step::Continue;
        }
        let flags = if fin { abi::FLAG_FIN } else { 0 } | if midstream { abi::FLAG_MIDSTREAM } else { 0 };
        let result = match self.instance(slot, window.len()) {
            Some(inst) => inst.data(id, dir, flags, ts, &window, 0),
            None => return Step::Stop,
        };
        self.handle_result(id, slot, dir, ts, result, &window)
    }

    /// A connection kept more unconsumed bytes than its plugin allows.
    fn detach_overflow(&mut self, id: u64, slot: usize, ts: u64) -> Step {
        let max_buffer = self.slots[slot].plugin.info.max_buffer;
        self.stats.detached_by_buffer += 1;
        self.slots[slot].detached += 1;
        self.slots[slot].last_error = Some(format!("connection buffered over {max_buffer} bytes"));
        self.close_attached(id, ts);
        Step::Stop
    }

    fn attached_datagram(&mut self, id: u64, dir: Dir, ts: u64, bytes: &[u8]) -> Step {
        let Some(Conn { state: State::Attached(a), .. }) = self.conns.get(&id) else {
            return Step::Stop;
        };
        let slot = a.slot;
        let result = match self.instance(slot, bytes.len()) {
            Some(inst) => inst.datagram(id, dir, ts, bytes),
            None => return Step::Stop,
        };
        self.handle_result(id, slot, dir, ts, result, bytes)
    }

    fn data(&mut self, id: u64, dir: Dir, ts: u64, bytes: &[u8], fin: bool) {
        let max = self.config.max_probe_bytes;
        match self.conns.get_mut(&id).map(|c| &mut c.state) {
            Some(State::Attached(_)) => {
                self.attached_data(id, dir, ts, bytes, fin);
            }
            Some(State::Probing(p)) => {
                p.queue.push(Queued::Data { dir, ts, bytes: bytes.to_vec(), fin });
                p.queued_bytes += bytes.len();
                let seen = &mut p.seen[dir.code() as usize];
                let room = max.saturating_sub(seen.len());
                seen.extend_from_slice(&bytes[..bytes.len().min(room)]);
                if p.queued_bytes > max * 4 {
                    // Nobody decided in time; stop holding bytes.
                    self.stats.unknown += 1;
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.state = State::Done;
                    }
                    return;
                }
                if !bytes.is_empty() {
                    self.run_probes(id, dir);
                }
            }
            _ => {}
        }
    }
}

impl StreamSink for Dispatcher {
    fn wants(&mut self, conn: &ConnInfo, ts: Timestamp) -> bool {
        let wanted = self.targeting.as_mut().is_none_or(|t| t(conn, ts));
        self.stats.not_targeted += u64::from(!wanted);
        wanted
    }

    fn on_stream(&mut self, conn: &ConnInfo, dir: Direction, ts: Timestamp, event: StreamEvent<'_>) {
        // Oriented from the connection found below: one lookup per event.
        let raw = dir_of(dir);
        let ts = ts.as_nanos();
        self.now = self.now.max(ts);
        let id = conn.id;
        match event {
            StreamEvent::Start { midstream } => {
                let c = self.conn(conn);
                c.meta.midstream |= midstream;
            }
            StreamEvent::Data { bytes, .. } => {
                let dir = self.conn(conn).orient(raw);
                self.data(id, dir, ts, bytes, false);
            }
            StreamEvent::Gap { len, .. } => {
                let c = self.conn(conn);
                let dir = c.orient(raw);
                match &mut c.state {
                    State::Probing(p) => p.seen[dir.code() as usize].clear(),
                    State::Attached(a) => {
                        let slot = a.slot;
                        a.tails[dir.code() as usize].clear();
                        a.needed[dir.code() as usize] = 0;
                        if !self.slots[slot].plugin.info.accepts_gaps {
                            self.stats.detached_by_gap += 1;
                            self.slots[slot].detached += 1;
                            self.close_attached(id, ts);
                            return;
                        }
                        let result = match self.instance(slot, 0) {
                            Some(inst) => inst.data(id, dir, abi::FLAG_GAP, ts, &[], len),
                            None => return,
                        };
                        self.handle_result(id, slot, dir, ts, result, &[]);
                    }
                    State::Done => {}
                }
            }
            StreamEvent::Fin | StreamEvent::Rst => {
                if let Some(dir) = self.conns.get(&id).map(|c| c.orient(raw)) {
                    self.data(id, dir, ts, &[], true);
                }
            }
        }
    }

    fn on_datagram(&mut self, conn: &ConnInfo, dir: Direction, ts: Timestamp, payload: &[u8]) {
        let ts = ts.as_nanos();
        self.now = self.now.max(ts);
        let id = conn.id;
        let max = self.config.max_probe_bytes;
        let c = self.conn(conn);
        let dir = c.orient(dir_of(dir));
        match &mut c.state {
            State::Attached(_) => {
                self.attached_datagram(id, dir, ts, payload);
            }
            State::Probing(p) => {
                if p.queued_bytes > max {
                    return;
                }
                p.queue.push(Queued::Datagram { dir, ts, bytes: payload.to_vec() });
                p.queued_bytes += payload.len();
                // Each datagram is probed on its own.
                p.seen[dir.code() as usize] = payload.to_vec();
                self.run_probes(id, dir);
            }
            State::Done => {}
        }
    }

    fn on_close(&mut self, conn: &ConnInfo) {
        tracing::debug!(conn = conn.id, "connection closed");
        // Still undecided at the end: the best weak match is all there is
        // (a lone request whose reply was never captured, say).
        let weak = match self.conns.get(&conn.id).map(|c| &c.state) {
            Some(State::Probing(p)) => p.weak,
            _ => None,
        };
        if let Some(slot) = weak {
            self.attach(conn.id, slot);
        }
        self.close_attached(conn.id, self.now);
        self.conns.remove(&conn.id);
    }
}

//! The flow table: bidirectional 5-tuples with per-direction L4 counters.
//!
//! Flows live in a slab indexed by `u32`; a `hashbrown::HashTable` of slab
//! indices finds them by key without storing the key twice. A doubly linked
//! list through the slab keeps flows in order of last activity, which gives
//! LRU eviction, idle expiry from the tail, and delta export from the head
//! (every flow touched since the last export sits before every other flow).

use crate::decode::{DecodedPacket, L4Proto, TcpFlags};
use crate::ports::ServicePorts;
use crate::tcp_health::{TcpHealth, TcpHealthDelta};
use crate::time::{NANOS_PER_SEC, Timestamp};
use hashbrown::HashTable;
use serde::Serialize;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;

/// One side of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

/// A bidirectional flow key; `a` is always the smaller endpoint so both
/// directions of a conversation hash alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub l4: L4Proto,
    pub a: Endpoint,
    pub b: Endpoint,
}

impl FlowKey {
    /// Returns the key and whether `src` is side `a`.
    pub fn from_packet(p: &DecodedPacket<'_>) -> (FlowKey, bool) {
        let src = Endpoint { ip: p.src, port: p.src_port };
        let dst = Endpoint { ip: p.dst, port: p.dst_port };
        if src <= dst {
            (FlowKey { l4: p.l4, a: src, b: dst }, true)
        } else {
            (FlowKey { l4: p.l4, a: dst, b: src }, false)
        }
    }
}

/// Packets and bytes in one direction. `bytes` counts captured-frame length
/// on the wire (link header included, as tshark's conversation table does);
/// `ip_bytes` counts IP datagram length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DirCounters {
    pub packets: u64,
    pub bytes: u64,
    pub ip_bytes: u64,
}

impl DirCounters {
    pub fn add(&mut self, other: &DirCounters) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.ip_bytes += other.ip_bytes;
    }

    pub fn is_zero(&self) -> bool {
        self.packets == 0
    }
}

/// Not-yet-exported growth of one direction. `u32` keeps the flow entry
/// small; a flow whose growth would overflow is exported early.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pending {
    packets: u32,
    bytes: u32,
    ip_bytes: u32,
}

/// How the client side of a flow was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Orientation {
    /// The TCP handshake was seen: the SYN sender is the client.
    Syn,
    /// No handshake: decided from ports (and, on a tie, who spoke first).
    Inferred,
}

/// Why a flow left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Still open when the capture ended.
    Active,
    /// Idle for longer than its timeout.
    IdleTimeout,
    /// A new connection reused the 5-tuple after FIN/RST.
    Reused,
    /// Pushed out to keep memory bounded.
    Evicted,
}

const STATE_SYN_A: u8 = 0x01;
const STATE_SYN_B: u8 = 0x02;
const STATE_FIN_A: u8 = 0x04;
const STATE_FIN_B: u8 = 0x08;
const STATE_RST: u8 = 0x10;
const STATE_DIRTY: u8 = 0x20;
const STATE_INFERRED: u8 = 0x40;
const STATE_CLIENT_IS_B: u8 = 0x80;

const NIL: u32 = u32::MAX;

/// A flow entry. Kept at or under 184 bytes (150 before TCP health); see
/// `flow_entry_size` test.
#[derive(Clone, Debug)]
pub struct Flow {
    key: FlowKey,
    /// Retransmissions, resets, failed connect, handshake RTT (TCP).
    health: TcpHealth,
    /// `[a→b, b→a]`.
    counters: [DirCounters; 2],
    pending: [Pending; 2],
    first_ts: Timestamp,
    last_ts: Timestamp,
    prev: u32,
    next: u32,
    state: u8,
}

/// Direction of a packet relative to the flow's client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    ToServer,
    ToClient,
}

impl Flow {
    fn client_is_a(&self) -> bool {
        self.state & STATE_CLIENT_IS_B == 0
    }

    /// The client's side: 0 for `a`, 1 for `b`.
    fn client_side(&self) -> usize {
        if self.client_is_a() { 0 } else { 1 }
    }

    fn side_index(&self, dir: Direction) -> usize {
        match (dir, self.client_is_a()) {
            (Direction::ToServer, true) | (Direction::ToClient, false) => 0,
            _ => 1,
        }
    }

    pub fn key(&self) -> &FlowKey {
        &self.key
    }

    pub fn client(&self) -> Endpoint {
        if self.client_is_a() { self.key.a } else { self.key.b }
    }

    pub fn server(&self) -> Endpoint {
        if self.client_is_a() { self.key.b } else { self.key.a }
    }

    pub fn counters(&self, dir: Direction) -> DirCounters {
        self.counters[self.side_index(dir)]
    }

    pub fn orientation(&self) -> Orientation {
        if self.state & STATE_INFERRED != 0 { Orientation::Inferred } else { Orientation::Syn }
    }

    pub fn first_ts(&self) -> Timestamp {
        self.first_ts
    }

    pub fn last_ts(&self) -> Timestamp {
        self.last_ts
    }

    fn closed(&self) -> bool {
        self.state & STATE_RST != 0 || self.state & (STATE_FIN_A | STATE_FIN_B) == STATE_FIN_A | STATE_FIN_B
    }

    fn record(&self, end: EndReason) -> FlowRecord {
        let to_server = self.counters(Direction::ToServer);
        let to_client = self.counters(Direction::ToClient);
        FlowRecord {
            l4: self.key.l4,
            client: self.client(),
            server: self.server(),
            to_server,
            to_client,
            first_ts: self.first_ts,
            last_ts: self.last_ts,
            orientation: self.orientation(),
            tcp: (self.key.l4 == L4Proto::Tcp).then_some(TcpSummary {
                syn: self.state & (STATE_SYN_A | STATE_SYN_B) != 0,
                fin: self.state & (STATE_FIN_A | STATE_FIN_B) != 0,
                rst: self.state & STATE_RST != 0,
                health: self.health.summary(self.client_side()),
            }),
            end,
        }
    }

    fn take_delta(&mut self, closed: bool) -> FlowDelta {
        let take = |p: &mut Pending| {
            let d = DirCounters {
                packets: u64::from(p.packets),
                bytes: u64::from(p.bytes),
                ip_bytes: u64::from(p.ip_bytes),
            };
            *p = Pending::default();
            d
        };
        let (ts_side, tc_side) = if self.client_is_a() { (0, 1) } else { (1, 0) };
        let to_server = take(&mut self.pending[ts_side]);
        let to_client = take(&mut self.pending[tc_side]);
        self.state &= !STATE_DIRTY;
        let health = self.health.take_delta(self.client_side());
        FlowDelta {
            l4: self.key.l4,
            client: self.client(),
            server: self.server(),
            to_server,
            to_client,
            first_ts: self.first_ts,
            last_ts: self.last_ts,
            orientation: self.orientation(),
            closed,
            health,
        }
    }
}

/// TCP flags seen over a flow's life, and its health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TcpSummary {
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    #[serde(flatten)]
    pub health: TcpHealthDelta,
}

/// A flow as reported once it ends (or when the capture ends).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlowRecord {
    pub l4: L4Proto,
    pub client: Endpoint,
    pub server: Endpoint,
    pub to_server: DirCounters,
    pub to_client: DirCounters,
    pub first_ts: Timestamp,
    pub last_ts: Timestamp,
    pub orientation: Orientation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSummary>,
    pub end: EndReason,
}

/// Counter growth of one flow since its previous delta: what the map model
/// and the worker→hub transport consume.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlowDelta {
    pub l4: L4Proto,
    pub client: Endpoint,
    pub server: Endpoint,
    pub to_server: DirCounters,
    pub to_client: DirCounters,
    pub first_ts: Timestamp,
    pub last_ts: Timestamp,
    pub orientation: Orientation,
    /// The flow has left the table; no more deltas follow for it.
    pub closed: bool,
    /// TCP health since the previous delta.
    pub health: TcpHealthDelta,
}

/// Limits and timeouts of the flow table.
#[derive(Clone, Debug)]
pub struct FlowTableConfig {
    pub max_flows: u32,
    pub udp_idle_timeout_secs: u64,
    pub tcp_idle_timeout_secs: u64,
    /// How long a closed TCP flow is kept to catch late segments.
    pub tcp_closed_linger_secs: u64,
    /// Keep a record of every flow that ends, for
    /// [`FlowTable::drain_finished`] (`trawl replay --emit flows`). Off
    /// by default: a long-running table would keep them all.
    pub keep_finished: bool,
}

impl Default for FlowTableConfig {
    fn default() -> Self {
        FlowTableConfig {
            max_flows: 1 << 20,
            udp_idle_timeout_secs: 180,
            // Long-lived TCP connections can sit silent for a long time and
            // still be one connection; Linux keepalive probes after 2 h.
            tcp_idle_timeout_secs: 2 * 3600,
            tcp_closed_linger_secs: 60,
            keep_finished: false,
        }
    }
}

/// Counters about the table itself. Drops are data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlowTableStats {
    pub flows_created: u64,
    pub flows_expired: u64,
    pub flows_reused: u64,
    pub flows_evicted: u64,
    pub early_exports: u64,
}

/// Where a packet landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowHit {
    pub slot: u32,
    pub dir: Direction,
    pub created: bool,
}

/// The flow table.
#[derive(Debug)]
pub struct FlowTable {
    config: FlowTableConfig,
    ports: ServicePorts,
    hasher: hashbrown::DefaultHashBuilder,
    index: HashTable<u32>,
    slots: Vec<Option<Flow>>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    len: u32,
    finished: Vec<FlowRecord>,
    deltas: Vec<FlowDelta>,
    removed: Vec<u32>,
    stats: FlowTableStats,
}

impl FlowTable {
    /// The service-port hints (a plugin loaded later adds its ports).
    pub fn service_ports_mut(&mut self) -> &mut ServicePorts {
        &mut self.ports
    }

    pub fn new(config: FlowTableConfig, ports: ServicePorts) -> Self {
        FlowTable {
            config,
            ports,
            hasher: Default::default(),
            index: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            len: 0,
            finished: Vec::new(),
            deltas: Vec::new(),
            removed: Vec::new(),
            stats: FlowTableStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn stats(&self) -> FlowTableStats {
        self.stats
    }

    pub fn flow(&self, slot: u32) -> Option<&Flow> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn flow_ref(&self, slot: u32) -> &Flow {
        match self.slots.get(slot as usize).and_then(Option::as_ref) {
            Some(f) => f,
            None => unreachable!("flow slot {slot} is linked but empty"),
        }
    }

    fn flow_mut(&mut self, slot: u32) -> &mut Flow {
        match self.slots.get_mut(slot as usize).and_then(Option::as_mut) {
            Some(f) => f,
            None => unreachable!("flow slot {slot} is linked but empty"),
        }
    }

    fn find(&self, key: &FlowKey) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        self.index.find(hash, |&slot| self.slots[slot as usize].as_ref().is_some_and(|f| f.key == *key)).copied()
    }

    /// Accounts one packet of `frame_len` captured bytes.
    pub fn observe(&mut self, p: &DecodedPacket<'_>, frame_len: u32, ts: Timestamp) -> FlowHit {
        let (key, src_is_a) = FlowKey::from_packet(p);
        let flags = p.tcp.map(|t| t.flags).unwrap_or_default();
        let mut created = false;
        let slot = match self.find(&key) {
            Some(slot) if self.starts_new_flow(slot, flags, ts) => {
                let reason = if self.flow_ref(slot).closed() && flags.syn() {
                    self.stats.flows_reused += 1;
                    EndReason::Reused
                } else {
                    self.stats.flows_expired += 1;
                    EndReason::IdleTimeout
                };
                self.remove(slot, reason);
                created = true;
                self.insert(key, src_is_a, p, ts)
            }
            Some(slot) => slot,
            None => {
                created = true;
                self.insert(key, src_is_a, p, ts)
            }
        };
        self.touch(slot);
        let flow = self.flow_mut(slot);
        let side = if src_is_a { 0 } else { 1 };
        if let Some(tcp) = p.tcp.filter(|_| p.l4 == L4Proto::Tcp) {
            Self::track_tcp(flow, side, flags);
            let (client, first) = (flow.client_side(), flow.first_ts);
            flow.health.observe(side, client, tcp, p.wire_payload_len, ts, first);
        }
        let c = &mut flow.counters[side];
        c.packets += 1;
        c.bytes += u64::from(frame_len);
        c.ip_bytes += u64::from(p.ip_len);
        if ts > flow.last_ts {
            flow.last_ts = ts;
        }
        let pend = &mut flow.pending[side];
        let overflow = pend.bytes.checked_add(frame_len).is_none()
            || pend.ip_bytes.checked_add(p.ip_len).is_none()
            || pend.packets == u32::MAX;
        if overflow {
            let delta = flow.take_delta(false);
            self.deltas.push(delta);
            self.stats.early_exports += 1;
        }
        let flow = self.flow_mut(slot);
        let pend = &mut flow.pending[side];
        pend.packets += 1;
        pend.bytes += frame_len;
        pend.ip_bytes += p.ip_len;
        flow.state |= STATE_DIRTY;
        let client_is_a = flow.client_is_a();
        let dir = if src_is_a == client_is_a { Direction::ToServer } else { Direction::ToClient };
        FlowHit { slot, dir, created }
    }

    fn track_tcp(flow: &mut Flow, side: usize, flags: TcpFlags) {
        let (syn_bit, fin_bit) = if side == 0 { (STATE_SYN_A, STATE_FIN_A) } else { (STATE_SYN_B, STATE_FIN_B) };
        if flags.syn() {
            flow.state |= syn_bit;
            // A SYN seen after a mid-stream start (capture reordering) still
            // tells who the client is.
            if !flags.ack() && flow.state & STATE_INFERRED != 0 {
                flow.state &= !(STATE_INFERRED | STATE_CLIENT_IS_B);
                if side == 1 {
                    flow.state |= STATE_CLIENT_IS_B;
                }
            }
        }
        if flags.fin() {
            flow.state |= fin_bit;
        }
        if flags.rst() {
            flow.state |= STATE_RST;
        }
    }

    fn starts_new_flow(&self, slot: u32, flags: TcpFlags, ts: Timestamp) -> bool {
        let config = &self.config;
        let flow = self.flow_ref(slot);
        let idle = ts.saturating_sub(flow.last_ts);
        match flow.key.l4 {
            L4Proto::Udp => idle > config.udp_idle_timeout_secs * NANOS_PER_SEC,
            L4Proto::Tcp => {
                let new_syn = flags.syn() && !flags.ack();
                (new_syn && flow.closed()) || idle > config.tcp_idle_timeout_secs * NANOS_PER_SEC
            }
        }
    }

    fn insert(&mut self, key: FlowKey, src_is_a: bool, p: &DecodedPacket<'_>, ts: Timestamp) -> u32 {
        if self.len >= self.config.max_flows.max(1) && self.tail != NIL {
            self.stats.flows_evicted += 1;
            tracing::trace!(flows = self.len, "flow table full, evicting least recently used flow");
            self.remove(self.tail, EndReason::Evicted);
        }
        let flags = p.tcp.map(|t| t.flags).unwrap_or_default();
        let (sender_is_client, inferred) = if p.l4 == L4Proto::Tcp && flags.syn() {
            // SYN: sender is the client; SYN-ACK: the receiver is.
            (!flags.ack(), false)
        } else {
            (self.ports.sender_is_client(p.src_port, p.dst_port), true)
        };
        let client_is_a = sender_is_client == src_is_a;
        let mut state = 0;
        if !client_is_a {
            state |= STATE_CLIENT_IS_B;
        }
        if inferred {
            state |= STATE_INFERRED;
        }
        let flow = Flow {
            key,
            health: TcpHealth::default(),
            counters: [DirCounters::default(); 2],
            pending: [Pending::default(); 2],
            first_ts: ts,
            last_ts: ts,
            prev: NIL,
            next: NIL,
            state,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(flow);
                slot
            }
            None => {
                self.slots.push(Some(flow));
                (self.slots.len() - 1) as u32
            }
        };
        let hash = self.hasher.hash_one(key);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(hash, slot, |&s| match &slots[s as usize] {
            Some(f) => hasher.hash_one(f.key),
            None => 0,
        });
        self.len += 1;
        self.stats.flows_created += 1;
        self.link_front(slot);
        slot
    }

    fn unlink(&mut self, slot: u32) {
        let (prev, next) = {
            let f = self.flow_mut(slot);
            let links = (f.prev, f.next);
            f.prev = NIL;
            f.next = NIL;
            links
        };
        if prev != NIL {
            self.flow_mut(prev).next = next;
        } else {
            self.head = next;
        }
        if next != NIL {
            self.flow_mut(next).prev = prev;
        } else {
            self.tail = prev;
        }
    }

    fn link_front(&mut self, slot: u32) {
        let old_head = self.head;
        {
            let f = self.flow_mut(slot);
            f.prev = NIL;
            f.next = old_head;
        }
        if old_head != NIL {
            self.flow_mut(old_head).prev = slot;
        } else {
            self.tail = slot;
        }
        self.head = slot;
    }

    fn touch(&mut self, slot: u32) {
        if self.head != slot {
            self.unlink(slot);
            self.link_front(slot);
        }
    }

    fn remove(&mut self, slot: u32, end: EndReason) {
        self.unlink(slot);
        let Some(mut flow) = self.slots[slot as usize].take() else {
            return;
        };
        let hash = self.hasher.hash_one(flow.key);
        if let Ok(entry) = self.index.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        self.free.push(slot);
        self.removed.push(slot);
        self.len -= 1;
        flow.health.end();
        let delta = flow.take_delta(true);
        self.deltas.push(delta);
        if self.config.keep_finished {
            self.finished.push(flow.record(end));
        }
    }

    /// Ends flows that have been idle past their timeout, oldest first.
    pub fn expire(&mut self, now: Timestamp) {
        while self.tail != NIL {
            let flow = self.flow_ref(self.tail);
            let timeout = match flow.key.l4 {
                L4Proto::Udp => self.config.udp_idle_timeout_secs,
                L4Proto::Tcp if flow.closed() => self.config.tcp_closed_linger_secs,
                L4Proto::Tcp => self.config.tcp_idle_timeout_secs,
            };
            if now.saturating_sub(flow.last_ts) <= timeout * NANOS_PER_SEC {
                break;
            }
            self.stats.flows_expired += 1;
            self.remove(self.tail, EndReason::IdleTimeout);
        }
    }

    /// Moves the growth of every flow touched since the last call into
    /// `out`, along with the final deltas of flows that ended meanwhile.
    pub fn collect_deltas(&mut self, out: &mut Vec<FlowDelta>) {
        out.append(&mut self.deltas);
        self.take_dirty(|delta| out.push(delta));
    }

    /// Takes the pending delta of every flow that grew, most recent first
    /// (dirty flows sit at the head of the list).
    fn take_dirty(&mut self, mut each: impl FnMut(FlowDelta)) {
        let mut slot = self.head;
        while slot != NIL {
            let flow = self.flow_mut(slot);
            if flow.state & STATE_DIRTY == 0 {
                break;
            }
            let next = flow.next;
            each(flow.take_delta(false));
            slot = next;
        }
    }

    /// As [`collect_deltas`](Self::collect_deltas), for a table whose
    /// deltas nobody wants (live L7, where the L4 numbers come from the
    /// eBPF counters): lets them go without gathering them.
    pub fn discard_deltas(&mut self) {
        self.deltas.clear();
        self.take_dirty(drop);
    }

    /// Slots freed since the last call, so side tables keyed by slot can
    /// be settled before the slot is reused.
    pub fn drain_removed(&mut self) -> std::vec::Drain<'_, u32> {
        self.removed.drain(..)
    }

    /// Flows that have ended since the last call.
    pub fn drain_finished(&mut self) -> std::vec::Drain<'_, FlowRecord> {
        self.finished.drain(..)
    }

    /// Ends every flow (end of capture), oldest first.
    pub fn finish_all(&mut self) {
        while self.tail != NIL {
            self.remove(self.tail, EndReason::Active);
        }
    }

    /// Reports of flows still in the table, without ending them.
    pub fn snapshot(&self) -> Vec<FlowRecord> {
        self.slots.iter().flatten().map(|f| f.record(EndReason::Active)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{TcpFlags, TcpMeta};
    use std::net::Ipv4Addr;

    fn tcp(src: u8, sport: u16, dst: u8, dport: u16, flags: u8, len: u32) -> DecodedPacket<'static> {
        DecodedPacket {
            l4: L4Proto::Tcp,
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, src)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, dst)),
            src_port: sport,
            dst_port: dport,
            ip_len: 40 + len,
            tcp: Some(TcpMeta { seq: 0, ack: 0, flags: TcpFlags(flags) }),
            payload: &[],
            wire_payload_len: len,
        }
    }

    fn table(max: u32) -> FlowTable {
        FlowTable::new(
            FlowTableConfig { max_flows: max, keep_finished: true, ..Default::default() },
            ServicePorts::default(),
        )
    }

    const S: u8 = TcpFlags::SYN;
    const A: u8 = TcpFlags::ACK;
    const F: u8 = TcpFlags::FIN;

    #[test]
    fn flow_entry_size() {
        assert!(std::mem::size_of::<Flow>() <= 184, "{}", std::mem::size_of::<Flow>());
        assert!(std::mem::size_of::<Option<Flow>>() <= 184);
    }

    #[test]
    fn syn_sender_is_client_even_on_high_port() {
        let mut t = table(16);
        t.observe(&tcp(2, 9000, 1, 60000, S, 0), 60, Timestamp(1));
        t.observe(&tcp(1, 60000, 2, 9000, S | A, 0), 60, Timestamp(2));
        t.observe(&tcp(2, 9000, 1, 60000, A, 10), 70, Timestamp(3));
        t.finish_all();
        let r: Vec<_> = t.drain_finished().collect();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].client.port, 9000);
        assert_eq!(r[0].orientation, Orientation::Syn);
        assert_eq!(r[0].to_server, DirCounters { packets: 2, bytes: 130, ip_bytes: 90 });
        assert_eq!(r[0].to_client.packets, 1);
    }

    #[test]
    fn midstream_is_inferred_from_ports() {
        let mut t = table(16);
        t.observe(&tcp(2, 8080, 1, 50000, A, 100), 154, Timestamp(1));
        t.finish_all();
        let r: Vec<_> = t.drain_finished().collect();
        assert_eq!(r[0].server.port, 8080);
        assert_eq!(r[0].orientation, Orientation::Inferred);
        assert_eq!(r[0].to_client.packets, 1);
    }

    #[test]
    fn syn_after_close_starts_a_new_flow() {
        let mut t = table(16);
        t.observe(&tcp(1, 50000, 2, 80, S, 0), 60, Timestamp(1));
        t.observe(&tcp(1, 50000, 2, 80, F | A, 0), 60, Timestamp(2));
        t.observe(&tcp(2, 80, 1, 50000, F | A, 0), 60, Timestamp(3));
        let hit = t.observe(&tcp(1, 50000, 2, 80, S, 0), 60, Timestamp(4));
        assert!(hit.created);
        t.finish_all();
        let r: Vec<_> = t.drain_finished().collect();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].end, EndReason::Reused);
        assert_eq!(t.stats().flows_reused, 1);
    }

    #[test]
    fn lru_eviction_is_counted_and_reported() {
        let mut t = table(2);
        t.observe(&tcp(1, 50001, 2, 80, S, 0), 60, Timestamp(1));
        t.observe(&tcp(1, 50002, 2, 80, S, 0), 60, Timestamp(2));
        t.observe(&tcp(1, 50001, 2, 80, A, 0), 60, Timestamp(3));
        t.observe(&tcp(1, 50003, 2, 80, S, 0), 60, Timestamp(4));
        assert_eq!(t.len(), 2);
        assert_eq!(t.stats().flows_evicted, 1);
        let evicted: Vec<_> = t.drain_finished().collect();
        assert_eq!(evicted[0].client.port, 50002);
        assert_eq!(evicted[0].end, EndReason::Evicted);
    }

    #[test]
    fn deltas_sum_to_totals() {
        let mut t = table(4);
        let mut deltas = Vec::new();
        t.observe(&tcp(1, 50001, 2, 80, S, 0), 60, Timestamp(1));
        t.observe(&tcp(1, 50002, 2, 80, S, 0), 60, Timestamp(2));
        t.collect_deltas(&mut deltas);
        assert_eq!(deltas.len(), 2);
        t.observe(&tcp(2, 80, 1, 50001, S | A, 0), 70, Timestamp(3));
        t.collect_deltas(&mut deltas);
        assert_eq!(deltas.len(), 3);
        assert_eq!(deltas[2].to_client.bytes, 70);
        // Evicting a flow with nothing new still reports its end.
        t.observe(&tcp(1, 50003, 2, 80, S, 0), 60, Timestamp(4));
        t.observe(&tcp(1, 50004, 2, 80, S, 0), 60, Timestamp(5));
        t.observe(&tcp(1, 50005, 2, 80, S, 0), 60, Timestamp(6));
        t.finish_all();
        t.collect_deltas(&mut deltas);
        let total: u64 = deltas.iter().map(|d| d.to_server.bytes + d.to_client.bytes).sum();
        assert_eq!(total, 60 * 5 + 70);
        assert_eq!(deltas.iter().filter(|d| d.closed).count(), 5);
    }

    #[test]
    fn udp_idle_timeout_splits_flows() {
        let mut t = table(4);
        let mut p = tcp(1, 50000, 2, 53, 0, 30);
        p.l4 = L4Proto::Udp;
        p.tcp = None;
        t.observe(&p, 72, Timestamp(NANOS_PER_SEC));
        let hit = t.observe(&p, 72, Timestamp(400 * NANOS_PER_SEC));
        assert!(hit.created);
        t.expire(Timestamp(1000 * NANOS_PER_SEC));
        assert!(t.is_empty());
        assert_eq!(t.drain_finished().count(), 2);
    }
}

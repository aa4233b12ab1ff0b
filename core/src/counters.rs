//! Flows from cumulative counters: what an in-kernel counter (eBPF) or a
//! remote worker reports is packets and bytes per directional 5-tuple,
//! totals since the flow began. This table turns successive readings into
//! [`FlowDelta`]s, each reading's growth counted once, so a reading sent
//! twice or read late never counts twice.

use crate::decode::L4Proto;
use crate::flow::{DirCounters, Endpoint, FlowDelta, Orientation};
use crate::ports::ServicePorts;
use crate::tcp_health::{EdgeHealth, TcpHealthDelta};
use crate::time::Timestamp;
use std::collections::HashMap;

/// One direction of a flow as a counter reports it: totals so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectionalReading {
    pub l4: L4Proto,
    pub src: Endpoint,
    pub dst: Endpoint,
    pub counters: DirCounters,
    pub first_ts: Timestamp,
    pub last_ts: Timestamp,
    /// A SYN without ACK went this way: `src` is the client.
    pub syn: bool,
    /// A SYN+ACK went this way: `dst` is the client.
    pub syn_ack: bool,
    /// A FIN or RST went this way.
    pub fin: bool,
    /// An RST went this way: its sender reset the connection.
    pub rst: bool,
    /// TCP health of the socket that sends this way, totals so far (the
    /// kernel's view: eBPF tracepoints).
    pub health: SocketHealth,
}

/// What the kernel says of one TCP socket, totals so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketHealth {
    /// Segments it sent again.
    pub retransmits: u64,
    /// Its connects that never got established (refused, or unanswered).
    pub failed_connects: u64,
    /// Its connects timed (SYN sent to established), and their sum (µs).
    pub handshakes: u64,
    pub rtt_sum_us: u64,
}

/// The two directions of a flow, `a` < `b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PairKey {
    l4: L4Proto,
    a: Endpoint,
    b: Endpoint,
}

#[derive(Clone, Debug, Default)]
struct Pair {
    /// Totals already turned into deltas, per direction (a→b, b→a).
    counted: [DirCounters; 2],
    first_ts: Option<Timestamp>,
    last_ts: Timestamp,
    /// `Some(true)` when `a` is the client, once the handshake says so.
    a_is_client: Option<bool>,
    fin: [bool; 2],
    /// Resets already counted, and each direction's health so far.
    rst: [bool; 2],
    health: [SocketHealth; 2],
    /// When this pair last grew, by the readings' own clock.
    changed: Timestamp,
    /// The last round of readings that had it.
    round: u64,
}

/// Counter readings that went backwards: the counter restarted (an LRU
/// map evicted the flow and met it again, or a worker restarted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterStats {
    pub restarts: u64,
    pub flows: usize,
    /// Flows gone from a complete reading that were not let go here: the
    /// kernel's LRU map evicted them (full), and what they carried since
    /// the last reading is lost.
    pub evicted: u64,
}

/// A flow [`CounterTable::expire`] let go of.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpiredFlow {
    pub l4: L4Proto,
    pub a: Endpoint,
    pub b: Endpoint,
    pub closing: FlowDelta,
}

/// Successive readings in, deltas out.
#[derive(Debug, Default)]
pub struct CounterTable {
    pairs: HashMap<PairKey, Pair>,
    round: u64,
    ports: ServicePorts,
    stats: CounterStats,
}

impl CounterTable {
    pub fn new(ports: ServicePorts) -> Self {
        CounterTable { pairs: HashMap::new(), round: 0, ports, stats: CounterStats::default() }
    }

    pub fn stats(&self) -> CounterStats {
        CounterStats { flows: self.pairs.len(), ..self.stats }
    }

    /// Folds one round of readings in and returns what grew, one delta per
    /// flow that did.
    pub fn update(&mut self, readings: impl IntoIterator<Item = DirectionalReading>) -> Vec<FlowDelta> {
        self.round += 1;
        let mut grown: HashMap<PairKey, Grown> = HashMap::new();
        for r in readings {
            let forward = (r.src.ip, r.src.port) <= (r.dst.ip, r.dst.port);
            let (a, b) = if forward { (r.src, r.dst) } else { (r.dst, r.src) };
            let key = PairKey { l4: r.l4, a, b };
            let dir = usize::from(!forward);
            let pair = self.pairs.entry(key).or_default();
            let before = pair.counted[dir];
            let growth = if r.counters.packets < before.packets || r.counters.bytes < before.bytes {
                // The counter started over: all of it is new.
                self.stats.restarts += 1;
                r.counters
            } else {
                DirCounters {
                    packets: r.counters.packets - before.packets,
                    bytes: r.counters.bytes - before.bytes,
                    ip_bytes: r.counters.ip_bytes.saturating_sub(before.ip_bytes),
                }
            };
            pair.counted[dir] = r.counters;
            pair.round = self.round;
            pair.first_ts = Some(pair.first_ts.map_or(r.first_ts, |t| t.min(r.first_ts)));
            pair.last_ts = pair.last_ts.max(r.last_ts);
            pair.fin[dir] |= r.fin;
            let sick = health_growth(&pair.health[dir], &r.health, r.rst && !pair.rst[dir]);
            pair.health[dir] = r.health;
            pair.rst[dir] |= r.rst;
            if r.syn {
                pair.a_is_client = Some(forward);
            } else if r.syn_ack && pair.a_is_client.is_none() {
                pair.a_is_client = Some(!forward);
            }
            if growth.packets > 0 || sick.is_some() {
                pair.changed = pair.changed.max(r.last_ts);
                let g = grown.entry(key).or_default();
                g.counters[dir].add(&growth);
                if let Some(h) = sick {
                    g.health[dir] = h;
                }
            }
        }
        let mut out: Vec<FlowDelta> = grown
            .into_iter()
            .filter_map(|(key, g)| {
                let pair = self.pairs.get(&key)?;
                let mut d = self.delta(&key, pair, g.counters, false);
                d.health = self.health_delta(&key, pair, &g.health);
                Some(d)
            })
            .collect();
        out.sort_by_key(|d| (d.first_ts, d.client.ip, d.client.port, d.server.ip, d.server.port));
        out
    }

    /// After an [`update`](Self::update) with every flow the map holds:
    /// forgets the flows it did not have (the kernel's LRU map evicted
    /// them when full), each with a closing delta, and counts them. Keeps
    /// this table no bigger than the map, however fast flows churn.
    pub fn forget_unread(&mut self) -> Vec<FlowDelta> {
        let round = self.round;
        let gone: Vec<PairKey> = self.pairs.iter().filter(|(_, p)| p.round != round).map(|(k, _)| *k).collect();
        self.stats.evicted += gone.len() as u64;
        let mut out = Vec::with_capacity(gone.len());
        for key in gone {
            let Some(pair) = self.pairs.remove(&key) else { continue };
            out.push(self.delta(&key, &pair, [DirCounters::default(); 2], true));
        }
        out
    }

    /// Forgets flows that have not grown since `idle_before` (by the
    /// readings' clock), each with a closing delta (no bytes, `closed`
    /// set) so flows are counted as they end. The counter should drop
    /// both directions of each too.
    pub fn expire(&mut self, idle_before: Timestamp) -> Vec<ExpiredFlow> {
        let idle: Vec<PairKey> = self.pairs.iter().filter(|(_, p)| p.changed < idle_before).map(|(k, _)| *k).collect();
        let mut out = Vec::with_capacity(idle.len());
        for key in idle {
            let Some(pair) = self.pairs.remove(&key) else { continue };
            let closing = self.delta(&key, &pair, [DirCounters::default(); 2], true);
            out.push(ExpiredFlow { l4: key.l4, a: key.a, b: key.b, closing });
        }
        out
    }

    /// Whether `a` is the client, as the delta will say.
    fn a_is_client(&self, key: &PairKey, pair: &Pair) -> bool {
        pair.a_is_client.unwrap_or_else(|| self.ports.sender_is_client(key.a.port, key.b.port))
    }

    /// What the sockets' health grew by, as the flow's client and server.
    fn health_delta(&self, key: &PairKey, pair: &Pair, grown: &[HealthGrowth; 2]) -> TcpHealthDelta {
        let (c, s) = if self.a_is_client(key, pair) { (&grown[0], &grown[1]) } else { (&grown[1], &grown[0]) };
        let grown = EdgeHealth {
            retransmits_to_server: c.retransmits,
            retransmits_to_client: s.retransmits,
            resets_by_client: u64::from(c.reset),
            resets_by_server: u64::from(s.reset),
            failed_connects: c.failed_connects,
            handshakes: c.handshakes,
            handshake_rtt_sum_us: c.rtt_sum_us,
            handshake_rtt_max_us: 0,
        };
        grown.since(&EdgeHealth::default())
    }

    fn delta(&self, key: &PairKey, pair: &Pair, grown: [DirCounters; 2], closed: bool) -> FlowDelta {
        let (a_is_client, orientation) = match pair.a_is_client {
            Some(c) => (c, Orientation::Syn),
            None => (self.ports.sender_is_client(key.a.port, key.b.port), Orientation::Inferred),
        };
        let (client, server, to_server, to_client) =
            if a_is_client { (key.a, key.b, grown[0], grown[1]) } else { (key.b, key.a, grown[1], grown[0]) };
        FlowDelta {
            l4: key.l4,
            client,
            server,
            to_server,
            to_client,
            first_ts: pair.first_ts.unwrap_or(pair.last_ts),
            last_ts: pair.last_ts,
            orientation,
            closed,
            health: Default::default(),
        }
    }
}

/// One direction's growth in one round: bytes, and its socket's health.
#[derive(Clone, Copy, Debug, Default)]
struct Grown {
    counters: [DirCounters; 2],
    health: [HealthGrowth; 2],
}

/// What one socket's health grew by since the last reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct HealthGrowth {
    retransmits: u64,
    failed_connects: u64,
    handshakes: u64,
    rtt_sum_us: u64,
    reset: bool,
}

/// The growth from `before` to `now` (all of `now` when it went back: the
/// kernel's entry started over), or `None` when nothing grew.
fn health_growth(before: &SocketHealth, now: &SocketHealth, reset: bool) -> Option<HealthGrowth> {
    let restarted = now.retransmits < before.retransmits
        || now.failed_connects < before.failed_connects
        || now.handshakes < before.handshakes;
    let base = if restarted { SocketHealth::default() } else { *before };
    let g = HealthGrowth {
        retransmits: now.retransmits - base.retransmits,
        failed_connects: now.failed_connects - base.failed_connects,
        handshakes: now.handshakes - base.handshakes,
        rtt_sum_us: now.rtt_sum_us.saturating_sub(base.rtt_sum_us),
        reset,
    };
    (g != HealthGrowth::default()).then_some(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn ep(ip: &str, port: u16) -> Endpoint {
        Endpoint { ip: ip.parse::<IpAddr>().unwrap(), port }
    }

    fn reading(src: Endpoint, dst: Endpoint, packets: u64, syn: bool) -> DirectionalReading {
        DirectionalReading {
            l4: L4Proto::Tcp,
            src,
            dst,
            counters: DirCounters { packets, bytes: packets * 100, ip_bytes: packets * 86 },
            first_ts: Timestamp(1),
            last_ts: Timestamp(packets),
            syn,
            syn_ack: false,
            fin: false,
            rst: false,
            health: SocketHealth::default(),
        }
    }

    /// The kernel's socket health reaches the flow as its client's and
    /// server's: each round's growth once, resets once.
    #[test]
    fn socket_health_becomes_the_flows_tcp_health() {
        let (c, s) = (ep("10.0.0.1", 40000), ep("10.0.0.2", 80));
        let mut t = CounterTable::new(ServicePorts::default());
        let mut to_server = reading(c, s, 3, true);
        to_server.health = SocketHealth { retransmits: 2, failed_connects: 0, handshakes: 1, rtt_sum_us: 40_000 };
        let mut to_client = reading(s, c, 2, false);
        to_client.health.retransmits = 1;
        let d = t.update([to_server, to_client]);
        assert_eq!(d.len(), 1);
        let h = d[0].health;
        assert_eq!((h.retransmits_to_server, h.retransmits_to_client, h.handshake_rtt_us), (2, 1, Some(40_000)));
        assert!(!h.reset_by_client && !h.reset_by_server && !h.failed_connect);
        // Only health grew (no packets): still a delta; the same reading
        // again adds nothing.
        to_server.health.retransmits = 5;
        to_client.rst = true;
        let d = t.update([to_server, to_client]);
        assert_eq!((d[0].health.retransmits_to_server, d[0].health.reset_by_server), (3, true), "{d:?}");
        assert_eq!(d[0].to_server.packets, 0);
        assert!(t.update([to_server, to_client]).is_empty(), "nothing new");
        // A connect refused: the client's socket says so.
        let other = ep("10.0.0.1", 40001);
        let mut refused = reading(other, s, 1, true);
        refused.health.failed_connects = 1;
        let d = t.update([refused]);
        assert!(d[0].health.failed_connect && d[0].client == other, "{d:?}");
    }

    #[test]
    fn growth_counts_once_and_the_syn_sender_is_the_client() {
        let (c, s) = (ep("10.0.0.9", 8080), ep("10.0.0.1", 45000));
        let mut t = CounterTable::new(ServicePorts::default());
        let d = t.update([reading(c, s, 3, true), reading(s, c, 2, false)]);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].client, d[0].server, d[0].orientation), (c, s, Orientation::Syn));
        assert_eq!((d[0].to_server.packets, d[0].to_client.packets), (3, 2));
        // The same totals again: nothing new.
        assert!(t.update([reading(c, s, 3, true), reading(s, c, 2, false)]).is_empty());
        let d = t.update([reading(c, s, 5, true)]);
        assert_eq!((d[0].to_server.packets, d[0].to_server.bytes, d[0].to_client.packets), (2, 200, 0));
    }

    #[test]
    fn a_restarted_counter_counts_from_zero() {
        let (c, s) = (ep("10.0.0.1", 40000), ep("10.0.0.2", 80));
        let mut t = CounterTable::new(ServicePorts::default());
        t.update([reading(c, s, 10, false)]);
        let d = t.update([reading(c, s, 4, false)]);
        assert_eq!(d[0].to_server.packets, 4);
        assert_eq!(t.stats().restarts, 1);
        // Without a handshake the well-known port decides.
        assert_eq!((d[0].server, d[0].orientation), (s, Orientation::Inferred));
    }

    #[test]
    fn idle_flows_close_and_are_forgotten() {
        let (c, s) = (ep("10.0.0.1", 40000), ep("10.0.0.2", 80));
        let mut t = CounterTable::new(ServicePorts::default());
        t.update([reading(c, s, 10, true)]);
        assert!(t.expire(Timestamp(5)).is_empty());
        let gone = t.expire(Timestamp(11));
        assert_eq!(gone.len(), 1);
        assert!(gone[0].closing.closed && gone[0].closing.to_server.packets == 0);
        assert_eq!(t.stats().flows, 0);
    }

    #[test]
    fn flows_the_kernel_map_evicted_are_closed_and_counted() {
        let mut t = CounterTable::new(ServicePorts::default());
        let (c, s, d) = (ep("10.0.0.1", 40000), ep("10.0.0.2", 80), ep("10.0.0.3", 80));
        t.update([reading(c, s, 3, true), reading(c, d, 2, true)]);
        assert!(t.forget_unread().is_empty(), "both were read");
        t.update([reading(c, s, 4, true)]);
        let gone = t.forget_unread();
        assert_eq!((gone.len(), gone[0].server, gone[0].closed), (1, d, true));
        assert_eq!((t.stats().evicted, t.stats().flows), (1, 1));
    }
}

//! The engine: decode → flow table → reassembly → stream consumer, driven
//! one frame at a time by a capture source. It does no I/O.

use crate::decode::{self, Decoded, DecodedPacket, FragmentInfo, L4Proto, LinkType, Skip};
use crate::flow::{Direction, Endpoint, FlowDelta, FlowTable, FlowTableConfig, FlowTableStats};
use crate::ports::ServicePorts;
use crate::reassembly::{ReassemblyConfig, ReassemblyStats, Segment, StreamEvent, StreamReassembler};
use crate::time::{NANOS_PER_SEC, Timestamp};
use serde::Serialize;
use std::collections::HashMap;
use std::net::IpAddr;

/// Frame-level counters. Every frame lands in exactly one of the `skipped_*`
/// fields or in `flow_packets`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    pub frames: u64,
    pub frame_bytes: u64,
    pub flow_packets: u64,
    pub skipped_non_ip: u64,
    pub skipped_other_ip_protocol: u64,
    pub skipped_malformed: u64,
    pub skipped_unsupported_link: u64,
    /// Fragments whose first fragment (with the ports) was never seen.
    pub skipped_unattributed_fragments: u64,
    /// Fragments counted into their flow.
    pub fragments: u64,
    pub truncated_payloads: u64,
    /// Bytes all connections' reassemblers hold now, waiting for holes.
    pub reassembly_held_bytes: u64,
    pub flow_table: FlowTableStats,
    pub reassembly: ReassemblyStats,
}

/// A connection as a stream consumer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// Unique per engine for its lifetime.
    pub id: u64,
    pub l4: L4Proto,
    pub client: Endpoint,
    pub server: Endpoint,
    /// The bytes are TLS plaintext, read at the TLS library (the wire
    /// carried them encrypted).
    pub tls: bool,
}

/// Receives reassembled TCP streams and UDP datagrams (the dissector side).
pub trait StreamSink {
    /// Whether this flow's payload is wanted at all (capture targeting),
    /// asked once when the flow starts at `ts`. A flow not wanted is still
    /// counted (L4) but never reassembled nor handed to the sink.
    fn wants(&mut self, _conn: &ConnInfo, _ts: Timestamp) -> bool {
        true
    }
    fn on_stream(&mut self, conn: &ConnInfo, dir: Direction, ts: Timestamp, event: StreamEvent<'_>);
    fn on_datagram(&mut self, conn: &ConnInfo, dir: Direction, ts: Timestamp, payload: &[u8]);
    /// The flow left the table; nothing more will come for `conn`.
    fn on_close(&mut self, conn: &ConnInfo);
}

/// A sink for L4-only runs: no payload is kept and nothing is reassembled.
#[derive(Debug, Default)]
pub struct NoStreams;

impl StreamSink for NoStreams {
    fn wants(&mut self, _conn: &ConnInfo, _ts: Timestamp) -> bool {
        false
    }
    fn on_stream(&mut self, _: &ConnInfo, _: Direction, _: Timestamp, _: StreamEvent<'_>) {}
    fn on_datagram(&mut self, _: &ConnInfo, _: Direction, _: Timestamp, _: &[u8]) {}
    fn on_close(&mut self, _: &ConnInfo) {}
}

#[derive(Debug)]
struct ConnState {
    info: ConnInfo,
    /// `[to_server, to_client]`, for TCP.
    tcp: Option<Box<[StreamReassembler; 2]>>,
}

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub flows: FlowTableConfig,
    pub reassembly: ReassemblyConfig,
    /// How often (capture time) flow deltas are exported and idle flows expire.
    pub tick_nanos: u64,
    /// Fragment datagrams remembered while waiting for their other fragments.
    pub max_fragment_datagrams: usize,
    /// Bytes all connections together may hold waiting for holes to fill;
    /// beyond it, the connection that crossed it gives up its holes (they
    /// become gaps, counted in `reassembly.budget_releases`).
    pub max_reassembly_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            flows: FlowTableConfig::default(),
            reassembly: ReassemblyConfig::default(),
            tick_nanos: NANOS_PER_SEC,
            max_fragment_datagrams: 4096,
            max_reassembly_bytes: 32 << 20,
        }
    }
}

/// The packet engine.
#[derive(Debug)]
pub struct Engine<S: StreamSink = NoStreams> {
    config: EngineConfig,
    table: FlowTable,
    sink: S,
    conns: HashMap<u32, ConnState>,
    next_conn_id: u64,
    /// `(src, dst, protocol, ident)` → ports of the datagram's first fragment.
    fragments: HashMap<(IpAddr, IpAddr, u8, u32), (u16, u16)>,
    stats: EngineStats,
    now: Timestamp,
    next_tick: Option<Timestamp>,
    deltas: Vec<FlowDelta>,
    /// Bytes held by every reassembler, against `max_reassembly_bytes`.
    reassembly_held: usize,
    /// Whether flow deltas are gathered for [`Engine::take_deltas`].
    export_deltas: bool,
}

impl Engine<NoStreams> {
    /// An engine that only counts L4 flows.
    pub fn l4_only(config: EngineConfig, ports: ServicePorts) -> Self {
        Engine::new(config, ports, NoStreams)
    }
}

impl<S: StreamSink> Engine<S> {
    pub fn new(config: EngineConfig, ports: ServicePorts, sink: S) -> Self {
        Engine {
            table: FlowTable::new(config.flows.clone(), ports),
            config,
            sink,
            conns: HashMap::new(),
            next_conn_id: 1,
            fragments: HashMap::new(),
            stats: EngineStats::default(),
            now: Timestamp::ZERO,
            next_tick: None,
            deltas: Vec::new(),
            reassembly_held: 0,
            export_deltas: true,
        }
    }

    pub fn stats(&self) -> EngineStats {
        let mut s = self.stats;
        s.flow_table = self.table.stats();
        s.reassembly_held_bytes = self.reassembly_held as u64;
        s
    }

    pub fn flows(&self) -> &FlowTable {
        &self.table
    }

    pub fn flows_mut(&mut self) -> &mut FlowTable {
        &mut self.table
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Takes the sink back, for example to reuse plugin instances in the
    /// next engine.
    pub fn into_sink(self) -> S {
        self.sink
    }

    /// Capture time of the newest frame.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Processes one captured frame. `wire_len` is the frame's original
    /// length; `frame` may be shorter (snap length).
    pub fn process(&mut self, link: LinkType, ts: Timestamp, frame: &[u8], wire_len: u32) {
        self.stats.frames += 1;
        self.stats.frame_bytes += u64::from(wire_len);
        if ts > self.now {
            self.now = ts;
        }
        match self.next_tick {
            None => self.next_tick = Some(ts.add_nanos(self.config.tick_nanos)),
            Some(t) if ts >= t => self.tick(),
            Some(_) => {}
        }
        match decode::decode(link, frame) {
            Decoded::Packet(p) => self.packet(&p, wire_len, ts),
            Decoded::Fragment(f) => self.fragment(f, wire_len, ts),
            Decoded::Skipped(skip) => {
                let counter = match skip {
                    Skip::NonIp => &mut self.stats.skipped_non_ip,
                    Skip::OtherIpProtocol => &mut self.stats.skipped_other_ip_protocol,
                    Skip::Fragment => &mut self.stats.skipped_unattributed_fragments,
                    Skip::Malformed => &mut self.stats.skipped_malformed,
                    Skip::UnsupportedLinkType => &mut self.stats.skipped_unsupported_link,
                };
                *counter += 1;
                tracing::trace!(?skip, len = wire_len, "frame skipped");
            }
        }
    }

    fn fragment(&mut self, f: FragmentInfo, wire_len: u32, ts: Timestamp) {
        let id = (f.src, f.dst, f.protocol, f.ident);
        let ports = match f.ports {
            Some(ports) => {
                if self.fragments.len() >= self.config.max_fragment_datagrams {
                    self.fragments.clear();
                }
                self.fragments.insert(id, ports);
                Some(ports)
            }
            None => self.fragments.get(&id).copied(),
        };
        let l4 = match f.protocol {
            6 => L4Proto::Tcp,
            17 => L4Proto::Udp,
            _ => {
                self.stats.skipped_other_ip_protocol += 1;
                return;
            }
        };
        let Some((src_port, dst_port)) = ports else {
            self.stats.skipped_unattributed_fragments += 1;
            return;
        };
        self.stats.fragments += 1;
        let p = DecodedPacket {
            l4,
            src: f.src,
            dst: f.dst,
            src_port,
            dst_port,
            ip_len: f.ip_len,
            tcp: None,
            payload: &[],
            wire_payload_len: 0,
        };
        // Fragments count as traffic of their flow; their payload is not
        // dissected (datagrams that need IP reassembly are rare in-cluster).
        self.stats.flow_packets += 1;
        self.table.observe(&p, wire_len, ts);
        self.settle_removed();
    }

    fn packet(&mut self, p: &DecodedPacket<'_>, wire_len: u32, ts: Timestamp) {
        self.stats.flow_packets += 1;
        if p.payload_truncated() {
            self.stats.truncated_payloads += 1;
        }
        let hit = self.table.observe(p, wire_len, ts);
        self.settle_removed();
        if hit.created
            && let Some(flow) = self.table.flow(hit.slot)
        {
            {
                let info = ConnInfo {
                    id: self.next_conn_id,
                    l4: p.l4,
                    client: flow.client(),
                    server: flow.server(),
                    tls: false,
                };
                self.next_conn_id += 1;
                if self.sink.wants(&info, ts) {
                    let tcp = (p.l4 == L4Proto::Tcp).then(|| {
                        Box::new([
                            StreamReassembler::new(self.config.reassembly),
                            StreamReassembler::new(self.config.reassembly),
                        ])
                    });
                    self.conns.insert(hit.slot, ConnState { info, tcp });
                }
            }
        }
        let Some(conn) = self.conns.get_mut(&hit.slot) else {
            return;
        };
        let info = conn.info;
        // The SYN may have flipped orientation after the state was made.
        if let Some(flow) = self.table.flow(hit.slot) {
            conn.info.client = flow.client();
            conn.info.server = flow.server();
        }
        let sink = &mut self.sink;
        match (&mut conn.tcp, p.tcp) {
            (Some(dirs), Some(tcp)) => {
                let (own, peer) = match hit.dir {
                    Direction::ToServer => (0, 1),
                    Direction::ToClient => (1, 0),
                };
                let dir = hit.dir;
                let seg = Segment {
                    seq: tcp.seq,
                    syn: tcp.flags.syn(),
                    fin: tcp.flags.fin(),
                    rst: tcp.flags.rst(),
                    payload: if p.payload_truncated() { &[] } else { p.payload },
                };
                let peer_dir = match dir {
                    Direction::ToServer => Direction::ToClient,
                    Direction::ToClient => Direction::ToServer,
                };
                let held_before = dirs[0].buffered_bytes() + dirs[1].buffered_bytes();
                dirs[own].segment(seg, &mut |ev| sink.on_stream(&info, dir, ts, ev));
                if tcp.flags.ack() {
                    dirs[peer].peer_ack(tcp.ack, &mut |ev| sink.on_stream(&info, peer_dir, ts, ev));
                }
                let held_after = dirs[0].buffered_bytes() + dirs[1].buffered_bytes();
                self.reassembly_held = (self.reassembly_held + held_after).saturating_sub(held_before);
                // Only this connection grew the total, so its giving up its
                // holes brings the total back under the budget.
                if self.reassembly_held > self.config.max_reassembly_bytes {
                    dirs[own].release(&mut |ev| sink.on_stream(&info, dir, ts, ev));
                    dirs[peer].release(&mut |ev| sink.on_stream(&info, peer_dir, ts, ev));
                    self.stats.reassembly.budget_releases += 1;
                    self.reassembly_held = self.reassembly_held.saturating_sub(held_after);
                    tracing::trace!(conn = info.id, held = held_after, "reassembly budget: holes given up");
                }
            }
            _ => sink.on_datagram(&info, hit.dir, ts, p.payload),
        }
    }

    /// Flushes and forgets connection state of flows the table removed.
    fn settle_removed(&mut self) {
        if self.conns.is_empty() {
            self.table.drain_removed();
            return;
        }
        let removed: Vec<u32> = self.table.drain_removed().collect();
        for slot in removed {
            if let Some(conn) = self.conns.remove(&slot) {
                self.close_conn(conn);
            }
        }
    }

    fn close_conn(&mut self, mut conn: ConnState) {
        let info = conn.info;
        let ts = self.now;
        if let Some(dirs) = conn.tcp.as_mut() {
            let held = dirs[0].buffered_bytes() + dirs[1].buffered_bytes();
            self.reassembly_held = self.reassembly_held.saturating_sub(held);
            let sink = &mut self.sink;
            for (i, dir) in [Direction::ToServer, Direction::ToClient].into_iter().enumerate() {
                dirs[i].flush(&mut |ev| sink.on_stream(&info, dir, ts, ev));
                let s = dirs[i].stats();
                let r = &mut self.stats.reassembly;
                r.delivered_bytes += s.delivered_bytes;
                r.gap_bytes += s.gap_bytes;
                r.gaps += s.gaps;
                r.retransmitted_bytes += s.retransmitted_bytes;
                r.out_of_order_segments += s.out_of_order_segments;
                r.out_of_window_segments += s.out_of_window_segments;
                r.after_fin_bytes += s.after_fin_bytes;
            }
        }
        self.sink.on_close(&info);
    }

    /// Exports flow deltas and expires idle flows. Called by `process` once
    /// per tick of capture time; live sources also call it from a timer.
    pub fn tick(&mut self) {
        self.table.expire(self.now);
        self.settle_removed();
        self.gather_deltas();
        self.next_tick = Some(self.now.add_nanos(self.config.tick_nanos));
    }

    /// Stops gathering flow deltas (nobody takes them: live L7 capture,
    /// whose L4 numbers come from the eBPF counters).
    pub fn set_export_deltas(&mut self, export: bool) {
        self.export_deltas = export;
    }

    fn gather_deltas(&mut self) {
        if self.export_deltas {
            self.table.collect_deltas(&mut self.deltas);
        } else {
            self.table.discard_deltas();
        }
    }

    /// Deltas exported so far; the caller takes them.
    pub fn take_deltas(&mut self) -> Vec<FlowDelta> {
        std::mem::take(&mut self.deltas)
    }

    /// Ends every flow (end of capture) and exports the last deltas.
    pub fn finish(&mut self) {
        self.table.finish_all();
        self.settle_removed();
        self.gather_deltas();
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;

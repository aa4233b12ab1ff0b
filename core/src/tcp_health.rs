//! TCP health of one flow, from the packets the flow table sees: segments
//! sent again, resets from each side, connects that failed, and the
//! handshake's round trip. The rules follow tshark's TCP analysis, kept to
//! what a flow entry can afford (a few words per flow, no per-segment
//! history):
//!
//! - **retransmission**: a segment carrying data, SYN or FIN whose first
//!   sequence number lies before the highest one already seen in its
//!   direction (tshark's `nextseq`), keep-alives excepted. tshark further
//!   splits these by timing into fast, spurious, out-of-order and plain
//!   retransmissions; trawl counts them all as "sent again".
//! - **reset**: a RST, counted once per side and flow.
//! - **failed connect**: a SYN answered by a RST instead of a SYN-ACK, or
//!   never answered before the flow ends.
//! - **handshake RTT**: from the latest SYN to the ACK that completes the
//!   handshake (tshark's `tcp.analysis.initial_rtt`).

use crate::decode::TcpMeta;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// What a flow's TCP health adds since its previous delta, by the flow's
/// client and server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpHealthDelta {
    /// Segments the client sent again.
    pub retransmits_to_server: u32,
    /// Segments the server sent again.
    pub retransmits_to_client: u32,
    /// The client reset the connection.
    pub reset_by_client: bool,
    /// The server reset the connection.
    pub reset_by_server: bool,
    /// The connect failed: refused (RST) or never answered.
    pub failed_connect: bool,
    /// The latest SYN to the ACK that completed the handshake, in
    /// microseconds; once per connection.
    pub handshake_rtt_us: Option<u32>,
}

impl TcpHealthDelta {
    pub fn is_empty(&self) -> bool {
        *self == TcpHealthDelta::default()
    }
}

/// TCP health of a map edge: the sum over its flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeHealth {
    pub retransmits_to_server: u64,
    pub retransmits_to_client: u64,
    /// Connections the client reset.
    pub resets_by_client: u64,
    /// Connections the server reset.
    pub resets_by_server: u64,
    /// Connects refused or never answered.
    pub failed_connects: u64,
    /// Handshakes timed, and their round trips' sum and maximum (µs).
    pub handshakes: u64,
    pub handshake_rtt_sum_us: u64,
    pub handshake_rtt_max_us: u32,
}

impl EdgeHealth {
    pub fn add(&mut self, d: &TcpHealthDelta) {
        self.retransmits_to_server += u64::from(d.retransmits_to_server);
        self.retransmits_to_client += u64::from(d.retransmits_to_client);
        self.resets_by_client += u64::from(d.reset_by_client);
        self.resets_by_server += u64::from(d.reset_by_server);
        self.failed_connects += u64::from(d.failed_connect);
        if let Some(rtt) = d.handshake_rtt_us {
            self.handshakes += 1;
            self.handshake_rtt_sum_us += u64::from(rtt);
            self.handshake_rtt_max_us = self.handshake_rtt_max_us.max(rtt);
        }
    }

    /// Adds another edge's (or interval's) totals.
    pub fn merge(&mut self, o: &EdgeHealth) {
        self.retransmits_to_server += o.retransmits_to_server;
        self.retransmits_to_client += o.retransmits_to_client;
        self.resets_by_client += o.resets_by_client;
        self.resets_by_server += o.resets_by_server;
        self.failed_connects += o.failed_connects;
        self.handshakes += o.handshakes;
        self.handshake_rtt_sum_us += o.handshake_rtt_sum_us;
        self.handshake_rtt_max_us = self.handshake_rtt_max_us.max(o.handshake_rtt_max_us);
    }

    /// What these totals grew by since `before`, as one delta: the
    /// handshakes since then as their mean round trip. (The inverse of
    /// [`EdgeHealth::add`], for totals kept elsewhere: the kernel's, a
    /// worker's.)
    pub fn since(&self, before: &EdgeHealth) -> TcpHealthDelta {
        let sat = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        let handshakes = self.handshakes.saturating_sub(before.handshakes);
        let rtt_sum = self.handshake_rtt_sum_us.saturating_sub(before.handshake_rtt_sum_us);
        TcpHealthDelta {
            retransmits_to_server: sat(self.retransmits_to_server.saturating_sub(before.retransmits_to_server)),
            retransmits_to_client: sat(self.retransmits_to_client.saturating_sub(before.retransmits_to_client)),
            reset_by_client: self.resets_by_client > before.resets_by_client,
            reset_by_server: self.resets_by_server > before.resets_by_server,
            failed_connect: self.failed_connects > before.failed_connects,
            handshake_rtt_us: (handshakes > 0).then(|| sat(rtt_sum / handshakes)),
        }
    }

    /// As the map shows it.
    pub fn view(&self) -> HealthView {
        let ms = |us: f64| us.round() / 1_000.0;
        let timed = self.handshakes > 0;
        HealthView {
            totals: *self,
            handshake_rtt_ms_mean: timed.then(|| ms(self.handshake_rtt_sum_us as f64 / self.handshakes as f64)),
            handshake_rtt_ms_max: timed.then(|| ms(f64::from(self.handshake_rtt_max_us))),
        }
    }
}

/// JSON form of [`EdgeHealth`]: its totals, and the round trips' mean and
/// maximum in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealthView {
    #[serde(flatten)]
    pub totals: EdgeHealth,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_rtt_ms_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_rtt_ms_max: Option<f64>,
}

const SEQ_A: u16 = 1 << 0;
const SEQ_B: u16 = 1 << 1;
const SYN_SEEN: u16 = 1 << 2;
const SYNACK_SEEN: u16 = 1 << 3;
const RTT_DONE: u16 = 1 << 4;
const RTT_SENT: u16 = 1 << 5;
const RST_A: u16 = 1 << 6;
const RST_B: u16 = 1 << 7;
const RST_A_SENT: u16 = 1 << 8;
const RST_B_SENT: u16 = 1 << 9;
const FAILED: u16 = 1 << 10;
const FAILED_SENT: u16 = 1 << 11;

/// Per-flow state, by side `a`/`b` as the flow's counters are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TcpHealth {
    /// Sequence number after the highest byte seen, per side.
    seq_end: [u32; 2],
    /// Segments sent again, per side: all, and those already exported.
    retransmits: [u32; 2],
    exported: [u32; 2],
    /// The latest SYN, as microseconds after the flow's first packet.
    syn_at_us: u32,
    rtt_us: u32,
    bits: u16,
}

/// `a` before `b` in sequence space (RFC 1982 arithmetic).
fn seq_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

fn micros(from: Timestamp, to: Timestamp) -> u32 {
    u32::try_from(to.saturating_sub(from) / 1_000).unwrap_or(u32::MAX)
}

impl TcpHealth {
    /// Accounts one segment from side `side` (0 = a), `payload` bytes long
    /// on the wire; `client` is the client's side and `first` the flow's
    /// first packet time.
    pub(crate) fn observe(
        &mut self,
        side: usize,
        client: usize,
        tcp: TcpMeta,
        payload: u32,
        ts: Timestamp,
        first: Timestamp,
    ) {
        let flags = tcp.flags;
        let seq_bit = if side == 0 { SEQ_A } else { SEQ_B };
        if flags.rst() {
            self.bits |= if side == 0 { RST_A } else { RST_B };
            // A reset from the server before any SYN-ACK refuses the connect.
            if side != client && self.bits & (SYN_SEEN | SYNACK_SEEN) == SYN_SEEN {
                self.bits |= FAILED;
            }
            return;
        }
        if flags.syn() {
            if flags.ack() {
                self.bits |= SYNACK_SEEN;
            } else if self.bits & RTT_DONE == 0 {
                // Timed from the latest SYN, as tshark does: a SYN sent
                // again shows as a retransmission, not as a slow network.
                self.bits |= SYN_SEEN;
                self.syn_at_us = micros(first, ts);
            }
        } else if flags.ack()
            && side == client
            && self.bits & (SYN_SEEN | SYNACK_SEEN | RTT_DONE) == SYN_SEEN | SYNACK_SEEN
        {
            let syn = Timestamp(first.0.saturating_add(u64::from(self.syn_at_us) * 1_000));
            self.rtt_us = micros(syn, ts);
            self.bits |= RTT_DONE;
        }
        let len = payload + u32::from(flags.syn()) + u32::from(flags.fin());
        if len == 0 {
            return;
        }
        let end = tcp.seq.wrapping_add(len);
        if self.bits & seq_bit == 0 {
            self.bits |= seq_bit;
            self.seq_end[side] = end;
            return;
        }
        let next = self.seq_end[side];
        // A keep-alive re-sends the byte before `next`, on purpose.
        let keepalive = payload <= 1 && !flags.syn() && !flags.fin() && tcp.seq == next.wrapping_sub(1);
        if seq_before(tcp.seq, next) && !keepalive {
            self.retransmits[side] = self.retransmits[side].saturating_add(1);
        }
        if seq_before(next, end) {
            self.seq_end[side] = end;
        }
    }

    /// The flow ended: a SYN never answered is a failed connect.
    pub(crate) fn end(&mut self) {
        if self.bits & (SYN_SEEN | SYNACK_SEEN) == SYN_SEEN {
            self.bits |= FAILED;
        }
    }

    /// What grew since the last call, by client and server.
    pub(crate) fn take_delta(&mut self, client: usize) -> TcpHealthDelta {
        let server = 1 - client;
        let grown = |h: &Self, side: usize| h.retransmits[side] - h.exported[side];
        let mut take = |bit: u16, sent: u16| {
            let fresh = self.bits & bit != 0 && self.bits & sent == 0;
            self.bits |= if fresh { sent } else { 0 };
            fresh
        };
        let (rst_client, rst_client_sent) = if client == 0 { (RST_A, RST_A_SENT) } else { (RST_B, RST_B_SENT) };
        let (rst_server, rst_server_sent) = if client == 0 { (RST_B, RST_B_SENT) } else { (RST_A, RST_A_SENT) };
        let reset_by_client = take(rst_client, rst_client_sent);
        let reset_by_server = take(rst_server, rst_server_sent);
        let failed_connect = take(FAILED, FAILED_SENT);
        let rtt = take(RTT_DONE, RTT_SENT);
        let delta = TcpHealthDelta {
            retransmits_to_server: grown(self, client),
            retransmits_to_client: grown(self, server),
            reset_by_client,
            reset_by_server,
            failed_connect,
            handshake_rtt_us: rtt.then_some(self.rtt_us),
        };
        self.exported = self.retransmits;
        delta
    }

    /// The whole flow's health so far, by client and server (for flow
    /// records).
    pub(crate) fn summary(&self, client: usize) -> TcpHealthDelta {
        let server = 1 - client;
        let bit = |side: usize| if side == 0 { RST_A } else { RST_B };
        TcpHealthDelta {
            retransmits_to_server: self.retransmits[client],
            retransmits_to_client: self.retransmits[server],
            reset_by_client: self.bits & bit(client) != 0,
            reset_by_server: self.bits & bit(server) != 0,
            failed_connect: self.bits & FAILED != 0,
            handshake_rtt_us: (self.bits & RTT_DONE != 0).then_some(self.rtt_us),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::TcpFlags;

    const S: u8 = TcpFlags::SYN;
    const A: u8 = TcpFlags::ACK;
    const F: u8 = TcpFlags::FIN;
    const R: u8 = TcpFlags::RST;

    fn seg(h: &mut TcpHealth, side: usize, flags: u8, seq: u32, len: u32, ms: u64) {
        let tcp = TcpMeta { seq, ack: 0, flags: TcpFlags(flags) };
        h.observe(side, 0, tcp, len, Timestamp(ms * 1_000_000), Timestamp(0));
    }

    #[test]
    fn a_clean_exchange_is_healthy_and_times_its_handshake() {
        let mut h = TcpHealth::default();
        seg(&mut h, 0, S, 100, 0, 0);
        seg(&mut h, 1, S | A, 500, 0, 3);
        seg(&mut h, 0, A, 101, 0, 5);
        seg(&mut h, 0, A, 101, 10, 6);
        seg(&mut h, 1, A, 501, 1000, 8);
        seg(&mut h, 0, A | F, 111, 0, 9);
        seg(&mut h, 1, A | F, 1501, 0, 9);
        let d = h.take_delta(0);
        assert_eq!(d, TcpHealthDelta { handshake_rtt_us: Some(5_000), ..Default::default() });
        assert!(h.take_delta(0).is_empty(), "the RTT is exported once");
        // A SYN sent again: timed from the one that was answered.
        let mut h = TcpHealth::default();
        seg(&mut h, 0, S, 100, 0, 0);
        seg(&mut h, 0, S, 100, 0, 1_000);
        seg(&mut h, 1, S | A, 500, 0, 1_003);
        seg(&mut h, 0, A, 101, 0, 1_005);
        let d = h.take_delta(0);
        assert_eq!((d.handshake_rtt_us, d.retransmits_to_server), (Some(5_000), 1));
    }

    #[test]
    fn segments_sent_again_are_counted_by_direction_and_keepalives_are_not() {
        let mut h = TcpHealth::default();
        seg(&mut h, 0, S, 0, 0, 0);
        seg(&mut h, 1, S | A, 0, 0, 1);
        seg(&mut h, 0, A, 1, 100, 2);
        seg(&mut h, 0, A, 101, 100, 3);
        seg(&mut h, 0, A, 1, 100, 300); // sent again
        seg(&mut h, 0, A, 51, 100, 301); // overlaps: sent again
        seg(&mut h, 0, A, 250, 1, 400); // keep-alive: the byte before next
        seg(&mut h, 0, S, 0, 0, 500); // a SYN sent again
        seg(&mut h, 1, A, 1, 0, 501); // a bare ACK is never a retransmission
        let d = h.take_delta(0);
        assert_eq!((d.retransmits_to_server, d.retransmits_to_client), (3, 0));
        // Sequence numbers wrap.
        let mut h = TcpHealth::default();
        seg(&mut h, 1, A, u32::MAX - 10, 100, 0);
        seg(&mut h, 1, A, 89, 100, 1);
        seg(&mut h, 1, A, u32::MAX - 10, 100, 2);
        assert_eq!(h.take_delta(0).retransmits_to_client, 1);
    }

    #[test]
    fn refused_and_unanswered_connects_fail_and_resets_are_by_side() {
        let mut h = TcpHealth::default();
        seg(&mut h, 0, S, 0, 0, 0);
        seg(&mut h, 1, R | A, 0, 0, 1);
        let d = h.take_delta(0);
        assert!(d.failed_connect && d.reset_by_server && !d.reset_by_client, "{d:?}");
        let mut h = TcpHealth::default();
        seg(&mut h, 0, S, 0, 0, 0);
        seg(&mut h, 0, S, 0, 0, 1000);
        let d = h.take_delta(0);
        assert!(!d.failed_connect && d.retransmits_to_server == 1, "not failed yet: it may still be answered");
        h.end();
        let d = h.take_delta(0);
        assert!(d.failed_connect && d.retransmits_to_server == 0, "{d:?}");
        // A reset after the handshake is a reset, not a failed connect.
        let mut h = TcpHealth::default();
        seg(&mut h, 0, S, 0, 0, 0);
        seg(&mut h, 1, S | A, 0, 0, 1);
        seg(&mut h, 0, A, 1, 0, 2);
        seg(&mut h, 0, R, 1, 0, 3);
        h.end();
        let d = h.take_delta(0);
        assert!(d.reset_by_client && !d.failed_connect, "{d:?}");
        assert_eq!(h.summary(0).handshake_rtt_us, Some(2_000));
    }
}

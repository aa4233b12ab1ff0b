//! TCP stream reassembly: one pure state machine per direction.
//!
//! Segments go in with their sequence numbers; in-order bytes come out as
//! [`StreamEvent`]s. Sequence numbers are turned into 64-bit stream offsets
//! relative to the next expected byte, so wrap-around needs no special case.
//! Overlaps keep the bytes that arrived first (what the receiver's stack
//! already acknowledged). Holes become [`StreamEvent::Gap`] with their length
//! so a dissector can resync, when the peer's ACK proves the bytes were sent,
//! when the out-of-order buffer hits its cap, or when the stream is flushed.

use std::collections::BTreeMap;

/// Output of the reassembler, in stream order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEvent<'a> {
    /// First event of a stream. `midstream` is true when no SYN was seen, so
    /// the bytes may start inside an application message.
    Start { midstream: bool },
    /// Contiguous bytes at stream `offset`.
    Data { offset: u64, bytes: &'a [u8] },
    /// `len` bytes at `offset` were never captured.
    Gap { offset: u64, len: u64 },
    /// The sender finished (FIN), after all its bytes.
    Fin,
    /// The connection was reset.
    Rst,
}

/// Limits on what one direction may hold while waiting for a hole to fill.
#[derive(Clone, Copy, Debug)]
pub struct ReassemblyConfig {
    pub max_buffered_bytes: usize,
    pub max_buffered_segments: usize,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        ReassemblyConfig { max_buffered_bytes: 1 << 20, max_buffered_segments: 512 }
    }
}

/// What happened to the bytes of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReassemblyStats {
    pub delivered_bytes: u64,
    pub gap_bytes: u64,
    pub gaps: u64,
    /// Bytes received again after they had been delivered.
    pub retransmitted_bytes: u64,
    pub out_of_order_segments: u64,
    /// Segments too far from the expected sequence number to be believed.
    pub out_of_window_segments: u64,
    /// Bytes after the FIN.
    pub after_fin_bytes: u64,
    /// Times this direction gave up waiting for its holes because the
    /// engine's reassembly budget (across all connections) ran out.
    pub budget_releases: u64,
}

/// One TCP segment, as the reassembler sees it.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    pub seq: u32,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub payload: &'a [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Nothing seen yet in this direction.
    Unsynced,
    Open,
    Closed,
}

/// Segments further than this from the expected sequence number are not
/// believed: real windows are at most 1 GiB (window scale 14).
const MAX_WINDOW: i64 = 1 << 30;

/// Reassembles one direction of a TCP connection.
#[derive(Clone, Debug)]
pub struct StreamReassembler {
    config: ReassemblyConfig,
    state: State,
    /// Sequence number of the byte at `offset`.
    next_seq: u32,
    /// Stream offset of the next byte to deliver.
    offset: u64,
    /// Highest stream offset the peer acknowledged.
    acked: u64,
    /// Stream offset of the FIN, once seen.
    fin_offset: Option<u64>,
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    stats: ReassemblyStats,
}

impl StreamReassembler {
    pub fn new(config: ReassemblyConfig) -> Self {
        StreamReassembler {
            config,
            state: State::Unsynced,
            next_seq: 0,
            offset: 0,
            acked: 0,
            fin_offset: None,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            stats: ReassemblyStats::default(),
        }
    }

    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Bytes held while waiting for a hole to fill.
    pub fn buffered_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Stream offset that sequence number `seq` stands for.
    fn offset_of(&self, seq: u32) -> i64 {
        self.offset as i64 + i64::from(seq.wrapping_sub(self.next_seq) as i32)
    }

    /// Feeds one segment of this direction.
    pub fn segment(&mut self, seg: Segment<'_>, emit: &mut dyn FnMut(StreamEvent<'_>)) {
        if self.state == State::Closed {
            self.stats.after_fin_bytes += seg.payload.len() as u64;
            return;
        }
        let mut seq = seg.seq;
        if self.state == State::Unsynced {
            self.state = State::Open;
            if seg.syn {
                self.next_seq = seq.wrapping_add(1);
                emit(StreamEvent::Start { midstream: false });
            } else {
                self.next_seq = seq;
                emit(StreamEvent::Start { midstream: true });
            }
        }
        if seg.syn {
            // The SYN occupies one sequence number before the data.
            seq = seq.wrapping_add(1);
        }
        let start = self.offset_of(seq);
        if (start - self.offset as i64).abs() > MAX_WINDOW {
            self.stats.out_of_window_segments += 1;
            return;
        }
        if !seg.payload.is_empty() {
            self.accept(start, seg.payload, emit);
        }
        if seg.fin {
            let fin = (start + seg.payload.len() as i64).max(0) as u64;
            self.fin_offset = Some(self.fin_offset.map_or(fin, |f| f.min(fin)));
        }
        if seg.rst {
            // Flushing may reach a FIN that came before the RST; that
            // already ends the stream.
            self.flush(emit);
            if self.state != State::Closed {
                self.state = State::Closed;
                emit(StreamEvent::Rst);
            }
            return;
        }
        self.resolve_holes(emit);
        self.maybe_fin(emit);
    }

    /// Tells this direction that the peer acknowledged up to `ack`.
    pub fn peer_ack(&mut self, ack: u32, emit: &mut dyn FnMut(StreamEvent<'_>)) {
        if self.state != State::Open {
            return;
        }
        let acked = self.offset_of(ack);
        if acked > self.offset as i64 && acked - (self.offset as i64) <= MAX_WINDOW {
            // The ACK of a FIN covers one sequence number past the data.
            let limit = self.fin_offset.unwrap_or(u64::MAX);
            self.acked = self.acked.max((acked as u64).min(limit));
            self.resolve_holes(emit);
            self.maybe_fin(emit);
        }
    }

    /// Gives up waiting for the holes: everything buffered is delivered
    /// now, each hole as a gap (the engine's reassembly budget ran out).
    pub fn release(&mut self, emit: &mut dyn FnMut(StreamEvent<'_>)) {
        if self.pending.is_empty() {
            return;
        }
        self.stats.budget_releases += 1;
        while let Some((&at, _)) = self.pending.first_key_value() {
            if at > self.offset {
                self.gap(at - self.offset, emit);
            }
            self.drain(emit);
        }
        self.maybe_fin(emit);
    }

    /// Delivers everything buffered, marking holes as gaps (end of flow).
    pub fn flush(&mut self, emit: &mut dyn FnMut(StreamEvent<'_>)) {
        while let Some((&at, _)) = self.pending.first_key_value() {
            if at > self.offset {
                self.gap(at - self.offset, emit);
            }
            self.drain(emit);
        }
        let end = self.acked.max(self.fin_offset.unwrap_or(0));
        if self.state == State::Open && end > self.offset {
            self.gap(end - self.offset, emit);
        }
        self.maybe_fin(emit);
    }

    fn accept(&mut self, start: i64, payload: &[u8], emit: &mut dyn FnMut(StreamEvent<'_>)) {
        let end = start + payload.len() as i64;
        let offset = self.offset as i64;
        if end <= offset {
            self.stats.retransmitted_bytes += payload.len() as u64;
            return;
        }
        if start > offset {
            self.buffer(start as u64, payload, emit);
            return;
        }
        let skip = (offset - start) as usize;
        self.stats.retransmitted_bytes += skip as u64;
        self.deliver(&payload[skip..], emit);
        self.drain(emit);
    }

    fn buffer(&mut self, at: u64, payload: &[u8], emit: &mut dyn FnMut(StreamEvent<'_>)) {
        self.stats.out_of_order_segments += 1;
        match self.pending.get_mut(&at) {
            // Same start: keep the longer copy, first bytes win.
            Some(existing) if existing.len() >= payload.len() => {
                self.stats.retransmitted_bytes += payload.len() as u64;
            }
            Some(existing) => {
                self.stats.retransmitted_bytes += existing.len() as u64;
                self.pending_bytes += payload.len() - existing.len();
                let old = existing.len();
                existing.extend_from_slice(&payload[old..]);
            }
            None => {
                self.pending.insert(at, payload.to_vec());
                self.pending_bytes += payload.len();
            }
        }
        while self.pending_bytes > self.config.max_buffered_bytes
            || self.pending.len() > self.config.max_buffered_segments
        {
            // Over the cap: give up on the oldest hole.
            let Some((&first, _)) = self.pending.first_key_value() else {
                break;
            };
            if first > self.offset {
                self.gap(first - self.offset, emit);
            }
            self.drain(emit);
        }
    }

    /// Delivers buffered segments that now start at or before `offset`.
    fn drain(&mut self, emit: &mut dyn FnMut(StreamEvent<'_>)) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > self.offset {
                break;
            }
            let at = *entry.key();
            let bytes = entry.remove();
            self.pending_bytes -= bytes.len();
            let end = at + bytes.len() as u64;
            if end <= self.offset {
                self.stats.retransmitted_bytes += bytes.len() as u64;
                continue;
            }
            let skip = (self.offset - at) as usize;
            self.stats.retransmitted_bytes += skip as u64;
            self.deliver(&bytes[skip..], emit);
        }
    }

    /// A hole the peer has acknowledged was sent, so it will never be seen.
    fn resolve_holes(&mut self, emit: &mut dyn FnMut(StreamEvent<'_>)) {
        while self.acked > self.offset {
            let next = self.pending.first_key_value().map(|(&at, _)| at);
            match next {
                Some(at) if at <= self.offset => self.drain(emit),
                Some(at) => {
                    self.gap(at.min(self.acked) - self.offset, emit);
                    self.drain(emit);
                }
                // Nothing buffered: the bytes may still be in flight in the
                // capture; wait for more segments, a FIN or the flush.
                None => break,
            }
        }
    }

    fn maybe_fin(&mut self, emit: &mut dyn FnMut(StreamEvent<'_>)) {
        if self.state != State::Open {
            return;
        }
        if let Some(fin) = self.fin_offset {
            if self.offset >= fin && self.pending.is_empty() {
                self.state = State::Closed;
                emit(StreamEvent::Fin);
            } else if self.offset < fin && self.acked >= fin {
                // FIN acknowledged but bytes before it were never captured.
                self.flush(emit);
            }
        }
    }

    fn deliver(&mut self, bytes: &[u8], emit: &mut dyn FnMut(StreamEvent<'_>)) {
        let bytes = match self.fin_offset {
            Some(fin) if self.offset + bytes.len() as u64 > fin => {
                let keep = fin.saturating_sub(self.offset) as usize;
                self.stats.after_fin_bytes += (bytes.len() - keep) as u64;
                &bytes[..keep]
            }
            _ => bytes,
        };
        if bytes.is_empty() {
            return;
        }
        emit(StreamEvent::Data { offset: self.offset, bytes });
        self.advance(bytes.len() as u64);
        self.stats.delivered_bytes += bytes.len() as u64;
    }

    fn gap(&mut self, len: u64, emit: &mut dyn FnMut(StreamEvent<'_>)) {
        if len == 0 {
            return;
        }
        emit(StreamEvent::Gap { offset: self.offset, len });
        self.advance(len);
        self.stats.gaps += 1;
        self.stats.gap_bytes += len;
    }

    fn advance(&mut self, len: u64) {
        self.offset += len;
        self.next_seq = self.next_seq.wrapping_add(len as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Ev {
        Start(bool),
        Data(u64, Vec<u8>),
        Gap(u64, u64),
        Fin,
        Rst,
    }

    struct Harness {
        r: StreamReassembler,
        out: Vec<Ev>,
    }

    impl Harness {
        fn new() -> Self {
            Self::with(ReassemblyConfig::default())
        }
        fn with(config: ReassemblyConfig) -> Self {
            Harness { r: StreamReassembler::new(config), out: Vec::new() }
        }
        fn seg(&mut self, seq: u32, flags: &str, payload: &[u8]) {
            let seg =
                Segment { seq, syn: flags.contains('S'), fin: flags.contains('F'), rst: flags.contains('R'), payload };
            let out = &mut self.out;
            self.r.segment(seg, &mut |e| out.push(Ev::from(e)));
        }
        fn ack(&mut self, ack: u32) {
            let out = &mut self.out;
            self.r.peer_ack(ack, &mut |e| out.push(Ev::from(e)));
        }
        fn flush(&mut self) {
            let out = &mut self.out;
            self.r.flush(&mut |e| out.push(Ev::from(e)));
        }
        fn bytes(&self) -> Vec<u8> {
            self.out
                .iter()
                .flat_map(|e| match e {
                    Ev::Data(_, b) => b.clone(),
                    Ev::Gap(_, n) => vec![b'?'; *n as usize],
                    _ => vec![],
                })
                .collect()
        }
    }

    impl From<StreamEvent<'_>> for Ev {
        fn from(e: StreamEvent<'_>) -> Self {
            match e {
                StreamEvent::Start { midstream } => Ev::Start(midstream),
                StreamEvent::Data { offset, bytes } => Ev::Data(offset, bytes.to_vec()),
                StreamEvent::Gap { offset, len } => Ev::Gap(offset, len),
                StreamEvent::Fin => Ev::Fin,
                StreamEvent::Rst => Ev::Rst,
            }
        }
    }

    #[test]
    fn in_order_with_syn_and_fin() {
        let mut h = Harness::new();
        h.seg(100, "S", b"");
        h.seg(101, "", b"hello ");
        h.seg(107, "F", b"world");
        assert_eq!(h.out[0], Ev::Start(false));
        assert_eq!(h.bytes(), b"hello world");
        assert_eq!(h.out.last(), Some(&Ev::Fin));
        assert!(h.r.is_closed());
    }

    #[test]
    fn out_of_order_is_buffered_then_delivered() {
        let mut h = Harness::new();
        h.seg(0, "S", b"");
        h.seg(7, "", b"c");
        h.seg(4, "", b"bbb");
        h.seg(1, "", b"aaa");
        assert_eq!(h.bytes(), b"aaabbbc");
        assert_eq!(h.r.stats().out_of_order_segments, 2);
        assert_eq!(h.r.buffered_bytes(), 0);
    }

    #[test]
    fn overlapping_retransmits_keep_first_bytes() {
        let mut h = Harness::new();
        h.seg(0, "S", b"");
        h.seg(1, "", b"abcd");
        h.seg(3, "", b"XXef");
        h.seg(1, "", b"abcd");
        h.seg(9, "", b"ij");
        h.seg(7, "", b"ghIJ");
        assert_eq!(h.bytes(), b"abcdefghIJ".to_vec());
        assert!(h.r.stats().retransmitted_bytes >= 2 + 4);
    }

    #[test]
    fn overlap_inside_buffer_first_wins() {
        let mut h = Harness::new();
        h.seg(0, "S", b"");
        h.seg(5, "", b"efgh");
        h.seg(3, "", b"cdEFG");
        h.seg(1, "", b"ab");
        assert_eq!(h.bytes(), b"abcdEFGh");
    }

    #[test]
    fn gap_proven_by_peer_ack() {
        let mut h = Harness::new();
        h.seg(0, "S", b"");
        h.seg(1, "", b"abc");
        h.seg(8, "", b"hij");
        h.ack(11);
        assert_eq!(h.bytes(), b"abc????hij");
        assert!(h.out.contains(&Ev::Gap(3, 4)));
    }

    #[test]
    fn gap_on_flush_and_on_buffer_cap() {
        let mut h = Harness::with(ReassemblyConfig { max_buffered_bytes: 8, max_buffered_segments: 4 });
        h.seg(0, "S", b"");
        h.seg(11, "", b"12345");
        h.seg(16, "", b"67890");
        assert_eq!(h.bytes(), b"??????????1234567890");
        let mut h = Harness::new();
        h.seg(0, "S", b"");
        h.seg(5, "F", b"xy");
        h.flush();
        assert_eq!(h.bytes(), b"????xy");
        assert_eq!(h.out.last(), Some(&Ev::Fin));
    }

    #[test]
    fn midstream_join_starts_at_first_segment() {
        let mut h = Harness::new();
        h.seg(5000, "", b"partial");
        h.seg(5007, "", b" message");
        assert_eq!(h.out[0], Ev::Start(true));
        assert_eq!(h.out[1], Ev::Data(0, b"partial".to_vec()));
        assert_eq!(h.bytes(), b"partial message");
    }

    #[test]
    fn sequence_wraparound() {
        let mut h = Harness::new();
        h.seg(u32::MAX - 2, "S", b"");
        h.seg(u32::MAX - 1, "", b"ab");
        h.seg(0, "", b"cd");
        h.seg(2, "F", b"");
        assert_eq!(h.bytes(), b"abcd");
        assert_eq!(h.out.last(), Some(&Ev::Fin));
    }

    #[test]
    fn rst_flushes_and_closes() {
        let mut h = Harness::new();
        h.seg(0, "S", b"");
        h.seg(1, "", b"ab");
        h.seg(5, "", b"ef");
        h.seg(7, "R", b"");
        assert_eq!(h.bytes(), b"ab??ef");
        assert_eq!(h.out.last(), Some(&Ev::Rst));
        h.seg(7, "", b"late");
        assert_eq!(h.r.stats().after_fin_bytes, 4);
    }

    #[test]
    fn rst_after_pending_fin_ends_once() {
        // Found by the fuzzer: a RST whose flush reaches an earlier FIN.
        let mut h = Harness::new();
        h.seg(0, "S", b"");
        h.seg(3, "F", b"c");
        h.seg(9, "R", b"");
        let ends = h.out.iter().filter(|e| matches!(e, Ev::Fin | Ev::Rst)).count();
        assert_eq!(ends, 1, "{:?}", h.out);
    }

    #[test]
    fn fin_ack_does_not_invent_a_gap() {
        let mut h = Harness::new();
        h.seg(0, "S", b"");
        h.seg(1, "F", b"abc");
        h.ack(5);
        assert_eq!(h.bytes(), b"abc");
        assert_eq!(h.r.stats().gaps, 0);
    }

    #[test]
    fn out_of_window_segments_are_ignored() {
        let mut h = Harness::new();
        h.seg(0, "S", b"");
        h.seg(0x8000_0000, "", b"far");
        assert_eq!(h.bytes(), b"");
        assert_eq!(h.r.stats().out_of_window_segments, 1);
    }
}

//! What a worker has counted and not yet sent, and what it keeps so a
//! restarted hub can be given everything again.
//!
//! - Open flows' cumulative totals, sent when they grew; every one again
//!   on a new connection.
//! - A closed flow is sent once more with its final totals, then folded
//!   into its conversation (client IP, server IP and port): cumulative per
//!   counting epoch, sent again on every new connection. The hub folds
//!   closed flows the same way, so it adds only what it lacks (nothing,
//!   unless it restarted). Memory follows conversations, not flows.
//! - Records wait in a queue; the ones sent stay in a journal of bounded
//!   size that is sent again on a new connection (the hub drops the ones
//!   it has). Records beyond the queue are folded into counts per (client
//!   IP, server, protocol), cumulative per epoch and sent like the
//!   conversations, so the hub's L7 numbers stay exact and the records are
//!   a sample for latency, top calls and filtered maps. Beyond every bound,
//!   records are dropped and counted.

use super::proto::{ClosedTotals, FlowTotals, UnsampledTotals, WireRecord};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use trawl_core::flow::Orientation;
use trawl_core::{FlowDelta, L4Proto};
use trawl_runtime::HostRecord;

pub type FlowKey = (bool, (IpAddr, u16), (IpAddr, u16), u64);
/// A conversation: transport, client IP, server IP and port.
pub type ConversationKey = (bool, IpAddr, (IpAddr, u16));
/// Unsampled requests: transport, client IP, server, protocol.
pub type UnsampledKey = (bool, IpAddr, (IpAddr, u16), String);

pub fn unsampled_key(u: &UnsampledTotals) -> UnsampledKey {
    (u.tcp, u.src, u.dst, u.protocol.clone())
}

pub fn empty_unsampled((tcp, src, dst, protocol): UnsampledKey) -> UnsampledTotals {
    UnsampledTotals { tcp, src, dst, protocol, requests: 0, errors: 0, request_bytes: 0, response_bytes: 0, last_ts: 0 }
}

/// How much the outbox may hold.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    /// Records waiting to be sent.
    pub max_records: usize,
    /// Records kept after sending, for a hub that restarts.
    pub journal: usize,
    /// Bytes the queued records may hold; beyond, only their counts go.
    pub max_record_bytes: usize,
    /// Bytes the journal may hold.
    pub journal_bytes: usize,
    /// Conversations whose closed flows are kept for a hub that restarts.
    pub max_conversations: usize,
    /// Flows whose totals are kept (open ones, and closed ones not yet
    /// sent); beyond, a new flow is dropped and counted. Reached only when
    /// the hub cannot keep up or is away while flows churn.
    pub max_flows: usize,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits {
            max_records: 100_000,
            journal: 100_000,
            max_conversations: 100_000,
            max_flows: 262_144,
            max_record_bytes: 64 << 20,
            journal_bytes: 64 << 20,
        }
    }
}

/// Adds closed flow `t` to its conversation's totals.
pub fn fold(into: &mut ClosedTotals, t: &FlowTotals) {
    into.flows += 1;
    into.first_ts = if into.flows == 1 { t.first_ts } else { into.first_ts.min(t.first_ts) };
    into.last_ts = into.last_ts.max(t.last_ts);
    for i in 0..3 {
        into.to_server[i] += t.to_server[i];
        into.to_client[i] += t.to_client[i];
    }
}

pub fn conversation_of(t: &FlowTotals) -> ConversationKey {
    (t.tcp, t.client.0, t.server)
}

fn conversation_of_closed(c: &ClosedTotals) -> ConversationKey {
    (c.tcp, c.client, c.server)
}

pub fn empty_conversation((tcp, client, server): ConversationKey) -> ClosedTotals {
    ClosedTotals { tcp, client, server, flows: 0, first_ts: 0, last_ts: 0, to_server: [0; 3], to_client: [0; 3] }
}

#[derive(Debug, Default)]
pub struct Outbox {
    pub limits: OutboxLimits,
    pub totals: HashMap<FlowKey, FlowTotals>,
    pub dirty: HashSet<FlowKey>,
    pub conversations: HashMap<ConversationKey, ClosedTotals>,
    pub conversations_dirty: HashSet<ConversationKey>,
    pub records: VecDeque<WireRecord>,
    pub journal: VecDeque<WireRecord>,
    pub unsampled: HashMap<UnsampledKey, UnsampledTotals>,
    pub unsampled_dirty: HashSet<UnsampledKey>,
    pub records_unsampled: u64,
    pub records_dropped: u64,
    /// Closed flows not kept for a restarted hub (too many conversations).
    pub conversations_dropped: u64,
    /// Flows not kept: the outbox held `max_flows` already.
    pub flows_dropped: u64,
    /// Sent records that left the journal (a restarted hub will lack them).
    pub journal_evicted: u64,
    /// The next record's number (see [`WireRecord::seq`]).
    next_seq: u64,
    /// Bytes held by `records` and by `journal` (approximate).
    queued_bytes: usize,
    journal_held: usize,
}

/// A record bigger than this is never queued whole (it could not share a
/// frame with others): its counts go instead.
pub const MAX_RECORD_SIZE: usize = 1 << 20;

fn size(r: &WireRecord) -> usize {
    r.record.approx_size() + r.plugin.len() + r.plugin_version.len() + 64
}

/// What one flush sends.
#[derive(Debug, Default)]
pub struct Batch {
    pub flows: Vec<FlowTotals>,
    pub closed: Vec<ClosedTotals>,
    pub records: Vec<WireRecord>,
    pub unsampled: Vec<UnsampledTotals>,
}

impl Outbox {
    pub fn new(limits: OutboxLimits) -> Self {
        Outbox { limits, ..Default::default() }
    }

    pub fn add_delta(&mut self, d: &FlowDelta) {
        let key = (d.l4 == L4Proto::Tcp, (d.client.ip, d.client.port), (d.server.ip, d.server.port), d.first_ts.0);
        if self.totals.len() >= self.limits.max_flows && !self.totals.contains_key(&key) {
            self.flows_dropped += 1;
            return;
        }
        let t = self.totals.entry(key).or_insert_with(|| FlowTotals {
            tcp: key.0,
            client: key.1,
            server: key.2,
            first_ts: key.3,
            last_ts: 0,
            to_server: [0; 3],
            to_client: [0; 3],
            syn: d.orientation == Orientation::Syn,
            closed: false,
            health: Default::default(),
        });
        t.health.add(&d.health);
        for (acc, c) in [(&mut t.to_server, &d.to_server), (&mut t.to_client, &d.to_client)] {
            acc[0] += c.packets;
            acc[1] += c.bytes;
            acc[2] += c.ip_bytes;
        }
        t.last_ts = t.last_ts.max(d.last_ts.0);
        t.closed |= d.closed;
        self.dirty.insert(key);
    }

    /// Queues a record for the hub, numbered in this epoch; when the queue
    /// is full, only its counts.
    pub fn add_record(&mut self, h: HostRecord) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let bytes = h.record.approx_size() + h.plugin.len() + h.plugin_version.len() + 64;
        if self.records.len() < self.limits.max_records
            && self.queued_bytes + bytes <= self.limits.max_record_bytes
            && bytes <= MAX_RECORD_SIZE
        {
            self.queued_bytes += bytes;
            self.records.push_back(WireRecord::new(h, seq));
            return;
        }
        let (src, dst) = h.src_dst();
        let key = (h.conn.l4 == L4Proto::Tcp, src.ip, (dst.ip, dst.port), h.protocol().to_string());
        let r = h.record;
        if !self.unsampled.contains_key(&key) && self.unsampled.len() >= self.limits.max_conversations {
            self.records_dropped += 1;
            return;
        }
        let u = self.unsampled.entry(key.clone()).or_insert_with(|| empty_unsampled(key.clone()));
        u.requests += 1;
        u.errors += u64::from(r.error);
        u.request_bytes += r.request_size;
        u.response_bytes += r.response_size;
        u.last_ts = u.last_ts.max(r.request_ts.or(r.response_ts).unwrap_or(0));
        self.unsampled_dirty.insert(key);
        self.records_unsampled += 1;
    }

    /// A new connection: everything the hub may lack goes again.
    pub fn resend_all(&mut self) {
        self.dirty.extend(self.totals.keys().copied());
        self.conversations_dirty.extend(self.conversations.keys().copied());
        self.unsampled_dirty.extend(self.unsampled.keys().cloned());
        for r in self.journal.drain(..).rev() {
            self.records.push_front(r);
        }
        self.queued_bytes += std::mem::take(&mut self.journal_held);
    }

    /// What is due: at most `max_records` records of it, and of those no
    /// more than fit in `max_bytes` (at least one), so a batch of records
    /// always fits in a frame.
    pub fn batch(&self, max_records: usize, max_bytes: usize) -> Batch {
        let mut bytes = 0;
        let records = self
            .records
            .iter()
            .take(max_records)
            .take_while(|r| {
                let first = bytes == 0;
                bytes += size(r);
                first || bytes <= max_bytes
            })
            .cloned()
            .collect();
        Batch {
            flows: self.dirty.iter().filter_map(|k| self.totals.get(k).cloned()).collect(),
            closed: self.conversations_dirty.iter().filter_map(|k| self.conversations.get(k).cloned()).collect(),
            records,
            unsampled: self.unsampled_dirty.iter().filter_map(|k| self.unsampled.get(k).cloned()).collect(),
        }
    }

    /// The hub has `batch`: closed flows fold into their conversations and
    /// sent records move to the journal. What changed since the batch was
    /// taken (the outbox is not locked while a batch is written) stays
    /// due.
    pub fn sent(&mut self, batch: &Batch) {
        let mut closed: Vec<FlowKey> = Vec::new();
        for f in &batch.flows {
            let key = (f.tcp, f.client, f.server, f.first_ts);
            if self.totals.get(&key) == Some(f) {
                self.dirty.remove(&key);
                if f.closed {
                    closed.push(key);
                }
            }
        }
        for c in &batch.closed {
            let key = conversation_of_closed(c);
            if self.conversations.get(&key) == Some(c) {
                self.conversations_dirty.remove(&key);
            }
        }
        for u in &batch.unsampled {
            let key = unsampled_key(u);
            if self.unsampled.get(&key) == Some(u) {
                self.unsampled_dirty.remove(&key);
            }
        }
        for k in closed {
            let Some(t) = self.totals.remove(&k) else { continue };
            let conv = conversation_of(&t);
            if !self.conversations.contains_key(&conv) && self.conversations.len() >= self.limits.max_conversations {
                self.conversations_dropped += 1;
                continue;
            }
            fold(self.conversations.entry(conv).or_insert_with(|| empty_conversation(conv)), &t);
        }
        let n = batch.records.len().min(self.records.len());
        for r in self.records.drain(..n) {
            let bytes = size(&r);
            self.queued_bytes = self.queued_bytes.saturating_sub(bytes);
            self.journal_held += bytes;
            self.journal.push_back(r);
        }
        while self.journal.len() > self.limits.journal || self.journal_held > self.limits.journal_bytes {
            let Some(r) = self.journal.pop_front() else { break };
            self.journal_held = self.journal_held.saturating_sub(size(&r));
            self.journal_evicted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trawl_sdk::abi::Record;

    fn record(summary_len: usize) -> HostRecord {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let record = Record { summary: "x".repeat(summary_len), request_size: 10, ..Record::default() };
        let (client, server) = (Endpoint { ip: ip("10.0.0.1"), port: 1000 }, Endpoint { ip: ip("10.0.0.2"), port: 80 });
        HostRecord::tcp(client, server, "http", "1", record)
    }

    /// Queue and journal are bounded in bytes as well as in count, a batch
    /// fits its byte budget, and what does not fit is counted, not lost.
    #[test]
    fn records_are_bounded_in_bytes_and_batches_fit_a_frame() {
        let limits = OutboxLimits { max_record_bytes: 1 << 20, journal_bytes: 1 << 20, ..Default::default() };
        let mut out = Outbox::new(limits);
        for _ in 0..100 {
            out.add_record(record(64 * 1024));
        }
        assert!(out.records.len() < 20, "{} records queued", out.records.len());
        assert_eq!(out.records.len() as u64 + out.records_unsampled, 100, "the rest are counted");
        out.add_record(record(2 << 20));
        assert_eq!(out.records_unsampled + out.records.len() as u64, 101, "a record over 1 MiB is counted");
        let batch = out.batch(5_000, 256 * 1024);
        assert!((1..=4).contains(&batch.records.len()), "{}", batch.records.len());
        out.sent(&batch);
        for _ in 0..10 {
            let b = out.batch(5_000, 256 * 1024);
            out.sent(&b);
        }
        assert!(out.journal.iter().map(size).sum::<usize>() <= 1 << 20);
    }
    use trawl_core::Timestamp;
    use trawl_core::flow::{DirCounters, Endpoint};

    fn delta(client_port: u16, first: u64, bytes: u64, closed: bool) -> FlowDelta {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        FlowDelta {
            l4: L4Proto::Tcp,
            client: Endpoint { ip: ip("10.0.0.1"), port: client_port },
            server: Endpoint { ip: ip("10.0.0.2"), port: 80 },
            to_server: DirCounters { packets: 1, bytes, ip_bytes: bytes + 40 },
            to_client: DirCounters::default(),
            first_ts: Timestamp(first),
            last_ts: Timestamp(first + 1),
            orientation: Orientation::Syn,
            closed,
            health: Default::default(),
        }
    }

    #[test]
    fn closed_flows_fold_into_conversations_and_go_again_on_a_new_connection() {
        let mut out = Outbox::new(OutboxLimits { max_conversations: 1, ..Default::default() });
        out.add_delta(&delta(1000, 1, 100, true));
        out.add_delta(&delta(1001, 5, 50, true));
        out.add_delta(&delta(1002, 9, 7, false));
        let batch = out.batch(10, usize::MAX);
        assert_eq!(batch.flows.len(), 3, "closed flows go once with their final totals");
        out.sent(&batch);
        assert_eq!(out.totals.len(), 1, "only the open flow is kept whole");
        let conv = out.conversations.values().next().unwrap();
        assert_eq!((conv.flows, conv.to_server[1], conv.first_ts), (2, 150, 1));
        assert!(
            out.batch(10, usize::MAX).flows.is_empty() && out.batch(10, usize::MAX).closed.is_empty(),
            "nothing new is due"
        );

        out.resend_all();
        let again = out.batch(10, usize::MAX);
        assert_eq!((again.flows.len(), again.closed.len()), (1, 1));

        // A conversation over the bound is counted, not kept.
        let mut other = delta(1003, 11, 1, true);
        other.server.port = 443;
        out.add_delta(&other);
        out.sent(&out.batch(10, usize::MAX));
        assert_eq!((out.conversations.len(), out.conversations_dropped), (1, 1));
    }

    #[test]
    fn what_changes_while_a_batch_is_written_stays_due() {
        let mut out = Outbox::default();
        out.add_delta(&delta(1000, 1, 100, false));
        out.add_record(record(10));
        let batch = out.batch(10, usize::MAX);
        // The outbox is not locked while the batch goes out: capture adds.
        out.add_delta(&delta(1000, 1, 60, false));
        out.add_delta(&delta(1001, 2, 5, true));
        out.add_record(record(10));
        out.sent(&batch);
        let next = out.batch(10, usize::MAX);
        assert_eq!(next.flows.len(), 2, "the grown flow and the new one are still due");
        assert_eq!(next.records.len(), 1, "the record added meanwhile is still queued");
        assert_eq!(out.journal.len(), 1);
    }

    #[test]
    fn flows_beyond_the_outbox_bound_are_dropped_and_counted() {
        let mut out = Outbox::new(OutboxLimits { max_flows: 2, ..Default::default() });
        out.add_delta(&delta(1000, 1, 100, false));
        out.add_delta(&delta(1001, 2, 100, true));
        out.add_delta(&delta(1002, 3, 100, false));
        out.add_delta(&delta(1000, 1, 50, false));
        assert_eq!((out.totals.len(), out.flows_dropped), (2, 1), "the third is dropped, the first still grows");
        assert_eq!(out.totals.values().map(|t| t.to_server[1]).sum::<u64>(), 250);
    }
}

//! How the hub merges what workers send, counting everything once.
//!
//! - A flow is the same flow when a worker sends it again (same node,
//!   endpoints and first packet time), and only what its totals grew by is
//!   added. Once closed it leaves the table; its key stays in a bounded
//!   list so a resend of the close (or a restarted replay) adds nothing.
//! - A closed flow is folded into its conversation per (node, epoch),
//!   exactly as the worker folds it. When the worker sends its
//!   conversations again (each new connection), only what the hub lacks is
//!   added: nothing, unless the hub restarted and lost them.
//! - A flow seen by two workers (its two ends on two nodes) is counted by
//!   the worker at the sender's side only: the live counters count a
//!   packet at its sender's interface when the sender is a counted
//!   workload (see `ebpf/src/bpf/flows.bpf.c`), so no two workers report
//!   the same packet.
//! - Records are dropped when seen before (a journal sent again, a replay
//!   restarted): by their name, the worker's node and epoch and the
//!   record's number in it, never by their content.

use super::outbox::fold;
use super::outbox::{
    ConversationKey, UnsampledKey, conversation_of, empty_conversation, empty_unsampled, unsampled_key,
};
use super::proto::{ClosedTotals, FlowTotals, UnsampledTotals, WireRecord};
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use trawl_core::flow::{DirCounters, Endpoint, FlowDelta, Orientation};
use trawl_core::{L4Proto, Timestamp};
use trawl_runtime::records::{resolve_ends, unresolved_l7};
use trawl_service::GraphState;

/// Record keys remembered to drop resends.
const SEEN_RECORDS: usize = 2_000_000;
/// Closed flows remembered to drop resent closes.
const SEEN_CLOSED: usize = 1_000_000;

/// Node, epoch, TCP or not, client, server, first packet time.
type FlowKey = (String, String, bool, (IpAddr, u16), (IpAddr, u16), u64);

/// How long the state of a worker's epoch outlives its last frame: its
/// open flows, conversations and request totals, which a reconnect within
/// this long finds again (a resend adds nothing). A replay run again with
/// the same epoch after longer counts again.
pub const EPOCH_GRACE: Duration = Duration::from_secs(10 * 60);
/// Conversations the hub keeps per worker epoch, as many as a worker
/// keeps by default (`--max-conversations`), and like the worker the first
/// ones: a flood of random sources must not fill the hub. Beyond, closed
/// flows still count; a hub restart could not ask for them again anyway.
pub const MAX_CONVERSATIONS_PER_EPOCH: usize = 100_000;

/// How often stale epochs are looked for.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// A set that forgets its oldest entries beyond a bound.
#[derive(Debug, Default)]
struct Recent {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Recent {
    /// Whether `key` is new (and remembers it).
    fn insert(&mut self, key: u64, bound: usize) -> bool {
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > bound
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

fn hash_of(v: impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// What the hub has merged so far.
#[derive(Debug)]
pub struct Merger {
    open: HashMap<FlowKey, FlowTotals>,
    /// When each (node, epoch) last sent anything.
    last_seen: HashMap<(String, String), Instant>,
    last_sweep: Instant,
    grace: Duration,
    /// Epochs whose state was let go, over the hub's life.
    pub epochs_evicted: u64,
    /// Conversations kept per (node, epoch).
    conversations_per_epoch: HashMap<(String, String), usize>,
    /// Closed flows not folded into a conversation: their epoch had its
    /// most conversations already.
    pub conversations_unkept: u64,
    closed: Recent,
    conversations: HashMap<(String, String, ConversationKey), ClosedTotals>,
    unsampled: HashMap<(String, String, UnsampledKey), UnsampledTotals>,
    records_seen: Recent,
    pub duplicate_records: u64,
    pub duplicate_closes: u64,
}

fn endpoint((ip, port): (IpAddr, u16)) -> Endpoint {
    Endpoint { ip, port }
}

fn dir(c: [u64; 3]) -> DirCounters {
    DirCounters { packets: c[0], bytes: c[1], ip_bytes: c[2] }
}

fn grown(new: [u64; 3], old: [u64; 3]) -> [u64; 3] {
    [new[0].saturating_sub(old[0]), new[1].saturating_sub(old[1]), new[2].saturating_sub(old[2])]
}

/// Totals only grow: a frame older than one seen lowers nothing.
fn raise_health(acc: &mut trawl_core::tcp_health::EdgeHealth, to: &trawl_core::tcp_health::EdgeHealth) {
    acc.retransmits_to_server = acc.retransmits_to_server.max(to.retransmits_to_server);
    acc.retransmits_to_client = acc.retransmits_to_client.max(to.retransmits_to_client);
    acc.resets_by_client = acc.resets_by_client.max(to.resets_by_client);
    acc.resets_by_server = acc.resets_by_server.max(to.resets_by_server);
    acc.failed_connects = acc.failed_connects.max(to.failed_connects);
    if to.handshakes > acc.handshakes {
        (acc.handshakes, acc.handshake_rtt_sum_us) = (to.handshakes, to.handshake_rtt_sum_us);
    }
    acc.handshake_rtt_max_us = acc.handshake_rtt_max_us.max(to.handshake_rtt_max_us);
}

fn raise(acc: &mut [u64; 3], to: [u64; 3]) {
    for i in 0..3 {
        acc[i] = acc[i].max(to[i]);
    }
}

impl Default for Merger {
    fn default() -> Self {
        Merger::with_grace(EPOCH_GRACE)
    }
}

impl Merger {
    /// A merger that lets an epoch's state go `grace` after its last frame.
    pub fn with_grace(grace: Duration) -> Self {
        Merger {
            open: HashMap::new(),
            last_seen: HashMap::new(),
            last_sweep: Instant::now(),
            grace,
            epochs_evicted: 0,
            conversations_per_epoch: HashMap::new(),
            conversations_unkept: 0,
            closed: Recent::default(),
            conversations: HashMap::new(),
            unsampled: HashMap::new(),
            records_seen: Recent::default(),
            duplicate_records: 0,
            duplicate_closes: 0,
        }
    }

    /// Flows open now (memory follows these, not every flow ever seen).
    pub fn open_flows(&self) -> usize {
        self.open.len()
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Epochs the hub holds state for.
    pub fn epochs(&self) -> usize {
        self.last_seen.len()
    }

    /// Notes that `(node, epoch)` sent a frame at `now`.
    pub fn seen(&mut self, node: &str, epoch: &str, now: Instant) {
        match self.last_seen.get_mut(&(node.to_string(), epoch.to_string())) {
            Some(t) => *t = now,
            None => {
                self.last_seen.insert((node.to_string(), epoch.to_string()), now);
            }
        }
    }

    /// Lets go of the epochs silent for longer than the grace period (a
    /// worker that restarted has a new epoch; one that is gone sends
    /// nothing): their open flows, conversations and request totals.
    /// Looks at most every few seconds; returns the epochs let go.
    pub fn sweep(&mut self, now: Instant) -> Vec<(String, String)> {
        if now.saturating_duration_since(self.last_sweep) < SWEEP_EVERY {
            return Vec::new();
        }
        self.last_sweep = now;
        let grace = self.grace;
        let stale: HashSet<(String, String)> = self
            .last_seen
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) > grace)
            .map(|(k, _)| k.clone())
            .collect();
        if stale.is_empty() {
            return Vec::new();
        }
        let gone = |node: &String, epoch: &String| stale.contains(&(node.clone(), epoch.clone()));
        self.open.retain(|(node, epoch, ..), _| !gone(node, epoch));
        self.conversations.retain(|(node, epoch, _), _| !gone(node, epoch));
        self.unsampled.retain(|(node, epoch, _), _| !gone(node, epoch));
        self.conversations_per_epoch.retain(|k, _| !stale.contains(k));
        self.last_seen.retain(|k, _| !stale.contains(k));
        self.epochs_evicted += stale.len() as u64;
        tracing::info!(epochs = stale.len(), open_flows = self.open.len(), "let go of the state of silent workers");
        stale.into_iter().collect()
    }

    /// Adds what each flow's totals grew by since this hub last saw them.
    pub fn flows(&mut self, node: &str, epoch: &str, totals: &[FlowTotals], state: &mut GraphState) {
        for t in totals {
            let key = (node.to_string(), epoch.to_string(), t.tcp, t.client, t.server, t.first_ts);
            let id = hash_of(&key);
            if self.closed.set.contains(&id) {
                self.duplicate_closes += u64::from(t.closed);
                continue;
            }
            let last = self.open.entry(key.clone()).or_insert_with(|| FlowTotals {
                to_server: [0; 3],
                to_client: [0; 3],
                closed: false,
                health: Default::default(),
                ..t.clone()
            });
            let (s, c) = (grown(t.to_server, last.to_server), grown(t.to_client, last.to_client));
            let health = t.health.since(&last.health);
            raise(&mut last.to_server, t.to_server);
            raise(&mut last.to_client, t.to_client);
            raise_health(&mut last.health, &t.health);
            last.last_ts = last.last_ts.max(t.last_ts);
            if t.closed {
                let Some(last) = self.open.remove(&key) else { continue };
                self.closed.insert(id, SEEN_CLOSED);
                let conv = conversation_of(&last);
                match self.conversation(node, epoch, conv) {
                    Some(entry) => fold(entry, &last),
                    None => self.conversations_unkept += 1,
                }
            } else if s[0] == 0 && c[0] == 0 && health.is_empty() {
                continue;
            }
            state.add_delta(&FlowDelta {
                l4: if t.tcp { L4Proto::Tcp } else { L4Proto::Udp },
                client: endpoint(t.client),
                server: endpoint(t.server),
                to_server: dir(s),
                to_client: dir(c),
                first_ts: Timestamp(t.first_ts),
                last_ts: Timestamp(t.last_ts),
                orientation: if t.syn { Orientation::Syn } else { Orientation::Inferred },
                closed: t.closed,
                health,
            });
        }
    }

    /// Adds what a worker's conversations have that this hub lacks.
    pub fn closed(&mut self, node: &str, epoch: &str, convs: &[ClosedTotals], state: &mut GraphState) {
        for c in convs {
            let Some(have) = self.conversation(node, epoch, (c.tcp, c.client, c.server)) else {
                self.conversations_unkept += 1;
                continue;
            };
            let (s, cl) = (grown(c.to_server, have.to_server), grown(c.to_client, have.to_client));
            let flows = c.flows.saturating_sub(have.flows);
            raise(&mut have.to_server, c.to_server);
            raise(&mut have.to_client, c.to_client);
            have.flows = have.flows.max(c.flows);
            have.first_ts = if have.first_ts == 0 { c.first_ts } else { have.first_ts.min(c.first_ts) };
            have.last_ts = have.last_ts.max(c.last_ts);
            if flows == 0 && s[0] == 0 && cl[0] == 0 {
                continue;
            }
            let delta = FlowDelta {
                l4: if c.tcp { L4Proto::Tcp } else { L4Proto::Udp },
                client: Endpoint { ip: c.client, port: 0 },
                server: endpoint(c.server),
                to_server: dir(s),
                to_client: dir(cl),
                first_ts: Timestamp(c.first_ts),
                last_ts: Timestamp(c.last_ts),
                orientation: Orientation::Inferred,
                closed: flows > 0,
                health: Default::default(),
            };
            state.add_closing(&delta, flows);
        }
    }

    /// The hub's copy of a conversation, made if the epoch has room.
    fn conversation(&mut self, node: &str, epoch: &str, conv: ConversationKey) -> Option<&mut ClosedTotals> {
        let key = (node.to_string(), epoch.to_string(), conv);
        if !self.conversations.contains_key(&key) {
            let kept = self.conversations_per_epoch.entry((node.to_string(), epoch.to_string())).or_default();
            if *kept >= MAX_CONVERSATIONS_PER_EPOCH {
                return None;
            }
            *kept += 1;
        }
        Some(self.conversations.entry(key).or_insert_with(|| empty_conversation(conv)))
    }

    /// Adds the requests a worker counted beyond its record queue, as far
    /// as its totals grew since this hub last saw them.
    pub fn unsampled(&mut self, node: &str, epoch: &str, totals: &[UnsampledTotals], state: &mut GraphState) {
        for u in totals {
            let key = unsampled_key(u);
            let have = self
                .unsampled
                .entry((node.to_string(), epoch.to_string(), key.clone()))
                .or_insert_with(|| empty_unsampled(key));
            let counts = trawl_core::l7map::L7Counts {
                requests: u.requests.saturating_sub(have.requests),
                errors: u.errors.saturating_sub(have.errors),
                request_bytes: u.request_bytes.saturating_sub(have.request_bytes),
                response_bytes: u.response_bytes.saturating_sub(have.response_bytes),
            };
            have.requests = have.requests.max(u.requests);
            have.errors = have.errors.max(u.errors);
            have.request_bytes = have.request_bytes.max(u.request_bytes);
            have.response_bytes = have.response_bytes.max(u.response_bytes);
            have.last_ts = have.last_ts.max(u.last_ts);
            if counts == trawl_core::l7map::L7Counts::default() {
                continue;
            }
            let at = Timestamp(u.last_ts);
            let src = state.identity().resolve(u.src, at);
            let dst = state.identity().resolve_endpoint(u.dst.0, u.dst.1, at);
            state.add_l7_counts(&u.protocol, &counts, at, &src, &dst);
        }
    }

    /// Adds records not seen before, by their name (node, epoch, number),
    /// with workloads resolved here.
    pub fn records(&mut self, node: &str, epoch: &str, records: Vec<WireRecord>, state: &mut GraphState) {
        for r in records {
            if !self.records_seen.insert(hash_of((node, epoch, r.seq)), SEEN_RECORDS) {
                self.duplicate_records += 1;
                continue;
            }
            let mut record = unresolved_l7(r.into_host());
            let (src_w, dst_w) = resolve_ends(&mut record, state.identity());
            state.add_record(record, &src_w, &dst_w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Outbox;
    use std::sync::Arc;
    use trawl_core::engine::ConnInfo;
    use trawl_runtime::HostRecord;
    use trawl_service::CaptureFilter;

    fn state() -> GraphState {
        GraphState::new(Arc::new(trawl_core::Identity::new()), CaptureFilter::default(), 10)
    }

    fn delta(port: u16, first: u64, bytes: u64, closed: bool) -> FlowDelta {
        FlowDelta {
            l4: L4Proto::Tcp,
            client: Endpoint { ip: "10.0.0.1".parse().unwrap(), port },
            server: Endpoint { ip: "10.0.0.2".parse().unwrap(), port: 80 },
            to_server: DirCounters { packets: 2, bytes, ip_bytes: bytes + 80 },
            to_client: DirCounters { packets: 1, bytes: 1, ip_bytes: 41 },
            first_ts: Timestamp(first),
            last_ts: Timestamp(first + 10),
            orientation: Orientation::Syn,
            closed,
            health: Default::default(),
        }
    }

    fn totals(st: &GraphState) -> (u64, u64) {
        let view = st.l4(trawl_core::GroupBy::Pod).view();
        view.edges.iter().fold((0, 0), |(f, b), e| (f + e.flows, b + e.to_server.bytes + e.to_client.bytes))
    }

    /// Sends the outbox to the hub the way `Link::flush` does.
    fn flush(out: &mut Outbox, hub: &mut Merger, st: &mut GraphState) {
        let batch = out.batch(100, usize::MAX);
        hub.flows("n", "e", &batch.flows, st);
        hub.closed("n", "e", &batch.closed, st);
        hub.records("n", "e", batch.records.clone(), st);
        hub.unsampled("n", "e", &batch.unsampled, st);
        out.sent(&batch);
    }

    fn record(i: u64) -> HostRecord {
        let ip = |s: &str| s.parse().unwrap();
        HostRecord {
            conn: ConnInfo {
                id: i,
                l4: L4Proto::Tcp,
                client: Endpoint { ip: ip("10.0.0.1"), port: 40_000 + i as u16 },
                server: Endpoint { ip: ip("10.0.0.2"), port: 80 },
                tls: false,
            },
            plugin: "http".into(),
            plugin_version: "0.1.0".into(),
            generation: 1,
            record: trawl_sdk::abi::Record {
                method: "GET".into(),
                summary: format!("/{i}"),
                status_code: Some(if i == 2 { 500 } else { 200 }),
                error: i == 2,
                request_size: 100,
                response_size: 1000,
                request_ts: Some(1_000 + i),
                response_ts: Some(2_000 + i),
                ..Default::default()
            },
            tls_sni: None,
        }
    }

    fn l7_totals(st: &GraphState) -> (u64, u64, u64, u64) {
        let view = st.l7(trawl_core::GroupBy::Pod).view();
        view.edges.iter().fold((0, 0, 0, 0), |t, e| {
            (t.0 + e.requests, t.1 + e.errors, t.2 + e.request_bytes, t.3 + e.response_bytes)
        })
    }

    #[test]
    fn records_beyond_the_queue_still_count_and_come_back_to_a_new_hub() {
        let limits = crate::outbox::OutboxLimits { max_records: 1, ..Default::default() };
        let mut out = Outbox::new(limits);
        for i in 0..4 {
            out.add_record(record(i));
        }
        assert_eq!((out.records.len(), out.records_unsampled), (1, 3));
        let (mut hub, mut st) = (Merger::default(), state());
        flush(&mut out, &mut hub, &mut st);
        let want = (4, 1, 400, 4000);
        assert_eq!(l7_totals(&st), want, "every request counts, sampled or not");
        out.resend_all();
        flush(&mut out, &mut hub, &mut st);
        assert_eq!(l7_totals(&st), want, "a reconnect adds nothing");
        let (mut hub2, mut st2) = (Merger::default(), state());
        out.resend_all();
        flush(&mut out, &mut hub2, &mut st2);
        assert_eq!(l7_totals(&st2), want, "a new hub gets the sample and the counts");
    }

    #[test]
    fn reconnects_add_nothing_and_a_restarted_hub_gets_everything_back() {
        let mut out = Outbox::default();
        let (mut hub, mut st) = (Merger::default(), state());
        out.add_delta(&delta(1000, 1, 100, false));
        out.add_delta(&delta(1001, 2, 10, true));
        flush(&mut out, &mut hub, &mut st);
        out.add_delta(&delta(1000, 1, 50, true));
        out.add_delta(&delta(1002, 3, 5, false));
        flush(&mut out, &mut hub, &mut st);
        let want = totals(&st);
        assert_eq!(want, (2, 100 + 50 + 10 + 5 + 4));

        // The same hub, a new connection: everything again, nothing added.
        out.resend_all();
        flush(&mut out, &mut hub, &mut st);
        assert_eq!(totals(&st), want);
        assert_eq!(hub.open_flows(), 1, "closed flows leave the hub's table");

        // A new hub: the conversations and the open flow bring it all back.
        let (mut hub2, mut st2) = (Merger::default(), state());
        out.resend_all();
        flush(&mut out, &mut hub2, &mut st2);
        assert_eq!(totals(&st2), want);
    }

    #[test]
    fn a_resent_close_counts_once() {
        let (mut hub, mut st) = (Merger::default(), state());
        let mut out = Outbox::default();
        out.add_delta(&delta(1000, 1, 100, true));
        let batch = out.batch(10, usize::MAX);
        hub.flows("n", "e", &batch.flows, &mut st);
        // The connection broke before the worker knew it was sent.
        hub.flows("n", "e", &batch.flows, &mut st);
        assert_eq!(totals(&st), (1, 101));
        assert_eq!(hub.duplicate_closes, 1);
    }

    #[test]
    fn equal_records_both_count_and_resends_do_not() {
        // Two pipelined `GET /0` on one connection, alike in every field.
        let mut out = Outbox::default();
        let (mut hub, mut st) = (Merger::default(), state());
        out.add_record(record(0));
        out.add_record(record(0));
        flush(&mut out, &mut hub, &mut st);
        assert_eq!(l7_totals(&st).0, 2, "equal requests are two requests");
        out.resend_all();
        flush(&mut out, &mut hub, &mut st);
        assert_eq!((l7_totals(&st).0, hub.duplicate_records), (2, 2), "the journal sent again adds nothing");
        // Another epoch (a live worker restarted) numbers from 0 again.
        let mut again = Outbox::default();
        again.add_record(record(0));
        let batch = again.batch(10, usize::MAX);
        hub.records("n", "e2", batch.records, &mut st);
        assert_eq!(l7_totals(&st).0, 3);
    }

    #[test]
    fn a_silent_epoch_is_let_go_after_the_grace_period_and_counts_stay() {
        let grace = Duration::from_secs(60);
        let (mut hub, mut st) = (Merger::with_grace(grace), state());
        let t0 = Instant::now();
        let mut old = Outbox::default();
        old.add_delta(&delta(1000, 1, 100, false));
        old.add_delta(&delta(1001, 2, 10, true));
        let batch = old.batch(10, usize::MAX);
        hub.flows("n", "e1", &batch.flows, &mut st);
        hub.closed("n", "e1", &batch.closed, &mut st);
        hub.seen("n", "e1", t0);
        let counted = totals(&st);
        // The worker restarted: a new epoch keeps talking.
        let mut new = Outbox::default();
        new.add_delta(&delta(2000, 5, 7, false));
        hub.flows("n", "e2", &new.batch(10, usize::MAX).flows, &mut st);
        hub.seen("n", "e2", t0 + grace);
        assert_eq!((hub.open_flows(), hub.epochs()), (2, 2));
        assert!(hub.sweep(t0 + grace / 2).is_empty(), "within the grace period");
        let gone = hub.sweep(t0 + grace + SWEEP_EVERY * 2);
        assert_eq!(gone, vec![("n".to_string(), "e1".to_string())]);
        assert_eq!((hub.open_flows(), hub.epochs(), hub.epochs_evicted), (1, 1, 1));
        assert_eq!(totals(&st).1, counted.1 + 8, "what was counted stays counted");
    }

    #[test]
    fn an_epoch_keeps_at_most_its_conversations_and_still_counts_the_rest() {
        let (mut hub, mut st) = (Merger::default(), state());
        let closed: Vec<FlowTotals> = (0..MAX_CONVERSATIONS_PER_EPOCH as u32 + 10)
            .map(|i| {
                let client = (IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)), 40000);
                FlowTotals {
                    tcp: true,
                    client,
                    server: ("10.255.0.1".parse().unwrap(), 80),
                    first_ts: 1,
                    last_ts: 2,
                    to_server: [1, 10, 50],
                    to_client: [0; 3],
                    syn: true,
                    closed: true,
                    health: Default::default(),
                }
            })
            .collect();
        hub.flows("n", "e", &closed, &mut st);
        assert_eq!(hub.conversations.len(), MAX_CONVERSATIONS_PER_EPOCH);
        assert_eq!(hub.conversations_unkept, 10);
        assert_eq!(st.counters().flows, closed.len() as u64, "every closed flow counted");
    }
}

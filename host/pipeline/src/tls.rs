//! TLS plaintext into the pipeline: the chunks the OpenSSL probes copy
//! become ordered byte streams per direction, handed to the dispatcher
//! exactly as reassembled cleartext streams are, so the same plugins,
//! capture filters, redaction, quarantine and budgets apply.
//!
//! A stream is one SSL object of one process. When both ends of a
//! connection are captured on this node, each byte is seen twice (once per
//! process): the first SSL object seen for a connection owns it, and the
//! other's chunks are dropped and counted, as the packet path keeps only
//! the copy at the sender's interface.

use std::collections::HashMap;
use trawl_capture::live::discover::PodInterface;
pub use trawl_capture::live::tls::ProbeScope;
use trawl_capture::live::tls::TlsTargets;
use trawl_core::engine::ConnInfo;
use trawl_core::flow::{Direction, Endpoint};
use trawl_core::reassembly::StreamEvent;
use trawl_core::{L4Proto, ServicePorts, Timestamp};
use trawl_ebpf::tls::{TlsChunk, TlsConnKey, TlsDirection, TlsEvent, TlsTuple};
use trawl_service::TlsStatus;

/// Connection ids of TLS streams: disjoint from the engine's, which count
/// up from 1.
const ID_BASE: u64 = 1 << 63;
/// A stream with no chunk for this long ends (its process may have died
/// without `SSL_free`).
pub const IDLE_NS: u64 = 120 * 1_000_000_000;
/// Streams tracked at most: past this the oldest ends first.
pub const MAX_STREAMS: usize = 65_536;
/// How long a connection's owner is remembered after its SSL object went:
/// the other end's process may still be handing over the same bytes (the
/// ring orders calls across processes only roughly). A 4-tuple is not
/// reused that soon (TIME_WAIT).
pub const RETIRED_NS: u64 = 60 * 1_000_000_000;

/// Where stream events go: the pipeline's dispatcher.
pub trait StreamTarget {
    /// Whether the capture filters want this connection's payload.
    fn wants(&mut self, conn: &ConnInfo, ts: Timestamp) -> bool;
    fn event(&mut self, conn: &ConnInfo, dir: Direction, ts: Timestamp, event: StreamEvent<'_>);
    fn close(&mut self, conn: &ConnInfo);
    /// The server name (SNI) the connection's client asked for.
    fn server_name(&mut self, _conn: &ConnInfo, _name: &str) {}
}

/// What became of the chunks, for the status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsStreamStats {
    /// Streams started (wanted by the capture filters).
    pub streams: u64,
    /// Connections the capture filters did not want.
    pub untargeted: u64,
    /// Chunks dropped because the connection's other end, on this node,
    /// already gives its bytes.
    pub duplicate_chunks: u64,
    /// Plaintext bytes the kernel side lost (holes between chunks).
    pub gap_bytes: u64,
    /// Plaintext bytes handed to the dispatcher.
    pub bytes: u64,
    /// Streams ended early to stay within [`MAX_STREAMS`].
    pub evicted: u64,
}

#[derive(Debug)]
enum Role {
    /// Its bytes go to the dispatcher.
    Stream { conn: ConnInfo, local_is_client: bool, next: [u64; 2] },
    /// Not wanted by the capture filters.
    Ignored,
    /// The other end's process owns this connection.
    Duplicate,
}

#[derive(Debug)]
struct Tracked {
    tuple: TlsTuple,
    role: Role,
    last_ns: u64,
}

/// The TLS streams of this node's targeted processes.
#[derive(Debug)]
pub struct TlsStreams {
    tracked: HashMap<TlsConnKey, Tracked>,
    /// Connection (its ends, in order) → the SSL object that owns it.
    owners: HashMap<(Endpoint, Endpoint), TlsConnKey>,
    /// Connections whose owner went, with when: another process's view of
    /// them is still a duplicate.
    retired: HashMap<(Endpoint, Endpoint), (u32, u64)>,
    /// Server names seen for SSL objects whose stream has not begun.
    names: HashMap<TlsConnKey, String>,
    ports: ServicePorts,
    next_id: u64,
    stats: TlsStreamStats,
}

impl Default for TlsStreams {
    fn default() -> Self {
        TlsStreams {
            tracked: HashMap::new(),
            owners: HashMap::new(),
            retired: HashMap::new(),
            names: HashMap::new(),
            ports: ServicePorts::default(),
            next_id: ID_BASE,
            stats: TlsStreamStats::default(),
        }
    }
}

fn conn_key(t: &TlsTuple) -> (Endpoint, Endpoint) {
    if (t.local.ip, t.local.port) <= (t.peer.ip, t.peer.port) { (t.local, t.peer) } else { (t.peer, t.local) }
}

impl TlsStreams {
    pub fn stats(&self) -> TlsStreamStats {
        self.stats
    }

    /// One event from the ring.
    pub fn event(&mut self, event: TlsEvent<'_>, target: &mut dyn StreamTarget) {
        match event {
            TlsEvent::Chunk(chunk) => self.chunk(chunk, target),
            TlsEvent::Closed(key, _, _) => {
                self.names.remove(&key);
                self.end(key, target);
            }
            TlsEvent::ServerName(key, name) => {
                if let Some(Tracked { role: Role::Stream { conn, .. }, .. }) = self.tracked.get(&key) {
                    target.server_name(conn, name);
                } else {
                    if self.names.len() >= MAX_STREAMS {
                        self.names.clear();
                    }
                    self.names.insert(key, name.to_string());
                }
            }
        }
    }

    fn chunk(&mut self, chunk: TlsChunk<'_>, target: &mut dyn StreamTarget) {
        match self.tracked.get(&chunk.key) {
            Some(t) if t.tuple == chunk.tuple => {}
            // The SSL object's address came back for another connection
            // without its SSL_free being seen: the old stream ends.
            Some(_) => {
                self.end(chunk.key, target);
                self.begin(&chunk, target);
            }
            None => self.begin(&chunk, target),
        }
        let Some(tracked) = self.tracked.get_mut(&chunk.key) else { return };
        tracked.last_ns = chunk.ts.0;
        let (conn, local_is_client, next) = match &mut tracked.role {
            Role::Stream { conn, local_is_client, next } => (*conn, *local_is_client, next),
            Role::Ignored => return,
            Role::Duplicate => {
                self.stats.duplicate_chunks += 1;
                return;
            }
        };
        // A write goes from this process to its peer; the client's way is
        // to the server.
        let to_server = (chunk.direction == TlsDirection::Write) == local_is_client;
        let dir = if to_server { Direction::ToServer } else { Direction::ToClient };
        let i = usize::from(!to_server);
        if chunk.offset < next[i] {
            // Already given (cannot happen with the kernel's offsets, but
            // a stream is never fed backwards).
            return;
        }
        if chunk.offset > next[i] {
            let len = chunk.offset - next[i];
            self.stats.gap_bytes += len;
            target.event(&conn, dir, chunk.ts, StreamEvent::Gap { offset: next[i], len });
        }
        next[i] = chunk.offset + chunk.data.len() as u64;
        self.stats.bytes += chunk.data.len() as u64;
        target.event(&conn, dir, chunk.ts, StreamEvent::Data { offset: chunk.offset, bytes: chunk.data });
    }

    fn begin(&mut self, chunk: &TlsChunk<'_>, target: &mut dyn StreamTarget) {
        if self.tracked.len() >= MAX_STREAMS {
            self.evict_oldest(target);
        }
        let owner = conn_key(&chunk.tuple);
        let retired_by_other = self
            .retired
            .get(&owner)
            .is_some_and(|&(tgid, at)| tgid != chunk.key.tgid && chunk.ts.0.saturating_sub(at) < RETIRED_NS);
        let role = if retired_by_other || self.owners.get(&owner).is_some_and(|k| *k != chunk.key) {
            Role::Duplicate
        } else {
            let t = chunk.tuple;
            // Ports decide who is the client where they can (nginx speaks
            // first on HTTP/2); otherwise whoever writes first asks.
            let local_is_client = match (self.ports.server_score(t.local.port), self.ports.server_score(t.peer.port)) {
                (l, p) if l != p => l < p,
                _ => chunk.direction == TlsDirection::Write,
            };
            let (client, server) = if local_is_client { (t.local, t.peer) } else { (t.peer, t.local) };
            self.next_id += 1;
            let conn = ConnInfo { id: self.next_id, l4: L4Proto::Tcp, client, server, tls: true };
            if target.wants(&conn, chunk.ts) {
                self.stats.streams += 1;
                self.owners.insert(owner, chunk.key);
                if let Some(name) = self.names.remove(&chunk.key) {
                    target.server_name(&conn, &name);
                }
                let midstream = chunk.offset != 0;
                target.event(&conn, Direction::ToServer, chunk.ts, StreamEvent::Start { midstream });
                target.event(&conn, Direction::ToClient, chunk.ts, StreamEvent::Start { midstream });
                Role::Stream { conn, local_is_client, next: [0, 0] }
            } else {
                self.stats.untargeted += 1;
                Role::Ignored
            }
        };
        self.tracked.insert(chunk.key, Tracked { tuple: chunk.tuple, role, last_ns: chunk.ts.0 });
    }

    /// Full: the least recently active eighth ends at once, so a flood of
    /// new connections costs one pass per eighth, not one per connection.
    fn evict_oldest(&mut self, target: &mut dyn StreamTarget) {
        let mut by_age: Vec<(u64, TlsConnKey)> = self.tracked.iter().map(|(k, t)| (t.last_ns, *k)).collect();
        let n = (by_age.len() / 8).max(1);
        by_age.select_nth_unstable(n - 1);
        self.stats.evicted += n as u64;
        for (_, key) in by_age.into_iter().take(n) {
            self.end(key, target);
        }
    }

    /// The SSL object is gone: both directions finish.
    fn end(&mut self, key: TlsConnKey, target: &mut dyn StreamTarget) {
        let Some(tracked) = self.tracked.remove(&key) else { return };
        if let Role::Stream { conn, .. } = tracked.role {
            let owner = conn_key(&tracked.tuple);
            if self.owners.get(&owner) == Some(&key) {
                self.owners.remove(&owner);
                if self.retired.len() >= MAX_STREAMS {
                    self.retired.clear();
                }
                self.retired.insert(owner, (key.tgid, tracked.last_ns));
            }
            let ts = Timestamp(tracked.last_ns);
            target.event(&conn, Direction::ToServer, ts, StreamEvent::Fin);
            target.event(&conn, Direction::ToClient, ts, StreamEvent::Fin);
            target.close(&conn);
        }
    }

    /// Ends streams with no chunk since `now - IDLE_NS`.
    pub fn expire(&mut self, now: Timestamp, target: &mut dyn StreamTarget) {
        self.retired.retain(|_, &mut (_, at)| now.0.saturating_sub(at) < RETIRED_NS);
        let before = now.0.saturating_sub(IDLE_NS);
        let idle: Vec<TlsConnKey> = self.tracked.iter().filter(|(_, t)| t.last_ns < before).map(|(k, _)| *k).collect();
        for key in idle {
            self.end(key, target);
        }
    }

    /// Ends every stream (trawl stops).
    pub fn finish(&mut self, target: &mut dyn StreamTarget) {
        let all: Vec<TlsConnKey> = self.tracked.keys().copied().collect();
        for key in all {
            self.end(key, target);
        }
    }
}

/// Whether live capture reads TLS plaintext.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// Where the kernel and capabilities allow; otherwise a status says why.
    #[default]
    Auto,
    /// Always: live capture fails to start without it.
    On,
    Off,
}

/// Probed files named in the status at most.
const STATUS_FILES: usize = 32;

/// How live capture reads TLS plaintext.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    pub mode: TlsMode,
    pub scope: ProbeScope,
}

/// TLS capture on a live node: the probes and the streams they feed.
#[derive(Debug)]
pub struct TlsLive {
    targets: TlsTargets,
    streams: TlsStreams,
    last_expire: std::time::Instant,
}

impl TlsLive {
    /// Loads the probes as `mode` says: `Ok(None)` when off, `Err` with the
    /// reason when they cannot run (fatal only for [`TlsMode::On`]).
    pub fn start(opts: TlsOptions, ring_bytes: u32) -> anyhow::Result<Option<TlsLive>> {
        if opts.mode == TlsMode::Off {
            return Ok(None);
        }
        let targets = TlsTargets::start(ring_bytes, opts.scope)?;
        tracing::info!(learner = targets.learner(), "TLS plaintext capture loaded");
        Ok(Some(TlsLive { targets, streams: TlsStreams::default(), last_expire: std::time::Instant::now() }))
    }

    /// Follows the targeted pods: their namespaces, processes and OpenSSL.
    pub fn retarget(&mut self, targeted: &[&PodInterface]) {
        if let Err(e) = self.targets.retarget(targeted) {
            tracing::warn!(error = %format!("{e:#}"), "TLS capture could not follow the targeted pods");
        }
    }

    /// Feeds what the probes captured into `target`; ends idle streams.
    pub fn pump(&mut self, target: &mut dyn StreamTarget) -> usize {
        let streams = &mut self.streams;
        let n = self.targets.drain(|event| streams.event(event, target));
        if self.last_expire.elapsed() >= std::time::Duration::from_secs(5) {
            self.last_expire = std::time::Instant::now();
            self.streams.expire(crate::live::wall_now(), target);
        }
        n
    }

    /// Ends every stream (live capture stops).
    pub fn finish(&mut self, target: &mut dyn StreamTarget) {
        self.pump(target);
        self.streams.finish(target);
    }

    /// The state for `/api/health`, and the kernel side's losses (chunks
    /// the ring had no room for, bytes lost).
    pub fn status(&self) -> (TlsStatus, u64, u64) {
        let scan = self.targets.scan();
        let kernel = self.targets.stats();
        let streams = self.streams.stats();
        let status = TlsStatus {
            active: true,
            unavailable: None,
            learner: Some(self.targets.learner().to_string()),
            namespaces: scan.netns,
            processes: scan.processes,
            probed_files: scan.files.len(),
            // A worker sends its status every 200 ms: a sample names them.
            files: scan.files.iter().take(STATUS_FILES).cloned().collect(),
            failed: scan.failed.clone(),
            calls: kernel.calls,
            bytes: streams.bytes,
            streams: streams.streams,
            untargeted: streams.untargeted,
            duplicate_chunks: streams.duplicate_chunks,
            evicted: streams.evicted,
        };
        (status, kernel.ring_full, kernel.lost_bytes)
    }
}

/// The status of TLS capture that could not start.
pub fn unavailable(reason: String) -> TlsStatus {
    TlsStatus { unavailable: Some(reason), ..TlsStatus::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Seen {
        wanted: bool,
        events: Vec<(u64, Direction, String)>,
        closed: Vec<u64>,
        conns: Vec<ConnInfo>,
    }

    impl StreamTarget for Seen {
        fn wants(&mut self, conn: &ConnInfo, _: Timestamp) -> bool {
            self.conns.push(*conn);
            self.wanted
        }
        fn event(&mut self, conn: &ConnInfo, dir: Direction, _: Timestamp, event: StreamEvent<'_>) {
            let e = match event {
                StreamEvent::Data { offset, bytes } => format!("data {offset} {}", String::from_utf8_lossy(bytes)),
                StreamEvent::Gap { offset, len } => format!("gap {offset} {len}"),
                other => format!("{other:?}"),
            };
            self.events.push((conn.id, dir, e));
        }
        fn close(&mut self, conn: &ConnInfo) {
            self.closed.push(conn.id);
        }
    }

    fn ep(s: &str) -> Endpoint {
        let (ip, port) = s.rsplit_once(':').unwrap();
        Endpoint { ip: ip.parse().unwrap(), port: port.parse().unwrap() }
    }

    fn chunk<'a>(
        tgid: u32,
        local: &str,
        peer: &str,
        direction: TlsDirection,
        offset: u64,
        data: &'a [u8],
    ) -> TlsEvent<'a> {
        TlsEvent::Chunk(TlsChunk {
            key: TlsConnKey { tgid, ssl: 0x1000 },
            tuple: TlsTuple { local: ep(local), peer: ep(peer) },
            netns: 1,
            ts: Timestamp(offset + 1),
            direction,
            offset,
            data,
        })
    }

    #[test]
    fn a_client_process_s_writes_go_to_the_server_and_holes_become_gaps() {
        let mut streams = TlsStreams::default();
        let mut seen = Seen { wanted: true, ..Seen::default() };
        streams.event(chunk(7, "10.0.0.1:40000", "10.0.0.2:8443", TlsDirection::Write, 0, b"GET / "), &mut seen);
        streams.event(chunk(7, "10.0.0.1:40000", "10.0.0.2:8443", TlsDirection::Read, 0, b"HTTP/1.1"), &mut seen);
        streams.event(chunk(7, "10.0.0.1:40000", "10.0.0.2:8443", TlsDirection::Write, 10, b"x"), &mut seen);
        let conn = seen.conns[0];
        assert!(conn.tls);
        assert_eq!((conn.client, conn.server), (ep("10.0.0.1:40000"), ep("10.0.0.2:8443")));
        let events: Vec<(Direction, &str)> = seen.events.iter().map(|(_, d, e)| (*d, e.as_str())).collect();
        assert_eq!(
            events,
            [
                (Direction::ToServer, "Start { midstream: false }"),
                (Direction::ToClient, "Start { midstream: false }"),
                (Direction::ToServer, "data 0 GET / "),
                (Direction::ToClient, "data 0 HTTP/1.1"),
                (Direction::ToServer, "gap 6 4"),
                (Direction::ToServer, "data 10 x"),
            ]
        );
        assert_eq!(streams.stats().gap_bytes, 4);
        streams.event(
            TlsEvent::Closed(
                TlsConnKey { tgid: 7, ssl: 0x1000 },
                TlsTuple { local: conn.client, peer: conn.server },
                Timestamp(99),
            ),
            &mut seen,
        );
        assert_eq!(seen.closed, [conn.id]);
        assert!(streams.tracked.is_empty());
    }

    #[test]
    fn a_server_process_reads_the_requests_even_when_it_speaks_first() {
        let mut streams = TlsStreams::default();
        let mut seen = Seen { wanted: true, ..Seen::default() };
        // nginx sends its HTTP/2 SETTINGS before reading the preface.
        streams.event(chunk(9, "10.0.0.2:8443", "10.0.0.1:40000", TlsDirection::Write, 0, b"settings"), &mut seen);
        streams.event(chunk(9, "10.0.0.2:8443", "10.0.0.1:40000", TlsDirection::Read, 0, b"PRI *"), &mut seen);
        assert_eq!(seen.conns[0].server, ep("10.0.0.2:8443"));
        assert_eq!(seen.events[2].1, Direction::ToClient);
        assert_eq!(seen.events[3], (seen.conns[0].id, Direction::ToServer, "data 0 PRI *".into()));
    }

    #[test]
    fn both_ends_on_one_node_give_their_bytes_once() {
        let mut streams = TlsStreams::default();
        let mut seen = Seen { wanted: true, ..Seen::default() };
        streams.event(chunk(7, "10.0.0.1:40000", "10.0.0.2:8443", TlsDirection::Write, 0, b"GET"), &mut seen);
        streams.event(chunk(9, "10.0.0.2:8443", "10.0.0.1:40000", TlsDirection::Read, 0, b"GET"), &mut seen);
        streams.event(chunk(9, "10.0.0.2:8443", "10.0.0.1:40000", TlsDirection::Write, 0, b"200"), &mut seen);
        assert_eq!(seen.conns.len(), 1);
        assert_eq!(streams.stats().duplicate_chunks, 2);
        assert_eq!(seen.events.iter().filter(|e| e.2.starts_with("data")).count(), 1);
    }

    #[test]
    fn the_other_end_s_late_chunks_stay_duplicates_after_the_owner_went() {
        let mut streams = TlsStreams::default();
        let mut seen = Seen { wanted: true, ..Seen::default() };
        // nginx read the request before the client's write reached the ring.
        streams.event(chunk(9, "10.0.0.2:8443", "10.0.0.1:40000", TlsDirection::Read, 0, b"GET"), &mut seen);
        streams.event(chunk(9, "10.0.0.2:8443", "10.0.0.1:40000", TlsDirection::Write, 0, b"200"), &mut seen);
        let nginx = TlsConnKey { tgid: 9, ssl: 0x1000 };
        let tuple = TlsTuple { local: ep("10.0.0.2:8443"), peer: ep("10.0.0.1:40000") };
        streams.event(TlsEvent::Closed(nginx, tuple, Timestamp(5)), &mut seen);
        streams.event(chunk(7, "10.0.0.1:40000", "10.0.0.2:8443", TlsDirection::Write, 0, b"GET"), &mut seen);
        streams.event(chunk(7, "10.0.0.1:40000", "10.0.0.2:8443", TlsDirection::Read, 0, b"200"), &mut seen);
        assert_eq!(seen.conns.len(), 1);
        assert_eq!(streams.stats().duplicate_chunks, 2);
    }

    #[test]
    fn a_full_table_lets_the_least_recently_active_eighth_go() {
        let mut streams = TlsStreams::default();
        let mut seen = Seen { wanted: true, ..Seen::default() };
        for i in 0..MAX_STREAMS as u64 + 1 {
            let chunk = TlsChunk {
                key: TlsConnKey { tgid: 7, ssl: i },
                tuple: TlsTuple {
                    local: ep(&format!("10.0.0.1:{}", 1024 + i % 60_000)),
                    peer: ep(&format!("10.0.{}.2:443", i / 60_000)),
                },
                netns: 1,
                ts: Timestamp(i + 1),
                direction: TlsDirection::Write,
                offset: 0,
                data: b"x",
            };
            streams.event(TlsEvent::Chunk(chunk), &mut seen);
        }
        assert_eq!(streams.stats().evicted, MAX_STREAMS as u64 / 8);
        assert_eq!(streams.tracked.len(), MAX_STREAMS + 1 - MAX_STREAMS / 8);
        // The oldest went: the first stream closed, the last is open.
        assert!(seen.closed.contains(&seen.conns[0].id));
        assert!(streams.tracked.contains_key(&TlsConnKey { tgid: 7, ssl: MAX_STREAMS as u64 }));
    }

    #[test]
    fn an_untargeted_connection_gives_nothing() {
        let mut streams = TlsStreams::default();
        let mut seen = Seen::default();
        streams.event(chunk(7, "10.0.0.1:40000", "10.0.0.2:8443", TlsDirection::Write, 0, b"GET"), &mut seen);
        streams.event(chunk(7, "10.0.0.1:40000", "10.0.0.2:8443", TlsDirection::Write, 3, b"GET"), &mut seen);
        assert!(seen.events.is_empty());
        assert_eq!(streams.stats().untargeted, 1);
        streams.expire(Timestamp(IDLE_NS * 2), &mut seen);
        assert!(seen.closed.is_empty());
        assert_eq!(streams.tracked.len(), 0);
    }

    #[test]
    fn a_reused_ssl_address_starts_a_new_stream() {
        let mut streams = TlsStreams::default();
        let mut seen = Seen { wanted: true, ..Seen::default() };
        streams.event(chunk(7, "10.0.0.1:40000", "10.0.0.2:8443", TlsDirection::Write, 0, b"a"), &mut seen);
        streams.event(chunk(7, "10.0.0.1:40001", "10.0.0.2:8443", TlsDirection::Write, 0, b"b"), &mut seen);
        assert_eq!(seen.conns.len(), 2);
        assert_eq!(seen.closed, [seen.conns[0].id]);
    }
}

//! `trawl hub`: merges what workers send into one graph service.
//!
//! Counting once: a flow is the same flow when one worker sends it again
//! (same node, endpoints and first packet time), and only what its totals
//! grew by is added. A flow seen by two workers (its two ends on two
//! nodes) is counted by the worker at the sender's side only: the live
//! counters count a packet at its sender's interface when the sender is a
//! counted workload (see `ebpf/src/bpf/flows.bpf.c`), so no two workers
//! report the same packet.

use super::proto::{FlowTotals, PROTOCOL_VERSION, ToHub, ToWorker, WireRecord, read_frame, write_frame};
use crate::records::record_endpoint;
use crate::service::{GraphState, SharedState, lock};
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::io::BufReader;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use trawl_core::flow::{DirCounters, Endpoint, FlowDelta, Orientation};
use trawl_core::record::{L7Record, PluginRef};
use trawl_core::{L4Proto, Timestamp};

/// Record keys remembered to drop resends (a restarted worker).
const SEEN_RECORDS: usize = 2_000_000;

type FlowKey = (String, bool, (std::net::IpAddr, u16), (std::net::IpAddr, u16), u64);

/// What the hub has merged so far.
#[derive(Debug, Default)]
pub struct Merger {
    flows: HashMap<FlowKey, FlowTotals>,
    seen: HashSet<u64>,
    seen_order: VecDeque<u64>,
    pub duplicate_records: u64,
}

fn endpoint((ip, port): (std::net::IpAddr, u16)) -> Endpoint {
    Endpoint { ip, port }
}

fn dir(c: [u64; 3]) -> DirCounters {
    DirCounters { packets: c[0], bytes: c[1], ip_bytes: c[2] }
}

fn grown(new: [u64; 3], old: [u64; 3]) -> [u64; 3] {
    [new[0].saturating_sub(old[0]), new[1].saturating_sub(old[1]), new[2].saturating_sub(old[2])]
}

impl Merger {
    /// Adds what each flow's totals grew by since this hub last saw them.
    pub fn flows(&mut self, node: &str, totals: &[FlowTotals], state: &mut GraphState) {
        for t in totals {
            let key = (node.to_string(), t.tcp, t.client, t.server, t.first_ts);
            let last = self.flows.entry(key).or_insert_with(|| FlowTotals {
                to_server: [0; 3],
                to_client: [0; 3],
                closed: false,
                ..t.clone()
            });
            let (s, c) = (grown(t.to_server, last.to_server), grown(t.to_client, last.to_client));
            let newly_closed = t.closed && !last.closed;
            for i in 0..3 {
                last.to_server[i] = last.to_server[i].max(t.to_server[i]);
                last.to_client[i] = last.to_client[i].max(t.to_client[i]);
            }
            last.closed |= t.closed;
            last.last_ts = last.last_ts.max(t.last_ts);
            if s[0] == 0 && c[0] == 0 && !newly_closed {
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
                closed: newly_closed,
            });
        }
    }

    /// Adds records not seen before, with workloads resolved here.
    pub fn records(&mut self, node: &str, records: Vec<WireRecord>, state: &mut GraphState) {
        for r in records {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (node, &r.protocol, r.src, r.dst, r.request_ts, r.response_ts, &r.method, &r.summary).hash(&mut h);
            let key = h.finish();
            if !self.seen.insert(key) {
                self.duplicate_records += 1;
                continue;
            }
            self.seen_order.push_back(key);
            if self.seen_order.len() > SEEN_RECORDS
                && let Some(old) = self.seen_order.pop_front()
            {
                self.seen.remove(&old);
            }
            let at = Timestamp(r.request_ts.or(r.response_ts).unwrap_or_default());
            let src_w = state.identity.resolve_endpoint(r.src.0, r.src.1, at);
            let dst_w = state.identity.resolve_endpoint(r.dst.0, r.dst.1, at);
            let record = L7Record {
                protocol: r.protocol,
                transport: if r.tcp { L4Proto::Tcp } else { L4Proto::Udp },
                method: r.method,
                summary: r.summary,
                status_code: r.status_code,
                error: r.error,
                request_size: r.request_size,
                response_size: r.response_size,
                elapsed_us: r.elapsed_us,
                request_ts: r.request_ts.map(Timestamp),
                response_ts: r.response_ts.map(Timestamp),
                src: record_endpoint(endpoint(r.src), &src_w),
                dst: record_endpoint(endpoint(r.dst), &dst_w),
                plugin: PluginRef { name: r.plugin.0, version: r.plugin.1, generation: r.plugin.2 },
                fields: serde_json::from_str(&r.fields).unwrap_or_default(),
            };
            state.add_record(record, &src_w, &dst_w);
        }
    }
}

/// One worker's connection: handshake, then frames until it goes.
fn worker_conn(stream: TcpStream, token: &str, state: &SharedState, merger: &Mutex<Merger>) -> std::io::Result<()> {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let hello: ToHub = read_frame(&mut reader)?;
    let ToHub::Hello { version, node, worker_id, boot_id, token: theirs } = hello else {
        return Err(std::io::Error::other("the first frame was not Hello"));
    };
    let refuse = |why: String| ToWorker::Refused { reason: why };
    if version != PROTOCOL_VERSION {
        write_frame(&mut writer, &refuse(format!("protocol version {version}; this hub speaks {PROTOCOL_VERSION}")))?;
        return Ok(());
    }
    if theirs != token {
        tracing::warn!(peer, node, "worker refused: wrong token");
        write_frame(&mut writer, &refuse("wrong token".into()))?;
        return Ok(());
    }
    write_frame(&mut writer, &ToWorker::Welcome { version: PROTOCOL_VERSION })?;
    tracing::info!(peer, node, worker_id, boot_id, "worker connected");
    let id = format!("{node}/{worker_id}");
    let health = |st: &mut GraphState, f: &dyn Fn(&mut serde_json::Value)| {
        let h =
            st.workers.entry(id.clone()).or_insert_with(|| serde_json::json!({ "node": node, "worker_id": worker_id }));
        f(h);
    };
    health(&mut lock(state), &|h| {
        h["connected"] = true.into();
        h["boot_id"] = boot_id.clone().into();
        h["connections"] = (h["connections"].as_u64().unwrap_or(0) + 1).into();
    });
    let result = loop {
        let msg: ToHub = match read_frame(&mut reader) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(e),
        };
        let mut st = lock(state);
        let mut m = merger.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut newest, mut flows, mut records) = (0u64, 0usize, 0usize);
        match msg {
            ToHub::Flows(t) => {
                newest = t.iter().map(|f| f.last_ts).max().unwrap_or(0);
                flows = t.len();
                m.flows(&node, &t, &mut st);
            }
            ToHub::Records(r) => {
                records = r.len();
                m.records(&node, r, &mut st);
            }
            ToHub::Status { packets, records_dropped, done } => {
                health(&mut st, &|h| {
                    h["packets"] = packets.into();
                    h["records_dropped"] = records_dropped.into();
                    h["done"] = done.into();
                });
            }
            ToHub::Hello { .. } => break Err(std::io::Error::other("Hello again mid-connection")),
        }
        let dup = m.duplicate_records;
        health(&mut st, &|h| {
            h["last_seen_ns"] = crate::live::wall_now().0.into();
            h["flows_received"] = (h["flows_received"].as_u64().unwrap_or(0) + flows as u64).into();
            h["records_received"] = (h["records_received"].as_u64().unwrap_or(0) + records as u64).into();
            h["duplicate_records"] = dup.into();
            if newest > 0 {
                h["newest_ts"] = newest.into();
            }
        });
    };
    health(&mut lock(state), &|h| h["connected"] = false.into());
    tracing::info!(peer, node, "worker disconnected");
    result
}

/// Accepts workers on `listener` forever, a thread each.
pub fn accept(listener: TcpListener, token: String, state: SharedState) {
    let merger = Arc::new(Mutex::new(Merger::default()));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (token, state, merger) = (token.clone(), state.clone(), merger.clone());
        let _ = std::thread::Builder::new().name("hub-worker".into()).spawn(move || {
            if let Err(e) = worker_conn(stream, &token, &state, &merger) {
                tracing::warn!(error = %e, "worker connection failed");
            }
        });
    }
}

/// What `trawl hub` needs.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// Where workers connect.
    pub workers: std::net::SocketAddr,
    pub token: String,
    /// Where the UI and API are served.
    pub listen: std::net::SocketAddr,
    /// Inventories, rate window and plugins (whose legend the map uses).
    pub replay: crate::replay::ReplayOptions,
    pub capture_filter: crate::service::CaptureFilter,
}

/// Runs the hub until Ctrl-C or SIGTERM.
pub fn run(opts: HubOptions) -> anyhow::Result<()> {
    use anyhow::Context;
    let identity = crate::replay::load_identity(&opts.replay.inventories)?;
    let state: SharedState = Arc::new(Mutex::new(GraphState::new(
        Arc::new(identity),
        opts.capture_filter.clone(),
        opts.replay.rate_window_secs,
    )));
    // The hub dissects nothing; the plugins' metadata colours the legend.
    let (plugins, _, _) = crate::replay_l7::plugins_for(&opts.replay)?;
    lock(&state).set_legend(plugins.iter().map(crate::replay_l7::legend).collect());
    let listener =
        TcpListener::bind(opts.workers).with_context(|| format!("cannot listen for workers on {}", opts.workers))?;
    eprintln!("trawl hub: workers connect to {}", listener.local_addr()?);
    let (token, accept_state) = (opts.token.clone(), state.clone());
    crate::serve::serve_state(state, opts.listen, "hub-accept", move || accept(listener, token, accept_state))
}

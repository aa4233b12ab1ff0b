//! `GET /api/pcap?edge=ID` or `?filter=KFL2`: the recent packets (the
//! ring, see [`crate::packets`]) of an edge's flows or of the flows behind
//! the records a display filter matches, as a pcapng file with names.
//!
//! An L7 edge's flows are those of its records in the record log; an L4
//! edge's are every connection between its two ends. On a hub the packets
//! are on the workers: the hub asks each connected one (over the cluster
//! protocol) and writes what they answer within a few seconds.

use super::api::{guard, with_state};
use super::auth::{Access, Need};
use super::filter::Filter as Kfl2;
use super::packets::RingFrame;
use super::pcapng::{ChosenFlow, FlowKey, PcapngOut, chosen, flow_key, flows_of, names, node_id};
use super::{GraphState, SharedState, lock};
use serde_json::json;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trawl_core::decode::{Decoded, decode};
use trawl_core::{GroupBy, Identity, L4Proto};
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

/// How long a hub waits for its workers' packets.
const FANOUT_WAIT: Duration = Duration::from_secs(5);
/// Requests to workers kept for connections to pick up.
const FANOUT_KEPT: usize = 16;
/// Most bytes of packets a hub keeps of one request's answers, all
/// workers together (each sends at most 12 MiB).
const FANOUT_BYTES: usize = 64 << 20;

#[derive(Debug, serde::Deserialize)]
struct Query {
    edge: Option<String>,
    filter: Option<String>,
    group_by: Option<String>,
}

/// Which packets, as a hub asks its workers for them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WireSelection {
    Flows(Vec<FlowKey>),
    /// Every connection between two map nodes (of `group`: pod, namespace
    /// or node), resolved by the one who holds the packets.
    Between {
        source: String,
        target: String,
        l4: L4Proto,
        group: String,
    },
}

/// Which packets: those of known flows, or every one between two nodes.
#[derive(Debug)]
pub enum Selection {
    Flows(HashMap<FlowKey, ChosenFlow>),
    Between {
        source: String,
        target: String,
        l4: L4Proto,
        group: GroupBy,
    },
    /// Every packet of a transport: what a worker that knows no workloads
    /// (a replay) sends for `Between`, for the hub to pick from.
    Transport(L4Proto),
}

type Refusal = (StatusCode, String);

const NEEDS_SELECTION: &str = "give edge=ID (as the map names it) or filter=KFL2";

/// Frames picked from a ring, each with its flow and transport.
pub type Picked = Vec<(FlowKey, L4Proto, RingFrame)>;

/// A built file: its bytes, its packets, and (on a hub) how many workers
/// answered of those asked.
type Built = (Vec<u8>, u64, Option<(usize, usize)>);

fn bad(message: impl Into<String>) -> Refusal {
    (StatusCode::BAD_REQUEST, message.into())
}

/// What a query needs from the state, taken under its lock; the record
/// log's newest records (at most [`crate::records_api::MAX_SCANNED`]) are
/// shared, not copied, and read after the lock is let go.
struct Plan {
    identity: Arc<Identity>,
    legend: Vec<trawl_core::l7map::LegendEntry>,
    log: Vec<Arc<trawl_core::record::L7Record>>,
    group: GroupBy,
    filter: Option<Kfl2>,
}

impl Plan {
    fn take(st: &GraphState, q: &Query) -> Result<Plan, Refusal> {
        let group: GroupBy = q.group_by.as_deref().unwrap_or("pod").parse().map_err(bad)?;
        let filter = match (&q.edge, &q.filter) {
            (None, Some(f)) => Some(Kfl2::compile_in(f, &st.vocabulary()).map_err(|e| bad(e.to_string()))?),
            (None, None) => return Err(bad(NEEDS_SELECTION)),
            (Some(_), _) => None,
        };
        let mut log: Vec<_> = st.records_since(0).1.rev().take(crate::records_api::MAX_SCANNED).cloned().collect();
        log.reverse();
        Ok(Plan { identity: st.identity().clone(), legend: st.legend().to_vec(), log, group, filter })
    }

    /// What `q` asks for, as of the log taken.
    fn selection(&self, q: &Query) -> Result<Selection, Refusal> {
        let (identity, group) = (&*self.identity, self.group);
        let log = self.log.iter().map(|r| &**r);
        Ok(match (&q.edge, &self.filter) {
            (Some(edge), _) => {
                let parts: Vec<&str> = edge.split('|').collect();
                let [source, target, kind, ..] = parts[..] else {
                    return Err(bad(format!("edge {edge:?}: expected SOURCE|TARGET|PROTOCOL, as the map names edges")));
                };
                // An edge split by virtual host ends in `|HOST`.
                let host = parts.get(3).copied();
                match kind {
                    "tcp" | "udp" => Selection::Between {
                        source: source.into(),
                        target: target.into(),
                        l4: if kind == "tcp" { L4Proto::Tcp } else { L4Proto::Udp },
                        group,
                    },
                    protocol => Selection::Flows(flows_of(log, |r| {
                        let at = r.ts();
                        r.protocol == protocol
                            && host.is_none_or(|h| trawl_core::vhost::record_host(r).as_deref() == Some(h))
                            && node_id(identity, r.src.ip, r.src.port, at, group) == source
                            && node_id(identity, r.dst.ip, r.dst.port, at, group) == target
                    })),
                }
            }
            (None, Some(filter)) => Selection::Flows(flows_of(log, |r| filter.matches(r, &self.legend))),
            // Refused by `take` already.
            (None, None) => return Err(bad(NEEDS_SELECTION)),
        })
    }
}

impl Selection {
    pub fn to_wire(&self) -> WireSelection {
        match self {
            Selection::Flows(flows) => WireSelection::Flows(flows.keys().copied().collect()),
            Selection::Transport(l4) => {
                WireSelection::Between { source: String::new(), target: String::new(), l4: *l4, group: String::new() }
            }
            Selection::Between { source, target, l4, group } => WireSelection::Between {
                source: source.clone(),
                target: target.clone(),
                l4: *l4,
                group: match group {
                    GroupBy::Pod => "pod",
                    GroupBy::Namespace => "namespace",
                    GroupBy::Node => "node",
                }
                .into(),
            },
        }
    }

    /// A worker's reading of a hub's request; one that knows no workloads
    /// sends all of a transport for the hub to pick from.
    pub fn from_wire(w: WireSelection, knows_workloads: bool) -> Selection {
        match w {
            WireSelection::Between { l4, .. } if !knows_workloads => Selection::Transport(l4),
            WireSelection::Flows(keys) => {
                Selection::Flows(keys.into_iter().map(|k| (k, chosen(k.1, k.2, trawl_core::Timestamp::ZERO))).collect())
            }
            WireSelection::Between { source, target, l4, group } => {
                Selection::Between { source, target, l4, group: group.parse().unwrap_or_default() }
            }
        }
    }

    /// The frames it selects among `frames` (copied), and their flows.
    pub fn pick<'a>(
        self,
        identity: &Identity,
        frames: impl Iterator<Item = &'a RingFrame>,
    ) -> (Picked, HashMap<FlowKey, ChosenFlow>) {
        let mut picked = Vec::new();
        let mut between_found = HashMap::new();
        for f in frames {
            let Decoded::Packet(p) = decode(f.link, &f.data) else { continue };
            let key = flow_key(p.l4, (p.src, p.src_port), (p.dst, p.dst_port));
            let wanted = match &self {
                Selection::Flows(known) => known.contains_key(&key),
                Selection::Transport(l4) => {
                    let (src, dst) = ((p.src, p.src_port), (p.dst, p.dst_port));
                    p.l4 == *l4 && {
                        between_found.entry(key).or_insert_with(|| chosen(src, dst, f.ts));
                        true
                    }
                }
                Selection::Between { source, target, l4, group } => {
                    p.l4 == *l4 && {
                        let a = node_id(identity, p.src, p.src_port, f.ts, *group);
                        let b = node_id(identity, p.dst, p.dst_port, f.ts, *group);
                        let (src, dst) = ((p.src, p.src_port), (p.dst, p.dst_port));
                        let ends = if (&a, &b) == (source, target) {
                            Some((src, dst))
                        } else if (&a, &b) == (target, source) {
                            Some((dst, src))
                        } else {
                            None
                        };
                        ends.map(|(client, server)| {
                            between_found.entry(key).or_insert_with(|| chosen(client, server, f.ts))
                        })
                        .is_some()
                    }
                }
            };
            if wanted {
                picked.push((key, p.l4, f.clone()));
            }
        }
        let flows = match self {
            Selection::Flows(flows) => flows,
            Selection::Between { .. } | Selection::Transport(_) => between_found,
        };
        (picked, flows)
    }
}

/// The packets a hub asked its workers for, and their answers.
#[derive(Debug, Default)]
pub struct PcapFanout {
    next: u64,
    asked: VecDeque<(u64, WireSelection)>,
    answers: HashMap<u64, (BTreeSet<String>, Vec<RingFrame>)>,
}

impl PcapFanout {
    fn ask(&mut self, selection: WireSelection) -> u64 {
        let id = self.next;
        self.next += 1;
        self.asked.push_back((id, selection));
        self.answers.insert(id, Default::default());
        while self.asked.len() > FANOUT_KEPT {
            if let Some((old, _)) = self.asked.pop_front() {
                self.answers.remove(&old);
            }
        }
        id
    }

    /// Requests numbered `from` and later, and the number to ask from next
    /// (each worker connection keeps its own).
    pub fn asked_since(&self, from: u64) -> (Vec<(u64, WireSelection)>, u64) {
        (self.asked.iter().filter(|(id, _)| *id >= from).cloned().collect(), self.next)
    }

    /// A worker's answer; one to a request no longer waited for, or a
    /// second from the same worker, is dropped, and frames past
    /// [`FANOUT_BYTES`] of one request's answers are let go.
    pub fn answer(&mut self, id: u64, worker: &str, frames: Vec<RingFrame>) {
        if let Some((who, got)) = self.answers.get_mut(&id)
            && who.insert(worker.to_string())
        {
            let mut held: usize = got.iter().map(|f| f.data.len()).sum();
            for f in frames {
                held += f.data.len();
                if held > FANOUT_BYTES {
                    break;
                }
                got.push(f);
            }
        }
    }

    fn take(&mut self, id: u64) -> (BTreeSet<String>, Vec<RingFrame>) {
        self.asked.retain(|(a, _)| *a != id);
        self.answers.remove(&id).unwrap_or_default()
    }
}

/// The file: `frames` of `flows`, with names and a comment saying `what`.
fn file(
    identity: &Identity,
    what: &str,
    frames: &Picked,
    mut flows: HashMap<FlowKey, ChosenFlow>,
) -> Result<(Vec<u8>, u64), Refusal> {
    let failed = |e: pcap_file::PcapError| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let names = names(identity, &flows);
    let mut out = PcapngOut::new(Vec::new(), &format!("trawl: recent packets of {what}"), &names).map_err(failed)?;
    for (key, l4, f) in frames {
        if let Some(flow) = flows.get_mut(key) {
            out.packet(identity, flow, *l4, (f.link, f.ts, f.wire_len, &f.data)).map_err(failed)?;
        }
    }
    let packets = out.packets;
    Ok((out.finish(), packets))
}

/// The file for `q`, how many packets it holds, and (on a hub) how many
/// workers answered of those asked.
fn build(state: &SharedState, q: &Query) -> Result<Built, Refusal> {
    let what = q.edge.as_ref().map_or_else(|| format!("filter {:?}", q.filter), |e| format!("edge {e}"));
    let (plan, ring, connected) = {
        let st = lock(state);
        let plan = Plan::take(&st, q)?;
        let connected: BTreeSet<String> =
            st.workers().iter().filter(|(_, w)| w.connected).map(|(id, _)| id.clone()).collect();
        (plan, st.packet_ring().cloned(), connected)
    };
    // The log is read, and the ring decoded, without any lock held.
    let selection = plan.selection(q)?;
    let identity = plan.identity.clone();
    if let Some(ring) = ring {
        let frames = super::packets::PacketRing::snapshot(&ring);
        let (frames, flows) = selection.pick(&identity, frames.iter());
        let (file, packets) = file(&identity, &what, &frames, flows)?;
        return Ok((file, packets, None));
    }
    if connected.is_empty() {
        return Err((StatusCode::NOT_FOUND, "no packets are kept here (--pcap-ring-mib 0)".to_string()));
    }
    // A hub: the workers answer on their next status (about every 100 ms).
    let (id, asked) = (lock(state).pcap_fanout_mut().ask(selection.to_wire()), connected);
    let began = Instant::now();
    let (answered, frames) = loop {
        std::thread::sleep(Duration::from_millis(100));
        let mut st = lock(state);
        let done = st.pcap_fanout_mut().answers.get(&id).is_none_or(|(who, _)| who.is_superset(&asked));
        if done || began.elapsed() >= FANOUT_WAIT {
            break st.pcap_fanout_mut().take(id);
        }
    };
    let (frames, flows) = selection.pick(&identity, frames.iter());
    let (file, packets) = file(&identity, &what, &frames, flows)?;
    Ok((file, packets, Some((answered.len(), asked.len()))))
}

pub(crate) fn route(
    state: SharedState,
    access: Arc<Access>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::get()
        .and(warp::path!("api" / "pcap"))
        // Whole packets carry what redaction hides from records (tokens,
        // passwords): the admin token, not the read one.
        .and(guard(access, Need::Admin))
        .and(warp::query::<Query>())
        .and(with_state(state))
        .and_then(|q: Query, s: SharedState| async move {
            let built = tokio::task::spawn_blocking(move || build(&s, &q)).await;
            let reply = match built {
                Ok(Ok((file, packets, workers))) => {
                    let mut reply = warp::reply::Response::new(file.into());
                    let h = reply.headers_mut();
                    h.insert("content-type", warp::http::HeaderValue::from_static("application/x-pcapng"));
                    h.insert(
                        "content-disposition",
                        warp::http::HeaderValue::from_static("attachment; filename=\"trawl.pcapng\""),
                    );
                    h.insert("x-trawl-packets", warp::http::HeaderValue::from(packets));
                    if let Some((answered, asked)) = workers
                        && let Ok(v) = warp::http::HeaderValue::from_str(&format!("{answered}/{asked}"))
                    {
                        // Workers that answered in time, of those asked.
                        h.insert("x-trawl-workers", v);
                    }
                    reply
                }
                Ok(Err((status, message))) => {
                    warp::reply::with_status(warp::reply::json(&json!({"error": message})), status).into_response()
                }
                Err(e) => warp::reply::with_status(
                    warp::reply::json(&json!({"error": format!("the file could not be built: {e}")})),
                    StatusCode::INTERNAL_SERVER_ERROR,
                )
                .into_response(),
            };
            Ok::<_, Rejection>(reply)
        })
}

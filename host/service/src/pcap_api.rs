//! `GET /api/pcap?edge=ID` or `?filter=KFL2`: the recent packets (the
//! ring, see [`crate::packets`]) of an edge's flows or of the flows behind
//! the records a display filter matches, as a pcapng file with names.
//!
//! An L7 edge's flows are those of its records in the record log; an L4
//! edge's are every connection between its two ends.

use super::api::{guard, with_state};
use super::auth::{Access, Need};
use super::filter::Filter as Kfl2;
use super::pcapng::{ChosenFlow, FlowKey, PcapngOut, chosen, flow_key, flows_of, names, node_id};
use super::{SharedState, lock};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use trawl_core::decode::{Decoded, decode};
use trawl_core::{GroupBy, L4Proto};
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

#[derive(Debug, serde::Deserialize)]
struct Query {
    edge: Option<String>,
    filter: Option<String>,
    group_by: Option<String>,
}

/// Which packets: those of known flows, or every one between two nodes.
enum Selection {
    Flows(HashMap<FlowKey, ChosenFlow>),
    /// Every connection between two nodes, found as the ring is read.
    Between {
        source: String,
        target: String,
        l4: L4Proto,
        group: GroupBy,
        found: HashMap<FlowKey, ChosenFlow>,
    },
}

type Refusal = (StatusCode, String);

fn bad(message: impl Into<String>) -> Refusal {
    (StatusCode::BAD_REQUEST, message.into())
}

/// The file for `q`, and how many packets it holds.
fn build(state: &SharedState, q: &Query) -> Result<(Vec<u8>, u64), Refusal> {
    let (identity, ring, selection) = {
        let st = lock(state);
        let ring = st.packet_ring().cloned().ok_or_else(|| {
            (StatusCode::NOT_FOUND, "no packets are kept here (--pcap-ring-mib 0, or a hub: ask a worker)".to_string())
        })?;
        let group: GroupBy = q.group_by.as_deref().unwrap_or("pod").parse().map_err(bad)?;
        let identity = st.identity().clone();
        let (_, log) = st.records_since(0);
        let selection = match (&q.edge, &q.filter) {
            (Some(edge), _) => {
                let parts: Vec<&str> = edge.split('|').collect();
                let [source, target, kind, ..] = parts[..] else {
                    return Err(bad(format!("edge {edge:?}: expected SOURCE|TARGET|PROTOCOL, as the map names edges")));
                };
                match kind {
                    "tcp" | "udp" => Selection::Between {
                        source: source.into(),
                        target: target.into(),
                        l4: if kind == "tcp" { L4Proto::Tcp } else { L4Proto::Udp },
                        group,
                        found: HashMap::new(),
                    },
                    protocol => Selection::Flows(flows_of(log.map(|r| &**r), |r| {
                        let at = r.ts();
                        r.protocol == protocol
                            && node_id(&identity, r.src.ip, r.src.port, at, group) == source
                            && node_id(&identity, r.dst.ip, r.dst.port, at, group) == target
                    })),
                }
            }
            (None, Some(filter)) => {
                let filter = Kfl2::compile_in(filter, &st.vocabulary()).map_err(|e| bad(e.to_string()))?;
                Selection::Flows(flows_of(log.map(|r| &**r), |r| filter.matches(r, st.legend())))
            }
            (None, None) => return Err(bad("give edge=ID (as the map names it) or filter=KFL2")),
        };
        (identity, ring, selection)
    };

    // The matching frames, copied out so the pipeline is not kept waiting
    // on the ring while the file is written.
    let mut selection = selection;
    let mut frames = Vec::new();
    {
        let ring = ring.lock().unwrap_or_else(PoisonError::into_inner);
        for f in ring.frames() {
            let Decoded::Packet(p) = decode(f.link, &f.data) else { continue };
            let key = flow_key(p.l4, (p.src, p.src_port), (p.dst, p.dst_port));
            let wanted = match &mut selection {
                Selection::Flows(known) => known.contains_key(&key),
                Selection::Between { source, target, l4, group, found } => {
                    p.l4 == *l4 && {
                        let at = f.ts;
                        let a = node_id(&identity, p.src, p.src_port, at, *group);
                        let b = node_id(&identity, p.dst, p.dst_port, at, *group);
                        let (src, dst) = ((p.src, p.src_port), (p.dst, p.dst_port));
                        let ends = if (&a, &b) == (source, target) {
                            Some((src, dst))
                        } else if (&a, &b) == (target, source) {
                            Some((dst, src))
                        } else {
                            None
                        };
                        ends.map(|(client, server)| found.entry(key).or_insert_with(|| chosen(client, server, at)))
                            .is_some()
                    }
                }
            };
            if wanted {
                frames.push((key, p.l4, f.clone()));
            }
        }
    }
    let mut flows = match selection {
        Selection::Flows(flows) | Selection::Between { found: flows, .. } => flows,
    };
    let names = names(&identity, &flows);
    let what = q.edge.as_ref().map_or_else(|| format!("filter {:?}", q.filter), |e| format!("edge {e}"));
    let comment = format!("trawl: recent packets of {what}");
    let mut out =
        PcapngOut::new(Vec::new(), &comment, &names).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    for (key, l4, f) in &frames {
        if let Some(flow) = flows.get_mut(key) {
            out.packet(&identity, flow, *l4, (f.link, f.ts, f.wire_len, &f.data))
                .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        }
    }
    let packets = out.packets;
    Ok((out.finish(), packets))
}

pub(crate) fn route(
    state: SharedState,
    access: Arc<Access>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::get()
        .and(warp::path!("api" / "pcap"))
        .and(guard(access, Need::Read))
        .and(warp::query::<Query>())
        .and(with_state(state))
        .and_then(|q: Query, s: SharedState| async move {
            let built = tokio::task::spawn_blocking(move || build(&s, &q)).await;
            let reply = match built {
                Ok(Ok((file, packets))) => {
                    let mut reply = warp::reply::Response::new(file.into());
                    let h = reply.headers_mut();
                    h.insert("content-type", warp::http::HeaderValue::from_static("application/x-pcapng"));
                    h.insert(
                        "content-disposition",
                        warp::http::HeaderValue::from_static("attachment; filename=\"trawl.pcapng\""),
                    );
                    h.insert("x-trawl-packets", warp::http::HeaderValue::from(packets));
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

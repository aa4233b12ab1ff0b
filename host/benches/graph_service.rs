//! The graph service at cluster scale: a synthetic cluster of 10,000
//! workloads and 100,000 L4 edges fed by 200 sources (workers), then, per
//! tick, each source reports traffic on a slice of the edges and one
//! subscription builds its map and the delta for its client.
//!
//! Reported: the cost of one tick for one subscription (map + delta), and
//! the delta's size, which at five ticks a second is the client's
//! steady-state WebSocket bytes per second (printed once).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use trawl_core::flow::{DirCounters, Endpoint, FlowDelta, Orientation};
use trawl_core::{Identity, L4Proto, Timestamp};
use trawl_host::service::subscription::delta;
use trawl_host::service::{CaptureFilter, GraphState, Subscription, SubscriptionSpec};

const WORKLOADS: u32 = 10_000;
const EDGES: u32 = 100_000;
const SOURCES: u32 = 200;
/// Edges each source reports on per tick (steady state: 5 % of edges move).
const EDGES_PER_SOURCE_TICK: u32 = EDGES / 20 / SOURCES;

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

/// Edge `e` joins a client and a server picked deterministically.
fn delta_for(e: u32, ts: u64) -> FlowDelta {
    let client = e % WORKLOADS;
    // Ten servers per client, spread over the cluster: 100,000 distinct pairs.
    let server = (client + 1 + (e / WORKLOADS) * 997) % WORKLOADS;
    FlowDelta {
        l4: L4Proto::Tcp,
        client: Endpoint { ip: ip(client), port: 40_000 },
        server: Endpoint { ip: ip(server), port: 8080 },
        to_server: DirCounters { packets: 3, bytes: 900, ip_bytes: 858 },
        to_client: DirCounters { packets: 2, bytes: 1400, ip_bytes: 1372 },
        first_ts: Timestamp(ts),
        last_ts: Timestamp(ts),
        orientation: Orientation::Syn,
        closed: false,
    }
}

fn cluster() -> GraphState {
    let mut state = GraphState::new(Arc::new(Identity::new()), CaptureFilter::default(), 10);
    for e in 0..EDGES {
        state.add_delta(&delta_for(e, 1_000_000_000));
    }
    state
}

fn tick_cost(c: &mut Criterion) {
    let mut state = cluster();
    let spec = SubscriptionSpec { mode: trawl_host::service::Mode::Rate, ..SubscriptionSpec::default() };
    let mut sub = Subscription::new(spec).unwrap();
    let mut last = sub.snapshot(&state);
    let (nodes, edges) = (last["nodes"].as_array().unwrap().len(), last["edges"].as_array().unwrap().len());
    println!(
        "graph_service: {nodes} nodes, {edges} edges, {SOURCES} sources, {EDGES_PER_SOURCE_TICK} edges per source per tick"
    );
    let mut t = 0u64;
    let feed = |state: &mut GraphState, t: &mut u64| {
        *t += 1;
        let ts = 1_000_000_000 + *t * 200_000_000;
        for s in 0..SOURCES {
            for k in 0..EDGES_PER_SOURCE_TICK {
                let e = (s * EDGES_PER_SOURCE_TICK + k + (*t as u32) * 7919) % EDGES;
                state.add_delta(&delta_for(e, ts));
            }
        }
    };
    // Steady-state delta size: a few ticks, then the average.
    let mut bytes = 0usize;
    for _ in 0..10 {
        feed(&mut state, &mut t);
        let now = sub.snapshot(&state);
        bytes += delta(&last, &now).map_or(0, |d| d.to_string().len());
        last = now;
    }
    println!(
        "graph_service: delta {} bytes per tick on average = {:.0} KB/s per client at 5 ticks/s",
        bytes / 10,
        (bytes / 10) as f64 * 5.0 / 1000.0
    );
    let mut g = c.benchmark_group("graph_service");
    g.sample_size(10);
    g.bench_function("feed_200_sources_one_tick", |b| b.iter(|| feed(&mut state, &mut t)));
    g.bench_function("tick_one_subscription_map_and_delta", |b| {
        b.iter(|| {
            let now = sub.snapshot(&state);
            black_box(delta(&last, &now));
            last = now;
        })
    });
    g.finish();
}

criterion_group!(benches, tick_cost);
criterion_main!(benches);

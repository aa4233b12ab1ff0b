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
use std::sync::atomic::{AtomicBool, Ordering};
use trawl_core::flow::{DirCounters, Endpoint, FlowDelta, Orientation};
use trawl_core::{Identity, L4Proto, Timestamp};
use trawl_host::service::view::CHANGE_BUDGET;
use trawl_host::service::{CaptureFilter, Graph, GraphState, Mode, Subscription, SubscriptionSpec, lock};

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
        health: Default::default(),
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
    let mut t = 0u64;
    let mut g = c.benchmark_group("graph_service");
    g.sample_size(10);
    g.bench_function("feed_200_sources_one_tick", |b| b.iter(|| feed(&mut state, &mut t)));
    for mode in [Mode::Cumulative, Mode::Rate] {
        let spec = SubscriptionSpec { mode, ..SubscriptionSpec::default() };
        let mut sub = Subscription::new(spec).unwrap();
        // Ten simulated seconds first, so every rate window is full.
        for _ in 0..50 {
            feed(&mut state, &mut t);
        }
        let snap = sub.stream_snapshot(&state);
        println!(
            "graph_service {mode:?}: {} of {} edges shown, {} nodes; snapshot {} bytes",
            snap["edges"].as_array().unwrap().len(),
            snap["totals"]["edges"],
            snap["nodes"].as_array().unwrap().len(),
            snap.to_string().len()
        );
        // Steady state: the delta size with and without the byte budget
        // (ticks fed between reads), averaged over 50 ticks = 10 s.
        for budget in [usize::MAX, CHANGE_BUDGET] {
            let (mut bytes, mut pending, mut lag) = (0usize, 0u64, 0.0);
            for _ in 0..50 {
                feed(&mut state, &mut t);
                let d = sub.stream_delta(&state, budget);
                bytes += d.as_ref().map_or(0, |d| d.to_string().len());
                pending = d.as_ref().and_then(|d| d["pending"].as_u64()).unwrap_or(0);
                lag = d.as_ref().and_then(|d| d["pending_largest_change"].as_f64()).unwrap_or(0.0);
            }
            println!(
                "graph_service {mode:?}: budget {budget}: delta {} bytes per tick on average = {:.0} KB/s per client at 5 ticks/s; {pending} changes pending after the last, the largest a {:.0} % change",
                bytes / 50,
                (bytes / 50) as f64 * 5.0 / 1000.0,
                lag * 100.0
            );
        }
        g.bench_function(format!("tick_one_subscription_{mode:?}").to_lowercase(), |b| {
            b.iter(|| black_box(sub.stream_delta(&state, CHANGE_BUDGET)))
        });
        g.bench_function(format!("feed_and_tick_one_subscription_{mode:?}").to_lowercase(), |b| {
            b.iter(|| {
                feed(&mut state, &mut t);
                black_box(sub.stream_delta(&state, CHANGE_BUDGET))
            })
        });
    }
    g.finish();
}

/// Ingest while a subscriber ticks (rate mode, 100k edges) in a loop on
/// another thread: one source's report written through `Graph::update`,
/// which never waits for the reader, against locking the state first (what
/// every write did before), side by side.
fn ingest_under_a_reader(c: &mut Criterion) {
    let graph = Graph::new(cluster());
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (graph, stop) = (graph.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut sub =
                Subscription::new(SubscriptionSpec { mode: Mode::Rate, ..SubscriptionSpec::default() }).unwrap();
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                black_box(sub.stream_delta(&lock(&graph), CHANGE_BUDGET));
                reads += 1;
                // A moment between ticks (real subscribers tick every 200
                // ms): without it, a reader that takes the lock again at
                // once can starve `lock_then_write` for good, as it did a
                // debug build on a busy CI box.
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            reads
        })
    };
    let report = |t: u64| -> Vec<FlowDelta> {
        (0..EDGES_PER_SOURCE_TICK).map(|k| delta_for((k * 7919 + t as u32) % EDGES, 2_000_000_000 + t)).collect()
    };
    let mut g = c.benchmark_group("graph_service_ingest_under_a_reader");
    g.sample_size(20);
    let mut t = 0u64;
    g.bench_function("update_never_waits", |b| {
        b.iter(|| {
            t += 1;
            let deltas = report(t);
            graph.update(move |st| {
                for d in &deltas {
                    st.add_delta(d);
                }
            });
        })
    });
    g.bench_function("lock_then_write", |b| {
        b.iter(|| {
            t += 1;
            let deltas = report(t);
            let mut st = lock(&graph);
            for d in &deltas {
                st.add_delta(d);
            }
        })
    });
    g.finish();
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    println!("graph_service_ingest_under_a_reader: the reader ticked {reads} times meanwhile");
}

criterion_group!(benches, tick_cost, ingest_under_a_reader);
criterion_main!(benches);

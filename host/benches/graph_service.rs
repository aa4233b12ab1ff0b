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

/// A pod of Deployment `d` (three replicas each).
fn replica(d: u32, r: u32) -> trawl_core::Workload {
    trawl_core::Workload {
        kind: trawl_core::WorkloadKind::Pod,
        namespace: format!("ns{}", d % 50),
        name: format!("app{d}-5f6b7c8d9-{r:05}"),
        node: None,
        labels: [("pod-template-hash".to_string(), "5f6b7c8d9".to_string())].into(),
        owner: Some(format!("ReplicaSet/app{d}-5f6b7c8d9")),
    }
}

/// A record of `protocol`, `method` and `summary` between two resolved
/// ends, answered in 250 µs.
fn l7_record(
    (protocol, method, summary): (&str, &str, &str),
    status_code: Option<i64>,
    (request_size, response_size): (u64, u64),
    fields: trawl_sdk::Fields,
) -> trawl_core::record::L7Record {
    use trawl_core::record::{L7Record, PluginRef, RecordEndpoint};
    let end = |i, port| RecordEndpoint {
        ip: ip(i),
        port,
        workload: None,
        resolution_status: trawl_core::identity::ResolutionStatus::Resolved,
    };
    L7Record {
        protocol: protocol.into(),
        transport: L4Proto::Tcp,
        method: method.into(),
        summary: summary.into(),
        status_code,
        error: false,
        request_size,
        response_size,
        elapsed_us: Some(250),
        request_ts: Some(Timestamp(1_000_000_000)),
        response_ts: Some(Timestamp(1_000_250_000)),
        src: end(1, 40_000),
        dst: end(2, 6379),
        plugin: PluginRef { name: protocol.into(), version: "0.1.0".into(), generation: 1 },
        fields,
        tls: false,
        tls_sni: None,
    }
}

/// `/metrics` and an OTLP push at 10,000 workloads: 30,000 pods in 10,000
/// Deployments, each calling a database: 10,000 L7 series.
fn metrics_scrape(c: &mut Criterion) {
    let mut state = GraphState::new(Arc::new(Identity::new()), CaptureFilter::default(), 10)
        .with_metrics_max_series(20_000)
        .with_record_log_bytes(1 << 20);
    let record = l7_record(("redis", "GET", "key"), None, (30, 10), Default::default());
    let mut db = replica(0, 0);
    (db.name, db.owner) = ("db-0".into(), Some("StatefulSet/db".into()));
    for d in 0..WORKLOADS {
        for r in 0..3 {
            state.add_record(record.clone(), &replica(d, r), &db);
        }
    }
    let graph = Graph::new(state);
    let text = trawl_host::service::metrics::metrics_text(&graph);
    let series = lock(&graph).service_graph().series();
    let otlp = {
        use prost::Message;
        trawl_host::service::otlp::request(lock(&graph).service_graph(), Some("lab"), 0, 1).encode_to_vec()
    };
    println!(
        "metrics at {WORKLOADS} workloads: {series} series, /metrics {} bytes ({} lines), OTLP push {} bytes",
        text.len(),
        text.lines().count(),
        otlp.len()
    );
    let mut g = c.benchmark_group("metrics");
    g.sample_size(10);
    g.bench_function("scrape_10k_workloads", |b| {
        b.iter(|| black_box(trawl_host::service::metrics::metrics_text(&graph)))
    });
    g.bench_function("otlp_push_10k_workloads", |b| {
        b.iter(|| {
            use prost::Message;
            black_box(
                trawl_host::service::otlp::request(lock(&graph).service_graph(), Some("lab"), 0, 1).encode_to_vec(),
            )
        })
    });
    g.finish();
}

/// Discards what the pipeline collects.
struct Discard;

impl trawl_host::pipeline::Sink for Discard {
    fn batch(&mut self, _batch: trawl_host::pipeline::Batch, _report: &trawl_host::pipeline::Report<'_>) {}
}

/// What keeping whole packets for `/api/pcap` costs the pipeline: 20,000
/// One HTTP record filed into the service, as the live agent's ingest
/// thread files each: three groupings' L7 maps, the history, the service
/// graph and the record log (full, so each record also evicts one). The
/// record carries what the HTTP plugin's do: 17 fields, 11 headers.
fn record_ingest(c: &mut Criterion) {
    use trawl_sdk::{Fields, Value};
    let mut state = GraphState::new(Arc::new(Identity::new()), CaptureFilter::default(), 10);
    let headers = |n: usize| -> Value {
        Value::Map((0..n).map(|i| (format!("x-header-{i}"), Value::from(format!("value {i}")))).collect::<Fields>())
    };
    let mut fields = Fields::new();
    for (k, v) in [("host", "web"), ("http_version", "HTTP/1.1"), ("method", "GET"), ("path", "/small.json")] {
        fields.insert(k, v);
    }
    fields.insert("query_string", "");
    fields.insert("request_body_size", 0u64);
    fields.insert("request_header_size", 80u64);
    fields.insert("request_headers", headers(3));
    fields.insert("response_body_size", 640u64);
    fields.insert("response_header_size", 240u64);
    fields.insert("response_headers", headers(8));
    fields.insert("status_code", 200i64);
    fields.insert("status_phrase", "OK");
    fields.insert("url", "/small.json");
    let record = l7_record(("http", "GET", "/small.json"), Some(200), (80, 880), fields);
    let (client, server) = (replica(1, 0), replica(2, 0));
    for _ in 0..20_000 {
        state.add_record(record.clone(), &client, &server);
    }
    let mut g = c.benchmark_group("record_ingest");
    g.bench_function("http_record_clone_and_add", |b| {
        b.iter(|| state.add_record(black_box(record.clone()), &client, &server));
    });
    g.bench_function("http_record_clone_only", |b| b.iter(|| black_box(record.clone())));
    g.finish();
}

/// MTU 1500 TCP segments (1,448-byte payloads, 100 flows) through an L4
/// pipeline, without a ring and with the default 16 MiB one.
fn packet_ring_cost(c: &mut Criterion) {
    use trawl_host::pipeline::{Cadence, Pipeline};
    let frames: Vec<Vec<u8>> = (0..20_000u32)
        .map(|i| {
            let b = etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
                .ipv4([10, 0, 0, 1], [10, 0, 1, (i % 100) as u8], 64)
                .tcp(40_000, 8080, (i / 100) * 1448, 65_535);
            let payload = [0u8; 1448];
            let mut out = Vec::with_capacity(b.size(payload.len()));
            b.write(&mut out, &payload).unwrap();
            out
        })
        .collect();
    let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    let opts = trawl_host::replay::ReplayOptions::new("bench");
    let mut g = c.benchmark_group("packet_ring");
    g.throughput(criterion::Throughput::Bytes(bytes));
    for (name, ring) in
        [("without_ring", None), ("with_16mib_ring", Some(trawl_host::service::packets::PacketRing::shared(16 << 20)))]
    {
        let cadence = Cadence { frames: Some(1024), ..Cadence::default() };
        let mut pipeline = Pipeline::new(&opts, Vec::new(), None, cadence).with_packet_ring(ring);
        let mut ts = 1_000_000_000u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                for f in &frames {
                    ts += 1_000;
                    pipeline.frame(trawl_core::LinkType::Ethernet, Timestamp(ts), f, f.len() as u32, &mut Discard);
                }
            })
        });
    }
    g.finish();
}
criterion_group!(benches, tick_cost, ingest_under_a_reader, metrics_scrape, packet_ring_cost, record_ingest);
criterion_main!(benches);

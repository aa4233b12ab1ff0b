//! `trawl_core::diff` on two windows of a 10,000-edge L7 map (issue 17's
//! target: at most 200 ms): a tenth of the edges change error rate or
//! latency, a twentieth go and as many come.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use std::hint::black_box;
use trawl_core::diff::{Thresholds, Window, diff};

const EDGES: usize = 10_000;

fn edge(i: usize, errors: u64, p99_us: u64) -> Value {
    json!({"source": format!("pod/ns{}/client-{}", i % 50, i % 997), "target": format!("pod/ns{}/server-{i}", i % 50),
           "protocol": "http", "requests": 1_000, "errors": errors, "request_bytes": 120_000, "response_bytes": 900_000,
           "latency_us": {"p50": p99_us / 3, "p95": p99_us / 2, "p99": p99_us},
           "rate": {"window_secs": 10, "requests_per_sec": 100.0, "request_bytes_per_sec": 12_000.0, "response_bytes_per_sec": 90_000.0},
           "top": [{"name": "GET /", "count": 1_000}]})
}

fn window(after: bool) -> Value {
    let edges: Vec<Value> = (0..EDGES + EDGES / 20)
        .filter(|i| if after { *i >= EDGES / 20 } else { *i < EDGES })
        .map(|i| match (after, i % 10) {
            (true, 3) => edge(i, 200, 4_000),
            (true, 7) => edge(i, 1, 90_000),
            _ => edge(i, 1, 4_000),
        })
        .collect();
    let nodes: Vec<Value> = edges
        .iter()
        .flat_map(|e| [e["source"].clone(), e["target"].clone()])
        .map(|id| json!({"id": id, "name": id, "namespace": "ns", "kind": "pod"}))
        .collect();
    json!({"nodes": nodes, "edges": edges})
}

fn bench(c: &mut Criterion) {
    let (before, after) = (window(false), window(true));
    let d = diff(Window { map: &before, secs: 60.0 }, Window { map: &after, secs: 60.0 }, &Thresholds::default());
    let count = |k: &str| d[k].as_array().map_or(0, Vec::len);
    assert_eq!((count("added"), count("removed")), (EDGES / 20, EDGES / 20));
    assert!(count("changed") > EDGES / 6, "{} changed", count("changed"));
    c.bench_function("map_diff/10k_edges", |b| {
        b.iter(|| {
            diff(
                Window { map: black_box(&before), secs: 60.0 },
                Window { map: black_box(&after), secs: 60.0 },
                &Thresholds::default(),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

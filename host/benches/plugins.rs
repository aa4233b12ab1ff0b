//! Plugin costs: one host→plugin call, replay throughput over the HTTP and
//! DNS corpus with the plugins sandboxed (wasm) and linked natively side by
//! side, and the memory an idle instance holds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::PathBuf;
use trawl_core::engine::Engine;
use trawl_core::{EngineConfig, LinkType, ServicePorts, Timestamp};
use trawl_host::capture::CaptureFile;
use trawl_host::plugins::dispatch::DispatchConfig;
use trawl_host::plugins::registry::PluginSet;
use trawl_host::plugins::wasm::{SandboxLimits, WasmRuntime};
use trawl_host::plugins::{Dispatcher, LoadedPlugin, SharedPlugin};
use trawl_sdk::abi::{ConnMeta, Dir, L4};

fn corpus() -> PathBuf {
    std::env::var_os("TRAWL_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

type Frames = Vec<(LinkType, Timestamp, Vec<u8>, u32)>;

/// Every frame of every capture that has HTTP/1.x or DNS in it.
fn http_dns_frames() -> (Frames, u64) {
    let dir = corpus();
    let mut files = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("pcap" | "pcapng")) {
                let exp = p.with_file_name(format!("{}.expected", p.file_name().unwrap().to_string_lossy()));
                if exp.join("http.tsv").is_file() || exp.join("dns.tsv").is_file() {
                    files.push(p);
                }
            }
        }
    }
    files.sort();
    let mut frames = Vec::new();
    let mut bytes = 0;
    for f in files {
        let mut c = CaptureFile::open(&f).unwrap();
        let _ = c.for_each_frame(|fr| {
            bytes += u64::from(fr.wire_len);
            frames.push((fr.link, fr.ts, fr.data.to_vec(), fr.wire_len));
        });
    }
    (frames, bytes)
}

/// One pass over the frames. The dispatcher (and so its plugin instances)
/// carries over between passes, as a worker's does between connections;
/// creating instances is a one-off cost measured by `instance_memory`.
fn replay(frames: &Frames, dispatcher: Dispatcher) -> (u64, Dispatcher) {
    let before = dispatcher.stats().records;
    let mut engine = Engine::new(EngineConfig::default(), ServicePorts::default(), dispatcher);
    for (link, ts, data, len) in frames {
        engine.process(*link, *ts, data, *len);
    }
    engine.finish();
    let mut dispatcher = engine.into_sink();
    // Records leave the dispatcher as the pipeline takes them.
    black_box(dispatcher.take_records());
    (dispatcher.stats().records - before, dispatcher)
}

fn run_with(frames: &Frames, slot: &mut Option<Dispatcher>) -> u64 {
    let (n, d) = replay(frames, slot.take().unwrap());
    *slot = Some(d);
    n
}

fn wasm_plugins() -> Vec<SharedPlugin> {
    let runtime = WasmRuntime::new(SandboxLimits::default()).unwrap();
    PluginSet::embedded(runtime).unwrap().plugins()
}

fn native_plugins() -> Vec<SharedPlugin> {
    common::native_first_party()
}

fn http(plugins: &[SharedPlugin]) -> &LoadedPlugin {
    plugins.iter().find(|p| p.info.name == "http").unwrap()
}

const REQUEST: &[u8] =
    b"GET /api/v1/items?id=42 HTTP/1.1\r\nHost: api.shop.svc\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n";

fn call_cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("call");
    for (label, plugins) in [("wasm", wasm_plugins()), ("native", native_plugins())] {
        let mut inst = http(&plugins).factory.instantiate().unwrap();
        g.bench_function(format!("probe_{label}"), |b| {
            b.iter(|| inst.probe(L4::Tcp, Dir::ToServer, black_box(REQUEST)).unwrap())
        });
        let meta = ConnMeta {
            l4: L4::Tcp,
            client: "10.0.0.1".parse().unwrap(),
            client_port: 40000,
            server: "10.0.0.2".parse().unwrap(),
            server_port: 80,
            midstream: false,
        };
        inst.open(1, &meta).unwrap();
        g.bench_function(format!("data_request_{label}"), |b| {
            b.iter(|| inst.data(1, Dir::ToServer, 0, 0, black_box(REQUEST), 0).unwrap())
        });
    }
    g.finish();
}

fn corpus_throughput(c: &mut Criterion) {
    let (frames, bytes) = http_dns_frames();
    if frames.is_empty() {
        eprintln!("SKIP corpus bench: no corpus at {}", corpus().display());
        return;
    }
    let mut g = c.benchmark_group("replay_http_dns_corpus");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(20);
    let mut wasm = Some(Dispatcher::new(DispatchConfig::default(), wasm_plugins()));
    let mut native = Some(Dispatcher::new(DispatchConfig::default(), native_plugins()));
    assert_eq!(run_with(&frames, &mut wasm), run_with(&frames, &mut native), "wasm and native must agree");
    g.bench_function("wasm", |b| b.iter(|| run_with(&frames, &mut wasm)));
    g.bench_function("native", |b| b.iter(|| run_with(&frames, &mut native)));
    g.finish();
}

fn resident_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4
}

/// Not a timing: resident memory per idle wasm instance, printed once.
fn instance_memory(_c: &mut Criterion) {
    let plugins = wasm_plugins();
    let plugin = http(&plugins);
    let warm = plugin.factory.instantiate().unwrap();
    drop(warm);
    let before = resident_kib();
    let n = 200;
    // Each instance has served one probe, so its stack, heap and input
    // window are touched: idle, but not pristine.
    let instances: Vec<_> = (0..n)
        .map(|_| {
            let mut i = plugin.factory.instantiate().unwrap();
            i.probe(L4::Tcp, Dir::ToServer, REQUEST).unwrap();
            i
        })
        .collect();
    let after = resident_kib();
    println!(
        "instance_memory: {n} idle http instances: {} KiB resident, {:.1} KiB each",
        after - before,
        (after - before) as f64 / n as f64
    );
    drop(instances);
}

criterion_group!(benches, call_cost, corpus_throughput, instance_memory);
criterion_main!(benches);

//! Per-plugin parsing speed, wasm against native in one run: each plugin is
//! fed one long conversation of whole messages (as reassembly hands them
//! over) and the throughput is payload bytes per second.
//!
//! The conversations are generated here so each plugin gets a body-heavy
//! workload of its own protocol (16 KiB HTTP/2 DATA frames, 16 KiB Kafka
//! record batches, 1 KiB Redis values, 8 KiB HTTP/1.1 bodies); the first
//! pass checks that every byte was consumed and records came out, so the
//! numbers are for real parsing, not an early detach.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use trawl_host::plugins::registry::PluginSet;
use trawl_host::plugins::wasm::{SandboxLimits, WasmRuntime};
use trawl_host::plugins::{PluginInstance, SharedPlugin};
use trawl_sdk::abi::{ConnMeta, Dir, L4, Status};

/// What one connection (or UDP flow) carries, in arrival order.
enum Chunk {
    Stream(Dir, Vec<u8>),
    Datagram(Dir, Vec<u8>),
}

/// Packs small messages of one direction into segments of up to 64 KiB,
/// as TCP reassembly would deliver them.
fn segments(out: &mut Vec<Chunk>, dir: Dir, messages: impl IntoIterator<Item = Vec<u8>>) {
    let mut seg = Vec::new();
    for m in messages {
        if !seg.is_empty() && seg.len() + m.len() > 64 * 1024 {
            out.push(Chunk::Stream(dir, std::mem::take(&mut seg)));
        }
        seg.extend_from_slice(&m);
    }
    if !seg.is_empty() {
        out.push(Chunk::Stream(dir, seg));
    }
}

const ROUNDS: usize = 200;

fn http1() -> Vec<Chunk> {
    let mut out = Vec::new();
    let body = vec![b'x'; 8 * 1024];
    for i in 0..ROUNDS {
        let req = format!(
            "GET /api/items/{i}?page=2 HTTP/1.1\r\nHost: api.shop.svc\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
        );
        out.push(Chunk::Stream(Dir::ToServer, req.into_bytes()));
        let mut resp =
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len())
                .into_bytes();
        resp.extend_from_slice(&body);
        out.push(Chunk::Stream(Dir::ToClient, resp));
    }
    out
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut b = vec![0, name.len() as u8];
    b.extend_from_slice(name.as_bytes());
    b.push(value.len() as u8);
    b.extend_from_slice(value.as_bytes());
    b
}

/// HTTP/2 (or gRPC): a preface, then streams whose responses carry 64 KiB
/// in 16 KiB DATA frames.
fn h2(grpc: bool) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut first = trawl_h2::frame::PREFACE.to_vec();
    first.extend(h2_frame(4, 0, 0, &[]));
    out.push(Chunk::Stream(Dir::ToServer, first));
    let content_type = if grpc { "application/grpc" } else { "application/json" };
    for i in 0..ROUNDS as u32 {
        let id = 2 * i + 1;
        let path = if grpc { "/shop.Catalog/ListProducts".to_string() } else { format!("/api/items/{i}") };
        let block = [vec![0x83, 0x86], literal(":path", &path), literal("content-type", content_type)].concat();
        let mut req = h2_frame(1, 0x4, id, &block);
        let message = if grpc { vec![0, 0, 0, 0, 3, 8, 1, 16] } else { b"{}".to_vec() };
        req.extend(h2_frame(0, 0x1, id, &message));
        out.push(Chunk::Stream(Dir::ToServer, req));
        let mut resp = h2_frame(1, 0x4, id, &[vec![0x88], literal("content-type", content_type)].concat());
        for f in 0..4 {
            let mut data = vec![0u8; 16 * 1024];
            if grpc {
                // One message per frame: 5-byte prefix + 16379 bytes.
                data[1..5].copy_from_slice(&(16 * 1024 - 5u32).to_be_bytes());
            }
            let end = !grpc && f == 3;
            resp.extend(h2_frame(0, u8::from(end), id, &data));
        }
        if grpc {
            resp.extend(h2_frame(1, 0x5, id, &literal("grpc-status", "0")));
        }
        out.push(Chunk::Stream(Dir::ToClient, resp));
    }
    out
}

fn redis() -> Vec<Chunk> {
    let value = "v".repeat(1024);
    let mut out = Vec::new();
    // Pipelined: a batch of commands, then its replies.
    for batch in 0..ROUNDS / 10 {
        let reqs = (0..50).map(|i| {
            let key = format!("cart:{batch}:{i}");
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n", key.len(), value.len()).into_bytes()
        });
        segments(&mut out, Dir::ToServer, reqs);
        segments(&mut out, Dir::ToClient, (0..50).map(|_| b"+OK\r\n".to_vec()));
    }
    out
}

fn kafka_frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as i32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// Produce v7: one topic, one partition, a 16 KiB record batch each.
fn kafka() -> Vec<Chunk> {
    let mut out = Vec::new();
    let batch = vec![0u8; 16 * 1024];
    for corr in 0..ROUNDS as i32 {
        let mut b = Vec::new();
        b.extend_from_slice(&0i16.to_be_bytes()); // api key: Produce
        b.extend_from_slice(&7i16.to_be_bytes());
        b.extend_from_slice(&corr.to_be_bytes());
        b.extend_from_slice(&5i16.to_be_bytes());
        b.extend_from_slice(b"bench");
        b.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
        b.extend_from_slice(&1i16.to_be_bytes()); // acks
        b.extend_from_slice(&30_000i32.to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes()); // topics
        b.extend_from_slice(&6i16.to_be_bytes());
        b.extend_from_slice(b"orders");
        b.extend_from_slice(&1i32.to_be_bytes()); // partitions
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&(batch.len() as i32).to_be_bytes());
        b.extend_from_slice(&batch);
        out.push(Chunk::Stream(Dir::ToServer, kafka_frame(&b)));
        let mut r = corr.to_be_bytes().to_vec();
        r.extend_from_slice(&1i32.to_be_bytes());
        r.extend_from_slice(&6i16.to_be_bytes());
        r.extend_from_slice(b"orders");
        r.extend_from_slice(&1i32.to_be_bytes());
        r.extend_from_slice(&0i32.to_be_bytes()); // partition
        r.extend_from_slice(&0i16.to_be_bytes()); // error
        r.extend_from_slice(&42i64.to_be_bytes()); // base offset
        r.extend_from_slice(&(-1i64).to_be_bytes()); // log append time
        r.extend_from_slice(&0i64.to_be_bytes()); // log start offset
        r.extend_from_slice(&0i32.to_be_bytes()); // throttle
        out.push(Chunk::Stream(Dir::ToClient, kafka_frame(&r)));
    }
    out
}

/// A/AAAA lookups and their answers, one datagram each.
fn dns() -> Vec<Chunk> {
    let mut out = Vec::new();
    for id in 0..ROUNDS as u16 * 5 {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in ["cart-redis", "shop", "svc", "cluster", "local"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        let mut a = q.clone();
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 1;
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 96, 3, 7]);
        out.push(Chunk::Datagram(Dir::ToServer, q));
        out.push(Chunk::Datagram(Dir::ToClient, a));
    }
    out
}

fn meta(l4: L4, port: u16) -> ConnMeta {
    ConnMeta {
        l4,
        client: "10.0.0.1".parse().unwrap(),
        client_port: 40000,
        server: "10.0.0.2".parse().unwrap(),
        server_port: port,
        midstream: false,
    }
}

/// One conversation through a fresh connection; returns the records.
fn feed(inst: &mut dyn PluginInstance, conn: u64, meta: &ConnMeta, chunks: &[Chunk], strict: bool) -> usize {
    inst.open(conn, meta).unwrap();
    let mut records = 0;
    for c in chunks {
        let r = match c {
            Chunk::Stream(dir, bytes) => {
                let r = inst.data(conn, *dir, 0, 1, bytes, 0).unwrap();
                if strict {
                    assert_eq!((r.status, r.consumed as usize), (Status::Ok, bytes.len()), "partial parse");
                }
                r
            }
            Chunk::Datagram(dir, bytes) => inst.datagram(conn, *dir, 1, bytes).unwrap(),
        };
        records += r.events.len();
    }
    records + inst.close(conn, 2).unwrap().events.len()
}

fn plugin<'a>(plugins: &'a [SharedPlugin], name: &str) -> &'a SharedPlugin {
    plugins.iter().find(|p| p.info.name == name).unwrap()
}

fn per_plugin(c: &mut Criterion) {
    let wasm = PluginSet::embedded(WasmRuntime::new(SandboxLimits::default()).unwrap()).unwrap().plugins();
    let native: Vec<SharedPlugin> = common::native_first_party();
    let workloads: [(&str, &str, L4, u16, Vec<Chunk>); 6] = [
        ("http1", "http", L4::Tcp, 80, http1()),
        ("http2", "http", L4::Tcp, 80, h2(false)),
        ("grpc", "grpc", L4::Tcp, 50051, h2(true)),
        ("redis", "redis", L4::Tcp, 6379, redis()),
        ("kafka", "kafka", L4::Tcp, 9092, kafka()),
        ("dns", "dns", L4::Udp, 53, dns()),
    ];
    for (label, name, l4, port, chunks) in &workloads {
        let bytes: usize = chunks
            .iter()
            .map(|c| match c {
                Chunk::Stream(_, b) | Chunk::Datagram(_, b) => b.len(),
            })
            .sum();
        let mut g = c.benchmark_group(format!("parse_{label}"));
        g.throughput(Throughput::Bytes(bytes as u64));
        g.sample_size(20);
        let meta = meta(*l4, *port);
        for (kind, plugins) in [("wasm", &wasm), ("native", &native)] {
            let mut inst = plugin(plugins, name).factory.instantiate().unwrap();
            let records = feed(inst.as_mut(), 1, &meta, chunks, true);
            assert!(records >= ROUNDS, "{label} {kind}: {records} records");
            let mut conn = 1;
            g.bench_function(kind, |b| {
                b.iter(|| {
                    conn += 1;
                    feed(inst.as_mut(), conn, &meta, chunks, false)
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, per_plugin);
criterion_main!(benches);

//! Decode plus flow accounting, per packet, on a synthetic mix that looks
//! like a busy node: many concurrent TCP connections with small and large
//! segments, and DNS over UDP.
#![allow(clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use std::hint::black_box;
use trawl_core::decode::{Decoded, decode};
use trawl_core::flow::{FlowTable, FlowTableConfig};
use trawl_core::{Engine, EngineConfig, LinkType, ServicePorts, Timestamp};

/// `flows` connections, `per_flow` packets each, interleaved.
fn traffic(flows: u32, per_flow: u32) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let payload_small = [0x42u8; 64];
    let payload_large = [0x17u8; 1400];
    for round in 0..per_flow {
        for f in 0..flows {
            let client = [10, 244, (f >> 8) as u8, f as u8];
            let server = [10, 96, 0, (f % 7) as u8];
            let sport = 32768 + (f % 28000) as u16;
            let mut out = Vec::with_capacity(1500);
            if f % 10 == 0 {
                PacketBuilder::ethernet2([1; 6], [2; 6])
                    .ipv4(client, server, 64)
                    .udp(sport, 53)
                    .write(&mut out, &payload_small[..40])
                    .unwrap();
            } else {
                let to_server = round % 2 == 0;
                let (src, dst, sp, dp) =
                    if to_server { (client, server, sport, 8080) } else { (server, client, 8080, sport) };
                let payload: &[u8] = if round % 3 == 0 { &payload_large } else { &payload_small };
                PacketBuilder::ethernet2([1; 6], [2; 6])
                    .ipv4(src, dst, 64)
                    .tcp(sp, dp, round * 1400, 65535)
                    .ack(round)
                    .write(&mut out, payload)
                    .unwrap();
            }
            frames.push(out);
        }
    }
    frames
}

fn bench(c: &mut Criterion) {
    let frames = traffic(10_000, 10);
    let mut group = c.benchmark_group("decode_flow");
    group.throughput(Throughput::Elements(frames.len() as u64));
    group.sample_size(20);

    group.bench_function("decode_only", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for f in &frames {
                if let Decoded::Packet(p) = decode(LinkType::Ethernet, f) {
                    n += u64::from(p.src_port);
                }
            }
            black_box(n)
        })
    });

    group.bench_function("decode_and_flow_table", |b| {
        b.iter(|| {
            let mut table = FlowTable::new(FlowTableConfig::default(), ServicePorts::default());
            for (i, f) in frames.iter().enumerate() {
                if let Decoded::Packet(p) = decode(LinkType::Ethernet, f) {
                    table.observe(&p, f.len() as u32, Timestamp(i as u64 * 1000));
                }
            }
            black_box(table.len())
        })
    });

    group.bench_function("engine_l4_only", |b| {
        b.iter(|| {
            let mut engine = Engine::l4_only(EngineConfig::default(), ServicePorts::default());
            for (i, f) in frames.iter().enumerate() {
                engine.process(LinkType::Ethernet, Timestamp(i as u64 * 1000), f, f.len() as u32);
            }
            engine.finish();
            black_box(engine.take_deltas().len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

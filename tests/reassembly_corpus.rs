//! TCP reassembly over the real captures. On the lossless loopback captures
//! in `made/`, every direction of every connection must come out whole: no
//! gaps, and exactly the payload bytes tshark counted (`tcp.len` summed per
//! stream and direction in `frames.tsv`). Every other capture must go through
//! without a panic, with bytes delivered plus gaps equal to stream length.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use trawl_core::engine::{ConnInfo, Engine, EngineConfig, StreamSink};
use trawl_core::reassembly::StreamEvent;
use trawl_core::{Direction, ServicePorts, Timestamp};
use trawl_host::capture::CaptureFile;

type Key = (String, String, Direction);

#[derive(Default)]
struct Tally {
    /// (client, server, direction) → (bytes delivered, gap bytes).
    streams: BTreeMap<Key, (u64, u64)>,
}

fn key(conn: &ConnInfo, dir: Direction) -> Key {
    let ep = |e: &trawl_core::Endpoint| format!("{}:{}", e.ip, e.port);
    (ep(&conn.client), ep(&conn.server), dir)
}

impl StreamSink for Tally {
    fn on_stream(&mut self, conn: &ConnInfo, dir: Direction, _: Timestamp, ev: StreamEvent<'_>) {
        let e = self.streams.entry(key(conn, dir)).or_default();
        match ev {
            StreamEvent::Data { bytes, .. } => e.0 += bytes.len() as u64,
            StreamEvent::Gap { len, .. } => e.1 += len,
            _ => {}
        }
    }
    fn on_datagram(&mut self, _: &ConnInfo, _: Direction, _: Timestamp, _: &[u8]) {}
    fn on_close(&mut self, _: &ConnInfo) {}
}

fn reassemble(capture: &Path) -> Engine<Tally> {
    let mut engine = Engine::new(EngineConfig::default(), ServicePorts::default(), Tally::default());
    let mut file = CaptureFile::open(capture).unwrap();
    file.for_each_frame(|f| engine.process(f.link, f.ts, f.data, f.wire_len)).unwrap();
    engine.finish();
    engine
}

/// tshark's payload bytes per (client, server, direction), client = SYN sender.
fn tshark_payload(frames_tsv: &Path) -> BTreeMap<Key, u64> {
    let text = std::fs::read_to_string(frames_tsv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (src, src6, sport, dst, dst6, dport, stream, len, flags) = (
        col("ip.src"),
        col("ipv6.src"),
        col("tcp.srcport"),
        col("ip.dst"),
        col("ipv6.dst"),
        col("tcp.dstport"),
        col("tcp.stream"),
        col("tcp.len"),
        col("tcp.flags.str"),
    );
    let mut client_of: BTreeMap<String, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split('\t').collect();
        if f[stream].is_empty() {
            continue;
        }
        let a = format!("{}:{}", if f[src].is_empty() { f[src6] } else { f[src] }, f[sport]);
        let b = format!("{}:{}", if f[dst].is_empty() { f[dst6] } else { f[dst] }, f[dport]);
        let syn = f[flags].contains('S') && !f[flags].contains('A');
        let client =
            client_of.entry(f[stream].to_string()).or_insert_with(|| if syn { a.clone() } else { String::new() });
        let (k, dir) = if *client == a { ((a, b), Direction::ToServer) } else { ((b, a), Direction::ToClient) };
        *out.entry((k.0, k.1, dir)).or_insert(0) += f[len].parse::<u64>().unwrap_or(0);
    }
    out
}

#[test]
fn loopback_captures_reassemble_without_gaps() {
    let Some(corpus) = support::corpus() else {
        return;
    };
    for name in ["made/http1.pcap", "made/http2_h2c.pcap", "made/redis_resp2.pcap", "made/dns.pcap"] {
        let capture = corpus.join(name);
        let engine = reassemble(&capture);
        let stats = engine.stats().reassembly;
        assert_eq!(stats.gaps, 0, "{name}: {stats:?}");
        let expected = tshark_payload(&corpus.join(format!("{name}.expected/frames.tsv")));
        let got: BTreeMap<Key, u64> =
            engine.sink().streams.iter().map(|(k, (bytes, _))| (k.clone(), *bytes)).filter(|(_, b)| *b > 0).collect();
        let expected: BTreeMap<Key, u64> = expected.into_iter().filter(|(_, b)| *b > 0).collect();
        assert_eq!(got, expected, "{name}");
        assert!(stats.delivered_bytes > 0);
    }
}

#[test]
fn every_capture_reassembles_consistently() {
    let Some(corpus) = support::corpus() else {
        return;
    };
    for capture in support::captures(&corpus) {
        let engine = reassemble(&capture);
        let s = engine.stats().reassembly;
        let (delivered, gaps) =
            engine.sink().streams.values().fold((0, 0), |(d, g), (bytes, gap)| (d + bytes, g + gap));
        assert_eq!((delivered, gaps), (s.delivered_bytes, s.gap_bytes), "{}", capture.display());
    }
}

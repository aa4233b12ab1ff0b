//! The engine's reassembly budget, on frames built by etherparse.

use super::*;
use etherparse::PacketBuilder;

#[derive(Default)]
struct Gaps {
    /// (conn id, gap bytes, data bytes)
    seen: HashMap<u64, (u64, u64)>,
}

impl StreamSink for Gaps {
    fn on_stream(&mut self, conn: &ConnInfo, _: Direction, _: Timestamp, ev: StreamEvent<'_>) {
        let e = self.seen.entry(conn.id).or_default();
        match ev {
            StreamEvent::Gap { len, .. } => e.0 += len,
            StreamEvent::Data { bytes, .. } => e.1 += bytes.len() as u64,
            _ => {}
        }
    }
    fn on_datagram(&mut self, _: &ConnInfo, _: Direction, _: Timestamp, _: &[u8]) {}
    fn on_close(&mut self, _: &ConnInfo) {}
}

fn segment(port: u16, seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([1; 6], [2; 6]).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(port, 80, seq, 65535);
    let b = if syn { b.syn() } else { b };
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap_or_default();
    out
}

#[test]
fn the_connection_that_crosses_the_reassembly_budget_gives_up_its_holes() {
    let config = EngineConfig { max_reassembly_bytes: 1000, ..EngineConfig::default() };
    let mut engine = Engine::new(config, ServicePorts::default(), Gaps::default());
    let ts = Timestamp(1);
    for port in [40001, 40002, 40003] {
        engine.process(LinkType::Ethernet, ts, &segment(port, 100, true, b""), 60);
        // The first 10 bytes after the SYN never come: 400 bytes wait.
        engine.process(LinkType::Ethernet, ts, &segment(port, 111, false, &[b'x'; 400]), 460);
    }
    let stats = engine.stats();
    assert_eq!(stats.reassembly.budget_releases, 1, "only the third crossed 1000 bytes");
    assert_eq!(stats.reassembly_held_bytes, 800, "the first two still wait");
    let third = engine.sink().seen.get(&3).copied().unwrap_or_default();
    assert_eq!(third, (10, 400), "the third's hole became a gap and its bytes went on");
    assert_eq!(engine.sink().seen.get(&1).map_or(0, |s| s.1), 0, "the first still waits for its hole");
    engine.finish();
    assert_eq!(engine.stats().reassembly_held_bytes, 0, "closing lets go of every held byte");
}

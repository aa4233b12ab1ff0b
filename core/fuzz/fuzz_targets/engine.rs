//! Random frames of every link type through the whole engine, with
//! reassembly on. Nothing may panic, and every frame must be accounted for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trawl_core::engine::{ConnInfo, Engine, EngineConfig, StreamSink};
use trawl_core::reassembly::StreamEvent;
use trawl_core::{Direction, LinkType, ServicePorts, Timestamp};

struct CountingSink(u64);

impl StreamSink for CountingSink {
    fn on_stream(&mut self, _: &ConnInfo, _: Direction, _: Timestamp, ev: StreamEvent<'_>) {
        if let StreamEvent::Data { bytes, .. } = ev {
            self.0 += bytes.len() as u64;
        }
    }
    fn on_datagram(&mut self, _: &ConnInfo, _: Direction, _: Timestamp, p: &[u8]) {
        self.0 += p.len() as u64;
    }
    fn on_close(&mut self, _: &ConnInfo) {}
}

const LINKS: [LinkType; 6] =
    [LinkType::Ethernet, LinkType::Raw, LinkType::LinuxSll, LinkType::LinuxSll2, LinkType::Null, LinkType::Ipv6];

fuzz_target!(|data: &[u8]| {
    let mut config = EngineConfig::default();
    config.flows.max_flows = 8;
    let mut engine = Engine::new(config, ServicePorts::default(), CountingSink(0));
    let mut frames = 0u64;
    // Frames are length-prefixed: [link, len, bytes…].
    let mut rest = data;
    let mut ts = 1u64;
    while rest.len() >= 2 {
        let link = LINKS[usize::from(rest[0]) % LINKS.len()];
        let len = usize::from(rest[1]).min(rest.len() - 2);
        let frame = &rest[2..2 + len];
        rest = &rest[2 + len..];
        ts += u64::from(rest.first().copied().unwrap_or(0)) * 100_000_000;
        engine.process(link, Timestamp(ts), frame, len as u32);
        frames += 1;
    }
    engine.finish();
    let s = engine.stats();
    assert_eq!(s.frames, frames);
    let skipped = s.skipped_non_ip
        + s.skipped_other_ip_protocol
        + s.skipped_malformed
        + s.skipped_unsupported_link
        + s.skipped_unattributed_fragments;
    assert_eq!(s.flow_packets + skipped, frames);
});

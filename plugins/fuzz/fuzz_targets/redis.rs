#![no_main]
#[path = "drive.rs"]
mod drive;

use trawl_plugin_redis::resp::{Decoder, Parsed, Step, parse};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    use trawl_sdk::Dissector;
    // The resumable decoder, fed in pieces as the host hands them over,
    // reads the same message as from one buffer.
    if let Parsed::Done(whole) = parse(data) {
        let piece = usize::from(data.first().copied().unwrap_or(1) % 16) + 1;
        let mut decoder = Decoder::default();
        let mut pending = Vec::new();
        let mut got = None;
        let mut skipping = 0usize;
        for chunk in data[..whole.size].chunks(piece) {
            let passed = skipping.min(chunk.len());
            skipping -= passed;
            pending.extend_from_slice(&chunk[passed..]);
            if skipping > 0 || got.is_some() {
                continue;
            }
            match decoder.feed(&pending) {
                Step::Done(m, _) => got = Some(m),
                Step::NeedMore { consumed, .. } => drop(pending.drain(..consumed)),
                Step::Skip { consumed, skip } => {
                    pending.drain(..consumed);
                    skipping = skip as usize;
                }
                Step::Desync => panic!("desync in pieces of {piece}"),
            }
        }
        if got.is_none()
            && let Step::Done(m, _) = decoder.feed(&pending)
        {
            got = Some(m);
        }
        assert_eq!(got, Some(whole));
    }
    let _ = trawl_plugin_redis::Redis::probe(trawl_sdk::L4::Tcp, trawl_sdk::Dir::ToServer, data);
    drive::drive::<trawl_plugin_redis::Redis>(data, trawl_sdk::L4::Tcp);
});

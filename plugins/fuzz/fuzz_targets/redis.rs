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
        for chunk in data[..whole.size].chunks(piece) {
            pending.extend_from_slice(chunk);
            match decoder.feed(&pending) {
                Step::Done(m, _) => got = Some(m),
                Step::NeedMore { consumed, .. } => drop(pending.drain(..consumed)),
                Step::Desync => panic!("desync in pieces of {piece}"),
            }
        }
        assert_eq!(got, Some(whole));
    }
    let _ = trawl_plugin_redis::Redis::probe(trawl_sdk::L4::Tcp, trawl_sdk::Dir::ToServer, data);
    drive::drive::<trawl_plugin_redis::Redis>(data, trawl_sdk::L4::Tcp);
});

//! Random bytes as a guest's output: what the host decodes from untrusted
//! linear memory after every call. It must never panic and must reject
//! results that claim more input than they were given.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let given = data.first().map_or(0, |b| usize::from(*b) * 16);
    // Both shapes the host accepts: ABI v1 (no skip) and v2.
    for version in [trawl_sdk::abi::ABI_OLDEST, trawl_sdk::abi::ABI_VERSION] {
        if let Ok(r) = trawl_sdk::abi::decode_result(data.get(1..).unwrap_or_default(), given, version) {
            assert!(r.consumed as usize <= given);
            assert!(r.events.len() <= trawl_sdk::abi::MAX_EVENTS);
        }
    }
    let _ = postcard::from_bytes::<trawl_sdk::PluginInfo>(data);
});

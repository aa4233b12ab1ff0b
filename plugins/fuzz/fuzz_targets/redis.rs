#![no_main]
#[path = "drive.rs"]
mod drive;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    use trawl_sdk::Dissector;
    let _ = trawl_plugin_redis::resp::parse(data);
    let _ = trawl_plugin_redis::Redis::probe(trawl_sdk::L4::Tcp, trawl_sdk::Dir::ToServer, data);
    drive::drive::<trawl_plugin_redis::Redis>(data, trawl_sdk::L4::Tcp);
});

#![no_main]
#[path = "drive.rs"]
mod drive;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    use trawl_sdk::Dissector;
    let _ = memcached::Memcached::probe(trawl_sdk::L4::Tcp, trawl_sdk::Dir::ToServer, data);
    drive::drive::<memcached::Memcached>(data, trawl_sdk::L4::Tcp);
});

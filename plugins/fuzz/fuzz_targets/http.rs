#![no_main]
#[path = "drive.rs"]
mod drive;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    use trawl_sdk::Dissector;
    let _ = trawl_plugin_http::Http::probe(trawl_sdk::L4::Tcp, trawl_sdk::Dir::ToServer, data);
    let _ = trawl_plugin_http::Http::probe(trawl_sdk::L4::Tcp, trawl_sdk::Dir::ToClient, data);
    drive::drive::<trawl_plugin_http::Http>(data, trawl_sdk::L4::Tcp);
});

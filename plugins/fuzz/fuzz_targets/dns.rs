#![no_main]
#[path = "drive.rs"]
mod drive;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = trawl_plugin_dns::message::parse(data);
    drive::drive::<trawl_plugin_dns::Dns>(data, trawl_sdk::L4::Tcp);
    drive::drive::<trawl_plugin_dns::Dns>(data, trawl_sdk::L4::Udp);
});

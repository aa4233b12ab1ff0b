#![no_main]
#[path = "drive.rs"]
mod drive;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    use trawl_sdk::Dissector;
    if data.len() >= 4 {
        let key = i16::from_be_bytes([data[0], data[1]]);
        let version = i16::from_be_bytes([data[2], data[3]]);
        let _ = trawl_plugin_kafka::apis::request_summary(key, version, &data[4..]);
        let _ = trawl_plugin_kafka::apis::response_error(key, version, &data[4..]);
    }
    let _ = trawl_plugin_kafka::Kafka::probe(trawl_sdk::L4::Tcp, trawl_sdk::Dir::ToServer, data);
    drive::drive::<trawl_plugin_kafka::Kafka>(data, trawl_sdk::L4::Tcp);
});

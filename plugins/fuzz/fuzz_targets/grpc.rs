//! The grpc plugin: its probe and first-HEADERS decoding on raw bytes, and
//! the plugin driven with random chunks after a client preface.
#![no_main]
#[path = "drive.rs"]
mod drive;

use trawl_sdk::Dissector;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = trawl_h2::first_headers(data);
    let _ = trawl_plugin_grpc::Grpc::probe(trawl_sdk::L4::Tcp, trawl_sdk::Dir::ToServer, data);
    let _ = trawl_plugin_grpc::Grpc::probe(trawl_sdk::L4::Tcp, trawl_sdk::Dir::ToClient, data);
    // `drive` reads [op, len, bytes…] chunks: the preface first.
    let mut framed = vec![0u8, trawl_h2::frame::PREFACE.len() as u8];
    framed.extend_from_slice(trawl_h2::frame::PREFACE);
    framed.extend_from_slice(data);
    drive::drive::<trawl_plugin_grpc::Grpc>(&framed, trawl_sdk::L4::Tcp);
});

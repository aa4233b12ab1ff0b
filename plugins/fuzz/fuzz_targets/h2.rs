//! HPACK and HTTP/2 framing on random bytes, and the http plugin driven
//! with a client preface in front so its HTTP/2 path gets the input.
#![no_main]
#[path = "drive.rs"]
mod drive;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut d = trawl_h2::hpack::Decoder::new();
    let _ = d.decode_lenient(data);
    let _ = d.decode(data);
    let _ = trawl_h2::hpack::huffman_decode(data);
    if let trawl_h2::frame::Parsed::Frame(f, _) = trawl_h2::frame::parse(data) {
        let _ = (f.header_block(), f.data(), f.error_code());
    }
    let mut with_preface = trawl_h2::frame::PREFACE.to_vec();
    with_preface.extend_from_slice(data);
    // `drive` reads [op, len, bytes…] chunks: one big ToServer chunk first.
    let mut framed = vec![0u8, 255];
    framed.extend_from_slice(&with_preface);
    drive::drive::<trawl_plugin_http::Http>(&framed, trawl_sdk::L4::Tcp);
});

//! Random bytes as a capture file (pcap, pcapng, or neither), read frame
//! by frame and each frame decoded as the engine does: a truncated or
//! hostile capture is an error, never a panic or a hang.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(mut file) = trawl_capture::CaptureFile::from_bytes("fuzz", data.to_vec()) {
        let _ = file.for_each_frame(|frame| {
            let _ = trawl_core::decode::decode(frame.link, frame.data);
        });
    }
});

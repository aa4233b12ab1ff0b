//! Random bytes as what a worker sends the hub: length-prefixed postcard
//! frames, decoded as the hub decodes them (the Hello under its small cap,
//! then frames up to the frame limit) and every frame that decodes merged
//! into a graph service as `trawl hub` merges it. A hostile or broken
//! worker gets an error, never a panic, a hang or a huge allocation.
#![no_main]

use std::sync::{Arc, Mutex};
use trawl_cluster::hub::merge;
use trawl_cluster::merge::Merger;
use trawl_cluster::proto::{ToHub, ToWorker, read_frame, read_frame_limited};
use trawl_service::{CaptureFilter, GraphState};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // What a hub would answer with, read the way a worker reads it.
    let _ = read_frame::<ToWorker>(&mut &data[..]);
    let mut input = data;
    if read_frame_limited::<ToHub>(&mut input, 64 * 1024).is_err() {
        return;
    }
    let mut state = GraphState::new(Arc::new(trawl_core::Identity::new()), CaptureFilter::default(), 10);
    let merger = Mutex::new(Merger::default());
    for _ in 0..32 {
        match read_frame::<ToHub>(&mut input) {
            Ok(msg) => merge(msg, &mut state, &merger, "node/worker", "node", "epoch"),
            Err(_) => break,
        }
    }
    // Whatever went in, the maps can still be drawn.
    let _ = state.l4(trawl_core::GroupBy::Pod).view();
});

//! Random segment sequences through one direction of TCP reassembly.
//! Checks what must always hold: events come in stream order without
//! overlap, nothing is delivered twice, and the buffer respects its cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trawl_core::reassembly::{ReassemblyConfig, Segment, StreamEvent, StreamReassembler};

fuzz_target!(|data: &[u8]| {
    let config = ReassemblyConfig { max_buffered_bytes: 4096, max_buffered_segments: 16 };
    let mut r = StreamReassembler::new(config);
    let mut next_offset = 0u64;
    let mut closed = false;
    let mut check = |ev: StreamEvent<'_>| {
        assert!(!closed, "event after FIN/RST: {ev:?}");
        match ev {
            StreamEvent::Data { offset, bytes } => {
                assert_eq!(offset, next_offset);
                assert!(!bytes.is_empty());
                next_offset += bytes.len() as u64;
            }
            StreamEvent::Gap { offset, len } => {
                assert_eq!(offset, next_offset);
                assert!(len > 0);
                next_offset += len;
            }
            StreamEvent::Fin | StreamEvent::Rst => closed = true,
            StreamEvent::Start { .. } => {}
        }
    };
    let base = u32::from_le_bytes([data.first().copied().unwrap_or(0), 0xff, 0xff, 0xff]);
    let mut rest = data.get(1..).unwrap_or_default();
    while rest.len() >= 4 {
        let (op, tail) = rest.split_at(4);
        rest = tail;
        let delta = u32::from(u16::from_le_bytes([op[0], op[1]]));
        let len = usize::from(op[2] & 0x3f).min(rest.len());
        let flags = op[3];
        let seq = base.wrapping_add(delta);
        if flags & 0x80 != 0 {
            r.peer_ack(seq, &mut check);
            continue;
        }
        let (payload, tail) = rest.split_at(len);
        rest = tail;
        let seg = Segment { seq, syn: flags & 1 != 0, fin: flags & 2 != 0, rst: flags & 4 != 0 && flags & 8 != 0, payload };
        r.segment(seg, &mut check);
        assert!(r.buffered_bytes() <= config.max_buffered_bytes);
    }
    r.flush(&mut check);
    let s = r.stats();
    assert_eq!(s.delivered_bytes + s.gap_bytes, next_offset);
});

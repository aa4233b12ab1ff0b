//! Drives a dissector the way the host does: random splits of a byte
//! stream across both directions, unconsumed tails kept, `needed` honoured,
//! skips let go by, gaps and FINs thrown in. Checks the host's invariants on every result.

use trawl_sdk::abi::{FLAG_FIN, FLAG_GAP, FLAG_SKIPPED};
use trawl_sdk::{ConnMeta, Dir, Dissector, Guest, L4, Status};

pub fn drive<D: Dissector>(data: &[u8], l4: L4) {
    let mut guest = Guest::<D>::default();
    let max_buffer = Guest::<D>::info().max_buffer as usize;
    let meta = ConnMeta {
        l4,
        client: "10.0.0.1".parse().unwrap(),
        client_port: 40000,
        server: "10.0.0.2".parse().unwrap(),
        server_port: 80,
        midstream: data.first().is_some_and(|b| b & 1 == 1),
    };
    guest.open(1, meta);
    let mut tails: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut skips = [0u64; 2];
    let mut rest = data;
    while rest.len() >= 2 {
        let (op, len) = (rest[0], usize::from(rest[1]) * 4);
        let len = len.min(rest.len() - 2);
        let chunk = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let dir = if op & 1 == 0 { Dir::ToServer } else { Dir::ToClient };
        let i = dir.code() as usize;
        if l4 == L4::Udp {
            let r = guest.datagram(1, dir, 0, chunk);
            assert!(r.consumed as usize <= chunk.len());
            continue;
        }
        let mut flags = match op >> 5 {
            1 => FLAG_GAP,
            2 => FLAG_FIN,
            _ => 0,
        };
        let mut chunk = chunk;
        if skips[i] > 0 && flags & FLAG_GAP == 0 {
            let n = skips[i].min(chunk.len() as u64);
            skips[i] -= n;
            chunk = &chunk[n as usize..];
            if skips[i] > 0 && flags & FLAG_FIN == 0 {
                continue;
            }
            if skips[i] == 0 {
                flags |= FLAG_SKIPPED;
            }
        }
        if flags & FLAG_GAP != 0 {
            tails[i].clear();
        }
        tails[i].extend_from_slice(chunk);
        let input = std::mem::take(&mut tails[i]);
        let r = guest.data(1, dir, flags, 0, &input, u64::from(op));
        assert!(r.consumed as usize <= input.len(), "consumed more than given");
        if r.status != Status::Ok {
            return;
        }
        tails[i] = input[r.consumed as usize..].to_vec();
        skips[i] = r.skip;
        assert!(r.skip == 0 || tails[i].is_empty(), "a skip starts after everything given");
        if tails[i].len() > max_buffer {
            return;
        }
    }
    guest.close(1, 0);
}

//! Drives a dissector the way the host does: random splits of a byte
//! stream across both directions, unconsumed tails kept, `needed` honoured,
//! skips let go by, gaps and FINs thrown in. Checks the host's invariants on every result.

use trawl_sdk::abi::FLAG_GAP;
use trawl_sdk::stream::{Feed, Offer};
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
    // The host's own bookkeeping of leftovers, `needed` and skips.
    let mut feeds = [Feed::default(), Feed::default()];
    let mut rest = data;
    while rest.len() >= 2 {
        let (op, len) = (rest[0], usize::from(rest[1]) * 4);
        let len = len.min(rest.len() - 2);
        let chunk = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let dir = if op & 1 == 0 { Dir::ToServer } else { Dir::ToClient };
        let feed = &mut feeds[dir.code() as usize];
        if l4 == L4::Udp {
            let r = guest.datagram(1, dir, 0, chunk);
            assert!(r.consumed as usize <= chunk.len());
            continue;
        }
        let (window, flags, gap) = match op >> 5 {
            1 => {
                let (_, lost) = feed.gap(u64::from(op));
                if lost == 0 {
                    continue;
                }
                (std::borrow::Cow::Borrowed(&[][..]), FLAG_GAP, lost)
            }
            fin => match feed.offer(chunk, fin == 2).1 {
                Offer::Hold => continue,
                Offer::Call { window, flags } => (window, flags, 0),
            },
        };
        let r = guest.data(1, dir, flags, 0, &window, gap);
        assert!(r.consumed as usize <= window.len(), "consumed more than given");
        if r.status != Status::Ok {
            return;
        }
        feed.settle(&window, &r);
        assert!(r.skip == 0 || feed.held() == 0, "a skip starts after everything given");
        if feed.held() > max_buffer {
            return;
        }
    }
    guest.close(1, 0);
}

//! Test a dissector natively, the way the host drives it: unconsumed bytes
//! are kept and offered again with what arrives next, `needed` is honoured,
//! skipped bytes are counted and never shown, and a gap drops the
//! incomplete tail.
//!
//! ```
//! # use trawl_sdk::{testing::Session, Dir, L4};
//! # #[derive(Default)] struct Nop;
//! # impl trawl_sdk::Dissector for Nop {
//! #   type Conn = ();
//! #   fn info() -> trawl_sdk::PluginInfo { unimplemented!() }
//! #   fn probe(_: L4, _: Dir, _: &[u8]) -> trawl_sdk::Probe { trawl_sdk::Probe::NoMatch }
//! #   fn data(&mut self, _: &mut (), _: &trawl_sdk::ConnMeta, _: Dir, _: u64, b: &[u8], _: &mut trawl_sdk::Output) -> trawl_sdk::Progress {
//! #       trawl_sdk::Progress::Done { consumed: b.len() as u32 } }
//! # }
//! let mut s = Session::<Nop>::tcp(80);
//! s.send(Dir::ToServer, b"hello");
//! s.close();
//! assert!(s.records.is_empty());
//! ```

use crate::abi::{ConnMeta, Dir, Event, FLAG_FIN, FLAG_GAP, FLAG_SKIPPED, L4, Record, Status};
use crate::{Dissector, Guest};

/// One connection through a dissector.
pub struct Session<D: Dissector> {
    guest: Guest<D>,
    tail: [Vec<u8>; 2],
    needed: [usize; 2],
    skip: [u64; 2],
    ts: u64,
    /// Bytes handed to the dissector, and bytes it skipped.
    pub copied: u64,
    pub skipped: u64,
    /// Records reported so far.
    pub records: Vec<Record>,
    /// Protocols the connection upgraded to.
    pub upgrades: Vec<String>,
    /// Status of the last call.
    pub status: Status,
}

impl<D: Dissector> std::fmt::Debug for Session<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("records", &self.records.len()).field("status", &self.status).finish()
    }
}

impl<D: Dissector> Session<D> {
    /// A TCP connection from 10.0.0.1:40000 to 10.0.0.2:`server_port`.
    pub fn tcp(server_port: u16) -> Self {
        Self::open(L4::Tcp, server_port)
    }

    /// A UDP flow from 10.0.0.1:40000 to 10.0.0.2:`server_port`.
    pub fn udp(server_port: u16) -> Self {
        Self::open(L4::Udp, server_port)
    }

    fn open(l4: L4, server_port: u16) -> Self {
        let mut guest = Guest::<D>::default();
        let meta = ConnMeta {
            l4,
            client: std::net::Ipv4Addr::new(10, 0, 0, 1).into(),
            client_port: 40000,
            server: std::net::Ipv4Addr::new(10, 0, 0, 2).into(),
            server_port,
            midstream: false,
        };
        let r = guest.open(1, meta);
        let mut s = Session {
            guest,
            tail: [Vec::new(), Vec::new()],
            needed: [0, 0],
            skip: [0, 0],
            ts: 0,
            copied: 0,
            skipped: 0,
            records: Vec::new(),
            upgrades: Vec::new(),
            status: r.status,
        };
        s.take(r.events);
        s
    }

    fn take(&mut self, events: Vec<Event>) {
        for e in events {
            match e {
                Event::Record(r) => self.records.push(r),
                Event::Upgrade { protocol } => self.upgrades.push(protocol),
            }
        }
    }

    /// Bytes of one direction, as one segment.
    pub fn send(&mut self, dir: Dir, bytes: &[u8]) {
        self.send_flags(dir, bytes, 0, 0);
    }

    /// The same bytes one at a time: every split point is exercised.
    pub fn bytewise(&mut self, dir: Dir, bytes: &[u8]) {
        for b in bytes {
            self.send(dir, std::slice::from_ref(b));
        }
    }

    /// `len` bytes of `dir` were lost.
    pub fn gap(&mut self, dir: Dir, len: u64) {
        self.send_flags(dir, &[], FLAG_GAP, len);
    }

    /// The sender of `dir` finished.
    pub fn fin(&mut self, dir: Dir) {
        self.send_flags(dir, &[], FLAG_FIN, 0);
    }

    fn send_flags(&mut self, dir: Dir, mut bytes: &[u8], mut flags: u32, mut gap: u64) {
        self.ts += 1;
        let i = dir.code() as usize;
        if self.skip[i] > 0 {
            // Lost or not, skipped bytes are the dissector's wish.
            let n = if flags & FLAG_GAP != 0 { gap } else { bytes.len() as u64 }.min(self.skip[i]);
            self.skip[i] -= n;
            self.skipped += n;
            if flags & FLAG_GAP != 0 {
                gap -= n;
                if gap == 0 {
                    flags &= !FLAG_GAP;
                }
            } else {
                bytes = &bytes[n as usize..];
            }
            if self.skip[i] > 0 && flags & FLAG_FIN == 0 {
                return;
            }
            if self.skip[i] == 0 {
                flags |= FLAG_SKIPPED;
            }
        }
        if flags & FLAG_GAP != 0 {
            self.tail[i].clear();
        }
        self.tail[i].extend_from_slice(bytes);
        if flags == 0 && self.tail[i].len() < self.needed[i] {
            return;
        }
        let input = std::mem::take(&mut self.tail[i]);
        self.copied += input.len() as u64;
        let r = self.guest.data(1, dir, flags, self.ts, &input, gap);
        self.status = r.status;
        self.take(r.events);
        self.tail[i] = input[(r.consumed as usize).min(input.len())..].to_vec();
        self.needed[i] = r.needed as usize;
        self.skip[i] = r.skip;
    }

    /// One UDP datagram.
    pub fn datagram(&mut self, dir: Dir, bytes: &[u8]) {
        self.ts += 1;
        let r = self.guest.datagram(1, dir, self.ts, bytes);
        self.status = r.status;
        self.take(r.events);
    }

    /// Closes the connection; the dissector reports what is pending.
    pub fn close(&mut self) {
        self.ts += 1;
        let r = self.guest.close(1, self.ts);
        self.take(r.events);
    }
}

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
//! #   fn info() -> trawl_sdk::PluginInfo { trawl_sdk::PluginInfo::new("nop") }
//! #   fn probe(_: L4, _: Dir, _: &[u8]) -> trawl_sdk::Probe { trawl_sdk::Probe::NoMatch }
//! #   fn data(&mut self, _: &mut (), _: &mut trawl_sdk::Ctx<'_>, b: &[u8]) -> trawl_sdk::Progress {
//! #       trawl_sdk::Progress::Done { consumed: b.len() as u32 } }
//! # }
//! let mut s = Session::<Nop>::tcp(80);
//! s.send(Dir::ToServer, b"hello");
//! s.close();
//! assert!(s.records.is_empty());
//! ```

use crate::abi::{ConnMeta, Dir, Event, FLAG_GAP, L4, Record, Status};
use crate::stream::{Feed, Offer};
use crate::{Dissector, Guest};

/// One connection through a dissector.
pub struct Session<D: Dissector> {
    guest: Guest<D>,
    feeds: [Feed; 2],
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
    /// Why the host would have let the connection go (a gap the plugin does
    /// not accept, a tail over its `max_buffer`); nothing more is fed then.
    pub detached: Option<String>,
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
            feeds: [Feed::default(), Feed::default()],
            ts: 0,
            copied: 0,
            skipped: 0,
            records: Vec::new(),
            upgrades: Vec::new(),
            status: r.status,
            detached: None,
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
        if self.detached.is_some() {
            return;
        }
        self.ts += 1;
        let (passed, offer) = self.feeds[dir.code() as usize].offer(bytes, false);
        self.skipped += passed;
        self.call(dir, offer);
    }

    /// The same bytes one at a time: every split point is exercised.
    pub fn bytewise(&mut self, dir: Dir, bytes: &[u8]) {
        for b in bytes {
            self.send(dir, std::slice::from_ref(b));
        }
    }

    /// `len` bytes of `dir` were lost.
    pub fn gap(&mut self, dir: Dir, len: u64) {
        if self.detached.is_some() {
            return;
        }
        self.ts += 1;
        let (passed, lost) = self.feeds[dir.code() as usize].gap(len);
        self.skipped += passed;
        if lost > 0 && !D::info().accepts_gaps {
            self.detached = Some(format!("{lost} bytes lost, and the plugin does not accept gaps"));
            self.close();
        } else if lost > 0 {
            let r = self.guest.data(1, dir, FLAG_GAP, self.ts, &[], lost);
            self.settle(dir, &[], r);
        }
    }

    /// The sender of `dir` finished.
    pub fn fin(&mut self, dir: Dir) {
        if self.detached.is_some() {
            return;
        }
        self.ts += 1;
        let (_, offer) = self.feeds[dir.code() as usize].offer(&[], true);
        self.call(dir, offer);
    }

    fn call(&mut self, dir: Dir, offer: Offer<'_>) {
        let Offer::Call { window, flags } = offer else { return };
        self.copied += window.len() as u64;
        let r = self.guest.data(1, dir, flags, self.ts, &window, 0);
        self.settle(dir, &window, r);
    }

    fn settle(&mut self, dir: Dir, window: &[u8], r: crate::DataResult) {
        self.status = r.status;
        let feed = &mut self.feeds[dir.code() as usize];
        self.skipped += feed.settle(window, &r);
        let held = feed.held();
        self.take(r.events);
        if held > D::info().max_buffer as usize {
            self.detached = Some(format!("{held} bytes held, over the plugin's max_buffer"));
            self.close();
        }
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

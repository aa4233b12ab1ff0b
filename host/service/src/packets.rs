//! The recent packets the pipeline dissected (live: those of targeted
//! workloads), kept whole in a ring bounded in bytes, so `GET /api/pcap`
//! can hand an edge's or a filter's packets to Wireshark. The oldest leave
//! first, and are counted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use trawl_core::{LinkType, Timestamp};

/// Bytes the ring holds by default (`--pcap-ring-mib`).
pub const DEFAULT_RING_BYTES: usize = 16 << 20;

/// One captured frame, as it was captured. Its bytes are shared, so a
/// reader copies the ring's list under its lock and decodes outside it.
/// `Bytes` takes a frame's `Vec` without copying it (live capture hands
/// its frames over whole).
#[derive(Clone, Debug)]
pub struct RingFrame {
    pub link: LinkType,
    pub ts: Timestamp,
    pub wire_len: u32,
    pub data: bytes::Bytes,
}

impl RingFrame {
    /// What it costs the ring: its bytes and its bookkeeping.
    fn cost(&self) -> usize {
        self.data.len() + std::mem::size_of::<RingFrame>()
    }
}

#[derive(Debug, Default)]
pub struct PacketRing {
    frames: VecDeque<RingFrame>,
    held: usize,
    budget: usize,
    /// Frames that left for the budget.
    pub evicted: u64,
    /// Frames ever taken in.
    pub taken: u64,
}

pub type SharedRing = Arc<Mutex<PacketRing>>;

impl PacketRing {
    pub fn shared(budget: usize) -> SharedRing {
        Arc::new(Mutex::new(PacketRing { budget, ..PacketRing::default() }))
    }

    /// Adds frames, the oldest leaving while over budget.
    pub fn extend(&mut self, frames: impl IntoIterator<Item = RingFrame>) {
        for f in frames {
            self.held += f.cost();
            self.taken += 1;
            self.frames.push_back(f);
        }
        while self.held > self.budget {
            let Some(old) = self.frames.pop_front() else { break };
            self.held -= old.cost();
            self.evicted += 1;
        }
    }

    pub fn frames(&self) -> impl Iterator<Item = &RingFrame> {
        self.frames.iter()
    }

    /// The frames as of now (their bytes shared, not copied): to read
    /// without keeping capture waiting on the lock.
    pub fn snapshot(ring: &SharedRing) -> Vec<RingFrame> {
        ring.lock().unwrap_or_else(PoisonError::into_inner).frames.iter().cloned().collect()
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    pub fn held_bytes(&self) -> usize {
        self.held
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// Frames gathered between two collections, handed to the ring at once (so
/// the ring's lock is taken once per batch, not per packet).
#[derive(Debug)]
pub struct RingFeeder {
    ring: SharedRing,
    batch: Vec<RingFrame>,
    batched: usize,
    /// A batch this big goes to the ring at once: a replay at full speed
    /// brings gigabytes between two collections, which a batch must not
    /// hold beyond the ring's own budget.
    most: usize,
}

impl RingFeeder {
    pub fn new(ring: SharedRing) -> Self {
        let most = (ring.lock().unwrap_or_else(PoisonError::into_inner).budget / 4).max(1 << 16);
        RingFeeder { ring, batch: Vec::new(), batched: 0, most }
    }

    pub fn frame(&mut self, link: LinkType, ts: Timestamp, wire_len: u32, data: &[u8]) {
        self.frame_owned(link, ts, wire_len, data.to_vec());
    }

    /// [`Self::frame`] of a frame the caller gives up: kept without a copy.
    /// The ring counts the frame's length, so `data` should have no spare
    /// capacity (a `to_vec()` copy has none), which `Bytes` would keep.
    pub fn frame_owned(&mut self, link: LinkType, ts: Timestamp, wire_len: u32, data: Vec<u8>) {
        let frame = RingFrame { link, ts, wire_len, data: data.into() };
        self.batched += frame.cost();
        self.batch.push(frame);
        if self.batched >= self.most {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        if !self.batch.is_empty() {
            let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            ring.extend(self.batch.drain(..));
            self.batched = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_its_budget_and_counts_what_left() {
        let ring = PacketRing::shared(10 * (1000 + std::mem::size_of::<RingFrame>()));
        let mut feeder = RingFeeder::new(ring.clone());
        for i in 0..25u64 {
            feeder.frame(LinkType::Ethernet, Timestamp(i), 1000, &[0u8; 1000]);
        }
        feeder.flush();
        let ring = ring.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!((ring.len(), ring.evicted, ring.taken), (10, 15, 25));
        assert_eq!(ring.frames().next().map(|f| f.ts), Some(Timestamp(15)), "the newest stay");
    }

    #[test]
    fn a_batch_never_holds_more_than_a_quarter_of_the_budget() {
        let ring = PacketRing::shared(1 << 20);
        let mut feeder = RingFeeder::new(ring.clone());
        for i in 0..10_000u64 {
            feeder.frame(LinkType::Ethernet, Timestamp(i), 1500, &[0u8; 1500]);
            assert!(feeder.batched < (1 << 18) + 2000, "{} bytes batched", feeder.batched);
        }
        assert!(ring.lock().unwrap_or_else(PoisonError::into_inner).held_bytes() <= 1 << 20);
    }
}

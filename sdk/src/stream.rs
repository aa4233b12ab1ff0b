//! One direction of a stream as the host keeps it between calls: the bytes
//! a plugin left unconsumed, how many it needs before the next call is
//! worth making, and the bytes it asked to skip. The host's dispatcher,
//! [`crate::testing::Session`] and the fuzz driver all use this one
//! implementation, so a plugin is tested under exactly the rules it runs
//! under.

use crate::abi::{DataResult, FLAG_FIN, FLAG_SKIPPED};
use std::borrow::Cow;

/// Leftover bytes, `needed` and skips of one direction.
#[derive(Clone, Debug, Default)]
pub struct Feed {
    tail: Vec<u8>,
    needed: usize,
    skip: u64,
    skip_ended: bool,
}

/// What to do with the bytes that arrived.
#[derive(Debug)]
pub enum Offer<'a> {
    /// Not worth a call yet: kept for later (or skipped).
    Hold,
    /// Call the plugin with `window` (the kept tail, then the new bytes)
    /// and these flags ([`FLAG_FIN`], [`FLAG_SKIPPED`]).
    Call { window: Cow<'a, [u8]>, flags: u32 },
}

impl Feed {
    /// Bytes kept between calls.
    pub fn held(&self) -> usize {
        self.tail.len()
    }

    /// Bytes still to go by uncopied.
    pub fn skipping(&self) -> u64 {
        self.skip
    }

    /// Lets up to `len` bytes go by if the plugin asked to skip them;
    /// returns how many did.
    pub fn pass(&mut self, len: u64) -> u64 {
        let n = self.skip.min(len);
        self.skip -= n;
        if n > 0 && self.skip == 0 {
            self.skip_ended = true;
        }
        n
    }

    /// New in-order bytes (`fin`: the sender finished after them). Returns
    /// how many of them were skipped, and whether to call the plugin.
    /// Bytes with nothing left over from the last call are handed over as
    /// they are, uncopied.
    pub fn offer<'a>(&mut self, bytes: &'a [u8], fin: bool) -> (u64, Offer<'a>) {
        let passed = self.pass(bytes.len() as u64);
        let bytes = &bytes[passed as usize..];
        if self.skip > 0 && !fin {
            return (passed, Offer::Hold);
        }
        let skip_ended = std::mem::take(&mut self.skip_ended);
        let window = if self.tail.is_empty() {
            Cow::Borrowed(bytes)
        } else {
            let mut tail = std::mem::take(&mut self.tail);
            tail.extend_from_slice(bytes);
            Cow::Owned(tail)
        };
        if !fin && !skip_ended && window.len() < self.needed {
            self.tail = window.into_owned();
            return (passed, Offer::Hold);
        }
        let flags = if fin { FLAG_FIN } else { 0 } | if skip_ended { FLAG_SKIPPED } else { 0 };
        (passed, Offer::Call { window, flags })
    }

    /// `len` bytes were lost. Returns how many of them the plugin had asked
    /// to skip anyway (they lose it nothing), and how many it must hear
    /// of; when that is not 0 the tail is dropped (it cannot be finished).
    pub fn gap(&mut self, len: u64) -> (u64, u64) {
        let passed = self.pass(len);
        let lost = len - passed;
        if lost > 0 {
            self.tail.clear();
            self.needed = 0;
        }
        (passed, lost)
    }

    /// The plugin answered a call made with `window`: keeps what it did not
    /// consume and starts the skip it asked for. Returns how many bytes of
    /// the window that skip already covers (they go by here, uncounted as
    /// input).
    pub fn settle(&mut self, window: &[u8], r: &DataResult) -> u64 {
        let rest = &window[(r.consumed as usize).min(window.len())..];
        self.skip = r.skip;
        let passed = self.pass(rest.len() as u64);
        let rest = &rest[passed as usize..];
        self.tail = rest.to_vec();
        // A plugin that consumed nothing needs more than it was given.
        self.needed = (r.needed as usize).max(if r.consumed == 0 && !rest.is_empty() { rest.len() + 1 } else { 0 });
        passed
    }

    /// Forgets everything (the connection went elsewhere).
    pub fn clear(&mut self) {
        *self = Feed::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(consumed: u32, needed: u32, skip: u64) -> DataResult {
        DataResult { needed, skip, ..DataResult::ok(consumed, Vec::new()) }
    }

    #[test]
    fn tails_are_kept_needed_is_honoured_and_skips_go_by_uncopied() {
        let mut f = Feed::default();
        let Offer::Call { window, flags } = f.offer(b"abcd", false).1 else { panic!("first bytes are offered") };
        assert_eq!((&*window, flags), (&b"abcd"[..], 0));
        assert_eq!(f.settle(&window, &result(1, 6, 0)), 0);
        assert_eq!(f.held(), 3);
        assert!(matches!(f.offer(b"e", false).1, Offer::Hold), "4 bytes < 6 needed");
        let Offer::Call { window, .. } = f.offer(b"fg", false).1 else { panic!("6 bytes are enough") };
        assert_eq!(&*window, b"bcdefg");
        // Consumes 2, then skips 10: 4 of them are here already.
        assert_eq!(f.settle(&window, &result(2, 0, 10)), 4);
        let (passed, offer) = f.offer(b"12345", false);
        assert_eq!(passed, 5);
        assert!(matches!(offer, Offer::Hold), "still skipping");
        let (passed, offer) = f.offer(b"6xy", false);
        assert_eq!(passed, 1);
        let Offer::Call { window, flags } = offer else { panic!("the skip ended") };
        assert_eq!((&*window, flags), (&b"xy"[..], FLAG_SKIPPED));
    }

    #[test]
    fn a_gap_drops_the_tail_unless_it_was_to_be_skipped() {
        let mut f = Feed::default();
        let Offer::Call { window, .. } = f.offer(b"abc", false).1 else { panic!() };
        f.settle(&window, &result(0, 10, 0));
        assert_eq!(f.gap(5), (0, 5));
        assert_eq!(f.held(), 0);
        f.settle(&[], &result(0, 0, 8));
        assert_eq!(f.gap(5), (5, 0), "lost bytes it meant to skip cost nothing");
    }
}

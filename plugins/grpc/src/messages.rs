//! gRPC's length-prefixed messages inside a stream's DATA frames: a flag
//! byte (1 = compressed), a 4-byte big-endian length, the message. Messages
//! span DATA frames freely, so the count carries state from frame to frame.

use trawl_sdk::Dir;

/// Message framing of one direction of one stream.
#[derive(Debug, Default, Clone)]
pub(crate) struct Framing {
    /// Bytes of the 5-byte prefix read so far.
    prefix: [u8; 5],
    prefix_len: u8,
    /// Message bytes still to come after the current prefix.
    remaining: u64,
    pub messages: u64,
    pub message_bytes: u64,
    pub compressed: bool,
    /// A flag byte other than 0 or 1: the stream was joined inside a
    /// message (or is not gRPC). Counting stops rather than guessing.
    pub lost: bool,
}

impl Framing {
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.lost {
            if self.remaining > 0 {
                let take = (self.remaining).min(data.len() as u64);
                self.remaining -= take;
                data = &data[take as usize..];
                continue;
            }
            let want = 5 - usize::from(self.prefix_len);
            let take = want.min(data.len());
            self.prefix[usize::from(self.prefix_len)..usize::from(self.prefix_len) + take]
                .copy_from_slice(&data[..take]);
            self.prefix_len += take as u8;
            data = &data[take..];
            if self.prefix_len < 5 {
                return;
            }
            self.prefix_len = 0;
            let flag = self.prefix[0];
            if flag > 1 {
                self.lost = true;
                return;
            }
            let len = u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]);
            self.messages += 1;
            self.message_bytes += u64::from(len);
            self.compressed |= flag == 1;
            self.remaining = u64::from(len);
        }
    }
}

/// Both directions of a stream.
#[derive(Debug, Default)]
pub(crate) struct Messages {
    pub request: Framing,
    pub response: Framing,
}

impl Framing {
    /// Message bytes still to come once `next` is read: only their count
    /// matters, so they need not be seen. Counting that stopped needs
    /// nothing more.
    fn skippable_after(&self, next: &[u8]) -> u64 {
        let mut after = self.clone();
        after.feed(next);
        if after.lost { u64::MAX } else { after.remaining }
    }
}

impl Messages {
    fn framing(&self, dir: Dir) -> &Framing {
        match dir {
            Dir::ToServer => &self.request,
            Dir::ToClient => &self.response,
        }
    }

    fn framing_mut(&mut self, dir: Dir) -> &mut Framing {
        match dir {
            Dir::ToServer => &mut self.request,
            Dir::ToClient => &mut self.response,
        }
    }
}

impl trawl_h2::StreamExtra for Messages {
    fn data(&mut self, dir: Dir, payload: &[u8]) {
        self.framing_mut(dir).feed(payload);
    }

    fn skippable_after(&self, dir: Dir, next: &[u8]) -> u64 {
        self.framing(dir).skippable_after(next)
    }

    fn skipped(&mut self, dir: Dir, len: u64) {
        let f = self.framing_mut(dir);
        if !f.lost {
            f.remaining -= len.min(f.remaining);
        }
    }

    fn gap(&mut self, dir: Dir) {
        // Lost bytes inside a message leave the offset unknown; lost bytes
        // between messages (whole frames, as when a PING goes missing)
        // leave counting possible, if maybe short.
        let f = match dir {
            Dir::ToServer => &mut self.request,
            Dir::ToClient => &mut self.response,
        };
        f.lost |= f.remaining > 0 || f.prefix_len > 0;
    }

    fn joined(&mut self, dir: Dir) {
        // Counting on from an unknown offset would report garbage counts.
        match dir {
            Dir::ToServer => self.request.lost = true,
            Dir::ToClient => self.response.lost = true,
        }
    }
}

/// Whether a DATA payload is exactly whole gRPC messages, the strongest
/// sign of gRPC on a connection whose headers cannot be decoded.
pub(crate) fn whole_messages(payload: &[u8]) -> bool {
    let mut f = Framing::default();
    f.feed(payload);
    !f.lost && f.messages > 0 && f.remaining == 0 && f.prefix_len == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_across_frames() {
        let mut f = Framing::default();
        f.feed(&[0, 0, 0, 0, 3, b'a']);
        f.feed(&[b'b', b'c', 1, 0]);
        f.feed(&[0, 0, 0]);
        f.feed(&[0, 0, 0, 0, 1, b'z']);
        assert_eq!((f.messages, f.message_bytes, f.compressed, f.lost), (3, 4, true, false));
        assert!(whole_messages(&[0, 0, 0, 0, 2, 8, 1]));
        assert!(!whole_messages(&[0, 0, 0, 0, 9, 8, 1]));
        assert!(!whole_messages(b"GET / HTTP/1.1"));
    }
}

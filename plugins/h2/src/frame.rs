//! HTTP/2 frames: the 9-byte header and the payload parts trawl needs.

/// The client's connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Largest frame payload accepted (SETTINGS_MAX_FRAME_SIZE's ceiling).
pub const MAX_FRAME: usize = (1 << 24) - 1;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

/// A frame borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: &'a [u8],
}

/// Parse outcome: a frame and its total size, more bytes needed, or bytes
/// that are not HTTP/2 framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    Frame(Frame<'a>, usize),
    NeedMore(usize),
    Invalid,
}

pub fn parse(buf: &[u8]) -> Parsed<'_> {
    if buf.len() < 9 {
        return Parsed::NeedMore(9);
    }
    let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
    let kind = buf[3];
    if kind > CONTINUATION && len > 1 << 20 {
        // Unknown types are legal, but not of absurd size.
        return Parsed::Invalid;
    }
    let total = 9 + len;
    if buf.len() < total {
        return Parsed::NeedMore(total);
    }
    let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
    Parsed::Frame(Frame { kind, flags: buf[4], stream, payload: &buf[9..total] }, total)
}

/// The header of a DATA frame that is not all here: the frame (without
/// payload), its total size and its content length (padding excluded).
/// `None` unless `buf` starts a DATA frame on a stream whose padding
/// length (if any) is readable.
pub fn data_header(buf: &[u8]) -> Option<(Frame<'_>, usize, u64)> {
    if buf.len() < 10 || buf[3] != DATA {
        return None;
    }
    let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
    let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
    let flags = buf[4];
    let padding = if flags & PADDED != 0 { 1 + usize::from(buf[9]) } else { 0 };
    let body = len.checked_sub(padding)?;
    (stream != 0).then_some((Frame { kind: DATA, flags, stream, payload: &[] }, 9 + len, body as u64))
}

impl<'a> Frame<'a> {
    /// The header block fragment of HEADERS / PUSH_PROMISE / CONTINUATION,
    /// without padding and priority fields. `None` if the lengths lie.
    pub fn header_block(&self) -> Option<&'a [u8]> {
        let mut p = self.payload;
        let mut pad = 0usize;
        if matches!(self.kind, HEADERS | PUSH_PROMISE) && self.flags & PADDED != 0 {
            pad = usize::from(*p.first()?);
            p = &p[1..];
        }
        if self.kind == HEADERS && self.flags & PRIORITY_FLAG != 0 {
            p = p.get(5..)?;
        }
        if self.kind == PUSH_PROMISE {
            p = p.get(4..)?;
        }
        p.get(..p.len().checked_sub(pad)?)
    }

    /// DATA payload without padding.
    pub fn data(&self) -> Option<&'a [u8]> {
        if self.flags & PADDED == 0 {
            return Some(self.payload);
        }
        let pad = usize::from(*self.payload.first()?);
        self.payload.get(1..self.payload.len().checked_sub(pad)?)
    }

    /// GOAWAY's last stream id: higher streams were never processed.
    pub fn last_stream(&self) -> Option<u32> {
        if self.kind != GOAWAY {
            return None;
        }
        let b = self.payload.get(..4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
    }

    /// Error code of RST_STREAM and GOAWAY.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_with_padding_and_priority() {
        // HEADERS, PADDED|PRIORITY|END_HEADERS, stream 3, pad 2, 5 priority bytes, block "ab".
        let mut f = vec![0, 0, 10, HEADERS, PADDED | PRIORITY_FLAG | END_HEADERS, 0, 0, 0, 3, 2, 0, 0, 0, 0, 16];
        f.extend_from_slice(b"ab\0\0");
        let Parsed::Frame(frame, size) = parse(&f) else { panic!() };
        assert_eq!((frame.stream, size), (3, 19));
        assert_eq!(frame.header_block(), Some(&b"ab"[..]));
        assert_eq!(parse(&f[..12]), Parsed::NeedMore(19));
    }

    #[test]
    fn lying_padding_is_none_not_a_panic() {
        let f = [0, 0, 2, DATA, PADDED, 0, 0, 0, 1, 9, b'x'];
        let Parsed::Frame(frame, _) = parse(&f) else { panic!() };
        assert_eq!(frame.data(), None);
        let r = [0, 0, 4, RST_STREAM, 0, 0, 0, 0, 1, 0, 0, 0, 8];
        let Parsed::Frame(frame, _) = parse(&r) else { panic!() };
        assert_eq!(frame.error_code(), Some(8));
    }
}

//! One HTTP/2 connection as a dissector sees it: prior-knowledge h2c (the
//! preface), h2c after an HTTP/1.1 `Upgrade`, and connections joined
//! mid-stream. Streams are tracked until both sides end them (END_STREAM,
//! RST_STREAM, or the connection closing) and are then handed back whole.
//!
//! What a plugin wants from DATA frames differs (gRPC counts its
//! length-prefixed messages), so each stream carries an [`StreamExtra`] the
//! plugin chooses.

use crate::frame::{self, Frame, Parsed};
use crate::hpack;
use std::collections::BTreeMap;
use trawl_sdk::{Dir, Output, Progress, Record};

/// Streams tracked at once per connection.
pub const MAX_STREAMS: usize = 1024;
/// Largest header block (HEADERS + CONTINUATION) assembled.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// Decoded header fields, in wire order.
pub type Fields = Vec<(String, String)>;

/// Per-stream state a plugin adds; it sees the DATA payload it needs.
pub trait StreamExtra: Default + std::fmt::Debug {
    fn data(&mut self, _dir: Dir, _payload: &[u8]) {}
    /// How many payload bytes of `dir`, after `next` (which `data` is about
    /// to get), this extra does not need to see: those are only counted
    /// ([`StreamExtra::skipped`]) and the host lets them go by uncopied
    /// (ABI v2 skip). The default reads nothing.
    fn skippable_after(&self, _dir: Dir, _next: &[u8]) -> u64 {
        u64::MAX
    }
    /// `len` payload bytes of `dir` went by unseen, as `skippable_after`
    /// allowed.
    fn skipped(&mut self, _dir: Dir, _len: u64) {}
    /// Bytes of this direction were lost (a capture gap): the next DATA
    /// frame may or may not belong where the last one ended.
    fn gap(&mut self, _dir: Dir) {}
    /// The stream was first seen after its start (a frame other than
    /// HEADERS opened it): DATA may begin mid-message.
    fn joined(&mut self, _dir: Dir) {}
}

impl StreamExtra for () {}

/// One stream, request and response.
#[derive(Debug, Default)]
pub struct Stream<X> {
    pub id: u32,
    pub request: Fields,
    pub response: Fields,
    /// Trailing HEADERS of the response (gRPC status lives here).
    pub trailers: Fields,
    /// Wire bytes of the stream's frames, headers included, per direction.
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// DATA payload bytes (padding excluded) per direction.
    pub request_body: u64,
    pub response_body: u64,
    pub request_ts: Option<u64>,
    pub response_ts: Option<u64>,
    pub request_done: bool,
    pub response_done: bool,
    /// RST_STREAM error code, if the stream was reset.
    pub rst: Option<u32>,
    /// GOAWAY error code seen on the connection before the stream ended.
    pub goaway: Option<u32>,
    /// Some header block could not be decoded (HPACK table unknown).
    pub undecodable: bool,
    pub extra: X,
}

impl<X> Stream<X> {
    pub fn request_header(&self, name: &str) -> Option<&str> {
        header(&self.request, name)
    }
    pub fn response_header(&self, name: &str) -> Option<&str> {
        header(&self.response, name)
    }
    pub fn trailer(&self, name: &str) -> Option<&str> {
        header(&self.trailers, name)
    }
    /// A field of the trailers, or of the response headers (a
    /// trailers-only response carries them there).
    pub fn trailer_or_response(&self, name: &str) -> Option<&str> {
        self.trailer(name).or(self.response_header(name))
    }
    /// The final response's `:status`.
    pub fn status(&self) -> Option<i64> {
        status(&self.response)
    }
}

/// A header block being assembled from HEADERS and CONTINUATION frames.
#[derive(Debug)]
struct Pending {
    stream: u32,
    block: Vec<u8>,
    end_stream: bool,
}

/// A DATA frame whose payload the host is letting go by. It counts only
/// once its last byte has passed: a capture that ends inside it shows what
/// was seen, as when the frame is read whole.
#[derive(Debug, Clone)]
struct Skipped {
    stream: u32,
    flags: u8,
    /// Wire size and content length (padding excluded).
    size: u64,
    body: u64,
    /// The content that arrived with the header, and how much followed.
    here: Vec<u8>,
    to_come: u64,
    ts: u64,
}

/// HTTP/2 state of one connection.
#[derive(Debug, Default)]
pub struct Connection<X> {
    decoders: [hpack::Decoder; 2],
    preface_done: bool,
    pending: [Option<Pending>; 2],
    streams: BTreeMap<u32, Stream<X>>,
    goaway: Option<u32>,
    /// Bytes were lost in this direction: look for the next frame start.
    resync: [bool; 2],
    /// The DATA frame being skipped, per direction.
    skipping: [Option<Skipped>; 2],
    /// Streams already reported, newest last: a closed stream never opens
    /// again, so frames that still arrive for one (a client finishing an
    /// upload the server already answered and reset) are not a new stream.
    finished: std::collections::VecDeque<u32>,
}

/// Finished stream ids remembered per connection.
const MAX_FINISHED: usize = MAX_STREAMS;

/// First value of a header field.
pub fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Whether header fields belong to a gRPC call: a `content-type` of
/// `application/grpc…` (requests and responses), or `grpc-*` fields
/// (status trailers, timeouts, encodings).
pub fn is_grpc(fields: &[(String, String)]) -> bool {
    fields.iter().any(|(n, v)| {
        (n == "content-type" && v.to_ascii_lowercase().starts_with("application/grpc")) || n.starts_with("grpc-")
    })
}

/// True when `bytes` start with (a prefix of) the client preface.
pub fn starts_preface(bytes: &[u8]) -> bool {
    let n = bytes.len().min(frame::PREFACE.len());
    n > 0 && bytes[..n] == frame::PREFACE[..n]
}

/// A plausible frame header: a known type, no more than the default
/// maximum frame size, and a stream id only where the type takes one.
fn plausible_header(bytes: &[u8]) -> bool {
    if bytes.len() < 9 {
        return false;
    }
    let len = (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
    let kind = bytes[3];
    let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
    let connection_level = matches!(kind, frame::SETTINGS | frame::PING | frame::GOAWAY);
    kind <= frame::CONTINUATION && len <= 16_384 && (connection_level == (stream == 0) || kind == frame::WINDOW_UPDATE)
}

/// HTTP/2 frames joined mid-connection: two well-formed frames in a row, or
/// one frame header that is plausible while its payload is still arriving.
pub fn looks_like_frames(bytes: &[u8]) -> bool {
    if !plausible_header(bytes) {
        return false;
    }
    match frame::parse(bytes) {
        Parsed::Frame(_, size) if size == bytes.len() => true,
        Parsed::Frame(_, size) => plausible_header(&bytes[size..]) || bytes.len() - size < 9,
        Parsed::NeedMore(_) => true,
        Parsed::Invalid => false,
    }
}

/// What the first HEADERS frame of a direction says, for stateless probes.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstHeaders {
    /// Not HTTP/2 framing.
    NotH2,
    /// HTTP/2 so far, but no complete header block yet.
    NeedMore,
    /// The first header block, decoded as far as the static table and
    /// literals allow (`complete` is false when dynamic entries were unknown).
    Found { fields: Fields, complete: bool },
}

/// Reads frames (after the preface, if present) up to the first complete
/// header block and decodes it. The HPACK table starts empty on a new
/// connection, so a client's first block always decodes.
pub fn first_headers(bytes: &[u8]) -> FirstHeaders {
    let mut at = 0;
    if starts_preface(bytes) {
        if bytes.len() < frame::PREFACE.len() {
            return FirstHeaders::NeedMore;
        }
        at = frame::PREFACE.len();
    } else if !looks_like_frames(bytes) {
        return FirstHeaders::NotH2;
    }
    let mut block: Option<Vec<u8>> = None;
    loop {
        let f = match frame::parse(&bytes[at..]) {
            Parsed::Frame(f, size) => {
                at += size;
                f
            }
            Parsed::NeedMore(_) => return FirstHeaders::NeedMore,
            Parsed::Invalid => return FirstHeaders::NotH2,
        };
        let fragment = match (f.kind, block.is_some()) {
            (frame::HEADERS, false) => f.header_block(),
            (frame::CONTINUATION, true) => Some(f.payload),
            (_, true) => return FirstHeaders::NotH2,
            _ => continue,
        };
        let Some(fragment) = fragment else { return FirstHeaders::NotH2 };
        let b = block.get_or_insert_with(Vec::new);
        if b.len() + fragment.len() > MAX_HEADER_BLOCK {
            return FirstHeaders::NotH2;
        }
        b.extend_from_slice(fragment);
        if f.flags & frame::END_HEADERS != 0 {
            return match hpack::Decoder::new().decode_lenient(b) {
                Ok((fields, unknown)) => FirstHeaders::Found { fields, complete: unknown.is_none() },
                Err(_) => FirstHeaders::Found { fields: Vec::new(), complete: false },
            };
        }
    }
}

impl<X: StreamExtra> Connection<X> {
    /// A connection whose first bytes are frames (joined mid-stream, or a
    /// server that spoke first); a client preface is still recognised.
    pub fn new() -> Self {
        Self::default()
    }

    /// After `Upgrade: h2c` + 101: the HTTP/1.1 request is stream 1.
    pub fn after_upgrade(request: Fields, size: u64, ts: u64) -> Self {
        let mut c = Self::new();
        c.streams.insert(
            1,
            Stream {
                id: 1,
                request,
                request_bytes: size,
                request_ts: Some(ts),
                request_done: true,
                ..Stream::default()
            },
        );
        c
    }

    /// Bytes were lost in one direction. Framing resumes at the next
    /// plausible frame header; the header table of that direction restarts
    /// as after a mid-connection join, since the lost bytes may have held
    /// insertions (entries added from here on are known, older ones not).
    pub fn gap(&mut self, dir: Dir) {
        let d = dir.code() as usize;
        self.resync[d] = true;
        self.skipping[d] = None;
        self.preface_done = true;
        self.pending[d] = None;
        self.decoders[d] = hpack::Decoder::new();
        for s in self.streams.values_mut() {
            s.extra.gap(dir);
        }
    }

    /// Reads one frame (or the preface); finished streams go to `done`.
    pub fn data(&mut self, dir: Dir, ts: u64, bytes: &[u8], done: &mut Vec<Stream<X>>) -> Progress {
        let d = dir.code() as usize;
        // The first call after a skip: the skipped frame has ended.
        if let Some(skipped) = self.skipping[d].take() {
            self.skipped_frame(dir, skipped, done);
        }
        if self.resync[d] {
            // Two plausible frames in a row (or one that fills the buffer)
            // mark a frame boundary; the last 8 bytes may start one.
            match (0..bytes.len()).find(|&at| looks_like_frames(&bytes[at..])) {
                Some(0) => self.resync[d] = false,
                Some(at) => return Progress::Done { consumed: at as u32 },
                None => return Progress::Done { consumed: bytes.len().saturating_sub(8) as u32 },
            }
        }
        // The client's first bytes may be the preface even when the server
        // spoke first (its SETTINGS can arrive before the preface does).
        if dir == Dir::ToServer && !self.preface_done {
            if bytes.len() < frame::PREFACE.len() && starts_preface(bytes) {
                return Progress::NeedMore { consumed: 0, needed: frame::PREFACE.len() as u32 };
            }
            self.preface_done = true;
            if bytes.starts_with(frame::PREFACE) {
                return Progress::Done { consumed: frame::PREFACE.len() as u32 };
            }
        }
        match frame::parse(bytes) {
            // A DATA header without its first payload byte: one more byte
            // tells whether the frame can be skipped (its padding length).
            Parsed::NeedMore(_) if bytes.len() == 9 && bytes[3] == frame::DATA => {
                Progress::NeedMore { consumed: 0, needed: 10 }
            }
            Parsed::NeedMore(n) => match frame::data_header(bytes) {
                Some((f, size, body)) if bytes.len() < size => self
                    .skip_data(dir, ts, f, size, body, bytes)
                    .unwrap_or(Progress::NeedMore { consumed: 0, needed: n as u32 }),
                _ => Progress::NeedMore { consumed: 0, needed: n as u32 },
            },
            Parsed::Invalid => Progress::Desync,
            Parsed::Frame(f, size) => {
                self.frame(dir, ts, f, size as u64, done);
                Progress::Done { consumed: size as u32 }
            }
        }
    }

    /// A DATA frame of `size` bytes (`body` of them content, padding aside)
    /// that starts `bytes` but does not fit in them: if its stream's extra
    /// needs none of the content still to come, the rest goes by uncopied,
    /// and the frame (with the content that is here) counts once it has
    /// passed ([`Connection::skipped_frame`]). `None`: wait for the whole
    /// frame instead.
    fn skip_data(&mut self, dir: Dir, ts: u64, f: Frame<'_>, size: usize, body: u64, bytes: &[u8]) -> Option<Progress> {
        let start = if f.flags & frame::PADDED != 0 { 10 } else { 9 };
        let here = &bytes[start.min(bytes.len())..];
        let here = &here[..here.len().min(body as usize)];
        let to_come = body - here.len() as u64;
        // Only a stream already open: a DATA frame that opens one makes its
        // extra start mid-message, which the full frame path handles.
        let extra = &self.streams.get(&f.stream)?.extra;
        if extra.skippable_after(dir, here) < to_come {
            return None;
        }
        self.skipping[dir.code() as usize] = Some(Skipped {
            stream: f.stream,
            flags: f.flags,
            size: size as u64,
            body,
            here: here.to_vec(),
            to_come,
            ts,
        });
        Some(Progress::Skip { consumed: bytes.len() as u32, skip: (size - bytes.len()) as u64 })
    }

    /// A skipped DATA frame has passed whole: it counts, and its
    /// END_STREAM applies.
    fn skipped_frame(&mut self, dir: Dir, skipped: Skipped, done: &mut Vec<Stream<X>>) {
        let header_only = Frame {
            kind: frame::DATA,
            flags: skipped.flags & !frame::END_STREAM,
            stream: skipped.stream,
            payload: &[],
        };
        self.frame(dir, skipped.ts, header_only, skipped.size, done);
        if let Some(s) = self.streams.get_mut(&skipped.stream) {
            match dir {
                Dir::ToServer => s.request_body += skipped.body,
                Dir::ToClient => s.response_body += skipped.body,
            }
            s.extra.data(dir, &skipped.here);
            s.extra.skipped(dir, skipped.to_come);
        }
        if skipped.flags & frame::END_STREAM != 0 {
            self.end(dir, skipped.stream, done);
        }
    }

    fn frame(&mut self, dir: Dir, ts: u64, f: Frame<'_>, size: u64, done: &mut Vec<Stream<X>>) {
        let d = dir.code() as usize;
        // Only frames that carry a message open a stream: PRIORITY (and
        // WINDOW_UPDATE, RST_STREAM) may name idle streams that never carry
        // a request; clients such as nghttp build priority trees that way.
        let opens = matches!(f.kind, frame::HEADERS | frame::DATA | frame::CONTINUATION);
        let known = self.streams.contains_key(&f.stream);
        let reopened = f.stream != 0 && opens && !known && self.finished.contains(&f.stream);
        if f.stream != 0 && opens && !known && !reopened && self.streams.len() >= MAX_STREAMS {
            // Full: streams whose end was lost (a gap, a peer that never
            // finished) would otherwise block every new one. The oldest goes.
            if let Some(&oldest) = self.streams.keys().next() {
                self.finish(oldest, done);
            }
        }
        if f.stream != 0 && !reopened && (known || opens) {
            let s = self.streams.entry(f.stream).or_insert_with(|| {
                let mut s: Stream<X> = Stream { id: f.stream, ..Stream::default() };
                if f.kind != frame::HEADERS {
                    s.extra.joined(dir);
                }
                s
            });
            let payload = if f.kind == frame::DATA { f.data() } else { None };
            match dir {
                Dir::ToServer => {
                    s.request_bytes += size;
                    s.request_body += payload.map_or(0, |p| p.len() as u64);
                    // Only message frames time a side: a WINDOW_UPDATE from
                    // the server during an upload is not its response.
                    if opens {
                        s.request_ts.get_or_insert(ts);
                    }
                }
                Dir::ToClient => {
                    s.response_bytes += size;
                    s.response_body += payload.map_or(0, |p| p.len() as u64);
                    if opens {
                        s.response_ts.get_or_insert(ts);
                    }
                }
            }
            if let Some(p) = payload {
                s.extra.data(dir, p);
            }
        }
        match f.kind {
            frame::HEADERS => {
                let Some(block) = f.header_block() else { return };
                let pending =
                    Pending { stream: f.stream, block: block.to_vec(), end_stream: f.flags & frame::END_STREAM != 0 };
                if f.flags & frame::END_HEADERS != 0 {
                    self.headers(dir, pending, done);
                } else {
                    self.pending[d] = Some(pending);
                }
            }
            frame::CONTINUATION => {
                let Some(mut pending) = self.pending[d].take() else { return };
                if pending.block.len() + f.payload.len() <= MAX_HEADER_BLOCK {
                    pending.block.extend_from_slice(f.payload);
                }
                if f.flags & frame::END_HEADERS != 0 {
                    self.headers(dir, pending, done);
                } else {
                    self.pending[d] = Some(pending);
                }
            }
            frame::DATA if f.flags & frame::END_STREAM != 0 => self.end(dir, f.stream, done),
            frame::RST_STREAM => {
                if let Some(s) = self.streams.get_mut(&f.stream) {
                    s.rst = f.error_code();
                    s.request_done = true;
                    s.response_done = true;
                }
                self.finish(f.stream, done);
            }
            frame::GOAWAY => {
                self.goaway = f.error_code();
                // Streams the receiver opened above the last one the sender
                // processed are over (RFC 9113 §6.8). Clients open odd ids.
                let last = f.last_stream().unwrap_or(u32::MAX);
                let receiver_parity = if dir == Dir::ToClient { 1 } else { 0 };
                let over: Vec<u32> = self
                    .streams
                    .range(last.saturating_add(1)..)
                    .map(|(id, _)| *id)
                    .filter(|id| id % 2 == receiver_parity)
                    .collect();
                for id in over {
                    self.finish(id, done);
                }
            }
            _ => {}
        }
    }

    fn headers(&mut self, dir: Dir, p: Pending, done: &mut Vec<Stream<X>>) {
        let d = dir.code() as usize;
        // After a mid-connection join the dynamic table is unknown: decode
        // what the static table and the literals give, and say so.
        let decoded = self.decoders[d].decode_lenient(&p.block).ok();
        let partial = decoded.as_ref().is_none_or(|(_, unknown)| unknown.is_some());
        if let Some(s) = self.streams.get_mut(&p.stream) {
            s.undecodable |= partial;
            if let Some((fields, _)) = decoded {
                let list = match dir {
                    Dir::ToServer if s.request.is_empty() => &mut s.request,
                    Dir::ToClient if s.response.is_empty() || is_informational(&s.response) => &mut s.response,
                    _ => &mut s.trailers,
                };
                *list = fields;
            }
        }
        if p.end_stream {
            self.end(dir, p.stream, done);
        }
    }

    fn end(&mut self, dir: Dir, stream: u32, done: &mut Vec<Stream<X>>) {
        if let Some(s) = self.streams.get_mut(&stream) {
            match dir {
                Dir::ToServer => s.request_done = true,
                Dir::ToClient => s.response_done = true,
            }
            if s.request_done && s.response_done {
                self.finish(stream, done);
            }
        }
    }

    fn finish(&mut self, stream: u32, done: &mut Vec<Stream<X>>) {
        if let Some(mut s) = self.streams.remove(&stream) {
            s.goaway = self.goaway;
            done.push(s);
            if self.finished.len() == MAX_FINISHED {
                self.finished.pop_front();
            }
            self.finished.push_back(stream);
        }
    }

    /// [`Connection::data`], with each finished stream reported as the
    /// record `to_record` makes of it: what a dissector plugin does.
    pub fn feed(
        &mut self,
        dir: Dir,
        ts: u64,
        bytes: &[u8],
        out: &mut Output,
        to_record: impl Fn(&Stream<X>) -> Record,
    ) -> Progress {
        let mut done = Vec::new();
        let progress = self.data(dir, ts, bytes, &mut done);
        for s in &done {
            out.record(to_record(s));
        }
        progress
    }

    /// [`Connection::close`], reporting open streams as records.
    pub fn close_into(&mut self, out: &mut Output, to_record: impl Fn(&Stream<X>) -> Record) {
        let mut done = Vec::new();
        self.close(&mut done);
        for s in &done {
            out.record(to_record(s));
        }
    }

    /// The connection ended: every stream still open is handed back.
    pub fn close(&mut self, done: &mut Vec<Stream<X>>) {
        let goaway = self.goaway;
        done.extend(std::mem::take(&mut self.streams).into_values().map(|mut s| {
            s.goaway = goaway;
            s
        }));
    }
}

fn status(h: &[(String, String)]) -> Option<i64> {
    header(h, ":status").and_then(|s| s.parse::<i64>().ok())
}

fn is_informational(h: &[(String, String)]) -> bool {
    status(h).is_some_and(|s| (100..200).contains(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_frame(stream: u8, flags: u8, block: &[u8]) -> Vec<u8> {
        let mut f = vec![0, 0, block.len() as u8, frame::HEADERS, flags, 0, 0, 0, stream];
        f.extend_from_slice(block);
        f
    }

    #[test]
    fn first_headers_after_preface_and_settings() {
        let mut b = frame::PREFACE.to_vec();
        b.extend_from_slice(&[0, 0, 0, frame::SETTINGS, 0, 0, 0, 0, 0]);
        assert_eq!(first_headers(&b), FirstHeaders::NeedMore);
        // :method POST, :path /, content-type (static 31) literal "application/grpc".
        let mut block = vec![0x83, 0x84, 0x0f, 0x10, 16];
        block.extend_from_slice(b"application/grpc");
        b.extend(headers_frame(1, frame::END_HEADERS, &block));
        let FirstHeaders::Found { fields, complete } = first_headers(&b) else { panic!() };
        assert!(complete);
        assert_eq!(header(&fields, "content-type"), Some("application/grpc"));
        assert_eq!(first_headers(b"GET / HTTP/1.1\r\n"), FirstHeaders::NotH2);
    }

    #[test]
    fn a_full_table_reports_its_oldest_stream_to_make_room() {
        let mut c: Connection<()> = Connection::new();
        let mut done = Vec::new();
        for i in 0..=MAX_STREAMS as u32 {
            let f = [vec![0, 0, 1, frame::HEADERS, 4], (2 * i + 1).to_be_bytes().to_vec(), vec![0x82]].concat();
            assert!(matches!(c.data(Dir::ToServer, 1, &f, &mut done), Progress::Done { .. }));
        }
        assert_eq!(done.iter().map(|s| s.id).collect::<Vec<_>>(), [1]);
        assert_eq!(c.streams.len(), MAX_STREAMS);
    }

    #[test]
    fn resumes_at_a_frame_after_a_gap() {
        let mut c: Connection<()> = Connection::new();
        let mut done = Vec::new();
        let req = headers_frame(1, 5, &[0x82, 0x84]);
        assert_eq!(c.data(Dir::ToServer, 1, &req, &mut done), Progress::Done { consumed: req.len() as u32 });
        c.gap(Dir::ToClient);
        // The tail of a lost frame, then stream 1's response.
        let mut resp = vec![0x55, 0x66, 0x77];
        resp.extend(headers_frame(1, 5, &[0x88]));
        assert_eq!(c.data(Dir::ToClient, 2, &resp, &mut done), Progress::Done { consumed: 3 });
        assert_eq!(c.data(Dir::ToClient, 2, &resp[3..], &mut done), Progress::Done { consumed: 10 });
        assert_eq!(done[0].response_header(":status"), Some("200"));
    }

    #[test]
    fn streams_finish_on_end_stream_and_rst() {
        let mut c: Connection<()> = Connection::new();
        let mut done = Vec::new();
        let feed = |c: &mut Connection<()>, dir, bytes: &[u8], done: &mut Vec<Stream<()>>| {
            let mut at = 0;
            while at < bytes.len() {
                match c.data(dir, 1, &bytes[at..], done) {
                    Progress::Done { consumed } => at += consumed as usize,
                    other => panic!("{other:?}"),
                }
            }
        };
        feed(&mut c, Dir::ToServer, &headers_frame(1, 5, &[0x82, 0x84]), &mut done);
        feed(&mut c, Dir::ToClient, &headers_frame(1, 5, &[0x88]), &mut done);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].response_header(":status"), Some("200"));
        feed(&mut c, Dir::ToServer, &headers_frame(3, 5, &[0x82, 0x84]), &mut done);
        feed(&mut c, Dir::ToClient, &[0, 0, 4, frame::RST_STREAM, 0, 0, 0, 0, 3, 0, 0, 0, 8], &mut done);
        assert_eq!(done.len(), 2);
        assert_eq!(done[1].rst, Some(8));
        // The client keeps sending DATA on the reset stream: no new stream.
        feed(&mut c, Dir::ToServer, &[0, 0, 2, frame::DATA, 0, 0, 0, 0, 3, b'h', b'i'], &mut done);
        // GOAWAY from the server, last stream 5: stream 7 was never processed.
        feed(&mut c, Dir::ToServer, &headers_frame(5, 4, &[0x82, 0x84]), &mut done);
        feed(&mut c, Dir::ToServer, &headers_frame(7, 4, &[0x82, 0x84]), &mut done);
        feed(&mut c, Dir::ToClient, &[0, 0, 8, frame::GOAWAY, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 2], &mut done);
        assert_eq!((done.len(), done[2].id, done[2].goaway), (3, 7, Some(2)));
        c.close(&mut done);
        assert_eq!(done.iter().map(|s| s.id).collect::<Vec<_>>(), [1, 3, 7, 5]);
    }
}

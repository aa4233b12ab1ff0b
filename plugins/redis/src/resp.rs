//! RESP2/RESP3 and inline commands. Pure and bounded: nesting is capped at
//! `MAX_DEPTH`, text kept per element at `MAX_TEXT`, and only the first
//! `KEEP_ITEMS` elements of a top-level aggregate are kept (the rest are
//! only walked).

const MAX_DEPTH: u32 = 32;
const MAX_TEXT: usize = 256;
const KEEP_ITEMS: usize = 8;
/// Longest simple line (type byte to CRLF) accepted.
const MAX_LINE: usize = 64 * 1024;
/// Largest bulk string accepted (Redis's own proto-max-bulk-len default).
const MAX_BULK: u64 = 512 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Simple,
    Error,
    Integer,
    Bulk,
    Null,
    Array,
    Map,
    Set,
    Push,
    Attribute,
    Double,
    Boolean,
    BigNumber,
    Verbatim,
    BlobError,
    /// An inline command (a plain text line).
    Inline,
}

/// One message, summarised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub kind: Kind,
    /// Text of a string-like value (truncated).
    pub text: Vec<u8>,
    /// First elements of an aggregate (or inline words).
    pub items: Vec<Msg>,
    /// Elements declared by an aggregate.
    pub count: u64,
    /// Wire bytes.
    pub size: usize,
}

/// Parse outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Done(Msg),
    /// Total bytes needed from the start of the input (a lower bound).
    NeedMore(usize),
    Desync,
}

fn line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, ()> {
    let rest = &buf[at..];
    match rest.iter().take(MAX_LINE).position(|&b| b == b'\n') {
        Some(nl) => {
            let l = &rest[..nl];
            Ok(Some((l.strip_suffix(b"\r").unwrap_or(l), at + nl + 1)))
        }
        None if rest.len() >= MAX_LINE => Err(()),
        None => Ok(None),
    }
}

/// A length or integer line, read from the bytes directly: it runs on
/// every element, and the UTF-8 check, trim and generic parse were a
/// twentieth of the plugin. It takes what `str::parse::<i64>` takes after
/// trimming ASCII whitespace. That is narrower than the `str::trim` it
/// replaced, on purpose: RESP sends no whitespace, and a length padded
/// with a vertical tab or a Unicode space is not one a server wrote.
fn number(l: &[u8]) -> Option<i64> {
    let l = l.trim_ascii();
    let (negative, digits) = match l.split_first()? {
        (b'-', rest) => (true, rest),
        (b'+', rest) => (false, rest),
        _ => (false, l),
    };
    if digits.is_empty() {
        return None;
    }
    // Nineteen digits fit a u64 without overflow checks: `checked_mul`
    // on an i64 is a 128-bit multiply in wasm32, once per digit.
    let digits = &digits[digits.iter().position(|&d| d != b'0').unwrap_or(digits.len())..];
    if digits.len() > 19 {
        // At least 10^19: beyond any i64.
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        let d = d.checked_sub(b'0').filter(|d| *d <= 9)?;
        n = n * 10 + u64::from(d);
    }
    if negative {
        // i64::MIN's magnitude is one more than i64::MAX.
        (n <= 1 << 63).then(|| (n as i64).wrapping_neg())
    } else {
        i64::try_from(n).ok()
    }
}

/// The bulk element at `at` (its `$`), if its length is written as a
/// server writes it (1 to 18 digits, then CRLF) and the whole element is
/// in `buf`: where it ends, past its CRLF, or `Err` if that CRLF is not
/// there. Anything else (`None`) is left to the general path.
fn whole_bulk(buf: &[u8], at: usize) -> Option<Result<usize, ()>> {
    let rest = buf.get(at + 1..)?;
    let digits = rest.iter().take(19).position(|b| !b.is_ascii_digit())?;
    if digits == 0 || digits > 18 || rest.get(digits..digits + 2)? != b"\r\n" {
        return None;
    }
    let n = rest[..digits].iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    if n > MAX_BULK {
        return None;
    }
    let end = (at + 1 + digits + 2).checked_add(usize::try_from(n).ok()?)?;
    match buf.get(end..end + 2)? {
        b"\r\n" => Some(Ok(end + 2)),
        _ => Some(Err(())),
    }
}

fn text(b: &[u8]) -> Vec<u8> {
    b[..b.len().min(MAX_TEXT)].to_vec()
}

/// Parses one message at the start of `buf`, statelessly (probes).
pub fn parse(buf: &[u8]) -> Parsed {
    match Decoder::default().feed(buf) {
        Step::Done(msg, _) => Parsed::Done(msg),
        Step::NeedMore { needed, .. } => Parsed::NeedMore(needed),
        Step::Skip { consumed, skip } => Parsed::NeedMore(consumed + skip as usize + 2),
        Step::Desync => Parsed::Desync,
    }
}

/// One step of a [`Decoder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A message ended after the first `usize` bytes of this input.
    Done(Msg, usize),
    /// The first `consumed` bytes are in the decoder's state; it cannot go
    /// on before `needed` bytes (from the start of this input) are there.
    NeedMore {
        consumed: usize,
        needed: usize,
    },
    /// The first `consumed` bytes are in the decoder's state, and the
    /// `skip` bytes after them are a bulk value's rest, only to be counted:
    /// the next call starts right after them.
    Skip {
        consumed: usize,
        skip: u64,
    },
    Desync,
}

/// An aggregate still open.
#[derive(Debug, Clone)]
struct Frame {
    kind: Kind,
    left: u64,
    count: u64,
    items: Vec<Msg>,
    /// Only the top-level aggregate keeps its first elements.
    keep: bool,
}

/// A bulk string still arriving.
#[derive(Debug, Clone)]
struct Bulk {
    kind: Kind,
    /// Payload bytes still to come; the CRLF after them comes next.
    left: usize,
    /// Payload bytes read so far.
    taken: usize,
    /// Its first `MAX_TEXT` bytes, if the message keeps this element.
    text: Vec<u8>,
    keep: bool,
}

/// A RESP decoder that keeps its place between calls: each element is read
/// once, whatever the segments, so a 10k-element or deeply nested reply
/// costs what its bytes cost. Its caller hands it only the bytes after
/// those it consumed; at most a partial line is handed again.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    stack: Vec<Frame>,
    bulk: Option<Bulk>,
    /// Bytes of the current message consumed by earlier calls.
    size: usize,
}

impl Decoder {
    /// Continues the current message with `buf` (the bytes after those
    /// already consumed).
    pub fn feed(&mut self, buf: &[u8]) -> Step {
        let step = self.step(buf);
        match &step {
            // Ready for the next message; the stack keeps its capacity.
            Step::Done(..) | Step::Desync => {
                self.stack.clear();
                self.bulk = None;
                self.size = 0;
            }
            Step::NeedMore { consumed, .. } => self.size += consumed,
            Step::Skip { consumed, skip } => self.size += consumed + *skip as usize,
        }
        step
    }

    fn step(&mut self, buf: &[u8]) -> Step {
        let mut at = 0;
        loop {
            if let Some(bulk) = &mut self.bulk {
                let take = bulk.left.min(buf.len() - at);
                if bulk.keep {
                    let room = MAX_TEXT.saturating_sub(bulk.text.len());
                    bulk.text.extend_from_slice(&buf[at..at + take.min(room)]);
                }
                bulk.left -= take;
                bulk.taken += take;
                at += take;
                if bulk.left > 0 && bulk.taken >= MAX_TEXT {
                    // What is kept of the value is kept; the rest is only
                    // its length.
                    let skip = std::mem::take(&mut bulk.left) as u64;
                    return Step::Skip { consumed: at, skip };
                }
                if bulk.left > 0 || buf.len() - at < 2 {
                    return Step::NeedMore { consumed: at, needed: at + bulk.left + 2 };
                }
                if &buf[at..at + 2] != b"\r\n" {
                    return Step::Desync;
                }
                at += 2;
                let (kind, text) = (bulk.kind, std::mem::take(&mut bulk.text));
                self.bulk = None;
                if let Some(msg) = self.complete(element(kind, text)) {
                    return Step::Done(Msg { size: self.size + at, ..msg }, at);
                }
                continue;
            }
            let Some(&t) = buf.get(at) else {
                return Step::NeedMore { consumed: at, needed: at + 1 };
            };
            let depth = self.stack.len();
            // Only the elements a message keeps get their text copied: the
            // rest of a 10k-element reply costs no allocation.
            let keep = self.keeps_next();
            let Some(kind) = kind_of(t) else {
                if depth > 0 {
                    return Step::Desync;
                }
                return match inline(buf, at) {
                    Ok(Some((msg, end))) => Step::Done(Msg { size: end, ..msg }, end),
                    Ok(None) => Step::NeedMore { consumed: at, needed: buf.len() + 1 },
                    Err(_) => Step::Desync,
                };
            };
            // The bulk elements a message does not keep, whole in this
            // input (most of a long reply), are stepped over in place: a
            // run of them in one loop, the aggregate's last on its own.
            if !keep && kind == Kind::Bulk {
                match self.step_over_bulks(buf, at) {
                    Err(()) => return Step::Desync,
                    Ok(past) if past > at => {
                        at = past;
                        continue;
                    }
                    Ok(_) => {}
                }
                if let Some(end) = whole_bulk(buf, at) {
                    let Ok(end) = end else { return Step::Desync };
                    at = end;
                    if let Some(msg) = self.complete_unkept() {
                        return Step::Done(Msg { size: self.size + at, ..msg }, at);
                    }
                    continue;
                }
            }
            let (l, next) = match line(buf, at + 1) {
                Ok(Some(found)) => found,
                Ok(None) => return Step::NeedMore { consumed: at, needed: buf.len() + 1 },
                Err(()) => return Step::Desync,
            };
            let done = match kind {
                Kind::Simple
                | Kind::Error
                | Kind::Integer
                | Kind::Null
                | Kind::Double
                | Kind::Boolean
                | Kind::BigNumber => element(kind, if keep { text(l) } else { Vec::new() }),
                Kind::Bulk | Kind::Verbatim | Kind::BlobError => {
                    let Some(n) = number(l) else { return Step::Desync };
                    if n < 0 {
                        element(Kind::Null, Vec::new())
                    } else if n as u64 > MAX_BULK {
                        return Step::Desync;
                    } else {
                        let text = if keep { Vec::with_capacity((n as usize).min(MAX_TEXT)) } else { Vec::new() };
                        self.bulk = Some(Bulk { kind, left: n as usize, taken: 0, text, keep });
                        at = next;
                        continue;
                    }
                }
                _ => {
                    let Some(n) = number(l) else { return Step::Desync };
                    let elements = if matches!(kind, Kind::Map | Kind::Attribute) {
                        (n as u64).saturating_mul(2)
                    } else {
                        n as u64
                    };
                    if n < 0 {
                        element(Kind::Null, Vec::new())
                    } else if elements == 0 {
                        Msg { kind, text: Vec::new(), items: Vec::new(), count: 0, size: 0 }
                    } else if depth as u32 >= MAX_DEPTH {
                        return Step::Desync;
                    } else {
                        let top = depth == 0;
                        // Sized once: pushing the kept items one by one
                        // grew the vector twice per message.
                        let items = Vec::with_capacity(if top { (elements as usize).min(KEEP_ITEMS) } else { 0 });
                        self.stack.push(Frame { kind, left: elements, count: elements, items, keep: top });
                        at = next;
                        continue;
                    }
                }
            };
            at = next;
            if let Some(msg) = self.complete(done) {
                return Step::Done(Msg { size: self.size + at, ..msg }, at);
            }
        }
    }

    /// Whether the next element is kept: the message itself, or one of
    /// the first `KEEP_ITEMS` of its top-level aggregate.
    fn keeps_next(&self) -> bool {
        self.stack.last().is_none_or(|f| f.keep && f.items.len() < KEEP_ITEMS)
    }

    /// Steps over the whole plain bulk elements from `at` on, all but the
    /// last of the top aggregate (which ends it, and goes through
    /// [`Self::complete_unkept`]). Its elements are not kept: the caller
    /// checked. Returns where it stopped.
    fn step_over_bulks(&mut self, buf: &[u8], mut at: usize) -> Result<usize, ()> {
        let Some(frame) = self.stack.last_mut() else { return Ok(at) };
        while frame.left > 1 && buf.get(at) == Some(&b'$') {
            let Some(end) = whole_bulk(buf, at) else { break };
            at = end?;
            frame.left -= 1;
        }
        Ok(at)
    }

    /// An element that is not kept ended: as [`Self::complete`], without
    /// building its message. Only an aggregate's element is not kept, so
    /// the stack is not empty.
    fn complete_unkept(&mut self) -> Option<Msg> {
        let frame = self.stack.last_mut()?;
        frame.left -= 1;
        if frame.left > 0 {
            return None;
        }
        let done = self.stack.pop()?;
        self.complete(Msg { kind: done.kind, text: Vec::new(), items: done.items, count: done.count, size: 0 })
    }

    /// An element ended: it fills its aggregate, which may end in turn.
    /// Returns the message once the top level is complete.
    fn complete(&mut self, mut msg: Msg) -> Option<Msg> {
        loop {
            let Some(frame) = self.stack.last_mut() else { return Some(msg) };
            if frame.keep && frame.items.len() < KEEP_ITEMS {
                frame.items.push(msg);
            }
            frame.left -= 1;
            if frame.left > 0 {
                return None;
            }
            let done = self.stack.pop()?;
            msg = Msg { kind: done.kind, text: Vec::new(), items: done.items, count: done.count, size: 0 };
        }
    }
}

fn element(kind: Kind, text: Vec<u8>) -> Msg {
    Msg { kind, text, items: Vec::new(), count: 0, size: 0 }
}

fn kind_of(t: u8) -> Option<Kind> {
    Some(match t {
        b'+' => Kind::Simple,
        b'-' => Kind::Error,
        b':' => Kind::Integer,
        b'$' => Kind::Bulk,
        b'*' => Kind::Array,
        b'_' => Kind::Null,
        b',' => Kind::Double,
        b'#' => Kind::Boolean,
        b'(' => Kind::BigNumber,
        b'=' => Kind::Verbatim,
        b'!' => Kind::BlobError,
        b'%' => Kind::Map,
        b'~' => Kind::Set,
        b'>' => Kind::Push,
        b'|' => Kind::Attribute,
        _ => return None,
    })
}

/// A plain-text command line: words separated by spaces.
fn inline(buf: &[u8], at: usize) -> Result<Option<(Msg, usize)>, ()> {
    // Text only: binary bytes mean this is not an inline command, and there
    // is no point waiting for a line end.
    let end = buf[at..].iter().position(|&b| b == b'\n').map_or(buf.len(), |p| at + p);
    if buf[at..end].iter().any(|&b| b == 0 || (b < 0x20 && b != b'\t' && b != b'\r') || b == 0x7f) {
        return Err(());
    }
    let Some((l, next)) = line(buf, at)? else { return Ok(None) };
    let items: Vec<Msg> = l
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|w| !w.is_empty())
        .take(KEEP_ITEMS)
        .map(|w| Msg { kind: Kind::Bulk, text: text(w), items: Vec::new(), count: 0, size: 0 })
        .collect();
    let count = l.split(|&b| b == b' ' || b == b'\t').filter(|w| !w.is_empty()).count() as u64;
    Ok(Some((Msg { kind: Kind::Inline, text: text(l), items, count, size: 0 }, next)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_str_parse_reads_them() {
        for l in [
            "0",
            "12",
            "-1",
            "+7",
            " 42 ",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "-9223372036854775809",
            "",
            "-",
            "+",
            "1a",
            "1 2",
            "٣",
            "--1",
            "0x10",
            "00000000000000000000000000042",
            "-0009223372036854775808",
            "99999999999999999999",
            "18446744073709551616",
            "9223372036854775807x",
        ] {
            let want = std::str::from_utf8(l.as_bytes()).ok().and_then(|s| s.trim().parse::<i64>().ok());
            assert_eq!(number(l.as_bytes()), want, "{l:?}");
        }
        assert_eq!(number(&[0xff, b'1']), None);
        // Narrower than `str::trim` (see `number`).
        assert_eq!(number(b"\x0b5"), None);
        assert_eq!(number("\u{a0}5".as_bytes()), None);
    }

    fn done(b: &[u8]) -> Msg {
        match parse(b) {
            Parsed::Done(m) => m,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(b)),
        }
    }

    #[test]
    fn resp2_command_and_replies() {
        let m = done(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n");
        assert_eq!((m.kind, m.count, m.size), (Kind::Array, 3, 31));
        assert_eq!(m.items[0].text, b"SET");
        assert_eq!(done(b"-WRONGTYPE Operation\r\n").kind, Kind::Error);
        assert_eq!(done(b"$-1\r\n").kind, Kind::Null);
        assert_eq!(done(b"*-1\r\n").kind, Kind::Null);
        assert_eq!(parse(b"$5\r\nhel"), Parsed::NeedMore(11));
        assert_eq!(parse(b"*2\r\n$3\r\nGET\r\n"), Parsed::NeedMore(14));
        // A kept element or one stepped over: a bad end is a desync.
        let mut bad = b"*10\r\n".to_vec();
        bad.extend_from_slice(&b"$1\r\nx\r\n".repeat(9));
        bad.extend_from_slice(b"$1\r\nxx\r\n");
        assert_eq!(parse(&bad), Parsed::Desync);
        let mut bad_in_run = b"*20\r\n".to_vec();
        for i in 0..20 {
            bad_in_run.extend_from_slice(if i == 14 { b"$1\r\nxx\r\n" } else { b"$1\r\nx\r\n" });
        }
        assert_eq!(parse(&bad_in_run), Parsed::Desync);
        assert_eq!(parse(b"*1\r\n$1\r\nxx\r\n"), Parsed::Desync);
    }

    #[test]
    fn resp3_types() {
        for b in [
            &b"_\r\n"[..],
            b",3.14\r\n",
            b"#t\r\n",
            b"(3492890328409238509324850943850943825024385\r\n",
            b"=15\r\ntxt:Some string\r\n",
            b"!21\r\nSYNTAX invalid syntax\r\n",
        ] {
            done(b);
        }
        let m = done(b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n");
        assert_eq!((m.kind, m.count), (Kind::Map, 4));
        assert_eq!(done(b"~2\r\n+a\r\n+b\r\n").kind, Kind::Set);
        assert_eq!(done(b">3\r\n+message\r\n+ch\r\n+hi\r\n").kind, Kind::Push);
        assert_eq!(done(b"|1\r\n+key-popularity\r\n%0\r\n").kind, Kind::Attribute);
    }

    #[test]
    fn inline_and_garbage() {
        let m = done(b"PING\r\n");
        assert_eq!((m.kind, m.items[0].text.as_slice()), (Kind::Inline, &b"PING"[..]));
        let m = done(b"set key  value\n");
        assert_eq!(m.count, 3);
        assert_eq!(parse(b"\x16\x03\x01\x00"), Parsed::Desync);
        assert_eq!(parse(b"*1\r\n\x16"), Parsed::Desync);
        let deep = "*1\r\n".repeat(40);
        assert_eq!(parse(deep.as_bytes()), Parsed::Desync);
        // A map of i64::MAX pairs: no overflow, just a long wait (fuzz find).
        assert_eq!(parse(b"%9223372036854775807\r\n"), Parsed::NeedMore(23));
    }

    /// Fed in pieces of every size from 1 to 7 bytes, as a host hands them
    /// over (what was not consumed, then more), the decoder reads the same
    /// message as from one buffer, and each byte is handed to it at most
    /// about twice (a partial line is handed again).
    #[test]
    fn segments_of_any_size_give_the_same_message_linearly() {
        let mut nested = b"*3\r\n*2\r\n$3\r\nGET\r\n:1\r\n%1\r\n+k\r\n*1\r\n_\r\n$5\r\nhello\r\n".to_vec();
        let big = format!("${}\r\n{}\r\n", 3000, "x".repeat(3000));
        nested.extend_from_slice(big.as_bytes());
        // Past the kept items, whole bulk elements are stepped over in place.
        let mut long = b"*40\r\n".to_vec();
        for i in 0..40 {
            let value = "v".repeat(i * 13);
            long.extend_from_slice(format!("${}\r\n{value}\r\n", value.len()).as_bytes());
        }
        for message in [&nested[..nested.len() - big.len()], big.as_bytes(), b"PING\r\n", b"*0\r\n", &long] {
            let whole = done(message);
            for piece in 1..=7 {
                let mut d = Decoder::default();
                let (mut pending, mut handed, mut got, mut skipping) = (Vec::new(), 0, None, 0);
                for chunk in message.chunks(piece) {
                    // A skip lets bytes go by as the host does.
                    let passed = skipping.min(chunk.len());
                    skipping -= passed;
                    pending.extend_from_slice(&chunk[passed..]);
                    handed += pending.len();
                    match d.feed(&pending) {
                        Step::Done(m, used) => {
                            assert_eq!(used, pending.len());
                            got = Some(m);
                        }
                        Step::NeedMore { consumed, .. } => {
                            pending.drain(..consumed);
                        }
                        Step::Skip { consumed, skip } => {
                            pending.drain(..consumed);
                            skipping = skip as usize;
                        }
                        Step::Desync => panic!("desync at piece {piece}"),
                    }
                }
                if got.is_none() && skipping == 0 {
                    // The message ended with a skip: the call after it.
                    if let Step::Done(m, _) = d.feed(&pending) {
                        got = Some(m);
                    }
                }
                assert_eq!(got.as_ref(), Some(&whole), "piece {piece}");
                assert!(handed <= 2 * message.len() + 16 * piece, "{handed} handed for {}", message.len());
            }
        }
    }
}

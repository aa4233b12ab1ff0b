//! RESP2/RESP3 and inline commands. Pure and bounded: nesting is capped at
//! `MAX_DEPTH`, text kept per element at `MAX_TEXT`, and only the first
//! `KEEP_ITEMS` elements of a top-level aggregate are kept (the rest are
//! only walked).

const MAX_DEPTH: u32 = 32;
const MAX_TEXT: usize = 256;
const KEEP_ITEMS: usize = 4;
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

fn number(l: &[u8]) -> Option<i64> {
    std::str::from_utf8(l).ok()?.trim().parse().ok()
}

fn text(b: &[u8]) -> Vec<u8> {
    b[..b.len().min(MAX_TEXT)].to_vec()
}

/// Parses one message at the start of `buf`. `keep` says whether to keep
/// the first elements of aggregates (only at the top level).
pub fn parse(buf: &[u8]) -> Parsed {
    match value(buf, 0, 0, true) {
        Ok(Some((msg, end))) => Parsed::Done(Msg { size: end, ..msg }),
        Ok(None) => Parsed::NeedMore(buf.len() + 1),
        Err(Needed(n)) if n > 0 => Parsed::NeedMore(n),
        Err(_) => Parsed::Desync,
    }
}

/// `Needed(n)`: the exact total size once known (bulk strings); 0: desync.
struct Needed(usize);

type Step = Result<Option<(Msg, usize)>, Needed>;

fn value(buf: &[u8], at: usize, depth: u32, keep: bool) -> Step {
    if depth > MAX_DEPTH {
        return Err(Needed(0));
    }
    let Some(&t) = buf.get(at) else { return Ok(None) };
    let kind = match t {
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
        _ if depth == 0 => return inline(buf, at),
        _ => return Err(Needed(0)),
    };
    let Some((l, next)) = line(buf, at + 1).map_err(|()| Needed(0))? else { return Ok(None) };
    let msg = |text: Vec<u8>| Msg { kind, text, items: Vec::new(), count: 0, size: 0 };
    match kind {
        Kind::Simple | Kind::Error | Kind::Integer | Kind::Null | Kind::Double | Kind::Boolean | Kind::BigNumber => {
            Ok(Some((msg(text(l)), next)))
        }
        Kind::Bulk | Kind::Verbatim | Kind::BlobError => {
            let n = number(l).ok_or(Needed(0))?;
            if n < 0 {
                return Ok(Some((Msg { kind: Kind::Null, ..msg(Vec::new()) }, next)));
            }
            if n as u64 > MAX_BULK {
                return Err(Needed(0));
            }
            let end = next + n as usize;
            if buf.len() < end + 2 {
                return Err(Needed(end + 2));
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(Needed(0));
            }
            Ok(Some((msg(text(&buf[next..end])), end + 2)))
        }
        Kind::Array | Kind::Map | Kind::Set | Kind::Push | Kind::Attribute => {
            let n = number(l).ok_or(Needed(0))?;
            if n < 0 {
                return Ok(Some((Msg { kind: Kind::Null, ..msg(Vec::new()) }, next)));
            }
            let elements = if matches!(kind, Kind::Map | Kind::Attribute) { n as u64 * 2 } else { n as u64 };
            let mut items = Vec::new();
            let mut at = next;
            for i in 0..elements {
                // Each element takes at least three bytes; a count beyond
                // what is buffered just means "not yet".
                if at >= buf.len() {
                    return Ok(None);
                }
                match value(buf, at, depth + 1, false)? {
                    Some((item, end)) => {
                        if keep && (i as usize) < KEEP_ITEMS {
                            items.push(item);
                        }
                        at = end;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Msg { kind, text: Vec::new(), items, count: elements, size: 0 }, at)))
        }
        Kind::Inline => Err(Needed(0)),
    }
}

/// A plain-text command line: words separated by spaces.
fn inline(buf: &[u8], at: usize) -> Step {
    // Text only: binary bytes mean this is not an inline command, and there
    // is no point waiting for a line end.
    let end = buf[at..].iter().position(|&b| b == b'\n').map_or(buf.len(), |p| at + p);
    if buf[at..end].iter().any(|&b| b == 0 || (b < 0x20 && b != b'\t' && b != b'\r') || b == 0x7f) {
        return Err(Needed(0));
    }
    let Some((l, next)) = line(buf, at).map_err(|()| Needed(0))? else { return Ok(None) };
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
    }
}

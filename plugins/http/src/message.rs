//! HTTP/1.x message heads (via httparse) and body framing.

use crate::probe::is_token;
use trawl_sdk::fields::Key;
use trawl_sdk::keys;

/// Most headers a head may carry.
const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (with extensions).
const MAX_CHUNK_LINE: usize = 1024;
/// Largest trailer section.
const MAX_TRAILERS: usize = 64 * 1024;

/// A parsed request or response head.
#[derive(Debug, Clone, Default)]
pub(crate) struct Head {
    pub method: String,
    pub target: String,
    pub version: String,
    pub status: Option<i64>,
    pub reason: String,
    /// Names as sent, common ones kept once ([`trawl_sdk::keys`]).
    pub headers: Vec<(Key, String)>,
    /// Bytes of the head, blank line included.
    pub size: usize,
    /// The request line did not parse; method and target are best effort.
    pub malformed: bool,
}

fn config() -> httparse::ParserConfig {
    let mut c = httparse::ParserConfig::default();
    c.allow_spaces_after_header_name_in_responses(true)
        .allow_multiple_spaces_in_request_line_delimiters(true)
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .ignore_invalid_headers_in_responses(true)
        .ignore_invalid_headers_in_requests(true);
    c
}

fn version(v: Option<u8>) -> String {
    match v {
        Some(0) => "HTTP/1.0".into(),
        Some(1) => "HTTP/1.1".into(),
        _ => "HTTP/1.x".into(),
    }
}

fn collect(headers: &[httparse::Header<'_>]) -> Vec<(Key, String)> {
    headers.iter().filter(|h| !h.name.is_empty()).map(|h| (keys::key(h.name), header_text(h.value))).collect()
}

/// A header value as text, trimmed. Valid UTF-8 (nearly every value) is
/// checked by `from_utf8`, which reads a word at a time; the lossy decoder
/// reads a byte at a time, and ran for every header.
fn header_text(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) => text.trim().to_string(),
        Err(_) => String::from_utf8_lossy(value).trim().to_string(),
    }
}

/// `Ok(None)`: the head is not complete yet. `Err`: not an HTTP request.
pub(crate) fn parse_request(bytes: &[u8]) -> Result<Option<Head>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match config().parse_request(&mut req, bytes) {
        Ok(httparse::Status::Complete(size)) => Ok(Some(Head {
            method: req.method.unwrap_or_default().to_string(),
            target: req.path.unwrap_or_default().to_string(),
            version: version(req.version),
            status: None,
            reason: String::new(),
            headers: collect(req.headers),
            size,
            malformed: false,
        })),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(()),
    }
}

/// `Ok(None)`: the head is not complete yet. `Err`: not an HTTP response.
pub(crate) fn parse_response(bytes: &[u8]) -> Result<Option<Head>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match config().parse_response(&mut resp, bytes) {
        Ok(httparse::Status::Complete(size)) => Ok(Some(Head {
            method: String::new(),
            target: String::new(),
            version: version(resp.version),
            status: resp.code.map(i64::from),
            reason: resp.reason.unwrap_or_default().to_string(),
            headers: collect(resp.headers),
            size,
            malformed: false,
        })),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(()),
    }
}

/// End of a head (after its blank line), accepting bare LF line ends.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(nl) = bytes[at..].iter().position(|&b| b == b'\n') {
        let line_end = at + nl;
        let line = &bytes[at..line_end];
        if at > 0 && (line.is_empty() || line == b"\r") {
            return Some(line_end + 1);
        }
        at = line_end + 1;
    }
    None
}

/// A request head whose request line httparse refuses (a missing target,
/// a truncated version, junk): Wireshark still shows such requests, so
/// trawl keeps what can be read (`METHOD SP target [SP version]`) and the
/// headers. `Err` when the head is binary or never ends.
pub(crate) fn parse_request_lenient(bytes: &[u8]) -> Result<Option<Head>, ()> {
    let Some(size) = head_end(bytes) else {
        return if bytes.len() > crate::MAX_HEAD { Err(()) } else { Ok(None) };
    };
    let head = &bytes[..size];
    if head.iter().any(|&b| b == 0 || (b < 0x20 && !matches!(b, b'\r' | b'\n' | b'\t'))) {
        return Err(());
    }
    let first_end = head.iter().position(|&b| b == b'\n').unwrap_or(0);
    let line = String::from_utf8_lossy(&head[..first_end]);
    let line = line.trim_end_matches('\r');
    let method_len = line.bytes().take_while(|&b| is_token(b)).count();
    let (method, target, version) = if method_len > 0 && method_len == line.len() {
        // A bare method: no target, no version.
        (line.to_string(), String::new(), String::new())
    } else if method_len > 0 && line.as_bytes().get(method_len) == Some(&b' ') {
        let rest = line[method_len..].trim_start();
        let (target, version) = rest.split_once(' ').unwrap_or((rest, ""));
        (line[..method_len].to_string(), target.to_string(), version.trim().to_string())
    } else {
        (String::new(), String::new(), String::new())
    };
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let headers = match httparse::parse_headers(&head[first_end + 1..], &mut storage) {
        Ok(httparse::Status::Complete((_, h))) => collect(h),
        _ => Vec::new(),
    };
    Ok(Some(Head {
        method,
        target,
        version: if version.is_empty() { "HTTP/1.x".into() } else { version },
        status: None,
        reason: String::new(),
        headers,
        size,
        malformed: true,
    }))
}

impl Head {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
            .flat_map(|(_, v)| v.split(','))
            .next_back()
            .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
    }

    fn content_length(&self) -> Option<u64> {
        self.header("content-length").and_then(|v| v.split(',').next()?.trim().parse().ok())
    }

    /// How the request's body is framed; `None` when it has none.
    pub(crate) fn request_body(&self) -> Option<BodyState> {
        if self.chunked() {
            return Some(BodyState::Chunked(Chunk::Size));
        }
        match self.content_length() {
            Some(0) | None => None,
            Some(n) => Some(BodyState::Length(n)),
        }
    }

    /// How the response's body is framed, given the request method.
    pub(crate) fn response_body(&self, request_method: &str) -> Option<BodyState> {
        let status = self.status.unwrap_or(0);
        if request_method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&status)
            || status == 204
            || status == 304
            || (request_method.eq_ignore_ascii_case("CONNECT") && (200..300).contains(&status))
        {
            return None;
        }
        if self.chunked() {
            return Some(BodyState::Chunked(Chunk::Size));
        }
        match self.content_length() {
            Some(0) => None,
            Some(n) => Some(BodyState::Length(n)),
            None => Some(BodyState::UntilClose),
        }
    }
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers { seen: usize },
}

/// Body framing state of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyState {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

/// Result of feeding body bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// All of `consumed` was used and more is needed: `needed` total bytes
    /// from the start of this input.
    NeedMore { consumed: usize, content: u64, needed: usize },
    /// The body ended after `consumed` bytes.
    Finished { consumed: usize, content: u64 },
    /// All of `consumed` was used (`content` of it body payload), and the
    /// next `skip` bytes are body content the host lets go by: they count
    /// once they have passed.
    Skip { consumed: usize, content: u64, skip: u64 },
    /// Framing is broken.
    Invalid,
}

fn line_end(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

impl BodyState {
    /// Skips `len` lost bytes if they fall inside known body content.
    pub(crate) fn skip(&mut self, len: u64) -> bool {
        match self {
            BodyState::Length(rem) | BodyState::Chunked(Chunk::Data(rem)) if *rem >= len => {
                *rem -= len;
                true
            }
            BodyState::UntilClose => true,
            _ => false,
        }
    }

    /// Feeds body bytes; `content` counts body payload without framing.
    pub(crate) fn advance(&mut self, bytes: &[u8]) -> Step {
        let mut at = 0usize;
        let mut content = 0u64;
        loop {
            let rest = &bytes[at..];
            match self {
                BodyState::UntilClose => {
                    return Step::NeedMore {
                        consumed: bytes.len(),
                        content: content + rest.len() as u64,
                        needed: bytes.len() + 1,
                    };
                }
                BodyState::Length(rem) => {
                    let take = (*rem).min(rest.len() as u64);
                    *rem -= take;
                    at += take as usize;
                    content += take;
                    if *rem == 0 {
                        return Step::Finished { consumed: at, content };
                    }
                    // The rest of the body is only counted: the host lets
                    // it go by, and the next call finds the body done.
                    let skip = std::mem::take(rem);
                    return Step::Skip { consumed: at, content, skip };
                }
                BodyState::Chunked(Chunk::Size) => {
                    let Some(end) = line_end(rest) else {
                        if rest.len() > MAX_CHUNK_LINE {
                            return Step::Invalid;
                        }
                        return Step::NeedMore { consumed: at, content, needed: bytes.len() + 1 };
                    };
                    if end > MAX_CHUNK_LINE {
                        return Step::Invalid;
                    }
                    let line = &rest[..end];
                    let digits: &[u8] =
                        line.split(|&b| b == b';' || b == b'\r' || b == b' ' || b == b'\t').next().unwrap_or(&[]);
                    let Some(size) = parse_hex(digits) else {
                        return Step::Invalid;
                    };
                    at += end + 1;
                    *self = if size == 0 {
                        BodyState::Chunked(Chunk::Trailers { seen: 0 })
                    } else {
                        BodyState::Chunked(Chunk::Data(size))
                    };
                }
                BodyState::Chunked(Chunk::Data(rem)) => {
                    let take = (*rem).min(rest.len() as u64);
                    *rem -= take;
                    at += take as usize;
                    content += take;
                    if *rem > 0 {
                        let skip = std::mem::take(rem);
                        return Step::Skip { consumed: at, content, skip };
                    }
                    *self = BodyState::Chunked(Chunk::DataEnd);
                }
                BodyState::Chunked(Chunk::DataEnd) => match rest {
                    [b'\r', b'\n', ..] => {
                        at += 2;
                        *self = BodyState::Chunked(Chunk::Size);
                    }
                    [b'\n', ..] => {
                        at += 1;
                        *self = BodyState::Chunked(Chunk::Size);
                    }
                    [] | [b'\r'] => {
                        return Step::NeedMore { consumed: at, content, needed: at + 2 };
                    }
                    _ => return Step::Invalid,
                },
                BodyState::Chunked(Chunk::Trailers { seen }) => {
                    let Some(end) = line_end(rest) else {
                        if *seen + rest.len() > MAX_TRAILERS {
                            return Step::Invalid;
                        }
                        return Step::NeedMore { consumed: at, content, needed: bytes.len() + 1 };
                    };
                    let blank = end == 0 || (end == 1 && rest[0] == b'\r');
                    at += end + 1;
                    if blank {
                        return Step::Finished { consumed: at, content };
                    }
                    *seen += end + 1;
                    if *seen > MAX_TRAILERS {
                        return Step::Invalid;
                    }
                }
            }
        }
    }
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    let mut n = 0u64;
    for &d in digits {
        let v = (d as char).to_digit(16)?;
        n = n * 16 + u64::from(v);
    }
    Some(n)
}

//! Redis dissector for trawl: RESP2, RESP3 (every type, attributes and
//! pushes) and inline commands. Commands pair with replies in FIFO order,
//! pipelining included; pub/sub messages and RESP3 pushes are messages,
//! not replies; `CLIENT REPLY OFF|ON|SKIP` and subscriptions change how
//! many replies a command gets.
#![forbid(unsafe_code)]

pub mod resp;

use resp::{Kind, Msg, Parsed};
use std::collections::VecDeque;
use trawl_sdk::redact::{self, Level};
use trawl_sdk::{Ctx, Dir, Dissector, Fields, L4, Output, PluginInfo, Probe, Progress, Record, Value};

/// Commands waiting for replies; beyond this the oldest is reported unanswered.
const MAX_PENDING: usize = 4096;
/// Longest `redis_command` text kept.
const MAX_COMMAND_TEXT: usize = 256;
/// Longest `redis_key` kept.
const MAX_KEY: usize = 64;

#[derive(Debug, Default)]
pub struct Redis;

/// Commands people type inline (redis-cli, telnet); enough to recognise an
/// inline session without claiming every text protocol.
const INLINE_COMMANDS: &[&str] = &[
    "PING",
    "ECHO",
    "AUTH",
    "HELLO",
    "SELECT",
    "INFO",
    "COMMAND",
    "QUIT",
    "GET",
    "SET",
    "DEL",
    "EXISTS",
    "INCR",
    "DECR",
    "MGET",
    "MSET",
    "KEYS",
    "SCAN",
    "TTL",
    "EXPIRE",
    "HGET",
    "HSET",
    "HGETALL",
    "LPUSH",
    "RPUSH",
    "LRANGE",
    "SADD",
    "SMEMBERS",
    "ZADD",
    "ZRANGE",
    "PUBLISH",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "MULTI",
    "EXEC",
    "CLIENT",
    "CONFIG",
    "DBSIZE",
    "FLUSHDB",
    "FLUSHALL",
    "XADD",
    "XREAD",
    "MONITOR",
];

#[derive(Debug)]
struct Command {
    id: u64,
    verb: String,
    key: Option<String>,
    text: String,
    size: u64,
    ts: u64,
    /// Replies still expected.
    expected: u32,
    response_size: u64,
    response_ts: Option<u64>,
    error: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ReplyMode {
    #[default]
    On,
    Off,
    /// The next command gets no reply.
    Skip,
}

#[derive(Debug, Default)]
pub struct RedisConn {
    next_id: u64,
    pending: VecDeque<Command>,
    mode: ReplyMode,
    /// RESP2 subscriber: `message`/`pmessage` arrays are pushes.
    subscribed: bool,
    resp3: bool,
    pushes: u64,
    /// Where each direction's current message stands.
    decoders: [resp::Decoder; 2],
}

/// Whether word `i` of a command is a secret that records must not show:
/// AUTH's arguments, the user and password after HELLO's and MIGRATE's
/// AUTH/AUTH2, the value CONFIG SET gives any parameter whose name has
/// `pass` or `auth` in it (and `masteruser`), SENTINEL SET's `auth-pass`
/// and `auth-user`, and ACL SETUSER's password rules (`>pw`, `<pw`,
/// `#hash`, `!hash`).
fn is_secret(verb: &str, words: &[Msg], i: usize) -> bool {
    let before = |k: usize, names: &[&str]| {
        i.checked_sub(k)
            .filter(|&j| j > 0)
            .and_then(|j| words.get(j))
            .is_some_and(|w| names.iter().any(|n| w.text.eq_ignore_ascii_case(n.as_bytes())))
    };
    let word = |j: usize| words.get(j).map(|w| w.text.to_ascii_lowercase()).unwrap_or_default();
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    match verb {
        "AUTH" => i > 0,
        "HELLO" | "MIGRATE" => before(1, &["AUTH", "AUTH2"]) || before(2, &["AUTH", "AUTH2"]),
        // CONFIG SET name value [name value …]
        "CONFIG" => {
            word(1) == b"set" && i >= 3 && (i - 3).is_multiple_of(2) && {
                let name = word(i - 1);
                contains(&name, b"pass") || contains(&name, b"auth") || name == b"masteruser"
            }
        }
        // SENTINEL SET master option value [option value …] (auth-pass, auth-user)
        "SENTINEL" => {
            word(1) == b"set" && i >= 4 && i.is_multiple_of(2) && {
                let name = word(i - 1);
                contains(&name, b"pass") || contains(&name, b"auth")
            }
        }
        // ACL SETUSER name rule…
        "ACL" => word(1) == b"setuser" && i >= 3 && matches!(word(i).first(), Some(b'>' | b'<' | b'#' | b'!')),
        _ => false,
    }
}

fn upper(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_uppercase()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A pub/sub message or confirmation, by its first element.
fn pubsub_kind(m: &Msg) -> Option<String> {
    if !matches!(m.kind, Kind::Array | Kind::Push) {
        return None;
    }
    let first = m.items.first()?;
    let word = String::from_utf8_lossy(&first.text).to_ascii_lowercase();
    matches!(
        word.as_str(),
        "message"
            | "pmessage"
            | "smessage"
            | "subscribe"
            | "psubscribe"
            | "ssubscribe"
            | "unsubscribe"
            | "punsubscribe"
            | "sunsubscribe"
    )
    .then_some(word)
}

impl RedisConn {
    fn command(&mut self, m: &Msg, ts: u64, out: &mut Output) {
        let Some(first) = m.items.first() else { return };
        let verb = upper(&first.text);
        let (redacting, strict) = redact::with_policy(|p| (p.level != Level::Off, p.level == Level::Strict));
        let secret = |i: usize| redacting && is_secret(&verb, &m.items, i);
        // The command line as one string, built in place (it is made for
        // every command, so no word gets a string of its own). Strict
        // redaction keeps the verb and the key, never the values.
        let shown = if strict { m.items.len().min(2) } else { m.items.len() };
        let mut text = String::new();
        for (i, item) in m.items.iter().take(shown).enumerate() {
            if i > 0 {
                text.push(' ');
            }
            if secret(i) {
                text.push_str(redact::REDACTED);
            } else {
                text.push_str(&String::from_utf8_lossy(&item.text));
            }
        }
        if m.count > shown as u64 {
            text.push_str(" …");
        }
        text.truncate(text.char_indices().nth(MAX_COMMAND_TEXT).map_or(text.len(), |(i, _)| i));
        let key = m.items.get(1).filter(|_| !secret(1)).map(|k| {
            let mut k = lossy(&k.text[..k.text.len().min(MAX_KEY)]);
            // Lossy decoding can grow the text; cut on a char boundary.
            let cut = (0..=MAX_KEY.min(k.len())).rev().find(|&i| k.is_char_boundary(i)).unwrap_or(0);
            k.truncate(cut);
            k
        });
        let arg = |i: usize| m.items.get(i).map(|a| upper(&a.text));
        let mut expected = match verb.as_str() {
            "SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE" => (m.count.saturating_sub(1)).max(1) as u32,
            _ => 1,
        };
        if verb == "CLIENT" && arg(1).as_deref() == Some("REPLY") {
            match arg(2).as_deref() {
                Some("OFF") => {
                    self.mode = ReplyMode::Off;
                    expected = 0;
                }
                Some("SKIP") => {
                    self.mode = ReplyMode::Skip;
                    expected = 0;
                }
                Some("ON") => self.mode = ReplyMode::On,
                _ => {}
            }
        } else {
            match self.mode {
                ReplyMode::Off => expected = 0,
                ReplyMode::Skip => {
                    expected = 0;
                    self.mode = ReplyMode::On;
                }
                ReplyMode::On => {}
            }
        }
        if verb == "HELLO" {
            self.resp3 = m.items.get(1).is_some_and(|v| v.text == b"3");
        }
        self.next_id += 1;
        let cmd = Command {
            id: self.next_id,
            verb,
            key,
            text,
            size: m.size as u64,
            ts,
            expected,
            response_size: 0,
            response_ts: None,
            error: None,
        };
        if expected == 0 && self.pending.is_empty() {
            out.record(record(cmd, false));
            return;
        }
        // A command with no reply still waits its turn, so records come
        // out in the order the commands were sent.
        if self.pending.len() >= MAX_PENDING
            && let Some(old) = self.pending.pop_front()
        {
            out.record(record(old, false));
        }
        self.pending.push_back(cmd);
    }

    fn reply(&mut self, m: &Msg, ts: u64, out: &mut Output) {
        if m.kind == Kind::Attribute {
            // Metadata about the reply that follows; it counts toward it.
            if let Some(front) = self.pending.front_mut() {
                front.response_size += m.size as u64;
                front.response_ts.get_or_insert(ts);
            }
            return;
        }
        let pubsub = pubsub_kind(m);
        let awaiting_subscribe =
            self.pending.front().is_some_and(|c| c.verb.ends_with("SUBSCRIBE") || c.verb.ends_with("UNSUBSCRIBE"));
        let is_message = match (&pubsub, m.kind) {
            (Some(w), _) if w.ends_with("message") => true,
            (Some(_), _) if !awaiting_subscribe => true,
            (None, Kind::Push) => true,
            _ => false,
        };
        if is_message {
            self.pushes += 1;
            return;
        }
        if pubsub.as_deref().is_some_and(|w| w.ends_with("subscribe") && !w.contains("unsub")) {
            self.subscribed = true;
        }
        let Some(front) = self.pending.front_mut() else {
            // A reply whose command was not seen (capture started late).
            let mut c = Command {
                id: 0,
                verb: String::new(),
                key: None,
                text: String::new(),
                size: 0,
                ts,
                expected: 0,
                response_size: m.size as u64,
                response_ts: Some(ts),
                error: error_text(m),
            };
            self.next_id += 1;
            c.id = self.next_id;
            out.record(record(c, true));
            return;
        };
        front.response_size += m.size as u64;
        front.response_ts.get_or_insert(ts);
        if front.error.is_none() {
            front.error = error_text(m);
        }
        front.expected = front.expected.saturating_sub(1);
        if front.expected == 0
            && let Some(done) = self.pending.pop_front()
        {
            out.record(record(done, true));
            while self.pending.front().is_some_and(|c| c.expected == 0) {
                if let Some(silent) = self.pending.pop_front() {
                    out.record(record(silent, false));
                }
            }
        }
    }
}

fn error_text(m: &Msg) -> Option<String> {
    matches!(m.kind, Kind::Error | Kind::BlobError).then(|| lossy(&m.text))
}

/// The record of a command that is done, taking its strings. Fields go
/// in in name order (as `FIELDS` lists them), so each is appended, not
/// searched for.
fn record(c: Command, answered: bool) -> Record {
    let mut f = Fields::with_capacity(FIELDS.len());
    let error = c.error.is_some();
    let summary = c.key.clone().unwrap_or_else(|| c.verb.clone());
    if !c.verb.is_empty() {
        f.insert("redis_command", Value::from(c.text));
    }
    if let Some(e) = c.error {
        let prefix = e.split_whitespace().next().unwrap_or_default().to_string();
        f.insert("redis_error", Value::from(e));
        f.insert("redis_error_prefix", Value::from(prefix));
    }
    if let Some(k) = c.key {
        f.insert("redis_key", Value::from(k));
    }
    f.insert("redis_request", Value::Bool(c.size > 0));
    f.insert("redis_response", Value::Bool(answered));
    if !c.verb.is_empty() {
        f.insert("redis_type", Value::from(c.verb.clone()));
    }
    Record {
        transaction_id: c.id,
        method: c.verb,
        summary,
        request_size: c.size,
        request_ts: (c.size > 0).then_some(c.ts),
        response_size: c.response_size,
        response_ts: c.response_ts,
        error,
        fields: f,
        ..Record::default()
    }
}

/// `*<n>\r\n$<len>\r\n<verb>\r\n`: decided on the command name alone, so
/// a 200 KB `SET` is recognised from its first bytes.
fn probe_command(bytes: &[u8]) -> Probe {
    let mut parts = bytes.splitn(4, |&b| b == b'\n');
    let (Some(count), Some(len), Some(verb)) = (parts.next(), parts.next(), parts.next()) else {
        return if bytes.len() < 64 { Probe::NeedMore } else { Probe::NoMatch };
    };
    let digits = |l: &[u8], prefix: u8| {
        l.first() == Some(&prefix)
            && l.strip_suffix(b"\r").is_some_and(|d| d.len() > 1 && d[1..].iter().all(u8::is_ascii_digit))
    };
    if !digits(count, b'*') || !digits(len, b'$') {
        return Probe::NoMatch;
    }
    let verb = verb.strip_suffix(b"\r").unwrap_or(verb);
    if !verb.is_empty() && verb.iter().all(|b| b.is_ascii_alphabetic() || *b == b'.' || *b == b'_' || *b == b'|') {
        Probe::Match
    } else {
        Probe::NoMatch
    }
}

/// The fields this plugin's records carry (`Dissector::fields`): what
/// the display filter knows before any record arrives.
pub const FIELDS: &[&str] = &[
    "redis_command",
    "redis_error",
    "redis_error_prefix",
    "redis_key",
    "redis_request",
    "redis_response",
    "redis_type",
];

impl Dissector for Redis {
    fn fields() -> Option<&'static [&'static str]> {
        Some(FIELDS)
    }

    type Conn = RedisConn;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "redis".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            abbreviation: "REDIS".into(),
            long_name: "Redis Serialization Protocol".into(),
            color: "#d82c20".into(),
            tcp_ports: vec![6379, 6380, 26379],
            udp_ports: vec![],
            priority: 5,
            probe_depth: 1024,
            accepts_gaps: false,
            // Large values (a 200 KB SET, a COMMAND DOCS reply) arrive whole.
            max_buffer: 16 << 20,
        }
    }

    fn probe(l4: L4, dir: Dir, bytes: &[u8]) -> Probe {
        if l4 != L4::Tcp || bytes.is_empty() {
            return if bytes.is_empty() { Probe::NeedMore } else { Probe::NoMatch };
        }
        match (dir, bytes[0]) {
            // A command: an array whose first element is a bulk string.
            (Dir::ToServer, b'*') => probe_command(bytes),
            (Dir::ToServer, _) => match resp::parse(bytes) {
                // Inline commands are plain words: only a weak match.
                Parsed::Done(m)
                    if m.kind == Kind::Inline
                        && !m.text.windows(5).any(|w| w == b"HTTP/")
                        && m.items.first().is_some_and(|w| INLINE_COMMANDS.contains(&upper(&w.text).as_str())) =>
                {
                    Probe::MatchWeak
                }
                Parsed::NeedMore(_) => Probe::NeedMore,
                _ => Probe::NoMatch,
            },
            (Dir::ToClient, b'+' | b'-' | b':' | b'$' | b'*' | b'%' | b'>' | b'|' | b'_') => match resp::parse(bytes) {
                Parsed::Done(_) => Probe::MatchWeak,
                Parsed::NeedMore(_) => Probe::NeedMore,
                Parsed::Desync => Probe::NoMatch,
            },
            _ => Probe::NoMatch,
        }
    }

    fn data(&mut self, conn: &mut RedisConn, cx: &mut Ctx<'_>, bytes: &[u8]) -> Progress {
        let (dir, ts) = (cx.dir, cx.ts);
        let out = &mut *cx.out;
        let clamp = |n: usize| n.min(u32::MAX as usize) as u32;
        match conn.decoders[dir.code() as usize].feed(bytes) {
            resp::Step::Done(m, consumed) => {
                match dir {
                    Dir::ToServer if m.kind == Kind::Inline && m.items.is_empty() => {}
                    Dir::ToServer => conn.command(&m, ts, out),
                    Dir::ToClient => conn.reply(&m, ts, out),
                }
                Progress::Done { consumed: clamp(consumed) }
            }
            resp::Step::NeedMore { consumed, needed } => {
                Progress::NeedMore { consumed: clamp(consumed), needed: clamp(needed) }
            }
            resp::Step::Skip { consumed, skip } => Progress::Skip { consumed: clamp(consumed), skip },
            resp::Step::Desync => Progress::Desync,
        }
    }

    fn close(&mut self, conn: RedisConn, cx: &mut Ctx<'_>) {
        let out = &mut *cx.out;
        for c in conn.pending {
            let answered = c.response_size > 0;
            out.record(record(c, answered));
        }
    }
}

trawl_sdk::export_dissector!(Redis);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pairs: &[(Dir, &[u8])]) -> Vec<Record> {
        let mut s = trawl_sdk::testing::Session::<Redis>::tcp(6379);
        for (dir, bytes) in pairs {
            s.send(*dir, bytes);
        }
        s.close();
        s.records
    }

    #[test]
    fn pipelined_commands_pair_in_order() {
        let r = run(&[
            (Dir::ToServer, b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$1\r\n1\r\nPING\r\n"),
            (Dir::ToClient, b"$-1\r\n+OK\r\n-WRONGTYPE Operation against a key\r\n"),
        ]);
        let got: Vec<_> = r.iter().map(|r| (r.method.as_str(), r.summary.as_str(), r.error)).collect();
        assert_eq!(got, [("GET", "a", false), ("SET", "b", false), ("PING", "PING", true)]);
        assert_eq!(r[2].fields["redis_error_prefix"], Value::from("WRONGTYPE"));
    }

    #[test]
    fn client_reply_off_and_skip() {
        let r = run(&[
            (
                Dir::ToServer,
                b"CLIENT REPLY SKIP\r\nSET a 1\r\nGET a\r\nCLIENT REPLY OFF\r\nSET b 2\r\nCLIENT REPLY ON\r\nGET b\r\n",
            ),
            (Dir::ToClient, b"$1\r\n1\r\n+OK\r\n$1\r\n2\r\n"),
        ]);
        let got: Vec<_> = r.iter().map(|r| (r.method.clone(), r.response_size > 0)).collect();
        assert_eq!(
            got,
            [
                ("CLIENT".into(), false),
                ("SET".into(), false),
                ("GET".into(), true),
                ("CLIENT".into(), false),
                ("SET".into(), false),
                ("CLIENT".into(), true),
                ("GET".into(), true)
            ]
        );
    }

    #[test]
    fn pubsub_messages_are_not_replies() {
        let r = run(&[
            (Dir::ToServer, b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$1\r\nb\r\n"),
            (
                Dir::ToClient,
                b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n",
            ),
            (Dir::ToServer, b"*1\r\n$4\r\nPING\r\n"),
            (Dir::ToClient, b">3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$2\r\nyo\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
        ]);
        let got: Vec<_> = r.iter().map(|r| r.method.as_str()).collect();
        assert_eq!(got, ["SUBSCRIBE", "PING"]);
    }

    #[test]
    fn resp3_attribute_and_reply_without_command() {
        let r = run(&[
            (Dir::ToClient, b"+OK\r\n"),
            (Dir::ToServer, b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
            (Dir::ToClient, b"%1\r\n+server\r\n+redis\r\n|1\r\n+key-popularity\r\n%0\r\n$1\r\nv\r\n"),
        ]);
        let got: Vec<_> = r.iter().map(|r| (r.method.as_str(), r.request_size > 0)).collect();
        assert_eq!(got, [("", false), ("HELLO", true), ("GET", true)]);
    }

    #[test]
    fn binary_keys_are_cut_on_char_boundaries() {
        // Found by the fuzzer: a key of invalid UTF-8 grows when decoded.
        let mut cmd = b"*2\r\n$3\r\nGET\r\n$64\r\n".to_vec();
        cmd.extend_from_slice(&[0xff; 64]);
        cmd.extend_from_slice(b"\r\n");
        let r = run(&[(Dir::ToServer, &cmd), (Dir::ToClient, b"$-1\r\n")]);
        assert_eq!(r.len(), 1);
        assert!(r[0].summary.len() <= MAX_KEY);
    }

    #[test]
    fn probes() {
        assert_eq!(Redis::probe(L4::Tcp, Dir::ToServer, b"*1\r\n$4\r\nPING\r\n"), Probe::Match);
        assert_eq!(Redis::probe(L4::Tcp, Dir::ToServer, b"PING\r\n"), Probe::MatchWeak);
        assert_eq!(Redis::probe(L4::Tcp, Dir::ToServer, b"GET / HTTP/1.1\r\n"), Probe::NoMatch);
        assert_eq!(Redis::probe(L4::Tcp, Dir::ToServer, b"\x16\x03\x01"), Probe::NoMatch);
    }

    #[test]
    fn passwords_never_reach_records() {
        let r = run(&[
            (
                Dir::ToServer,
                b"*3\r\n$4\r\nAUTH\r\n$5\r\nalice\r\n$7\r\nhunter2\r\nAUTH hunter2\r\n\
                  *5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$5\r\nalice\r\n$7\r\nhunter2\r\n\
                  *4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$11\r\nrequirepass\r\n$7\r\nhunter2\r\n\
                  *6\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$9\r\nmaxmemory\r\n$2\r\n10\r\n$10\r\nmasterauth\r\n$7\r\nhunter2\r\n\
                  *5\r\n$3\r\nACL\r\n$7\r\nSETUSER\r\n$3\r\nbob\r\n$2\r\non\r\n$8\r\n>hunter2\r\n",
            ),
            (Dir::ToClient, b"+OK\r\n+OK\r\n%0\r\n+OK\r\n+OK\r\n+OK\r\n"),
        ]);
        assert_eq!(r.len(), 6, "{r:#?}");
        for rec in &r {
            let shown = format!("{} {} {:?}", rec.method, rec.summary, rec.fields);
            assert!(!shown.contains("hunter2") && !shown.contains("alice"), "{shown}");
        }
        assert_eq!(
            (r[0].summary.as_str(), &r[0].fields["redis_command"]),
            ("AUTH", &Value::from("AUTH [REDACTED] [REDACTED]"))
        );
        assert_eq!(r[3].fields["redis_command"], Value::from("CONFIG SET requirepass [REDACTED]"));
        assert_eq!(r[4].fields["redis_command"], Value::from("CONFIG SET maxmemory 10 masterauth [REDACTED]"));
        assert_eq!(r[5].fields["redis_command"], Value::from("ACL SETUSER bob on [REDACTED]"));
    }
}

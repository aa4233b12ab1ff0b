//! memcached's text protocol for trawl, written against the SDK alone:
//! commands paired with replies in order, `get` and `gets` a hit when any
//! value comes back, value blocks skipped (counted, never buffered).
//! Records carry `memcached_key` and `memcached_hit` (the key was found or
//! stored).
use trawl_sdk::{Ctx, Dir, Dissector, L4, Pending, PluginInfo, Probe, Progress, Record};

/// Storage commands (a data block follows their line), then the others.
const STORAGE: &str = " set add replace append prepend cas ";
const VERBS: &str = " set add replace append prepend cas get gets gat gats delete incr decr touch version stats ";

fn is(list: &str, verb: &str) -> bool {
    !verb.is_empty() && list.contains(&format!(" {verb} "))
}

#[derive(Default)]
pub struct Memcached;

#[derive(Default)]
pub struct Conn {
    next_id: u64,
    /// Requests waiting for their reply, and whether a value came back.
    pending: Pending<(Record, bool)>,
}

/// The first line of `bytes` without its CRLF, and its length with it.
fn line(bytes: &[u8]) -> Option<(String, usize)> {
    let end = bytes.iter().take(2048).position(|&b| b == b'\n')?;
    Some((String::from_utf8_lossy(&bytes[..end]).trim_end_matches('\r').to_string(), end + 1))
}

impl Dissector for Memcached {
    type Conn = Conn;

    fn info() -> PluginInfo {
        PluginInfo { tcp_ports: vec![11211], color: "#2a9d8f".into(), ..PluginInfo::new("memcached") }
    }

    fn probe(l4: L4, dir: Dir, bytes: &[u8]) -> Probe {
        match line(bytes) {
            _ if l4 != L4::Tcp || dir != Dir::ToServer => Probe::NoMatch,
            Some((l, _)) if is(VERBS, l.split(' ').next().unwrap_or("")) => Probe::Match,
            None if bytes.len() < 2048 => Probe::NeedMore,
            _ => Probe::NoMatch,
        }
    }

    fn data(&mut self, c: &mut Conn, cx: &mut Ctx<'_>, bytes: &[u8]) -> Progress {
        // A line longer than the host's buffer detaches the connection.
        let Some((text, used)) = line(bytes) else { return Progress::more(bytes.len()) };
        let words: Vec<&str> = text.split_ascii_whitespace().collect();
        let (verb, arg) = (words.first().copied().unwrap_or(""), |i: usize| words.get(i).copied().unwrap_or(""));
        let to_server = cx.dir == Dir::ToServer;
        // The data block of a storage command or a VALUE: its length, then CRLF.
        let (block, at) = if to_server { (is(STORAGE, verb), 4) } else { (verb == "VALUE", 3) };
        let skip = if block { arg(at).parse::<u64>().map_or(0, |n| n.saturating_add(2)) } else { 0 };
        let size = (used as u64).saturating_add(skip);
        if to_server && !is(VERBS, verb) {
            return Progress::Desync;
        } else if to_server {
            c.next_id += 1;
            let request = Record::request(c.next_id, verb.to_ascii_uppercase(), cx.ts, size).summary(&text);
            let request = (request.field("memcached_key", arg(1)), false);
            let done = if words.last() == Some(&"noreply") { Some(request) } else { c.pending.push(request) };
            done.into_iter().for_each(|(r, _)| cx.record(r));
        } else if let Some((r, hit)) = c.pending.front_mut().filter(|_| matches!(verb, "VALUE" | "STAT")) {
            // A line of a reply that goes on.
            (r.response_size, *hit) = (r.response_size.saturating_add(size), true);
        } else if let Some((r, hit)) = c.pending.pop() {
            let (error, size) = (verb.ends_with("ERROR"), r.response_size.saturating_add(size));
            let hit = !error && (hit || !matches!(verb, "END" | "NOT_FOUND" | "NOT_STORED"));
            cx.record(r.response(cx.ts, size).error(error).field("memcached_hit", hit));
        }
        Progress::Skip { consumed: used as u32, skip }
    }

    fn close(&mut self, c: Conn, cx: &mut Ctx<'_>) {
        c.pending.into_iter().for_each(|(r, _)| cx.record(r));
    }
}

trawl_sdk::export_dissector!(Memcached);

#[cfg(test)]
mod tests {
    use super::*;
    use trawl_sdk::testing::Session;
    use trawl_sdk::{Value, abi::Record};

    /// The example stays within 60 lines of Rust, not counting blank
    /// lines, comments and these tests.
    #[test]
    fn the_plugin_is_at_most_60_lines() {
        let source = include_str!("lib.rs");
        let code = source.split("#[cfg(test)]").next().unwrap_or(source);
        let lines = code.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("//")).count();
        assert!(lines <= 60, "{lines} lines");
    }

    fn hit(r: &Record) -> bool {
        r.fields.get("memcached_hit") == Some(&Value::Bool(true))
    }

    #[test]
    fn commands_pair_with_replies_and_misses_are_a_field() {
        let mut s = Session::<Memcached>::tcp(11211);
        s.send(Dir::ToServer, b"set k 0 0 5\r\nhello\r\nget k\r\nget nope\r\ndelete nope\r\nincr n 1\r\n");
        s.send(Dir::ToClient, b"STORED\r\nVALUE k 0 5\r\nhello\r\nEND\r\nEND\r\nNOT_FOUND\r\nNOT_FOUND\r\n");
        s.close();
        let got: Vec<(&str, bool, u64, u64)> =
            s.records.iter().map(|r| (r.method.as_str(), hit(r), r.request_size, r.response_size)).collect();
        assert_eq!(
            got,
            [
                ("SET", true, 20, 8),
                ("GET", true, 7, 25),
                ("GET", false, 10, 5),
                ("DELETE", false, 13, 11),
                ("INCR", false, 10, 11)
            ]
        );
        assert_eq!(s.records[1].fields["memcached_key"], Value::from("k"));
        assert!(s.records.iter().all(|r| !r.error && r.response_ts.is_some()));
    }

    #[test]
    fn every_split_point_gives_the_same_records_and_values_are_skipped_not_copied() {
        let value = vec![b'x'; 100_000];
        let mut request = b"set big 0 0 100000\r\n".to_vec();
        request.extend_from_slice(&value);
        request.extend_from_slice(b"\r\ngets big\r\nstats\r\n");
        let mut reply = b"STORED\r\nVALUE big 0 100000 7\r\n".to_vec();
        reply.extend_from_slice(&value);
        reply.extend_from_slice(b"\r\nEND\r\nSTAT pid 1\r\nSTAT uptime 2\r\nEND\r\n");
        let mut whole = Session::<Memcached>::tcp(11211);
        whole.send(Dir::ToServer, &request);
        whole.send(Dir::ToClient, &reply);
        let mut bytewise = Session::<Memcached>::tcp(11211);
        bytewise.bytewise(Dir::ToServer, &request);
        bytewise.bytewise(Dir::ToClient, &reply);
        for s in [&whole, &bytewise] {
            let methods: Vec<&str> = s.records.iter().map(|r| r.method.as_str()).collect();
            assert_eq!(methods, ["SET", "GETS", "STATS"]);
            assert!(s.records.iter().all(hit));
            assert_eq!(s.records[1].response_size, 22 + 100_002 + 5);
        }
        // Arriving a byte at a time, the values go by in the host, uncopied.
        assert_eq!(bytewise.skipped, 2 * 100_002);
        assert!(bytewise.copied < 5_000, "{} bytes copied in", bytewise.copied);
    }

    #[test]
    fn noreply_errors_and_unanswered_requests() {
        let mut s = Session::<Memcached>::tcp(11211);
        s.send(Dir::ToServer, b"set a 0 0 1 noreply\r\n1\r\nincr a x\r\nget a\r\n");
        s.send(Dir::ToClient, b"CLIENT_ERROR invalid numeric delta argument\r\n");
        s.close();
        let got: Vec<(&str, bool, bool)> =
            s.records.iter().map(|r| (r.method.as_str(), r.error, r.response_ts.is_some())).collect();
        assert_eq!(got, [("SET", false, false), ("INCR", true, true), ("GET", false, false)]);
        assert!(matches!(Memcached::probe(L4::Tcp, Dir::ToServer, b"get k\r\n"), Probe::Match));
        assert!(matches!(Memcached::probe(L4::Tcp, Dir::ToServer, b"GET / HTTP/1.1\r\n"), Probe::NoMatch));
        assert!(matches!(Memcached::probe(L4::Tcp, Dir::ToServer, b"ge"), Probe::NeedMore));
        s = Session::<Memcached>::tcp(11211);
        s.send(Dir::ToServer, b"set k 0 0 18446744073709551615\r\nget \xff\xfe\r\n");
        assert_eq!(s.records.len(), 0, "the huge value is still going by");
        s = Session::<Memcached>::tcp(11211);
        s.send(Dir::ToServer, b"bogus\r\n");
        assert_eq!(s.status, trawl_sdk::Status::Desync, "`bogus` is not memcached");
    }
}

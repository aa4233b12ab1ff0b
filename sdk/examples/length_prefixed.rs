//! A binary protocol whose messages are a 4-byte big-endian length, a
//! 1-byte kind and a body: the dissector reads each header and asks the
//! host to skip the body (`Progress::Skip`), so bodies of any size are
//! counted and never copied into the plugin. Run it with `cargo run -p
//! trawl-sdk --example length_prefixed`; `cargo test` runs it too.

use trawl_sdk::testing::Session;
use trawl_sdk::{Ctx, Dir, Dissector, L4, Pending, PluginInfo, Probe, Progress, Record};

#[derive(Debug, Default)]
pub struct Framed;

#[derive(Debug, Default)]
pub struct FramedConn {
    next_id: u64,
    pending: Pending<Record>,
}

/// Longest body accepted; a bigger length means these are not our bytes.
const MAX_BODY: u32 = 64 << 20;

impl Dissector for Framed {
    type Conn = FramedConn;

    fn info() -> PluginInfo {
        PluginInfo { tcp_ports: vec![9999], ..PluginInfo::new("framed") }
    }

    fn probe(l4: L4, _dir: Dir, bytes: &[u8]) -> Probe {
        match bytes {
            _ if l4 != L4::Tcp => Probe::NoMatch,
            [a, b, c, d, kind, ..] if u32::from_be_bytes([*a, *b, *c, *d]) <= MAX_BODY && *kind < 4 => Probe::MatchWeak,
            _ if bytes.len() < 5 => Probe::NeedMore,
            _ => Probe::NoMatch,
        }
    }

    fn data(&mut self, conn: &mut FramedConn, cx: &mut Ctx<'_>, bytes: &[u8]) -> Progress {
        let [a, b, c, d, kind, ..] = *bytes else { return Progress::NeedMore { consumed: 0, needed: 5 } };
        let body = u32::from_be_bytes([a, b, c, d]);
        if body > MAX_BODY {
            return Progress::Desync;
        }
        let size = 5 + u64::from(body);
        if cx.dir == Dir::ToServer {
            conn.next_id += 1;
            let request = Record::request(conn.next_id, format!("KIND{kind}"), cx.ts, size);
            if let Some(unanswered) = conn.pending.push(request) {
                cx.record(unanswered);
            }
        } else if let Some(request) = conn.pending.pop() {
            cx.record(request.response(cx.ts, size).status(i64::from(kind)).error(kind == 3));
        }
        Progress::Skip { consumed: 5, skip: u64::from(body) }
    }
}

trawl_sdk::export_dissector!(Framed);

fn frame(kind: u8, body: usize) -> Vec<u8> {
    let mut f = (body as u32).to_be_bytes().to_vec();
    f.push(kind);
    f.resize(5 + body, b'.');
    f
}

/// A request with a 1 MB body, answered in pieces.
fn run() -> Session<Framed> {
    let mut s = Session::<Framed>::tcp(9999);
    s.send(Dir::ToServer, &frame(1, 1 << 20)[..1000]);
    s.send(Dir::ToServer, &frame(1, 1 << 20)[1000..]);
    for piece in frame(3, 10).chunks(3) {
        s.send(Dir::ToClient, piece);
    }
    s.close();
    s
}

fn main() {
    let s = run();
    for r in &s.records {
        println!("{} {} B → {} B, status {:?}", r.method, r.request_size, r.response_size, r.status_code);
    }
    println!("copied into the plugin: {} B; skipped: {} B", s.copied, s.skipped);
}

#[test]
fn bodies_are_skipped_and_only_headers_are_copied() {
    let s = run();
    let r = &s.records[0];
    assert_eq!((r.request_size, r.response_size, r.error), (5 + (1 << 20), 15, true));
    // Only what arrived with a header crosses: the first 1000-byte segment
    // and the answer's 3-byte pieces.
    assert!(s.copied < 1_100, "{} bytes copied", s.copied);
    // The request body after the first segment, and the answer's body
    // after the piece that held its header.
    assert_eq!(s.skipped, ((1 << 20) - 995) + 9);
}

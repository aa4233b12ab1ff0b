//! The smallest useful dissector: a line protocol where the client sends
//! one command per line and the server answers each with one line. Run it
//! with `cargo run -p trawl-sdk --example line_protocol`: it drives the
//! dissector the way the host does (`testing::Session`) and prints the
//! records. `cargo test` runs it too.

use trawl_sdk::testing::Session;
use trawl_sdk::{Ctx, Dir, Dissector, L4, Pending, PluginInfo, Probe, Progress, Record};

#[derive(Debug, Default)]
pub struct Lines;

#[derive(Debug, Default)]
pub struct LinesConn {
    next_id: u64,
    pending: Pending<Record>,
}

impl Dissector for Lines {
    type Conn = LinesConn;

    fn info() -> PluginInfo {
        PluginInfo { tcp_ports: vec![7777], color: "#6a4c93".into(), ..PluginInfo::new("lines") }
    }

    fn probe(l4: L4, dir: Dir, bytes: &[u8]) -> Probe {
        match bytes.iter().position(|&b| b == b'\n') {
            _ if l4 != L4::Tcp || dir != Dir::ToServer => Probe::NoMatch,
            Some(_) => Probe::MatchWeak,
            None if bytes.len() < 256 => Probe::NeedMore,
            None => Probe::NoMatch,
        }
    }

    fn data(&mut self, conn: &mut LinesConn, cx: &mut Ctx<'_>, bytes: &[u8]) -> Progress {
        let Some(end) = bytes.iter().position(|&b| b == b'\n') else { return Progress::more(bytes.len()) };
        let line = String::from_utf8_lossy(&bytes[..end]).trim_end().to_string();
        let size = end as u64 + 1;
        if cx.dir == Dir::ToServer {
            conn.next_id += 1;
            let verb = line.split(' ').next().unwrap_or("").to_string();
            let request = Record::request(conn.next_id, verb, cx.ts, size).summary(&line).field("line_len", end);
            if let Some(unanswered) = conn.pending.push(request) {
                cx.record(unanswered);
            }
        } else if let Some(request) = conn.pending.pop() {
            cx.record(request.response(cx.ts, size).error(line.starts_with("ERR")));
        }
        Progress::Done { consumed: end as u32 + 1 }
    }

    fn close(&mut self, conn: LinesConn, cx: &mut Ctx<'_>) {
        conn.pending.into_iter().for_each(|r| cx.record(r));
    }
}

trawl_sdk::export_dissector!(Lines);

/// Two commands, answered byte by byte: every split point is exercised.
fn run() -> Vec<Record> {
    let mut s = Session::<Lines>::tcp(7777);
    s.send(Dir::ToServer, b"GET a\nDEL b\nPING\n");
    s.bytewise(Dir::ToClient, b"OK 1\nERR no such key\n");
    s.close();
    s.records
}

fn main() {
    for r in run() {
        println!("{} {:?} error={} fields={:?}", r.method, r.summary, r.error, r.fields);
    }
}

#[test]
fn records_pair_requests_with_answers() {
    let got: Vec<(String, bool, bool)> =
        run().into_iter().map(|r| (r.method, r.error, r.response_ts.is_some())).collect();
    let want = [("GET", false, true), ("DEL", true, true), ("PING", false, false)];
    assert_eq!(got, want.map(|(m, e, a)| (m.to_string(), e, a)));
}

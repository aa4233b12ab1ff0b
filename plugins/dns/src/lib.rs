//! DNS dissector for trawl: UDP datagrams, and TCP with its 2-byte length
//! prefix. Queries pair with responses by id and question; a response with
//! no query (capture started late) and a duplicate response still yield a
//! record.
#![forbid(unsafe_code)]

pub mod message;

use message::{Message, opcode_name, rcode_name, type_name};
use std::collections::VecDeque;
use trawl_sdk::{ConnMeta, Ctx, Dir, Dissector, Fields, L4, Output, PluginInfo, Probe, Progress, Record, Value};

/// Queries waiting for an answer per flow; beyond this the oldest is
/// reported unanswered.
const MAX_PENDING: usize = 256;
/// Answered queries remembered to recognise duplicate responses.
const MAX_ANSWERED: usize = 64;

#[derive(Debug, Default)]
pub struct Dns;

type Key = (u16, String, u16);

#[derive(Debug)]
struct Query {
    key: Key,
    tx: u64,
    dir: Dir,
    ts: u64,
    size: u64,
    msg: Message,
}

#[derive(Debug, Default)]
pub struct DnsConn {
    /// Multicast and broadcast name protocols (mDNS, LLMNR, NetBIOS) share
    /// the wire format but are not service lookups; they are declined.
    declined: bool,
    next_tx: u64,
    pending: VecDeque<Query>,
    answered: VecDeque<(Key, u64)>,
}

fn key(m: &Message) -> Key {
    match m.questions.first() {
        Some(q) => (m.id, q.name.to_ascii_lowercase(), q.qtype),
        None => (m.id, String::new(), 0),
    }
}

fn opposite(dir: Dir) -> Dir {
    match dir {
        Dir::ToServer => Dir::ToClient,
        Dir::ToClient => Dir::ToServer,
    }
}

impl DnsConn {
    fn handle(&mut self, msg: Message, dir: Dir, ts: u64, size: u64, out: &mut Output) {
        let k = key(&msg);
        if !msg.response {
            self.next_tx += 1;
            if self.pending.len() >= MAX_PENDING
                && let Some(old) = self.pending.pop_front()
            {
                out.record(record(Some(&old), None, false));
            }
            self.pending.push_back(Query { key: k, tx: self.next_tx, dir, ts, size, msg });
            return;
        }
        let response = (msg, ts, size);
        if let Some(i) = self.pending.iter().position(|q| q.key == k) {
            if let Some(q) = self.pending.remove(i) {
                if self.answered.len() >= MAX_ANSWERED {
                    self.answered.pop_front();
                }
                self.answered.push_back((k, q.tx));
                out.record(record(Some(&q), Some(&response), false));
            }
            return;
        }
        let duplicate = self.answered.iter().find(|(a, _)| *a == k).map(|(_, tx)| *tx);
        let tx = duplicate.unwrap_or_else(|| {
            self.next_tx += 1;
            self.next_tx
        });
        let mut r = record(None, Some(&response), duplicate.is_some());
        r.transaction_id = tx;
        r.request_dir = opposite(dir);
        out.record(r);
    }
}

fn section(list: &[message::Answer]) -> Value {
    Value::List(
        list.iter()
            .map(|a| {
                let mut r = Fields::with_capacity(4);
                r.insert("name", Value::from(a.name.clone()));
                r.insert("type", Value::from(type_name(a.rtype)));
                r.insert("ttl", Value::Int(i64::from(a.ttl)));
                r.insert("data", Value::from(a.data.clone()));
                Value::Map(r)
            })
            .collect(),
    )
}

fn answers(m: &Message) -> (Value, Value) {
    let data = m.answers.iter().map(|a| Value::from(a.data.clone())).collect();
    (Value::List(data), section(&m.answers))
}

fn record(query: Option<&Query>, response: Option<&(Message, u64, u64)>, duplicate: bool) -> Record {
    let mut r = Record::default();
    let mut f = Fields::with_capacity(24);
    let head = query.map(|q| &q.msg).or(response.map(|(m, _, _)| m));
    if let Some(m) = head {
        r.method = opcode_name(m.opcode).to_string();
        r.summary = m.questions.first().map(|q| q.name.clone()).unwrap_or_default();
        f.insert("dns_id", Value::Int(i64::from(m.id)));
        f.insert("dns_opcode", Value::from(opcode_name(m.opcode)));
        f.insert("dns_questions", Value::List(m.questions.iter().map(|q| Value::from(q.name.clone())).collect()));
        f.insert(
            "dns_question_types",
            Value::List(m.questions.iter().map(|q| Value::from(type_name(q.qtype))).collect()),
        );
    }
    if let Some(q) = query {
        r.transaction_id = q.tx;
        r.request_size = q.size;
        r.request_ts = Some(q.ts);
        r.request_dir = q.dir;
        f.insert("dns_recursion_desired", Value::Bool(q.msg.recursion_desired));
    }
    f.insert("dns_request", Value::Bool(query.is_some()));
    f.insert("dns_response", Value::Bool(response.is_some()));
    if let Some((m, ts, size)) = response {
        r.status_code = Some(i64::from(m.rcode));
        r.error = m.rcode != 0;
        r.response_size = *size;
        r.response_ts = Some(*ts);
        let (data, records) = answers(m);
        f.insert("dns_answers", data);
        f.insert("dns_answer_records", records);
        f.insert("dns_authority_records", section(&m.authority));
        f.insert("dns_additional_records", section(&m.additional));
        f.insert("status_code", Value::Int(i64::from(m.rcode)));
        f.insert("dns_rcode_name", Value::from(rcode_name(m.rcode)));
        f.insert("dns_truncated", Value::Bool(m.truncated));
        f.insert("dns_authoritative", Value::Bool(m.authoritative));
        f.insert("dns_authority_count", Value::Int(i64::from(m.authority_count)));
        f.insert("dns_additional_count", Value::Int(i64::from(m.additional_count)));
        if duplicate {
            f.insert("dns_duplicate", Value::Bool(true));
        }
    }
    r.fields = f;
    r
}

/// Plausible DNS header: opcode in use, few questions, sane counts.
fn plausible(msg: &[u8]) -> Probe {
    if msg.len() < 12 {
        return Probe::NeedMore;
    }
    let opcode = (msg[2] >> 3) & 0xf;
    let qd = u16::from_be_bytes([msg[4], msg[5]]);
    let z = msg[3] & 0x40;
    if opcode > 6 || opcode == 3 || qd == 0 || qd > 16 || z != 0 {
        return Probe::NoMatch;
    }
    match message::parse(msg) {
        Ok(m) if !m.questions.is_empty() => Probe::Match,
        Ok(_) => Probe::NoMatch,
        Err(message::Error::Truncated) => Probe::NeedMore,
        Err(message::Error::Malformed) => Probe::NoMatch,
    }
}

/// The fields this plugin's records carry (`Dissector::fields`): what
/// the display filter knows before any record arrives.
pub const FIELDS: &[&str] = &[
    "dns_additional_count",
    "dns_additional_records",
    "dns_answer_records",
    "dns_answers",
    "dns_authoritative",
    "dns_authority_count",
    "dns_authority_records",
    "dns_duplicate",
    "dns_id",
    "dns_opcode",
    "dns_question_types",
    "dns_questions",
    "dns_rcode_name",
    "dns_recursion_desired",
    "dns_request",
    "dns_response",
    "dns_truncated",
    "status_code",
];

impl Dissector for Dns {
    fn fields() -> Option<&'static [&'static str]> {
        Some(FIELDS)
    }

    type Conn = DnsConn;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "dns".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            abbreviation: "DNS".into(),
            long_name: "Domain Name System".into(),
            color: "#0e9f6e".into(),
            tcp_ports: vec![53],
            udp_ports: vec![53],
            priority: 20,
            probe_depth: 2048,
            accepts_gaps: true,
            max_buffer: 70 * 1024,
        }
    }

    fn probe(l4: L4, _dir: Dir, bytes: &[u8]) -> Probe {
        match l4 {
            L4::Udp => match plausible(bytes) {
                // A datagram is whole: missing bytes mean it is not DNS.
                Probe::NeedMore => Probe::NoMatch,
                p => p,
            },
            L4::Tcp => {
                if bytes.len() < 2 {
                    return Probe::NeedMore;
                }
                let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
                if len < 12 {
                    return Probe::NoMatch;
                }
                let body = &bytes[2..bytes.len().min(2 + len)];
                match plausible(body) {
                    Probe::NeedMore if body.len() >= 12 => Probe::MatchWeak,
                    p => p,
                }
            }
        }
    }

    fn data(&mut self, conn: &mut DnsConn, cx: &mut Ctx<'_>, bytes: &[u8]) -> Progress {
        let (dir, ts) = (cx.dir, cx.ts);
        let out = &mut *cx.out;
        if conn.declined {
            return Progress::Desync;
        }
        if bytes.len() < 2 {
            return Progress::NeedMore { consumed: 0, needed: 2 };
        }
        let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        if len < 12 {
            return Progress::Desync;
        }
        if bytes.len() < 2 + len {
            return Progress::NeedMore { consumed: 0, needed: (2 + len) as u32 };
        }
        match message::parse(&bytes[2..2 + len]) {
            Ok(msg) => {
                conn.handle(msg, dir, ts, (2 + len) as u64, out);
                Progress::Done { consumed: (2 + len) as u32 }
            }
            Err(_) => Progress::Desync,
        }
    }

    fn gap(&mut self, _conn: &mut DnsConn, _cx: &mut Ctx<'_>, _len: u64) -> bool {
        // Length-prefixed framing cannot be found again inside a stream.
        false
    }

    fn datagram(&mut self, conn: &mut DnsConn, cx: &mut Ctx<'_>, bytes: &[u8]) -> Progress {
        let (dir, ts) = (cx.dir, cx.ts);
        let out = &mut *cx.out;
        if conn.declined {
            return Progress::Desync;
        }
        match message::parse(bytes) {
            Ok(msg) => {
                conn.handle(msg, dir, ts, bytes.len() as u64, out);
                Progress::Done { consumed: bytes.len() as u32 }
            }
            // One bad datagram does not make the flow something else.
            Err(_) if bytes.len() >= 12 => Progress::Done { consumed: bytes.len() as u32 },
            Err(_) => Progress::Desync,
        }
    }

    fn open(&mut self, meta: &ConnMeta) -> DnsConn {
        let local_only = match meta.server {
            std::net::IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast() || v4.octets()[3] == 255,
            std::net::IpAddr::V6(v6) => v6.is_multicast(),
        };
        let declined = local_only || matches!(meta.server_port, 137 | 138 | 5353 | 5355);
        DnsConn { declined, ..DnsConn::default() }
    }

    fn close(&mut self, conn: DnsConn, cx: &mut Ctx<'_>) {
        let out = &mut *cx.out;
        for q in &conn.pending {
            out.record(record(Some(q), None, false));
        }
    }
}

trawl_sdk::export_dissector!(Dns);

#[cfg(test)]
mod tests {
    use super::*;
    use trawl_sdk::{Event, Guest};

    fn msg(id: u16, response: bool, rcode: u8) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[
            if response { 0x81 } else { 0x01 },
            0x80 | rcode,
            0,
            1,
            0,
            u8::from(response),
            0,
            0,
            0,
            0,
        ]);
        m.extend_from_slice(&[3, b'w', b'w', b'w', 0, 0, 1, 0, 1]);
        if response {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 9, 0, 4, 1, 2, 3, 4]);
        }
        m
    }

    fn records(events: Vec<Event>) -> Vec<Record> {
        events
            .into_iter()
            .filter_map(|e| match e {
                Event::Record(r) => Some(r),
                Event::Upgrade { .. } => None,
            })
            .collect()
    }

    fn guest(l4: L4) -> Guest<Dns> {
        let mut g = Guest::<Dns>::default();
        let meta = ConnMeta {
            l4,
            client: "10.0.0.1".parse().unwrap(),
            client_port: 5000,
            server: "10.0.0.53".parse().unwrap(),
            server_port: 53,
            midstream: false,
        };
        g.open(1, meta);
        g
    }

    #[test]
    fn udp_pairs_and_duplicates() {
        let mut g = guest(L4::Udp);
        assert!(records(g.datagram(1, Dir::ToServer, 10, &msg(5, false, 0)).events).is_empty());
        let r = records(g.datagram(1, Dir::ToClient, 20, &msg(5, true, 3)).events);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].summary.as_str(), r[0].status_code, r[0].error), ("www", Some(3), true));
        assert_eq!(r[0].fields["dns_answers"], Value::List(vec![Value::from("1.2.3.4")]));
        let dup = records(g.datagram(1, Dir::ToClient, 30, &msg(5, true, 3)).events);
        assert_eq!(dup[0].fields["dns_duplicate"], Value::Bool(true));
        assert_eq!(dup[0].request_size, 0);
    }

    #[test]
    fn response_without_query_flips_direction() {
        let mut g = guest(L4::Udp);
        let r = records(g.datagram(1, Dir::ToServer, 10, &msg(9, true, 0)).events);
        assert_eq!(r[0].request_dir, Dir::ToClient);
        assert_eq!(r[0].fields["dns_request"], Value::Bool(false));
    }

    #[test]
    fn tcp_framing_split_anywhere() {
        let mut g = guest(L4::Tcp);
        let mut stream = Vec::new();
        for id in [1u16, 2] {
            let q = msg(id, false, 0);
            stream.extend_from_slice(&(q.len() as u16).to_be_bytes());
            stream.extend_from_slice(&q);
        }
        let mut tail: Vec<u8> = Vec::new();
        for b in &stream {
            tail.push(*b);
            let r = g.data(1, Dir::ToServer, 0, 1, &tail, 0);
            tail.drain(..r.consumed as usize);
        }
        let mut resp = Vec::new();
        for id in [2u16, 1] {
            let m = msg(id, true, 0);
            resp.extend_from_slice(&(m.len() as u16).to_be_bytes());
            resp.extend_from_slice(&m);
        }
        let r = g.data(1, Dir::ToClient, 0, 2, &resp, 0);
        let recs = records(r.events);
        assert_eq!(recs.iter().map(|r| r.fields["dns_id"].clone()).collect::<Vec<_>>(), [Value::Int(2), Value::Int(1)]);
        assert_eq!(recs[0].request_size, 23);
    }

    #[test]
    fn probes() {
        assert_eq!(Dns::probe(L4::Udp, Dir::ToServer, &msg(1, false, 0)), Probe::Match);
        assert_eq!(Dns::probe(L4::Udp, Dir::ToServer, b"GET / HTTP/1.1\r\n\r\n"), Probe::NoMatch);
        let q = msg(1, false, 0);
        let mut tcp = (q.len() as u16).to_be_bytes().to_vec();
        tcp.extend_from_slice(&q);
        assert_eq!(Dns::probe(L4::Tcp, Dir::ToServer, &tcp), Probe::Match);
        assert_eq!(Dns::probe(L4::Tcp, Dir::ToServer, b"*1\r\n$4\r\nPING\r\n"), Probe::NoMatch);
    }
}

//! Kafka dissector for trawl. Messages are length-prefixed; requests carry
//! header v0–v2 (flexible versions with tagged fields); responses are paired
//! with their request by correlation id and read with its api key and
//! version. An unknown api key is still paired, with its sizes.
#![forbid(unsafe_code)]

pub mod apis;
mod errors;
pub mod wire;

use std::collections::HashMap;
use trawl_sdk::{Ctx, Dir, Dissector, Fields, L4, Output, PluginInfo, Probe, Progress, Record, Value};
use wire::Reader;

/// Largest message accepted (Kafka's own `socket.request.max.bytes` default).
const MAX_MESSAGE: usize = 100 * 1024 * 1024;
/// Messages up to this size are read whole. A bigger one (a Produce or
/// Fetch with large record batches) is read as far as [`HEAD`], which holds
/// its header and the topics, and the rest is skipped: counted, never
/// copied into the plugin (a whole 100 MiB message would not even fit in
/// the sandbox's memory).
const WHOLE: usize = 1 << 20;
const HEAD: usize = 64 * 1024;
/// Requests awaiting responses per connection.
const MAX_PENDING: usize = 4096;

#[derive(Debug, Default)]
pub struct Kafka;

#[derive(Debug, Clone)]
struct Request {
    key: i16,
    version: i16,
    client_id: Option<String>,
    summary: apis::Summary,
    size: u64,
    ts: u64,
}

#[derive(Debug, Default)]
pub struct KafkaConn {
    pending: HashMap<i32, Request>,
    /// Oldest first, to bound `pending`.
    order: std::collections::VecDeque<i32>,
}

/// A request header: `(api_key, api_version, correlation_id, client_id, header length)`.
fn request_header(msg: &[u8]) -> Option<(i16, i16, i32, Option<String>, usize)> {
    let mut r = Reader::new(msg);
    let (key, version, corr) = (r.i16()?, r.i16()?, r.i32()?);
    // client_id is a (non-compact) nullable string from header v1 on.
    let client = r.string()?;
    r.tagged(apis::flexible(key, version))?;
    Some((key, version, corr, client, r.at))
}

fn plausible_request(msg: &[u8]) -> bool {
    let mut r = Reader::new(msg);
    let (Some(key), Some(version)) = (r.i16(), r.i16()) else { return false };
    (0..=100).contains(&key) && (0..=20).contains(&version) && request_header(msg).is_some()
}

fn record(req: Option<&Request>, corr: i32, response: Option<(u64, u64, Option<i16>)>) -> Record {
    let mut r = Record { transaction_id: corr as u32 as u64, ..Record::default() };
    let mut f = Fields::with_capacity(24);
    f.insert("kafka_correlation_id", Value::Int(i64::from(corr)));
    if let Some(q) = req {
        let name = apis::name(q.key);
        r.method = name.clone();
        let topics = q.summary.topics.join(",");
        r.summary = if q.summary.topics.is_empty() {
            q.summary.group.clone().unwrap_or_else(|| name.clone())
        } else {
            topics.clone()
        };
        r.request_size = q.size;
        r.request_ts = Some(q.ts);
        f.insert("kafka_api_key", Value::Int(i64::from(q.key)));
        f.insert("kafka_api_key_name", Value::from(name));
        f.insert("kafka_api_version", Value::Int(i64::from(q.version)));
        if let Some(c) = &q.client_id {
            f.insert("kafka_client_id", Value::from(c.clone()));
        }
        if !q.summary.topics.is_empty() {
            f.insert("kafka_request_summary", Value::from(topics));
            f.insert("kafka_topics", Value::List(q.summary.topics.iter().map(|t| Value::from(t.clone())).collect()));
        }
        if let Some(g) = &q.summary.group {
            f.insert("kafka_group", Value::from(g.clone()));
        }
    }
    if let Some((size, ts, error)) = response {
        r.response_size = size;
        r.response_ts = Some(ts);
        if let Some(code) = error {
            r.status_code = Some(i64::from(code));
            r.error = code != 0;
            f.insert("kafka_error_code", Value::Int(i64::from(code)));
        }
    }
    r.fields = f;
    r
}

impl KafkaConn {
    fn request(&mut self, msg: &[u8], size: u64, ts: u64, out: &mut Output) -> bool {
        let Some((key, version, corr, client_id, header)) = request_header(msg) else { return false };
        let summary = apis::request_summary(key, version, &msg[header..]);
        if self.pending.len() >= MAX_PENDING
            && let Some(old) = self.order.pop_front()
            && let Some(q) = self.pending.remove(&old)
        {
            out.record(record(Some(&q), old, None));
        }
        // ProduceRequest with acks=0 gets no response; it is reported when
        // the connection closes, like any unanswered request.
        if self.pending.insert(corr, Request { key, version, client_id, summary, size, ts }).is_none() {
            self.order.push_back(corr);
        }
        true
    }

    fn response(&mut self, msg: &[u8], size: u64, ts: u64, out: &mut Output) -> bool {
        let mut r = Reader::new(msg);
        let Some(corr) = r.i32() else { return false };
        match self.pending.remove(&corr) {
            Some(q) => {
                // Responses mostly come back in order: the front is the usual case.
                if self.order.front() == Some(&corr) {
                    self.order.pop_front();
                } else {
                    self.order.retain(|c| *c != corr);
                }
                // Response header v1 (tagged fields) for flexible versions,
                // except ApiVersions, which always answers with header v0.
                if apis::flexible(q.key, q.version) && q.key != 18 {
                    let _ = r.tagged(true);
                }
                let error = apis::response_error(q.key, q.version, &msg[r.at.min(msg.len())..]);
                out.record(record(Some(&q), corr, Some((size, ts, error))));
            }
            None => out.record(record(None, corr, Some((size, ts, None)))),
        }
        true
    }
}

/// The fields this plugin's records carry (`Dissector::fields`): what
/// the display filter knows before any record arrives.
pub const FIELDS: &[&str] = &[
    "kafka_api_key",
    "kafka_api_key_name",
    "kafka_api_version",
    "kafka_client_id",
    "kafka_correlation_id",
    "kafka_error_code",
    "kafka_group",
    "kafka_request_summary",
    "kafka_topics",
];

impl Dissector for Kafka {
    fn fields() -> Option<&'static [&'static str]> {
        Some(FIELDS)
    }

    type Conn = KafkaConn;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "kafka".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            abbreviation: "KAFKA".into(),
            long_name: "Apache Kafka".into(),
            color: "#7c3aed".into(),
            tcp_ports: vec![9092, 9093, 9094],
            udp_ports: vec![],
            priority: 5,
            probe_depth: 64,
            accepts_gaps: false,
            max_buffer: (WHOLE + 4) as u32,
        }
    }

    fn probe(l4: L4, dir: Dir, bytes: &[u8]) -> Probe {
        if l4 != L4::Tcp {
            return Probe::NoMatch;
        }
        if bytes.len() < 12 {
            return Probe::NeedMore;
        }
        let len = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if len < 8 || len as usize > MAX_MESSAGE {
            return Probe::NoMatch;
        }
        let msg = &bytes[4..];
        match dir {
            Dir::ToServer if plausible_request(msg) => Probe::Match,
            // A response alone says little: a length and a correlation id.
            Dir::ToClient => Probe::MatchWeak,
            _ => Probe::NoMatch,
        }
    }

    fn data(&mut self, conn: &mut KafkaConn, cx: &mut Ctx<'_>, bytes: &[u8]) -> Progress {
        let (dir, ts) = (cx.dir, cx.ts);
        let out = &mut *cx.out;
        if bytes.len() < 4 {
            return Progress::NeedMore { consumed: 0, needed: 4 };
        }
        let len = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if len < 4 || len as usize > MAX_MESSAGE {
            return Progress::Desync;
        }
        let total = 4 + len as usize;
        // A large message: its head now, the rest skipped.
        let read = if total > WHOLE { 4 + HEAD } else { total };
        if bytes.len() < read {
            return Progress::NeedMore { consumed: 0, needed: read as u32 };
        }
        let msg = &bytes[4..read];
        let ok = match dir {
            Dir::ToServer => conn.request(msg, total as u64, ts, out),
            Dir::ToClient => conn.response(msg, total as u64, ts, out),
        };
        match (ok, read < total) {
            (false, _) => Progress::Desync,
            (true, false) => Progress::Done { consumed: total as u32 },
            (true, true) => Progress::Skip { consumed: read as u32, skip: (total - read) as u64 },
        }
    }

    fn close(&mut self, conn: KafkaConn, cx: &mut Ctx<'_>) {
        let out = &mut *cx.out;
        for corr in &conn.order {
            if let Some(q) = conn.pending.get(corr) {
                out.record(record(Some(q), *corr, None));
            }
        }
    }
}

trawl_sdk::export_dissector!(Kafka);

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as i32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    fn metadata_v1(corr: i32, topics: &[&str]) -> Vec<u8> {
        let mut b = vec![0, 3, 0, 1];
        b.extend_from_slice(&corr.to_be_bytes());
        b.extend_from_slice(&[0, 3, b'c', b'l', b'i']);
        b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
        for t in topics {
            b.extend_from_slice(&(t.len() as i16).to_be_bytes());
            b.extend_from_slice(t.as_bytes());
        }
        frame(&b)
    }

    /// SaslAuthenticate v1 carries the credentials (PLAIN: `\0user\0password`)
    /// as its auth bytes: nothing of them may reach a record.
    #[test]
    fn sasl_authenticate_bytes_never_reach_records() {
        let mut s = trawl_sdk::testing::Session::<Kafka>::tcp(9092);
        let mut b = vec![0, 36, 0, 1];
        b.extend_from_slice(&5i32.to_be_bytes());
        b.extend_from_slice(&[0, 3, b'c', b'l', b'i']);
        let auth = b"\0alice\0s3cr3t-PLAIN";
        b.extend_from_slice(&(auth.len() as i32).to_be_bytes());
        b.extend_from_slice(auth);
        s.send(Dir::ToServer, &frame(&b));
        let mut resp = 5i32.to_be_bytes().to_vec();
        resp.extend_from_slice(&[0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        s.send(Dir::ToClient, &frame(&resp));
        s.close();
        assert_eq!(s.records.len(), 1);
        assert_eq!(s.records[0].method, "SaslAuthenticate");
        let shown = format!("{:?}", s.records);
        assert!(!shown.contains("s3cr3t") && !shown.contains("alice"), "{shown}");
    }

    /// A 3 MiB Produce is read as far as its head and the rest skipped:
    /// its record carries the topic and its whole size, and the response
    /// after it still pairs.
    #[test]
    fn large_messages_keep_their_head_and_skip_the_rest() {
        let mut s = trawl_sdk::testing::Session::<Kafka>::tcp(9092);
        // Produce v3: transactional_id (null), acks, timeout, one topic.
        let mut b = vec![0, 0, 0, 3];
        b.extend_from_slice(&9i32.to_be_bytes());
        b.extend_from_slice(&[0, 3, b'c', b'l', b'i', 0xff, 0xff, 0, 1, 0, 0, 0x75, 0x30]);
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&[0, 6]);
        b.extend_from_slice(b"orders");
        b.resize(3 << 20, 0x42);
        let request = frame(&b);
        // As the wire gives it: MTU-sized segments.
        for segment in request.chunks(1448) {
            s.send(Dir::ToServer, segment);
        }
        s.send(Dir::ToClient, &frame(&9i32.to_be_bytes()));
        assert_eq!(s.records.len(), 1);
        assert_eq!((s.records[0].method.as_str(), s.records[0].summary.as_str()), ("Produce", "orders"));
        assert_eq!(s.records[0].request_size, request.len() as u64);
        assert!(s.copied < 2 * HEAD as u64 + 64, "copied {} of {} bytes", s.copied, request.len());
    }

    #[test]
    fn pairs_by_correlation_id_out_of_order() {
        let mut s = trawl_sdk::testing::Session::<Kafka>::tcp(9092);
        let mut reqs = metadata_v1(7, &["orders", "payments"]);
        reqs.extend(metadata_v1(8, &["audit"]));
        s.send(Dir::ToServer, &reqs);
        assert!(s.records.is_empty());
        let mut resp = frame(&8i32.to_be_bytes());
        resp.extend(frame(&7i32.to_be_bytes()));
        s.send(Dir::ToClient, &resp);
        let recs = s.records;
        assert_eq!(recs.len(), 2);
        assert_eq!((recs[0].method.as_str(), recs[0].summary.as_str()), ("Metadata", "audit"));
        assert_eq!(recs[1].summary, "orders,payments");
        assert_eq!(recs[1].fields["kafka_client_id"], Value::from("cli"));
    }

    #[test]
    fn probes() {
        assert_eq!(Kafka::probe(L4::Tcp, Dir::ToServer, &metadata_v1(1, &["t"])), Probe::Match);
        assert_eq!(Kafka::probe(L4::Tcp, Dir::ToServer, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Probe::NoMatch);
        assert_eq!(Kafka::probe(L4::Tcp, Dir::ToServer, b"*1\r\n$4\r\nPING\r\n"), Probe::NoMatch);
    }
}

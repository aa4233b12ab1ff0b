//! Linear dissection: every first-party plugin, given a 1 MiB message (or
//! a 10k-element reply) in 1,448-byte segments, has the host copy at most
//! twice the stream's bytes into it. The count is the host's own
//! (`bytes_in` against `stream_bytes`), through the real pipeline and the
//! embedded wasm plugins; a parser that re-reads its input from the start
//! on every segment copies hundreds of times the message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::segments::{Conversation, write_pcap};

use serde_json::Value;
use std::net::Ipv4Addr;
use trawl_host::replay::{Emit, MapKind, ReplayOptions};

const MIB: usize = 1 << 20;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);

/// Bytes that compress nothing away and contain no protocol delimiters.
fn filler(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i * 7 % 26) as u8).collect()
}

/// One conversation: alternating client and server messages.
fn conversation(port: u16, exchanges: &[(Vec<u8>, Vec<u8>)]) -> Vec<(u64, Vec<u8>)> {
    let mut c = Conversation::open((CLIENT, 40_000), (SERVER, port), 1_700_000_000_000_000);
    for (request, response) in exchanges {
        c.send(true, request);
        c.send(false, response);
    }
    c.close()
}

struct Outcome {
    records: Vec<Value>,
    /// (plugin, stream bytes, bytes copied in)
    plugins: Vec<(String, u64, u64)>,
}

fn replay(name: &str, frames: &[(u64, Vec<u8>)]) -> Outcome {
    let dir = std::env::temp_dir().join(format!("trawl-amplification-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.pcap"));
    write_pcap(&path, frames);
    let mut opts = ReplayOptions::new(&path);
    opts.emit = Emit::Records;
    opts.map = MapKind::L7;
    let mut out = Vec::new();
    let outcome = trawl_host::replay_l7::run(&opts, &mut out).unwrap();
    let records = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let plugins = outcome
        .plugins
        .iter()
        .filter(|p| p.stream_bytes > 0)
        .map(|p| (p.name.clone(), p.stream_bytes, p.bytes_in))
        .collect();
    Outcome { records, plugins }
}

/// Runs a case and checks that `plugin` dissected it with an
/// amplification of at most 2.
fn check(case: &str, plugin: &str, frames: Vec<(u64, Vec<u8>)>) -> Vec<Value> {
    let out = replay(case, &frames);
    let Some((_, stream, copied)) = out.plugins.iter().find(|(name, ..)| name == plugin) else {
        panic!("{case}: {plugin} was given nothing; plugins: {:?}", out.plugins);
    };
    let amplification = *copied as f64 / *stream as f64;
    eprintln!("{case:<28} {plugin:<6} stream {stream:>9} copied {copied:>9} amplification {amplification:.3}");
    assert!(*stream as usize >= MIB / 2, "{case}: only {stream} stream bytes reached {plugin}");
    assert!(amplification <= 2.0, "{case}: {plugin} amplification {amplification:.2} (copied {copied} for {stream})");
    out.records
}

fn field<'a>(r: &'a Value, name: &str) -> &'a Value {
    &r[name]
}

#[test]
fn http1_large_and_chunked_bodies_are_linear() {
    let body = filler(MIB);
    let get = b"GET /big HTTP/1.1\r\nHost: api\r\n\r\n".to_vec();
    let sized = [format!("HTTP/1.1 200 OK\r\nContent-Length: {MIB}\r\n\r\n").into_bytes(), body.clone()].concat();
    let r = check("http1 content-length", "http", conversation(80, &[(get.clone(), sized.clone())]));
    assert_eq!(r.len(), 1);
    assert!(field(&r[0], "response_size").as_u64().unwrap() > MIB as u64, "{:?}", r[0]);

    for chunk in [4096, 100] {
        let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for c in body.chunks(chunk) {
            chunked.extend(format!("{:x}\r\n", c.len()).bytes());
            chunked.extend_from_slice(c);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let r = check(&format!("http1 chunked {chunk}"), "http", conversation(80, &[(get.clone(), chunked)]));
        assert_eq!(r.len(), 1);
        assert_eq!(field(&r[0], "status_code").as_i64(), Some(200));
    }

    let post =
        [format!("POST /upload HTTP/1.1\r\nHost: api\r\nContent-Length: {MIB}\r\n\r\n").into_bytes(), body].concat();
    let created = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n".to_vec();
    let r = check("http1 upload", "http", conversation(80, &[(post, created)]));
    assert_eq!(r.len(), 1);
    assert!(field(&r[0], "request_size").as_u64().unwrap() > MIB as u64);
}

/// An HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK literal header without indexing, with a new name.
fn hpack_literal(name: &str, value: &str) -> Vec<u8> {
    let mut b = vec![0x00, name.len() as u8];
    b.extend_from_slice(name.as_bytes());
    b.push(value.len() as u8);
    b.extend_from_slice(value.as_bytes());
    b
}

/// DATA frames of at most 16 KiB (the default SETTINGS_MAX_FRAME_SIZE),
/// the last one ending the stream if `end`.
fn h2_data(stream: u32, bytes: &[u8], end: bool) -> Vec<u8> {
    let chunks: Vec<&[u8]> = bytes.chunks(16_384).collect();
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        out.extend(h2_frame(0, if end && i + 1 == chunks.len() { 1 } else { 0 }, stream, c));
    }
    out
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[test]
fn h2c_and_grpc_large_messages_are_linear() {
    let body = filler(MIB);
    let settings = h2_frame(4, 0, 0, &[]);
    // :method GET, :scheme http, :path /big, :authority api
    let mut headers = vec![0x82, 0x86];
    headers.extend(hpack_literal(":path", "/big"));
    headers.extend(hpack_literal(":authority", "api"));
    let request = [PREFACE.to_vec(), settings.clone(), h2_frame(1, 0x5, 1, &headers)].concat();
    let response = [settings.clone(), h2_frame(1, 0x4, 1, &[0x88]), h2_data(1, &body, true)].concat();
    let r = check("h2c 1 MiB response", "http", conversation(8080, &[(request, response)]));
    assert_eq!(r.len(), 1);
    assert_eq!(field(&r[0], "status_code").as_i64(), Some(200));

    // A unary gRPC call with a 1 MiB request and a 1 MiB response message.
    let message = [vec![0], (MIB as u32).to_be_bytes().to_vec(), body].concat();
    let mut headers = vec![0x83, 0x86];
    headers.extend(hpack_literal(":path", "/shop.Catalog/Upload"));
    headers.extend(hpack_literal(":authority", "catalog"));
    headers.extend(hpack_literal("content-type", "application/grpc"));
    headers.extend(hpack_literal("te", "trailers"));
    let request =
        [PREFACE.to_vec(), settings.clone(), h2_frame(1, 0x4, 1, &headers), h2_data(1, &message, true)].concat();
    let mut reply_headers = vec![0x88];
    reply_headers.extend(hpack_literal("content-type", "application/grpc"));
    let response = [
        settings,
        h2_frame(1, 0x4, 1, &reply_headers),
        h2_data(1, &message, false),
        h2_frame(1, 0x5, 1, &hpack_literal("grpc-status", "0")),
    ]
    .concat();
    let r = check("grpc 1 MiB both ways", "grpc", conversation(50051, &[(request, response)]));
    assert_eq!(r.len(), 1);
    assert_eq!(field(&r[0], "method").as_str(), Some("Upload"), "{:?}", r[0]);
}

fn resp_command(words: &[&str]) -> Vec<u8> {
    let mut b = format!("*{}\r\n", words.len()).into_bytes();
    for w in words {
        b.extend(format!("${}\r\n{w}\r\n", w.len()).bytes());
    }
    b
}

fn resp_bulk(b: &[u8]) -> Vec<u8> {
    [format!("${}\r\n", b.len()).into_bytes(), b.to_vec(), b"\r\n".to_vec()].concat()
}

/// A `COMMAND` reply's shape: an array of nested arrays, `depth` deep.
fn resp_nested(depth: u32, width: usize, serial: &mut usize) -> Vec<u8> {
    if depth == 0 {
        *serial += 1;
        return format!("+flag-{serial}\r\n:{serial}\r\n").into_bytes();
    }
    let mut b = format!("*{}\r\n", width * if depth == 1 { 2 } else { 1 }).into_bytes();
    for _ in 0..width {
        b.extend(resp_nested(depth - 1, width, serial));
    }
    b
}

#[test]
fn redis_large_and_nested_replies_are_linear() {
    let element = filler(100);
    let mut lrange = b"*10000\r\n".to_vec();
    for _ in 0..10_000 {
        lrange.extend(resp_bulk(&element));
    }
    let mut serial = 0;
    let command = resp_nested(4, 14, &mut serial);
    assert!(command.len() > 500_000, "{}", command.len());
    let mut hgetall = b"*20000\r\n".to_vec();
    for i in 0..10_000 {
        hgetall.extend(resp_bulk(format!("field:{i}").as_bytes()));
        hgetall.extend(resp_bulk(&element));
    }
    let keys: Vec<String> = (0..10_000).map(|i| format!("key:{i}")).collect();
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    let mut mget_reply = b"*10000\r\n".to_vec();
    for _ in 0..10_000 {
        mget_reply.extend(resp_bulk(&element));
    }
    let exchanges = vec![
        (resp_command(&["LRANGE", "list", "0", "-1"]), lrange),
        (resp_command(&["COMMAND"]), command),
        (resp_command(&["HGETALL", "hash"]), hgetall),
        (resp_command(&mget), mget_reply),
        (resp_command(&["GET", "blob"]), resp_bulk(&filler(MIB))),
    ];
    let r = check("redis large replies", "redis", conversation(6379, &exchanges));
    let methods: Vec<&str> = r.iter().map(|r| r["method"].as_str().unwrap_or("")).collect();
    assert_eq!(methods, ["LRANGE", "COMMAND", "HGETALL", "MGET", "GET"]);

    // Pipelining: 4,000 commands sent at once (the plugin waits for up to
    // 4,096 replies per connection), then their replies.
    let value = String::from_utf8(filler(200)).unwrap();
    let mut commands = Vec::new();
    let mut replies = Vec::new();
    for i in 0..4_000 {
        commands.extend(resp_command(&["SET", &format!("key:{i}"), &value]));
        replies.extend_from_slice(b"+OK\r\n");
    }
    let r = check("redis 4k pipelined", "redis", conversation(6379, &[(commands, replies)]));
    assert_eq!(r.len(), 4_000);
    assert!(r.iter().all(|r| r["response_size"] == 5), "every SET answered +OK");
}

fn kafka_string(s: &str) -> Vec<u8> {
    [(s.len() as i16).to_be_bytes().to_vec(), s.as_bytes().to_vec()].concat()
}

fn kafka_frame(body: Vec<u8>) -> Vec<u8> {
    [(body.len() as i32).to_be_bytes().to_vec(), body].concat()
}

/// A request header: API key, version, correlation id, client id.
fn kafka_request(api_key: i16, version: i16, correlation: i32) -> Vec<u8> {
    [
        api_key.to_be_bytes().to_vec(),
        version.to_be_bytes().to_vec(),
        correlation.to_be_bytes().to_vec(),
        kafka_string("bench"),
    ]
    .concat()
}

/// One topic (`orders`) with one partition (0): the array heads every
/// Produce and Fetch request and response below starts with.
fn one_partition() -> Vec<u8> {
    [1i32.to_be_bytes().to_vec(), kafka_string("orders"), 1i32.to_be_bytes().to_vec(), 0i32.to_be_bytes().to_vec()]
        .concat()
}

#[test]
fn kafka_large_batches_are_linear() {
    let batch = filler(MIB);
    let records = [(batch.len() as i32).to_be_bytes().to_vec(), batch].concat();
    // Produce v3 with a 1 MiB record set: transactional id null, acks 1,
    // timeout 30 s.
    let produce = [
        kafka_request(0, 3, 1),
        (-1i16).to_be_bytes().to_vec(),
        1i16.to_be_bytes().to_vec(),
        30_000i32.to_be_bytes().to_vec(),
    ]
    .concat();
    let produce = [produce, one_partition(), records.clone()].concat();
    // Its answer: error 0, base offset 42, no log append time, no throttle.
    let produced = [1i32.to_be_bytes().to_vec(), one_partition(), 0i16.to_be_bytes().to_vec()].concat();
    let produced =
        [produced, 42i64.to_be_bytes().to_vec(), (-1i64).to_be_bytes().to_vec(), 0i32.to_be_bytes().to_vec()].concat();
    // Fetch v4 (replica -1, 500 ms, at least 1 byte, at most 4 MiB, read
    // uncommitted) from offset 0, answered with a 1 MiB record set.
    let limits = [(-1i32).to_be_bytes(), 500i32.to_be_bytes(), 1i32.to_be_bytes(), (4 * MIB as i32).to_be_bytes()];
    let fetch = [kafka_request(1, 4, 2), limits.concat(), vec![0], one_partition()].concat();
    let fetch = [fetch, 0i64.to_be_bytes().to_vec(), (4 * MIB as i32).to_be_bytes().to_vec()].concat();
    // Its answer: no throttle; error 0, high watermark and last stable
    // offset 100, no aborted transactions.
    let fetched = [2i32.to_be_bytes().to_vec(), 0i32.to_be_bytes().to_vec(), one_partition()].concat();
    let fetched = [
        fetched,
        0i16.to_be_bytes().to_vec(),
        100i64.to_be_bytes().to_vec(),
        100i64.to_be_bytes().to_vec(),
        0i32.to_be_bytes().to_vec(),
        records,
    ]
    .concat();
    let exchanges = [(kafka_frame(produce), kafka_frame(produced)), (kafka_frame(fetch), kafka_frame(fetched))];
    let r = check("kafka produce and fetch", "kafka", conversation(9092, &exchanges));
    let methods: Vec<&str> = r.iter().map(|r| r["method"].as_str().unwrap_or("")).collect();
    assert_eq!(methods, ["Produce", "Fetch"]);
}

#[test]
fn dns_zone_transfer_over_tcp_is_linear() {
    // AXFR of example.com: 17 messages of about 64 KiB, 1 MiB in all.
    let question =
        [b"\x07example\x03com\x00".to_vec(), 252u16.to_be_bytes().to_vec(), 1u16.to_be_bytes().to_vec()].concat();
    let with_length = |m: Vec<u8>| [(m.len() as u16).to_be_bytes().to_vec(), m].concat();
    let query = with_length([vec![0x12, 0x34, 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 0], question.clone()].concat());
    let mut transfer = Vec::new();
    let mut sent = 0u32;
    while transfer.len() < MIB {
        let answers = 4_000u16;
        let mut m = vec![0x12, 0x34, 0x84, 0x00, 0, 1];
        m.extend(answers.to_be_bytes());
        m.extend([0, 0, 0, 0]);
        m.extend_from_slice(&question);
        for _ in 0..answers {
            sent += 1;
            m.extend([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4]);
            m.extend(sent.to_be_bytes());
        }
        transfer.extend(with_length(m));
    }
    let r = check("dns axfr over tcp", "dns", conversation(53, &[(query, transfer)]));
    assert!(!r.is_empty());
}

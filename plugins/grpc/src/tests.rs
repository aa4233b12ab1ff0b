#![allow(clippy::unwrap_used)]

use super::*;
use trawl_sdk::testing::Session;
use trawl_sdk::{Record, Value};

/// HPACK literal without indexing, new name, no Huffman (lengths < 127).
fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut b = vec![0, name.len() as u8];
    b.extend_from_slice(name.as_bytes());
    b.push(value.len() as u8);
    b.extend_from_slice(value.as_bytes());
    b
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn message(body: &[u8]) -> Vec<u8> {
    let mut m = vec![0];
    m.extend_from_slice(&(body.len() as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn request(stream: u32, path: &str) -> Vec<u8> {
    // :method POST (static 3), :scheme http (static 6).
    let block = [vec![0x83, 0x86], literal(":path", path), literal("content-type", "application/grpc")].concat();
    frame(frame::HEADERS, frame::END_HEADERS, stream, &block)
}

fn response_headers(stream: u32) -> Vec<u8> {
    // :status 200 (static 8).
    let block = [vec![0x88], literal("content-type", "application/grpc")].concat();
    frame(frame::HEADERS, frame::END_HEADERS, stream, &block)
}

fn trailers(stream: u32, status: &str, message: &str) -> Vec<u8> {
    let mut block = literal("grpc-status", status);
    if !message.is_empty() {
        block.extend(literal("grpc-message", message));
    }
    frame(frame::HEADERS, frame::END_HEADERS | frame::END_STREAM, stream, &block)
}

fn client_start(path: &str) -> Vec<u8> {
    [frame::PREFACE.to_vec(), frame(frame::SETTINGS, 0, 0, &[]), request(1, path)].concat()
}

fn session() -> Session<Grpc> {
    Session::<Grpc>::tcp(50051)
}

fn int(r: &Record, name: &str) -> i64 {
    match &r.fields[name] {
        Value::Int(i) => *i,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn unary_call() {
    let mut s = session();
    s.send(Dir::ToServer, &client_start("/helloworld.Greeter/SayHello"));
    s.send(Dir::ToServer, &frame(frame::DATA, frame::END_STREAM, 1, &message(b"\x0a\x03bob")));
    s.send(Dir::ToClient, &response_headers(1));
    s.send(Dir::ToClient, &frame(frame::DATA, 0, 1, &message(b"\x0a\x09hello bob")));
    s.send(Dir::ToClient, &trailers(1, "0", ""));
    assert_eq!(s.records.len(), 1);
    let r = &s.records[0];
    assert_eq!(
        (r.method.as_str(), r.summary.as_str(), r.status_code, r.error),
        ("SayHello", "/helloworld.Greeter/SayHello", Some(0), false)
    );
    assert_eq!(r.fields["grpc_service"], Value::from("helloworld.Greeter"));
    assert_eq!(r.fields["grpc_streaming"], Value::from("unary"));
    assert_eq!(r.fields["grpc_status_name"], Value::from("OK"));
    assert_eq!((int(r, "grpc_request_messages"), int(r, "grpc_response_messages")), (1, 1));
    assert_eq!(r.fields["grpc_compressed"], Value::Bool(false));
}

#[test]
fn trailers_only_error() {
    let mut s = session();
    s.send(Dir::ToServer, &client_start("/pkg.Users/Get"));
    s.send(Dir::ToServer, &frame(frame::DATA, frame::END_STREAM, 1, &message(b"")));
    let block = [vec![0x88], literal("grpc-status", "5"), literal("grpc-message", "no such user")].concat();
    s.send(Dir::ToClient, &frame(frame::HEADERS, frame::END_HEADERS | frame::END_STREAM, 1, &block));
    let r = &s.records[0];
    assert_eq!((r.status_code, r.error), (Some(5), true));
    assert_eq!(r.fields["grpc_status_name"], Value::from("NOT_FOUND"));
    assert_eq!(r.fields["grpc_message"], Value::from("no such user"));
    assert_eq!(int(r, "grpc_response_messages"), 0);
}

#[test]
fn streaming_kinds_from_message_counts() {
    for (req, resp, kind) in [(1, 3, "server"), (4, 1, "client"), (3, 2, "bidi")] {
        let mut s = session();
        s.send(Dir::ToServer, &client_start("/route.Guide/Chat"));
        s.send(Dir::ToClient, &response_headers(1));
        // Messages split across DATA frames, and two messages in one frame.
        for i in 0..req {
            let m = message(&[i as u8; 10]);
            s.send(Dir::ToServer, &frame(frame::DATA, 0, 1, &m[..3]));
            s.send(Dir::ToServer, &frame(frame::DATA, 0, 1, &m[3..]));
        }
        s.send(Dir::ToServer, &frame(frame::DATA, frame::END_STREAM, 1, &[]));
        let body: Vec<u8> = (0..resp).flat_map(|_| message(b"xy")).collect();
        s.send(Dir::ToClient, &frame(frame::DATA, 0, 1, &body));
        s.send(Dir::ToClient, &trailers(1, "0", ""));
        let r = &s.records[0];
        assert_eq!(r.fields["grpc_streaming"], Value::from(kind));
        assert_eq!((int(r, "grpc_request_messages"), int(r, "grpc_response_messages")), (req, resp));
    }
}

#[test]
fn compressed_flag_and_reset_stream() {
    let mut s = session();
    s.send(Dir::ToServer, &client_start("/a.B/C"));
    s.send(Dir::ToServer, &frame(frame::DATA, 0, 1, &[1, 0, 0, 0, 2, 0x1f, 0x8b]));
    s.send(Dir::ToClient, &frame(frame::RST_STREAM, 0, 1, &8u32.to_be_bytes()));
    let r = &s.records[0];
    assert_eq!(r.fields["grpc_compressed"], Value::Bool(true));
    assert_eq!((r.error, int(r, "rst_stream_code")), (true, 8));
}

#[test]
fn probes_claim_grpc_and_leave_plain_http2() {
    let grpc = client_start("/a.B/C");
    assert_eq!(Grpc::probe(L4::Tcp, Dir::ToServer, &grpc), Probe::Match);
    assert_eq!(Grpc::probe(L4::Tcp, Dir::ToServer, &grpc[..30]), Probe::NeedMore);
    let plain = [frame::PREFACE.to_vec(), frame(frame::HEADERS, frame::END_HEADERS, 1, &[0x82, 0x84, 0x86])].concat();
    assert_eq!(Grpc::probe(L4::Tcp, Dir::ToServer, &plain), Probe::NoMatch);
    assert_eq!(Grpc::probe(L4::Tcp, Dir::ToServer, b"GET / HTTP/1.1\r\n\r\n"), Probe::NoMatch);
    // Mid-connection: a dynamic-table reference (0xbe) cannot be decoded,
    // but the DATA frame holds one whole gRPC message.
    let joined =
        [frame(frame::HEADERS, frame::END_HEADERS, 7, &[0x83, 0xbe]), frame(frame::DATA, 0, 7, &message(b"abc"))]
            .concat();
    assert_eq!(Grpc::probe(L4::Tcp, Dir::ToServer, &joined), Probe::Match);
}

#[test]
fn streams_joined_mid_body_report_no_message_counts() {
    let mut s = session();
    // The stream's HEADERS were before the capture: DATA opens it, starting
    // inside a message (bytes 2.. of a 5-byte prefix and its body).
    let tail = &message(b"0123456789")[2..];
    s.send(Dir::ToServer, &frame(frame::DATA, frame::END_STREAM, 9, tail));
    s.send(Dir::ToClient, &response_headers(9));
    s.send(Dir::ToClient, &trailers(9, "0", ""));
    let r = &s.records[0];
    assert!(!r.fields.contains_key("grpc_request_messages"), "{r:?}");
    assert_eq!(int(r, "grpc_response_messages"), 0);
}

#[test]
fn a_gap_between_messages_keeps_counting_one_inside_does_not() {
    let mut s = session();
    s.send(Dir::ToServer, &client_start("/a.B/C"));
    s.send(Dir::ToServer, &frame(frame::DATA, frame::END_STREAM, 1, &message(b"x")));
    s.send(Dir::ToClient, &response_headers(1));
    s.send(Dir::ToClient, &frame(frame::DATA, 0, 1, &message(b"first")));
    // A whole frame lost between messages: counting goes on.
    s.gap(Dir::ToClient, 17);
    s.send(Dir::ToClient, &frame(frame::DATA, 0, 1, &message(b"second")));
    // Half a message, then bytes lost inside it: counting stops.
    let m = message(b"third message");
    s.send(Dir::ToClient, &frame(frame::DATA, 0, 1, &m[..8]));
    s.gap(Dir::ToClient, 100);
    s.send(Dir::ToClient, &trailers(1, "0", ""));
    let r = &s.records[0];
    assert!(!r.fields.contains_key("grpc_response_messages"), "{r:?}");
    assert_eq!(int(r, "grpc_request_messages"), 1);
}

/// A large message's bytes are only counted: after its prefix the host
/// lets them go by (ABI v2 skip), and the counts come out the same as when
/// every byte is read, messages that straddle frames and segments included.
#[test]
fn large_messages_are_skipped_and_counted_exactly() {
    let big = message(&vec![7u8; 300_000]);
    let small = message(b"tail");
    // Two messages across 16 KiB DATA frames, the small one starting inside
    // the big one's last frame.
    let body = [big.clone(), small.clone(), big].concat();
    let mut frames = Vec::new();
    for chunk in body.chunks(16_384) {
        frames.extend(frame(frame::DATA, 0, 1, chunk));
    }
    frames.extend(frame(frame::DATA, frame::END_STREAM, 1, &[]));
    let mut s = session();
    s.send(Dir::ToServer, &client_start("/blob.Store/Put"));
    for segment in frames.chunks(1448) {
        s.send(Dir::ToServer, segment);
    }
    s.send(Dir::ToClient, &response_headers(1));
    s.send(Dir::ToClient, &frame(frame::DATA, 0, 1, &message(b"ok")));
    s.send(Dir::ToClient, &trailers(1, "0", ""));
    assert_eq!(s.records.len(), 1);
    let r = &s.records[0];
    assert_eq!((int(r, "grpc_request_messages"), int(r, "grpc_response_messages")), (3, 1));
    assert_eq!(r.fields["grpc_streaming"], Value::from("client"));
    assert_eq!(r.request_size, (request(1, "/blob.Store/Put").len() + frames.len()) as u64);
    assert!(s.copied < frames.len() as u64 / 4, "copied {} of {}", s.copied, frames.len());
}

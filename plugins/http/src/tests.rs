//! Native tests of the HTTP dissector, driven the way the host drives it:
//! unconsumed bytes are kept and offered again with what arrives next.

use super::*;
use trawl_sdk::Status;

type Driver = trawl_sdk::testing::Session<Http>;

fn new_driver() -> Driver {
    Driver::tcp(80)
}

fn status(r: &Record) -> Option<i64> {
    r.status_code
}

#[test]
fn get_with_content_length() {
    let mut d = new_driver();
    d.send(Dir::ToServer, b"GET /index.html?x=1 HTTP/1.1\r\nHost: example\r\nAuthorization: Bearer secret\r\n\r\n");
    d.send(Dir::ToClient, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(d.records.len(), 1);
    let r = &d.records[0];
    assert_eq!((r.method.as_str(), r.summary.as_str(), status(r)), ("GET", "/index.html?x=[REDACTED]", Some(200)));
    assert_eq!(r.fields["path"], Value::from("/index.html"));
    assert_eq!(r.fields["query_string"], Value::from("x=[REDACTED]"));
    assert_eq!(r.fields["host"], Value::from("example"));
    assert_eq!(r.response_size, 38 + 5);
    let Value::Map(h) = &r.fields["request_headers"] else { panic!() };
    assert_eq!(h["Authorization"], Value::from("Bearer [REDACTED]"));
}

#[test]
fn pipelined_requests_pair_in_order_even_bytewise() {
    let mut d = new_driver();
    let reqs =
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\nHEAD /c HTTP/1.1\r\nHost: h\r\n\r\n";
    d.bytewise(Dir::ToServer, reqs);
    d.bytewise(
        Dir::ToClient,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n",
    );
    let got: Vec<_> = d.records.iter().map(|r| (r.summary.as_str(), status(r))).collect();
    assert_eq!(got, [("/a", Some(200)), ("/b", Some(404)), ("/c", Some(200))]);
    assert!(d.records[1].error);
}

#[test]
fn chunked_with_trailers() {
    let mut d = new_driver();
    d.send(Dir::ToServer, b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: yes\r\n\r\n");
    d.bytewise(Dir::ToClient, b"HTTP/1.1 201 Created\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    assert_eq!(d.records.len(), 1);
    let r = &d.records[0];
    assert_eq!(r.fields["request_body_size"], Value::Int(9));
    assert_eq!(r.fields["response_body_size"], Value::Int(3));
    assert_eq!(status(r), Some(201));
}

#[test]
fn expect_100_continue() {
    let mut d = new_driver();
    d.send(Dir::ToServer, b"PUT /f HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    d.send(Dir::ToClient, b"HTTP/1.1 100 Continue\r\n\r\n");
    d.send(Dir::ToServer, b"data");
    d.send(Dir::ToClient, b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(d.records.len(), 1);
    assert_eq!(status(&d.records[0]), Some(204));
    assert_eq!(d.records[0].fields["interim_status"], Value::List(vec![Value::Int(100)]));
    assert_eq!(d.records[0].fields["request_body_size"], Value::Int(4));
}

#[test]
fn body_until_close_and_http10() {
    let mut d = new_driver();
    d.send(Dir::ToServer, b"GET / HTTP/1.0\r\n\r\n");
    d.send(Dir::ToClient, b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\npart one ");
    d.send(Dir::ToClient, b"part two");
    assert!(d.records.is_empty());
    d.fin(Dir::ToClient);
    assert_eq!(d.records.len(), 1);
    assert_eq!(d.records[0].fields["response_body_size"], Value::Int(17));
}

#[test]
fn unanswered_request_reported_on_close() {
    let mut d = new_driver();
    d.send(Dir::ToServer, b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    d.close();
    assert_eq!(d.records.len(), 1);
    assert_eq!(status(&d.records[0]), None);
}

#[test]
fn h2c_upgrade_continues_as_http2() {
    let mut d = new_driver();
    d.send(
        Dir::ToServer,
        b"GET /up HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n",
    );
    d.send(Dir::ToClient, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n");
    assert_eq!(d.status, Status::Ok);
    assert_eq!(status(&d.records[0]), Some(101));
    // Server SETTINGS, then stream 1's response: HEADERS (:status 200) with END_STREAM.
    d.send(Dir::ToClient, &[0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 1, 1, 5, 0, 0, 0, 1, 0x88]);
    assert_eq!(d.records.len(), 2);
    assert_eq!(
        (d.records[1].method.as_str(), d.records[1].summary.as_str(), status(&d.records[1])),
        ("GET", "/up", Some(200))
    );
    assert_eq!(d.records[1].fields["http_version"], Value::from("HTTP/2"));
}

#[test]
fn other_upgrades_hand_over() {
    let mut d = new_driver();
    d.send(Dir::ToServer, b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    d.send(Dir::ToClient, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello");
    assert_eq!(d.status, Status::Handover);
    assert_eq!(d.upgrades, ["websocket"]);
}

/// The h2c client preface, an empty SETTINGS, and HEADERS on stream 1:
/// GET /index.html http (static 2, 5, 6), END_STREAM|END_HEADERS.
fn preface_and_get() -> Vec<u8> {
    let mut c2s = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    c2s.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    c2s.extend_from_slice(&[0, 0, 3, 1, 5, 0, 0, 0, 1, 0x82, 0x85, 0x86]);
    c2s
}

#[test]
fn prior_knowledge_h2c_streams() {
    let mut d = new_driver();
    let mut c2s = preface_and_get();
    // HEADERS stream 3: POST / (static 3, 4), END_HEADERS; DATA with END_STREAM.
    c2s.extend_from_slice(&[0, 0, 2, 1, 4, 0, 0, 0, 3, 0x83, 0x84, 0, 0, 2, 0, 1, 0, 0, 0, 3, b'h', b'i']);
    d.bytewise(Dir::ToServer, &c2s);
    // Stream 3 answered first (:status 404), then RST on stream 1 (CANCEL = 8).
    d.send(Dir::ToClient, &[0, 0, 1, 1, 5, 0, 0, 0, 3, 0x8d, 0, 0, 4, 3, 0, 0, 0, 0, 1, 0, 0, 0, 8]);
    let got: Vec<_> = d.records.iter().map(|r| (r.method.as_str(), r.summary.as_str(), status(r), r.error)).collect();
    assert_eq!(got, [("POST", "/", Some(404), true), ("GET", "/index.html", None, true)]);
    assert_eq!(d.records[1].fields["rst_stream_code"], Value::Int(8));
}

#[test]
fn gap_inside_known_body_resyncs() {
    let mut d = new_driver();
    d.send(Dir::ToServer, b"GET /big HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n");
    d.send(Dir::ToClient, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    d.gap(Dir::ToClient, 80);
    d.send(Dir::ToClient, b"0123456789HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let got: Vec<_> = d.records.iter().map(|r| (r.summary.as_str(), status(r))).collect();
    assert_eq!(got, [("/big", Some(200)), ("/next", Some(200))]);
    assert_eq!(d.records[0].fields["response_body_size"], Value::Int(100));
}

#[test]
fn gap_in_head_resyncs_on_next_message() {
    let mut d = new_driver();
    d.send(Dir::ToServer, b"GET /lost");
    d.gap(Dir::ToServer, 20);
    d.send(Dir::ToServer, b"garbage\r\nGET /found HTTP/1.1\r\n\r\n");
    d.send(Dir::ToClient, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(d.records.iter().map(|r| r.summary.as_str()).collect::<Vec<_>>(), ["/found"]);
}

#[test]
fn not_http_is_a_violation() {
    let mut d = new_driver();
    d.send(Dir::ToServer, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 binary junk that is not http\r\n\r\n");
    assert_eq!(d.status, Status::Desync);
}

#[test]
fn probes() {
    assert_eq!(Http::probe(L4::Tcp, Dir::ToServer, b"GET / HTTP/1.1\r\n"), Probe::Match);
    assert_eq!(Http::probe(L4::Tcp, Dir::ToServer, b"GE"), Probe::NeedMore);
    assert_eq!(Http::probe(L4::Tcp, Dir::ToServer, b"CCM_POST /x HTTP/1.1\r\n"), Probe::Match);
    // HTTP/2 waits for the first HEADERS: gRPC calls belong to the grpc plugin.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    assert_eq!(Http::probe(L4::Tcp, Dir::ToServer, preface), Probe::NeedMore);
    let get = [&preface[..], &[0, 0, 3, 1, 5, 0, 0, 0, 1, 0x82, 0x84, 0x86]].concat();
    assert_eq!(Http::probe(L4::Tcp, Dir::ToServer, &get), Probe::Match);
    let grpc = [&preface[..], &[0, 0, 21, 1, 4, 0, 0, 0, 1, 0x83, 0x84, 0x0f, 0x10, 16], b"application/grpc"].concat();
    assert_eq!(Http::probe(L4::Tcp, Dir::ToServer, &grpc), Probe::NoMatch);
    assert_eq!(Http::probe(L4::Tcp, Dir::ToClient, b"HTTP/1.1 200 OK\r\n"), Probe::Match);
    assert_eq!(Http::probe(L4::Tcp, Dir::ToServer, b"*1\r\n$4\r\nPING\r\n"), Probe::NoMatch);
    assert_eq!(Http::probe(L4::Udp, Dir::ToServer, b"GET / HTTP/1.1\r\n"), Probe::NoMatch);
}

#[test]
fn malformed_request_lines_still_pair_with_responses() {
    for (req, method, target) in [
        (&b"OPTIONS HTTP/1.1\nHost: www.google.com\n\n"[..], "OPTIONS", "HTTP/1.1"),
        (b"GET / HTTP/1.\nHost: www.google.com\n\n", "GET", "/"),
        (b"GET/ HTTP/1.1\nHost: www.google.com\n\n", "", ""),
        (b"CCM_POST /HTTP/1.1\nHost: www.google.com\n\n", "CCM_POST", "/HTTP/1.1"),
        (b"OPTIONS\nHost: www.google.com\n\n", "OPTIONS", ""),
    ] {
        let mut d = new_driver();
        d.send(Dir::ToServer, req);
        assert_eq!(d.status, Status::Ok, "{}", String::from_utf8_lossy(req));
        d.send(Dir::ToClient, b"HTTP/1.0 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad");
        assert_eq!(d.records.len(), 1, "{}", String::from_utf8_lossy(req));
        assert_eq!((d.records[0].method.as_str(), d.records[0].summary.as_str()), (method, target));
        assert_eq!(d.records[0].status_code, Some(400));
    }
}

/// Bodies are skipped (ABI v2): the host lets them go by uncopied, the
/// record still carries their exact size, and a loss inside a skipped body
/// costs the connection nothing.
#[test]
fn large_bodies_are_skipped_not_copied() {
    let body = vec![b'x'; 1 << 20];
    let mut chunked = Vec::new();
    for c in body.chunks(10_000) {
        chunked.extend(format!("{:x}\r\n", c.len()).bytes());
        chunked.extend_from_slice(c);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let sized = [format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes(), body].concat();
    let chunked = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), chunked].concat();
    for response in [&sized, &chunked] {
        let mut d = new_driver();
        for _ in 0..2 {
            d.send(Dir::ToServer, b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n");
            for segment in response.chunks(1448) {
                d.send(Dir::ToClient, segment);
            }
        }
        assert_eq!(d.records.len(), 2, "both responses end as their bodies do");
        assert!(d.records.iter().all(|r| r.response_size == response.len() as u64));
        assert!(d.copied < response.len() as u64 / 5, "copied {} of {}", d.copied, 2 * response.len());
        assert!(d.skipped > response.len() as u64, "skipped {}", d.skipped);
    }

    let mut d = new_driver();
    d.send(Dir::ToServer, b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n");
    d.send(Dir::ToClient, &sized[..3000]);
    d.gap(Dir::ToClient, 500_000);
    d.send(Dir::ToClient, &sized[503_000..]);
    d.send(Dir::ToServer, b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    d.send(Dir::ToClient, b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(d.status, Status::Ok);
    let got: Vec<_> = d.records.iter().map(|r| (r.summary.as_str(), status(r))).collect();
    assert_eq!(got, [("/big", Some(200)), ("/next", Some(204))]);
}

/// HTTP/2 DATA payloads are skipped too: counted, never copied, and a
/// stream ends when its last DATA frame has gone by.
#[test]
fn h2_data_frames_are_skipped_not_copied() {
    let mut d = new_driver();
    let c2s = preface_and_get();
    d.send(Dir::ToServer, &c2s);
    // :status 200, then 4 DATA frames of 16 KiB, the last one padded (8
    // bytes) and ending the stream.
    let mut s2c = vec![0, 0, 1, 1, 4, 0, 0, 0, 1, 0x88];
    for i in 0..4 {
        let last = i == 3;
        let payload_len = 16_384 + if last { 9 } else { 0 };
        s2c.extend_from_slice(&(payload_len as u32).to_be_bytes()[1..]);
        s2c.extend_from_slice(&[0, if last { 0x9 } else { 0 }, 0, 0, 0, 1]);
        if last {
            s2c.push(8);
        }
        s2c.extend(std::iter::repeat_n(b'x', 16_384));
        if last {
            s2c.extend_from_slice(&[0; 8]);
        }
    }
    for segment in s2c.chunks(1448) {
        d.send(Dir::ToClient, segment);
    }
    assert_eq!(d.records.len(), 1, "the stream ends with its last frame");
    let r = &d.records[0];
    assert_eq!((r.summary.as_str(), status(r)), ("/index.html", Some(200)));
    assert_eq!(r.response_size, s2c.len() as u64);
    assert_eq!(r.fields["response_body_size"], Value::Int(4 * 16_384));
    assert!(d.copied < 2 * 1448 * 4 + c2s.len() as u64, "copied {}", d.copied);
}

/// A capture that ends inside a skipped body counts the bytes it saw, not
/// the length the head announced.
#[test]
fn a_body_cut_short_counts_what_was_seen() {
    let mut d = new_driver();
    d.send(Dir::ToServer, b"GET /cut HTTP/1.1\r\nHost: a\r\n\r\n");
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
    d.send(Dir::ToClient, &[&head[..], &[b'x'; 1000]].concat());
    d.close();
    assert_eq!(d.records.len(), 1);
    assert_eq!(d.records[0].response_size, head.len() as u64 + 1000);
}

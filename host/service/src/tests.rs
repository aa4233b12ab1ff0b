//! The graph state's own tests, and records for other modules' tests.

use super::*;
use std::time::Duration;

#[test]
fn ingest_never_waits_for_a_reader_and_readers_see_every_change() {
    let graph = Graph::new(GraphState::new(Arc::new(Identity::new()), CaptureFilter::default(), 10));
    let reader = lock(&graph);
    assert_eq!(reader.counters.records, 0);
    // While a reader holds the state, ingest returns at once (were it
    // to wait, this would time out: the reader is held until after).
    let (done, finished) = std::sync::mpsc::channel();
    let writer = {
        let graph = graph.clone();
        std::thread::spawn(move || {
            for _ in 0..3 {
                graph.update(|st| st.counters.records += 1);
            }
            done.send(()).unwrap();
        })
    };
    assert!(finished.recv_timeout(Duration::from_secs(10)).is_ok(), "ingest waited for the reader");
    writer.join().unwrap();
    assert_eq!(graph.pending_len(), 3, "queued while the state was held");
    drop(reader);
    // The next holder applies them, in order, before it reads.
    assert_eq!(lock(&graph).counters.records, 3);
    assert_eq!(graph.pending_len(), 0);
    graph.update(|st| st.counters.records += 1);
    assert_eq!((graph.pending_len(), lock(&graph).counters.records), (0, 4), "a free state is updated at once");
}

#[test]
fn health_thresholds_are_percent_pairs() {
    assert_eq!("0.1,20".parse(), Ok(HealthThresholds::default()));
    let t: HealthThresholds = "1, 50".parse().unwrap();
    assert_eq!((t.degraded, t.failing), (0.01, 0.5));
    let t = t.with_latency("20, 1000").unwrap();
    assert_eq!((t.latency_degraded_ms, t.latency_failing_ms, t.failing), (20.0, 1000.0, 0.5));
    for bad in ["1000,20", "0,5", "x,1", "5"] {
        assert!(HealthThresholds::default().with_latency(bad).is_err(), "{bad}");
    }
    for bad in ["20,0.1", "0,20", "1,101", "1", "a,b"] {
        assert!(bad.parse::<HealthThresholds>().is_err(), "{bad}");
    }
}

/// A worker the hub lets go of leaves its counts in the totals.
#[test]
fn workers_let_go_still_count() {
    let mut st = GraphState::new(Arc::new(Identity::new()), CaptureFilter::default(), 10);
    for (id, connected, seen) in [("a/1", false, 10), ("a/2", true, 10), ("b/1", false, 100)] {
        let mut h = workers::WorkerHealth { connected, last_seen_ns: seen, ..Default::default() };
        h.counters.packets = 7;
        h.counters.losses.ebpf_evicted = 2;
        st.workers_mut().insert(id.into(), h);
    }
    assert_eq!(st.prune_workers(50), 1, "only the silent, disconnected one goes");
    assert_eq!((st.workers_gone().packets, st.workers_gone().losses.ebpf_evicted), (7, 2));
    let text = metrics::metrics_text(&Graph::new(st));
    assert!(text.contains("trawl_packets_received_total 21"), "{text}");
    assert!(text.contains("trawl_ebpf_evicted_total 6"), "{text}");
}

/// The record log holds at most its byte budget, however few records
/// that is, and says how many it let go; the maps keep every count.
#[test]
fn the_record_log_is_bounded_in_bytes() {
    let mut st = GraphState::new(Arc::new(Identity::new()), CaptureFilter::default(), 10);
    st.record_log_bytes = 1 << 20;
    add_http_records(&mut st, 100, |_| "x".repeat(60 * 1024));
    assert!(st.records_held <= 1 << 20, "{} bytes held", st.records_held);
    assert!(st.records.len() < 20 && !st.records.is_empty(), "{} records", st.records.len());
    assert_eq!(st.counters.records_log_evicted as usize + st.records.len(), 100);
    assert_eq!(st.counters.records, 100, "every record counted");
}

#[test]
fn the_queue_is_bounded_and_past_it_ingest_waits() {
    let graph = Graph::new(GraphState::new(Arc::new(Identity::new()), CaptureFilter::default(), 10));
    let reader = lock(&graph);
    let (step, steps) = std::sync::mpsc::channel();
    let writer = {
        let graph = graph.clone();
        std::thread::spawn(move || {
            for _ in 0..MAX_PENDING {
                graph.update(|st| st.counters.records += 1);
            }
            step.send("queued").unwrap();
            graph.update(|st| st.counters.records += 1);
            step.send("applied").unwrap();
        })
    };
    assert_eq!(steps.recv_timeout(Duration::from_secs(10)), Ok("queued"));
    assert_eq!(graph.pending_len(), MAX_PENDING);
    // The next change waits for the state instead of queueing.
    assert!(steps.recv_timeout(Duration::from_millis(200)).is_err(), "the queue grew past its bound");
    drop(reader);
    assert_eq!(steps.recv_timeout(Duration::from_secs(10)), Ok("applied"));
    writer.join().unwrap();
    assert_eq!(lock(&graph).counters.records, MAX_PENDING as u64 + 1);
}

/// Adds `n` HTTP records between two addresses, one a millisecond, each
/// with the summary `summary(i)`.
pub(crate) fn add_http_records(st: &mut GraphState, n: u64, summary: impl Fn(u64) -> String) {
    use trawl_core::Endpoint;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let identity = Arc::clone(&st.identity);
    for i in 0..n {
        let record = trawl_sdk::abi::Record { summary: summary(i), request_ts: Some(1_000 + i), ..Default::default() };
        let (client, server) = (Endpoint { ip: ip("10.0.0.1"), port: 1000 }, Endpoint { ip: ip("10.0.0.2"), port: 80 });
        let h = trawl_runtime::HostRecord::tcp(client, server, "http", "1", record);
        let (r, src, dst) = trawl_runtime::records::to_l7(h, &identity);
        st.add_record(r, &src, &dst);
    }
}

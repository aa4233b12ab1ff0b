use super::*;
use trawl_core::history::{Layer, MapKind, WindowMap};
use trawl_core::{DirCounters, Endpoint, GroupBy, L4Proto, Orientation, WorkloadKind};

fn pod(i: usize) -> Workload {
    let mut w = Workload::external("10.0.0.1".parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()));
    w.kind = WorkloadKind::Pod;
    w.namespace = format!("ns{}", i % 7);
    w.name = format!("pod-{i}");
    w.node = Some(format!("node-{}", i % 3));
    w
}

fn delta(at_secs: u64, bytes: u64) -> FlowDelta {
    let ep = Endpoint { ip: std::net::Ipv4Addr::LOCALHOST.into(), port: 80 };
    FlowDelta {
        l4: L4Proto::Tcp,
        client: ep,
        server: ep,
        to_server: DirCounters { packets: 1, bytes, ip_bytes: bytes },
        to_client: DirCounters::default(),
        first_ts: Timestamp::from_secs_nanos(at_secs, 0),
        last_ts: Timestamp::from_secs_nanos(at_secs, 0),
        orientation: Orientation::Syn,
        closed: false,
        health: Default::default(),
    }
}

/// Feeds `edges` edges one delta each per `every` seconds over `[from, to)`.
fn feed(h: &mut History, edges: usize, from: u64, to: u64, every: u64) {
    let mut t = from;
    while t < to {
        for e in 0..edges {
            h.add_delta(&delta(t, 100 + e as u64), &pod(e), &pod(e + 1000), 0);
        }
        t += every;
    }
}

fn bytes_in(snap: &HistorySnapshot, from: u64, to: u64, now: u64) -> (u64, Covered) {
    let mut total = 0;
    let covered = snap
        .window(from, to, now, |_, s| {
            if let Sample::L4(s) = s {
                total += s.to_server.bytes;
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
    (total, covered)
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("trawl-history-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// On a ten-minute boundary, as every tier's intervals are.
const T0: u64 = 1_699_999_800;

#[test]
fn a_window_sums_exactly_its_intervals_and_survives_a_restart() {
    let d = dir("restart");
    let config = HistoryConfig { dir: Some(d.clone()), ..Default::default() };
    let mut h = History::open(&config).unwrap();
    // Ten edges, one delta each per second, for twenty minutes.
    feed(&mut h, 10, T0, T0 + 1200, 1);
    let per_sec: u64 = (0..10).map(|e| 100 + e).sum();
    h.advance(T0 + 1200);
    assert!(h.sync(Duration::from_secs(30)));
    let snap = h.snapshot();
    // A 5-minute window in the closed part reads 10 s intervals, exactly.
    let (from, to) = (T0 + 300, T0 + 600);
    let (bytes, covered) = bytes_in(&snap, from, to, T0 + 1200);
    assert_eq!(covered.resolution_secs, 10);
    assert_eq!((covered.from, covered.to), (from, to));
    assert_eq!(bytes, per_sec * 300);
    // The part still open comes from memory.
    let (open_bytes, open) = bytes_in(&snap, T0 + 1150, T0 + 1200, T0 + 1200);
    assert_eq!(open_bytes, per_sec * 50, "{open:?}");
    drop(snap);
    let before: Vec<(u64, Covered)> = [(from, to), (T0, T0 + 1170), (T0 + 60, T0 + 660)]
        .map(|(a, b)| bytes_in(&h.snapshot(), a, b, T0 + 1170))
        .into();
    let late_before = h.stats().late_samples;
    drop(h);

    let mut h = History::open(&config).unwrap();
    let after: Vec<(u64, Covered)> = [(from, to), (T0, T0 + 1170), (T0 + 60, T0 + 660)]
        .map(|(a, b)| bytes_in(&h.snapshot(), a, b, T0 + 1170))
        .into();
    assert_eq!(before, after, "a restarted store answers the same past windows");
    // Data re-sent for intervals closed before the restart (a worker's
    // journal) is late, not added.
    feed(&mut h, 10, T0 + 300, T0 + 310, 1);
    assert_eq!(h.stats().late_samples, late_before + 100);
    assert_eq!(bytes_in(&h.snapshot(), from, to, T0 + 1170).0, per_sec * 300);
    // Late data for what this process closed is added, to every tier.
    feed(&mut h, 10, T0 + 1200, T0 + 1260, 1);
    h.advance(T0 + 1300);
    feed(&mut h, 1, T0 + 1200, T0 + 1201, 1);
    h.merge_late();
    assert!(h.sync(Duration::from_secs(30)));
    assert_eq!(h.stats().late_merged_samples, 1);
    assert_eq!(bytes_in(&h.snapshot(), T0 + 1200, T0 + 1210, T0 + 1300).0, per_sec * 10 + 100);
    // And the rolled-up tiers carry on where they were: an hour later the
    // minute tier answers for the first twenty minutes and more.
    feed(&mut h, 10, T0 + 1200, T0 + 2 * 3600, 10);
    h.flush();
    assert!(h.sync(Duration::from_secs(30)));
    let (bytes, covered) = bytes_in(&h.snapshot(), T0, T0 + 3600, T0 + 7200);
    assert_eq!(covered.resolution_secs, 60, "{covered:?}");
    let late_test = per_sec * 60 + 100;
    assert_eq!(bytes, per_sec * 1170 + late_test + per_sec * (3600 - 1200) / 10, "{covered:?}");
    drop(h);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_store_stays_within_its_budget_dropping_the_oldest_tier_first() {
    let d = dir("budget");
    let budget = 4 << 20;
    let config = HistoryConfig { dir: Some(d.clone()), budget, ..Default::default() };
    let mut h = History::open(&config).unwrap();
    // 200 edges every 10 s for six simulated hours.
    feed(&mut h, 200, T0, T0 + 6 * 3600, 10);
    h.flush();
    assert!(h.sync(Duration::from_secs(60)));
    let stats = h.stats();
    assert!(stats.stored_bytes <= budget, "{stats:?}");
    assert!(stats.intervals_evicted > 0, "{stats:?}");
    // The newest minutes are still there at 10 s; the oldest data went first.
    let (bytes, covered) = bytes_in(&h.snapshot(), T0 + 6 * 3600 - 600, T0 + 6 * 3600, T0 + 6 * 3600);
    assert_eq!(covered.resolution_secs, 10, "{covered:?}");
    assert!(bytes > 0);
    let (bytes, oldest) = bytes_in(&h.snapshot(), T0, T0 + 600, T0 + 6 * 3600);
    assert_eq!((bytes, oldest.intervals), (0, 0), "the oldest data was let go: {oldest:?}");
    assert!(stats.file_bytes <= budget, "the file: {stats:?}");
    assert_eq!(stats.pending_dropped, 0, "{stats:?}");
    drop(h);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_window_map_groups_stored_edges() {
    let mut h = History::open(&HistoryConfig::default()).unwrap();
    feed(&mut h, 20, T0, T0 + 100, 1);
    h.flush();
    let mut map = WindowMap::new(MapKind::L4, GroupBy::Namespace);
    let covered = h.snapshot().window(T0, T0 + 100, T0 + 100, |k, s| map.add(k, s)).unwrap();
    assert_eq!(covered.secs(), 100.0);
    let v = map.to_json(covered.secs(), &[]);
    let edges = v["edges"].as_array().unwrap();
    assert!(edges.len() <= 7 * 7 && !edges.is_empty(), "{v}");
    let total: u64 = edges.iter().filter_map(|e| e["to_server"]["bytes"].as_u64()).sum();
    assert_eq!(total, (0..20).map(|e| 100 + e).sum::<u64>() * 100);
    assert!(matches!(h.snapshot().pending.first().map(|c| c.tier), None | Some(_)));
    let path = h.path().to_path_buf();
    drop(h);
    assert!(!path.exists(), "a temporary store is removed");
    let _ = Layer::L4(L4Proto::Tcp);
}

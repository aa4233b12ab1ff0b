//! Supervision with a scripted plugin: which faults detach what, and how a
//! quarantined plugin comes back.

use super::*;
use crate::{InstanceFactory, LoadError, LoadedPlugin, PluginSource};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use trawl_core::engine::StreamSink;
use trawl_sdk::abi::{PluginInfo, Probe};

/// Matches everything; `data` on a connection whose first byte is `b'!'`
/// answers with output the host refuses, and on `b'T'` traps. With
/// `needs`, it asks for that many bytes before it parses anything.
struct Scripted {
    needs: u32,
}

impl PluginInstance for Scripted {
    fn probe(&mut self, _: L4, _: Dir, _: &[u8]) -> Result<Probe, PluginFault> {
        Ok(Probe::Match)
    }
    fn open(&mut self, _: u64, _: &ConnMeta) -> Result<DataResult, PluginFault> {
        Ok(DataResult::ok(0, vec![]))
    }
    fn data(&mut self, _: u64, _: Dir, _: u32, _: u64, bytes: &[u8], _: u64) -> Result<DataResult, PluginFault> {
        if self.needs > 0 {
            return Ok(DataResult { status: Status::Ok, consumed: 0, needed: self.needs, skip: 0, events: vec![] });
        }
        match bytes.first() {
            Some(b'!') => Err(PluginFault::BadOutput("nested 500000 deep".into())),
            Some(b'T') => Err(PluginFault::Trap("unreachable".into())),
            _ => Ok(DataResult::ok(bytes.len() as u32, vec![])),
        }
    }
    fn datagram(&mut self, _: u64, _: Dir, _: u64, _: &[u8]) -> Result<DataResult, PluginFault> {
        Ok(DataResult::ok(0, vec![]))
    }
    fn close(&mut self, _: u64, _: u64) -> Result<DataResult, PluginFault> {
        Ok(DataResult::ok(0, vec![]))
    }
    fn tick(&mut self, _: u64) -> Result<DataResult, PluginFault> {
        Ok(DataResult::ok(0, vec![]))
    }
}

/// Counts its instances; each needs `.1` bytes (see [`Scripted`]).
struct Factory(Arc<AtomicU32>, u32);

impl InstanceFactory for Factory {
    fn instantiate(&self) -> Result<Box<dyn PluginInstance>, LoadError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(Scripted { needs: self.1 }))
    }
}

fn plugin(instances: Arc<AtomicU32>) -> SharedPlugin {
    plugin_needing(instances, 0)
}

fn plugin_needing(instances: Arc<AtomicU32>, needs: u32) -> SharedPlugin {
    Arc::new(LoadedPlugin {
        abi: trawl_sdk::abi::ABI_VERSION,
        fields: None,
        info: PluginInfo {
            name: "scripted".into(),
            version: "1".into(),
            abbreviation: "S".into(),
            long_name: "Scripted".into(),
            color: "#000000".into(),
            tcp_ports: vec![],
            udp_ports: vec![],
            priority: 0,
            probe_depth: 64,
            accepts_gaps: true,
            max_buffer: 1 << 16,
        },
        hash: "test".into(),
        source: PluginSource::Native,
        factory: Box::new(Factory(instances, needs)),
    })
}

fn conn(id: u64) -> ConnInfo {
    let ep = |port| Endpoint { ip: std::net::Ipv4Addr::LOCALHOST.into(), port };
    ConnInfo { id, l4: L4Proto::Tcp, client: ep(40000 + id as u16), server: ep(80), tls: false }
}

fn send(d: &mut Dispatcher, id: u64, bytes: &[u8]) {
    let c = conn(id);
    if d.wants(&c, Timestamp(1)) {
        d.on_stream(&c, Direction::ToServer, Timestamp(1), StreamEvent::Start { midstream: false });
    }
    d.on_stream(&c, Direction::ToServer, Timestamp(2), StreamEvent::Data { offset: 0, bytes });
}

fn status(d: &Dispatcher) -> PluginStatus {
    d.status().into_iter().next().unwrap_or_else(|| panic!("no status"))
}

#[test]
fn bad_output_detaches_only_its_connection_and_a_trap_detaches_all() {
    let instances = Arc::new(AtomicU32::new(0));
    let config = DispatchConfig { backoff: Duration::ZERO, ..DispatchConfig::default() };
    let mut d = Dispatcher::new(config, [plugin(instances.clone())]);
    for id in 1..=3 {
        send(&mut d, id, b"GET");
    }
    assert_eq!(status(&d).live_connections, 3);
    send(&mut d, 4, b"!bomb");
    let s = status(&d);
    assert_eq!((s.live_connections, s.detached_connections, s.faults), (3, 1, 1), "{s:?}");
    assert_eq!(instances.load(Ordering::SeqCst), 1, "the instance was kept");
    send(&mut d, 5, b"Trap");
    let s = status(&d);
    assert_eq!((s.live_connections, s.detached_connections, s.faults), (0, 5, 2), "{s:?}");
}

#[test]
fn a_quarantined_plugin_comes_back_after_its_wait_or_on_reset() {
    let instances = Arc::new(AtomicU32::new(0));
    let config = DispatchConfig {
        backoff: Duration::ZERO,
        quarantine_retry: Duration::from_millis(50),
        ..DispatchConfig::default()
    };
    let mut d = Dispatcher::new(config, [plugin(instances)]);
    for id in 1..=3 {
        send(&mut d, id, b"!");
    }
    let s = status(&d);
    assert!(matches!(&s.state, PluginState::Quarantined { reason } if reason.contains("trying again in")), "{s:?}");
    send(&mut d, 10, b"GET");
    assert_eq!(status(&d).live_connections, 0, "quarantined: nothing attaches");
    std::thread::sleep(Duration::from_millis(60));
    send(&mut d, 11, b"GET");
    let s = status(&d);
    assert_eq!((s.state.clone(), s.live_connections), (PluginState::Active, 1), "back after the wait");
    // On probation, one fault sends it back, for twice as long.
    send(&mut d, 12, b"!");
    let s = status(&d);
    assert!(matches!(&s.state, PluginState::Quarantined { reason } if reason.contains("probation")), "{s:?}");
    assert_eq!(d.reset("other"), 0);
    assert_eq!(d.reset("scripted"), 1, "an operator takes it back at once");
    send(&mut d, 13, b"GET");
    assert_eq!(status(&d).state, PluginState::Active);
    assert_eq!(status(&d).live_connections, 1);
}

#[test]
fn connections_that_cross_the_dispatch_budget_are_let_go_and_counted() {
    let config = DispatchConfig { max_held_bytes: 250, ..DispatchConfig::default() };
    let mut d = Dispatcher::new(config, [plugin_needing(Arc::new(AtomicU32::new(0)), 1000)]);
    for id in 1..=3 {
        send(&mut d, id, &[b'x'; 100]);
    }
    assert_eq!(d.stats().detached_by_budget, 1, "the third crossed 250 bytes");
    assert_eq!(d.held, 200);
    assert_eq!(status(&d).live_connections, 2);
    for id in 1..=3 {
        d.on_close(&conn(id));
    }
    assert_eq!(d.held, 0, "closed connections hold nothing");
}

/// The scripted plugin as another build: `version`, its own hash.
fn version(version: &str) -> SharedPlugin {
    let base = plugin(Arc::new(AtomicU32::new(0)));
    Arc::new(LoadedPlugin {
        abi: base.abi,
        fields: None,
        info: PluginInfo { version: version.into(), ..base.info.clone() },
        hash: format!("hash-{version}"),
        source: PluginSource::Native,
        factory: Box::new(Factory(Arc::new(AtomicU32::new(0)), 0)),
    })
}

#[test]
fn a_new_version_that_faults_repeatedly_rolls_back_to_the_one_before() {
    let config = DispatchConfig { backoff: Duration::ZERO, ..DispatchConfig::default() };
    let mut d = Dispatcher::new(config, [version("1.0")]);
    send(&mut d, 1, b"GET");
    d.install(version("2.0"));
    for id in 2..=4 {
        send(&mut d, id, b"Trap");
    }
    let by_version = |d: &Dispatcher, v: &str| d.status().into_iter().filter(|s| s.version == v).collect::<Vec<_>>();
    let v2 = by_version(&d, "2.0");
    assert!(
        matches!(&v2[0].state, PluginState::RolledBack { reason } if reason.contains("rolled back to scripted 1.0")),
        "{v2:?}"
    );
    // The old generation still finishes connection 1; a new generation of
    // 1.0 takes new connections, and 2.0 never comes back.
    send(&mut d, 5, b"GET");
    let v1 = by_version(&d, "1.0");
    let states: Vec<(&PluginState, u64)> = v1.iter().map(|s| (&s.state, s.live_connections)).collect();
    assert_eq!(states, [(&PluginState::Draining, 1), (&PluginState::Active, 1)]);
    d.tick(Timestamp(10));
    assert!(matches!(by_version(&d, "2.0")[0].state, PluginState::RolledBack { .. }));
}

#[test]
fn a_plugin_with_nothing_before_it_is_quarantined_not_rolled_back() {
    let config = DispatchConfig { backoff: Duration::ZERO, ..DispatchConfig::default() };
    let mut d = Dispatcher::new(config, [version("1.0")]);
    for id in 1..=3 {
        send(&mut d, id, b"Trap");
    }
    assert!(matches!(status(&d).state, PluginState::Quarantined { .. }), "{:?}", status(&d));
    assert_eq!(d.status().len(), 1);
}

#[test]
fn only_the_newest_version_rolls_back_and_never_to_a_deleted_one() {
    let config = DispatchConfig { backoff: Duration::ZERO, ..DispatchConfig::default() };
    let mut d = Dispatcher::new(config, [version("1.0")]);
    // 2.0 holds a connection, then 3.0 replaces it; 2.0 faulting while it
    // drains must not take 3.0's place.
    d.install(version("2.0"));
    send(&mut d, 1, b"GET");
    d.install(version("3.0"));
    for id in 2..=3 {
        send(&mut d, id, b"GET");
    }
    let states = |d: &Dispatcher| d.status().into_iter().map(|s| (s.version, s.state)).collect::<Vec<_>>();
    let slot_of = |d: &Dispatcher, v: &str| d.slots.iter().position(|s| s.plugin.info.version == v).unwrap();
    let two = slot_of(&d, "2.0");
    for _ in 0..3 {
        d.fault(two, PluginFault::Trap("boom".into()), None);
    }
    assert!(states(&d).contains(&("3.0".into(), PluginState::Active)), "{:?}", states(&d));
    assert!(!states(&d).iter().any(|(_, s)| matches!(s, PluginState::RolledBack { .. })), "{:?}", states(&d));
    // A plugin installed fresh (a deleted push giving way) rolls back to nothing.
    d.install_fresh(version("1.0"));
    let one = d.slots.len() - 1;
    for _ in 0..3 {
        d.fault(one, PluginFault::Trap("boom".into()), None);
    }
    assert!(matches!(d.slots[one].state, PluginState::Quarantined { .. }));
    assert!(!d.slots.iter().any(|s| s.state == PluginState::Active), "{:?}", states(&d));
}

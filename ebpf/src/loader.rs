//! Loading, attaching and reading the flow counters with aya.

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::tc::SchedClassifierLinkId;
use aya::programs::{SchedClassifier, TcAttachType, TracePoint};
use aya::{Ebpf, EbpfLoader};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use trawl_core::counters::{DirectionalReading, SocketHealth};
use trawl_core::flow::{DirCounters, Endpoint};
use trawl_core::{L4Proto, Timestamp};

const SENT: &str = "trawl_sent";
const RECEIVED: &str = "trawl_received";
const FLAG_SYN: u64 = 1;
const FLAG_FIN: u64 = 2;
const FLAG_SYNACK: u64 = 4;
const FLAG_RST: u64 = 8;
/// The TCP health programs and the tracepoints they attach to.
const TRACEPOINTS: [(&str, &str, &str); 2] =
    [("trawl_retransmit", "tcp", "tcp_retransmit_skb"), ("trawl_sock_state", "sock", "inet_sock_set_state")];

/// `struct flow_key` in flows.bpf.c.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct RawKey {
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    proto: u8,
    pad: [u8; 3],
}

/// `struct flow_counters` in flows.bpf.c.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RawCounters {
    packets: u64,
    bytes: u64,
    ip_bytes: u64,
    first_ns: u64,
    last_ns: u64,
    flags: u64,
}

/// `struct tcp_health` in flows.bpf.c.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RawHealth {
    retransmits: u64,
    failed_connects: u64,
    handshakes: u64,
    rtt_sum_ns: u64,
    rtt_max_ns: u64,
}

// SAFETY: all three are repr(C) structs of integers and byte arrays whose
// padding is spelled out as fields, so every byte pattern is a valid value
// and no byte is uninitialised; their layouts match the C structs.
#[allow(unsafe_code)]
unsafe impl aya::Pod for RawKey {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl aya::Pod for RawCounters {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl aya::Pod for RawHealth {}

/// Why the counters cannot run. Live mode reports it and carries on
/// without L4 counting, or refuses to start when it was insisted on.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "the eBPF programs were not built: clang was missing when trawl was compiled (apt-get install clang libbpf-dev, then rebuild)"
    )]
    NotBuilt,
    #[error("cannot load the eBPF programs (root, or CAP_BPF with CAP_NET_ADMIN, is needed): {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("cannot attach to interface {iface}: {source}")]
    Attach {
        iface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error(
        "the kernel has no BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF): TLS capture would read sockets at the wrong offsets"
    )]
    NoBtf,
    #[error("no way to see the socket under an SSL call on this kernel: {0}")]
    NoLearner(String),
}

/// What the programs saw besides flows: drops are data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EbpfStats {
    /// Packets the programs ran on.
    pub packets: u64,
    /// Packets not counted: not IP, not TCP or UDP, or headers cut short.
    pub skipped: u64,
    /// Flows that could not be added to the map.
    pub map_full: u64,
    /// Flows the full LRU map evicted (seen as gone between two reads;
    /// filled in by the reader, not the programs).
    pub evicted: u64,
}

/// One read of the flow map.
pub type CounterReadings = Vec<DirectionalReading>;

/// The loaded programs, their maps and the interfaces they are attached to.
pub struct FlowCounters {
    ebpf: Ebpf,
    attached: HashMap<String, (SchedClassifierLinkId, SchedClassifierLinkId)>,
    senders: HashSet<[u8; 16]>,
    /// Wall-clock nanoseconds minus monotonic ones: the programs stamp
    /// packets with the monotonic clock.
    clock_offset_ns: i128,
    /// Why TCP health is not counted, if it is not (no tracefs, say).
    health_unavailable: Option<String>,
}

impl std::fmt::Debug for FlowCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowCounters").field("attached", &self.attached.keys().collect::<Vec<_>>()).finish()
    }
}

fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

pub(crate) fn unmapped(b: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(b);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None if b == [0; 16] => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        None => IpAddr::V6(v6),
    }
}

pub(crate) fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer to
    // a local; both clocks used here always exist on Linux.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl FlowCounters {
    /// Loads the programs with room for `max_flows` directional flows.
    pub fn load(max_flows: u32) -> Result<Self, LoadError> {
        let object = crate::object().filter(|o| !o.is_empty()).ok_or(LoadError::NotBuilt)?;
        let room = max_flows.max(1024);
        let mut ebpf =
            EbpfLoader::new().map_max_entries("flows", room).map_max_entries("tcp_health", room).load(object)?;
        for name in [SENT, RECEIVED] {
            Self::program(&mut ebpf, name)?.load().map_err(|source| LoadError::Program { name, source })?;
        }
        let clock_offset_ns = clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC);
        let health_unavailable = Self::attach_tracepoints(&mut ebpf).err();
        if let Some(why) = &health_unavailable {
            tracing::warn!(reason = %why, "TCP health (retransmissions, failed connects, handshake RTT) is not counted live");
        }
        Ok(FlowCounters {
            ebpf,
            attached: HashMap::new(),
            senders: HashSet::new(),
            clock_offset_ns,
            health_unavailable,
        })
    }

    /// The TCP health programs, on their tracepoints (for the life of
    /// this process). They need tracefs: it is mounted if it is not.
    fn attach_tracepoints(ebpf: &mut Ebpf) -> Result<(), String> {
        ensure_tracefs()?;
        for (name, category, event) in TRACEPOINTS {
            attach_tracepoint(ebpf, name, category, event)?;
        }
        Ok(())
    }

    /// Why TCP health is not counted live, if it is not.
    pub fn health_unavailable(&self) -> Option<&str> {
        self.health_unavailable.as_deref()
    }

    fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut SchedClassifier, LoadError> {
        ebpf.program_mut(name)
            .ok_or(LoadError::Missing(name))?
            .try_into()
            .map_err(|source| LoadError::Program { name, source })
    }

    /// Counts on `iface`, a workload's host-side interface: what it sends
    /// (TC ingress) and receives (TC egress), through TCX links.
    pub fn attach(&mut self, iface: &str) -> Result<(), LoadError> {
        if self.attached.contains_key(iface) {
            return Ok(());
        }
        let attach_err = |source| LoadError::Attach { iface: iface.to_string(), source };
        let sent = Self::program(&mut self.ebpf, SENT)?.attach(iface, TcAttachType::Ingress).map_err(attach_err)?;
        let received = match Self::program(&mut self.ebpf, RECEIVED)?.attach(iface, TcAttachType::Egress) {
            Ok(link) => link,
            Err(source) => {
                let _ = Self::program(&mut self.ebpf, SENT)?.detach(sent);
                return Err(LoadError::Attach { iface: iface.to_string(), source });
            }
        };
        tracing::debug!(iface, "attached flow counters");
        self.attached.insert(iface.to_string(), (sent, received));
        Ok(())
    }

    /// Stops counting on `iface`. An interface that is already gone took
    /// its links with it, which is not an error.
    pub fn detach(&mut self, iface: &str) {
        let Some((sent, received)) = self.attached.remove(iface) else { return };
        if let Ok(p) = Self::program(&mut self.ebpf, SENT) {
            let _ = p.detach(sent);
        }
        if let Ok(p) = Self::program(&mut self.ebpf, RECEIVED) {
            let _ = p.detach(received);
        }
        tracing::debug!(iface, "detached flow counters");
    }

    /// Interfaces counted on now, sorted.
    pub fn attached(&self) -> Vec<String> {
        let mut v: Vec<String> = self.attached.keys().cloned().collect();
        v.sort();
        v
    }

    /// The workloads whose sent packets are counted at their own interface
    /// (see flows.bpf.c): received packets from them are not counted again.
    pub fn set_counted_senders(&mut self, ips: &[IpAddr]) -> Result<(), LoadError> {
        let want: HashSet<[u8; 16]> = ips.iter().map(|&ip| mapped(ip)).collect();
        let name = "counted_senders";
        let map = self.ebpf.map_mut(name).ok_or(LoadError::Missing(name))?;
        let mut map: BpfHashMap<&mut MapData, [u8; 16], u8> =
            BpfHashMap::try_from(map).map_err(|source| LoadError::Map { name, source })?;
        for gone in self.senders.difference(&want) {
            let _ = map.remove(gone);
        }
        for new in want.difference(&self.senders) {
            map.insert(new, 1, 0).map_err(|source| LoadError::Map { name, source })?;
        }
        self.senders = want;
        Ok(())
    }

    /// Every flow's totals so far, one reading per direction.
    pub fn read(&self) -> Result<CounterReadings, LoadError> {
        let name = "flows";
        let map = self.ebpf.map(name).ok_or(LoadError::Missing(name))?;
        let map: BpfHashMap<&MapData, RawKey, RawCounters> =
            BpfHashMap::try_from(map).map_err(|source| LoadError::Map { name, source })?;
        let wall = |ns: u64| Timestamp((i128::from(ns) + self.clock_offset_ns).max(0) as u64);
        let health = self.read_health();
        let mut out = Vec::new();
        // An entry evicted or removed while iterating ends this pass early;
        // the next read picks up what is left.
        for (k, v) in map.iter().flatten() {
            let l4 = match i32::from(k.proto) {
                libc::IPPROTO_TCP => L4Proto::Tcp,
                libc::IPPROTO_UDP => L4Proto::Udp,
                _ => continue,
            };
            out.push(DirectionalReading {
                l4,
                src: Endpoint { ip: unmapped(k.src), port: k.sport },
                dst: Endpoint { ip: unmapped(k.dst), port: k.dport },
                counters: DirCounters { packets: v.packets, bytes: v.bytes, ip_bytes: v.ip_bytes },
                first_ts: wall(v.first_ns),
                last_ts: wall(v.last_ns),
                syn: v.flags & FLAG_SYN != 0,
                syn_ack: v.flags & FLAG_SYNACK != 0,
                fin: v.flags & FLAG_FIN != 0,
                rst: v.flags & FLAG_RST != 0,
                health: health.get(&k).copied().unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// The sockets' TCP health, by the flow key of what each sends (the
    /// same keys as the flows').
    fn read_health(&self) -> HashMap<RawKey, SocketHealth> {
        let Some(map) = self.ebpf.map("tcp_health") else { return HashMap::new() };
        let Ok(map) = BpfHashMap::<&MapData, RawKey, RawHealth>::try_from(map) else { return HashMap::new() };
        map.iter()
            .flatten()
            .map(|(k, v)| {
                let h = SocketHealth {
                    retransmits: v.retransmits,
                    failed_connects: v.failed_connects,
                    handshakes: v.handshakes,
                    rtt_sum_us: v.rtt_sum_ns / 1_000,
                };
                (k, h)
            })
            .collect()
    }

    /// Drops both directions of a flow from the map (it went idle).
    pub fn forget(&mut self, l4: L4Proto, a: Endpoint, b: Endpoint) {
        let name = "flows";
        let Some(map) = self.ebpf.map_mut(name) else { return };
        let Ok(mut map) = BpfHashMap::<&mut MapData, RawKey, RawCounters>::try_from(map) else { return };
        let proto = match l4 {
            L4Proto::Tcp => libc::IPPROTO_TCP,
            L4Proto::Udp => libc::IPPROTO_UDP,
        } as u8;
        let keys = [(a, b), (b, a)].map(|(s, d)| RawKey {
            src: mapped(s.ip),
            dst: mapped(d.ip),
            sport: s.port,
            dport: d.port,
            proto,
            pad: [0; 3],
        });
        for key in &keys {
            let _ = map.remove(key);
        }
        if let Some(Ok(mut health)) =
            self.ebpf.map_mut("tcp_health").map(BpfHashMap::<&mut MapData, RawKey, RawHealth>::try_from)
        {
            for key in &keys {
                let _ = health.remove(key);
            }
        }
    }

    pub fn stats(&self) -> EbpfStats {
        let Some(map) = self.ebpf.map("stats") else { return EbpfStats::default() };
        let Ok(map) = PerCpuArray::<&MapData, u64>::try_from(map) else { return EbpfStats::default() };
        let sum = |i: u32| map.get(&i, 0).map(|v| v.iter().sum::<u64>()).unwrap_or(0);
        EbpfStats { packets: sum(0), skipped: sum(1), map_full: sum(2), evicted: 0 }
    }
}

/// Program `name` of `ebpf` as its type (`TracePoint`, `FEntry`, …), or
/// why not, for status messages.
pub(crate) fn program_as<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("the eBPF object has no {name}"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))
}

/// Loads tracepoint program `name` and attaches it to `category:event`
/// for the life of this process.
pub(crate) fn attach_tracepoint(ebpf: &mut Ebpf, name: &str, category: &str, event: &str) -> Result<(), String> {
    let program: &mut TracePoint = program_as(ebpf, name)?;
    program.load().map_err(|e| format!("{name}: {e}"))?;
    program.attach(category, event).map_err(|e| format!("{category}:{event}: {e}"))?;
    Ok(())
}

/// Mounts tracefs if it is not: tracepoint programs need it to find
/// their events' ids.
pub(crate) fn ensure_tracefs() -> Result<(), String> {
    let tracefs = std::path::Path::new("/sys/kernel/tracing");
    if !tracefs.join("events").exists() && !std::path::Path::new("/sys/kernel/debug/tracing/events").exists() {
        let status = std::process::Command::new("mount").args(["-t", "tracefs", "nodev"]).arg(tracefs).status();
        if !status.is_ok_and(|s| s.success()) {
            return Err("tracefs is not mounted at /sys/kernel/tracing and could not be (CAP_SYS_ADMIN)".into());
        }
    }
    Ok(())
}

/// How many programs are attached through TCX to `iface`, both ways: for
/// checking that nothing outlives trawl.
pub fn tcx_programs(iface: &str) -> Result<usize, LoadError> {
    let mut n = 0;
    for attach in [TcAttachType::Ingress, TcAttachType::Egress] {
        let (_, programs) = SchedClassifier::query_tcx(iface, attach)
            .map_err(|source| LoadError::Attach { iface: iface.to_string(), source })?;
        n += programs.len();
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_the_key_form() {
        for ip in ["10.1.2.3", "fd00::7", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(unmapped(mapped(ip)), ip);
        }
    }

    #[test]
    fn the_key_layout_matches_the_c_struct() {
        assert_eq!(std::mem::size_of::<RawKey>(), 40);
        assert_eq!(std::mem::size_of::<RawCounters>(), 48);
        assert_eq!(std::mem::size_of::<RawHealth>(), 40);
    }
}

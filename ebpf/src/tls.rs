//! TLS plaintext from OpenSSL: loading `tls.bpf.c`, attaching its uprobes
//! to libraries and executables, and reading the chunks it captures.
//!
//! Probes sit on a file (its inode), for every process that maps it; the
//! programs look only at processes in the network namespaces given to
//! [`TlsCapture::set_netns`]. Like the TCX links, every probe lives in an
//! fd of this process, so it goes when trawl exits, even on `kill -9`.

use crate::loader::{LoadError, program_as, unmapped};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::uprobe::{UProbeLinkId, UProbeScope};
use aya::programs::{FEntry, KProbe, UProbe};
use aya::{Btf, Ebpf, EbpfLoader};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use trawl_core::Timestamp;
use trawl_core::flow::Endpoint;

/// The entry probes and the OpenSSL functions they go on. The `_ex` forms
/// (OpenSSL >= 1.1.1; Python's `ssl` calls them) are optional.
const ENTRY_PROBES: [(&str, &str, bool); 4] = [
    ("SSL_write", "trawl_ssl_write", false),
    ("SSL_read", "trawl_ssl_read", false),
    ("SSL_write_ex", "trawl_ssl_write_ex", true),
    ("SSL_read_ex", "trawl_ssl_read_ex", true),
];
/// One return probe serves all four: the entry left what it needs.
const RETURN_PROBE: &str = "trawl_ssl_ret";
const FREE_PROBE: (&str, &str) = ("SSL_free", "trawl_ssl_free");
/// The server name: set by a client (`SSL_ctrl`), asked for by a server
/// (`SSL_get_servername`, whose return probe reads it). Optional.
const CLIENT_NAME_PROBE: (&str, &str) = ("SSL_ctrl", "trawl_ssl_ctrl");
const SERVER_NAME_PROBES: (&str, &str, &str) =
    ("SSL_get_servername", "trawl_ssl_get_servername", "trawl_ssl_get_servername_ret");
/// Where the socket under an SSL call is learnt, best first (see the C file).
const LEARNERS: [Learner; 3] = [Learner::Tracepoint, Learner::FEntry, Learner::KProbe];
const TRACEPOINTS: [(&str, &str); 2] =
    [("trawl_tp_send_length", "sock_send_length"), ("trawl_tp_recv_length", "sock_recv_length")];
const KERNEL_FUNCTIONS: [(&str, &str, &str); 2] = [
    ("trawl_fentry_tcp_sendmsg", "trawl_kprobe_tcp_sendmsg", "tcp_sendmsg"),
    ("trawl_fentry_tcp_recvmsg", "trawl_kprobe_tcp_recvmsg", "tcp_recvmsg"),
];
/// The symbol whose definition marks a file as holding OpenSSL.
pub const MARKER_SYMBOL: &str = "SSL_write";

const DIR_WRITE: u32 = 0;
const DIR_READ: u32 = 1;
const DIR_CLOSE: u32 = 2;
const DIR_SNI: u32 = 3;

/// How the socket under an SSL call is found on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learner {
    /// `sock:sock_send_length` / `sock_recv_length` (Linux >= 6.3).
    Tracepoint,
    /// fentry on `tcp_sendmsg` / `tcp_recvmsg`.
    FEntry,
    /// kprobes on them.
    KProbe,
}

impl Learner {
    pub fn name(self) -> &'static str {
        match self {
            Learner::Tracepoint => "tracepoint sock:sock_{send,recv}_length",
            Learner::FEntry => "fentry tcp_sendmsg/tcp_recvmsg",
            Learner::KProbe => "kprobe tcp_sendmsg/tcp_recvmsg",
        }
    }
}

/// `struct tuple` in tls.bpf.c.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RawTuple {
    local: [u8; 16],
    peer: [u8; 16],
    lport: u16,
    pport: u16,
    known: u32,
}

/// `struct chunk_hdr` in tls.bpf.c.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RawChunkHeader {
    ts_ns: u64,
    ssl: u64,
    tgid: u32,
    netns: u32,
    tuple: RawTuple,
    offset: u64,
    len: u32,
    dir: u32,
}

const HEADER_LEN: usize = std::mem::size_of::<RawChunkHeader>();

impl RawChunkHeader {
    /// Reads a header from the front of a ring item (which is only
    /// byte-aligned), or `None` if the item is too short.
    fn parse(item: &[u8]) -> Option<Self> {
        let b = item.get(..HEADER_LEN)?;
        let u64_at = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let u16_at = |i: usize| u16::from_ne_bytes(b[i..i + 2].try_into().unwrap_or_default());
        let mut tuple = RawTuple::default();
        tuple.local.copy_from_slice(&b[24..40]);
        tuple.peer.copy_from_slice(&b[40..56]);
        tuple.lport = u16_at(56);
        tuple.pport = u16_at(58);
        tuple.known = u32_at(60);
        Some(RawChunkHeader {
            ts_ns: u64_at(0),
            ssl: u64_at(8),
            tgid: u32_at(16),
            netns: u32_at(20),
            tuple,
            offset: u64_at(64),
            len: u32_at(72),
            dir: u32_at(76),
        })
    }
}

/// Which way a chunk went, as the process that made the call sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsDirection {
    /// `SSL_write`: from this process to its peer.
    Write,
    /// `SSL_read`: from the peer to this process.
    Read,
}

/// What came out of the ring.
#[derive(Debug)]
pub enum TlsEvent<'a> {
    /// Plaintext handed to (`Write`) or taken from (`Read`) OpenSSL.
    Chunk(TlsChunk<'a>),
    /// `SSL_free`: the connection's SSL object is gone.
    Closed(TlsConnKey, TlsTuple, Timestamp),
    /// The server name (SNI) of an SSL object, before its first chunk.
    ServerName(TlsConnKey, &'a str),
}

/// One SSL object of one process: the plaintext stream's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TlsConnKey {
    pub tgid: u32,
    pub ssl: u64,
}

/// The TCP connection under an SSL object, from the calling process's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TlsTuple {
    pub local: Endpoint,
    pub peer: Endpoint,
}

/// Plaintext at `offset` of its direction's stream.
#[derive(Debug)]
pub struct TlsChunk<'a> {
    pub key: TlsConnKey,
    pub tuple: TlsTuple,
    pub netns: u32,
    pub ts: Timestamp,
    pub direction: TlsDirection,
    pub offset: u64,
    pub data: &'a [u8],
}

/// What the programs counted: losses are data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsStats {
    /// SSL calls that moved bytes in a targeted process.
    pub calls: u64,
    /// Calls made before the connection's socket was seen (their bytes are
    /// a gap).
    pub before_tuple: u64,
    /// Chunks that could not be read from the process's memory.
    pub read_faults: u64,
    /// Chunks dropped because the ring was full.
    pub ring_full: u64,
    /// Plaintext bytes lost for any of these reasons.
    pub lost_bytes: u64,
    /// Calls of more than 64 KiB, whose rest was not copied.
    pub truncated: u64,
    /// Ring items too short to hold a header (a layout mismatch).
    pub malformed: u64,
}

/// Why a file could not be probed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("{path}: {symbol}: {source}")]
    Probe {
        path: String,
        symbol: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
}

/// The links of one probed file.
#[derive(Debug, Default)]
struct FileLinks {
    links: Vec<(&'static str, UProbeLinkId)>,
}

/// The loaded TLS programs, the files they are attached to and the ring.
pub struct TlsCapture {
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
    files: HashMap<String, FileLinks>,
    netns: HashSet<u32>,
    learner: Learner,
    clock_offset_ns: i128,
    malformed: u64,
}

impl std::fmt::Debug for TlsCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCapture")
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .field("netns", &self.netns)
            .field("learner", &self.learner)
            .finish()
    }
}

/// The compiled TLS object, or `None` when clang was missing at build time.
pub fn object() -> Option<&'static [u8]> {
    #[cfg(trawl_ebpf_built)]
    {
        Some(include_bytes!(concat!(env!("OUT_DIR"), "/tls.bpf.o")))
    }
    #[cfg(not(trawl_ebpf_built))]
    {
        None
    }
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut UProbe, LoadError> {
    ebpf.program_mut(name)
        .ok_or(LoadError::Missing(name))?
        .try_into()
        .map_err(|source| LoadError::Program { name, source })
}

impl TlsCapture {
    /// Loads the programs with a ring of `ring_bytes` (rounded up to a
    /// power of two of at least a page), and the first socket learner this
    /// kernel runs. Nothing is probed until [`TlsCapture::attach_file`].
    pub fn load(ring_bytes: u32) -> Result<Self, LoadError> {
        let object = object().filter(|o| !o.is_empty()).ok_or(LoadError::NotBuilt)?;
        // Without the kernel's BTF the CO-RE reads of `struct sock` would
        // read at the wrong offsets: refuse rather than tie chunks to junk.
        if !Path::new("/sys/kernel/btf/vmlinux").exists() {
            return Err(LoadError::NoBtf);
        }
        let ring = ring_bytes.max(4096).next_power_of_two();
        let mut ebpf = EbpfLoader::new().map_max_entries("tls_events", ring).load(object)?;
        let names = [CLIENT_NAME_PROBE.1, SERVER_NAME_PROBES.1, SERVER_NAME_PROBES.2];
        for name in ENTRY_PROBES.map(|p| p.1).into_iter().chain([RETURN_PROBE, FREE_PROBE.1]).chain(names) {
            uprobe(&mut ebpf, name)?.load().map_err(|source| LoadError::Program { name, source })?;
        }
        let mut why = Vec::new();
        let mut learner = None;
        for candidate in LEARNERS {
            match Self::attach_learner(&mut ebpf, candidate) {
                Ok(()) => {
                    learner = Some(candidate);
                    break;
                }
                Err(e) => why.push(format!("{}: {e}", candidate.name())),
            }
        }
        let learner = learner.ok_or_else(|| LoadError::NoLearner(why.join("; ")))?;
        let map = ebpf.take_map("tls_events").ok_or(LoadError::Missing("tls_events"))?;
        let ring = RingBuf::try_from(map).map_err(|source| LoadError::Map { name: "tls_events", source })?;
        let clock_offset_ns =
            crate::loader::clock_ns(libc::CLOCK_REALTIME) - crate::loader::clock_ns(libc::CLOCK_MONOTONIC);
        tracing::debug!(learner = learner.name(), "TLS programs loaded");
        Ok(TlsCapture {
            ebpf,
            ring,
            files: HashMap::new(),
            netns: HashSet::new(),
            learner,
            clock_offset_ns,
            malformed: 0,
        })
    }

    fn attach_learner(ebpf: &mut Ebpf, learner: Learner) -> Result<(), String> {
        match learner {
            Learner::Tracepoint => {
                crate::loader::ensure_tracefs()?;
                for (name, event) in TRACEPOINTS {
                    crate::loader::attach_tracepoint(ebpf, name, "sock", event)?;
                }
            }
            Learner::FEntry => {
                let btf = Btf::from_sys_fs().map_err(|e| e.to_string())?;
                for (name, _, function) in KERNEL_FUNCTIONS {
                    let p: &mut FEntry = program_as(ebpf, name)?;
                    p.load(function, &btf).map_err(|e| format!("{name}: {e}"))?;
                    p.attach().map_err(|e| format!("{function}: {e}"))?;
                }
            }
            Learner::KProbe => {
                for (_, name, function) in KERNEL_FUNCTIONS {
                    let p: &mut KProbe = program_as(ebpf, name)?;
                    p.load().map_err(|e| format!("{name}: {e}"))?;
                    p.attach(function, 0).map_err(|e| format!("{function}: {e}"))?;
                }
            }
        }
        Ok(())
    }

    /// How sockets are learnt on this kernel.
    pub fn learner(&self) -> Learner {
        self.learner
    }

    /// Probes OpenSSL in the file at `path` (a `libssl.so` or an executable
    /// with OpenSSL linked in) under the name `key`: for every process that
    /// maps it, or only for process `pid` (the kernel then breaks into no
    /// other process). Probing a key twice does nothing. Returns the number
    /// of probes placed.
    pub fn attach_file(&mut self, key: &str, path: &Path, pid: Option<u32>) -> Result<usize, AttachError> {
        if self.files.contains_key(key) {
            return Ok(0);
        }
        let scope = match pid.and_then(std::num::NonZeroU32::new) {
            Some(pid) => UProbeScope::OneProcess(pid),
            None => UProbeScope::AllProcesses,
        };
        let mut file = FileLinks::default();
        let result = self.attach_all(path, scope, &mut file);
        if let Err(e) = result {
            self.detach_links(file);
            return Err(e);
        }
        let n = file.links.len();
        tracing::debug!(key, path = %path.display(), probes = n, "OpenSSL probed");
        self.files.insert(key.to_string(), file);
        Ok(n)
    }

    fn attach_all(&mut self, path: &Path, scope: UProbeScope, file: &mut FileLinks) -> Result<(), AttachError> {
        let err = |symbol| move |source| AttachError::Probe { path: path.display().to_string(), symbol, source };
        for (symbol, entry, optional) in ENTRY_PROBES {
            let p = uprobe(&mut self.ebpf, entry).map_err(|_| AttachError::Missing(entry))?;
            let id = match p.attach(symbol, path, scope) {
                Ok(id) => id,
                Err(_) if optional => continue,
                Err(e) => return Err(err(symbol)(e)),
            };
            file.links.push((entry, id));
            let r = uprobe(&mut self.ebpf, RETURN_PROBE).map_err(|_| AttachError::Missing(RETURN_PROBE))?;
            let id = r.attach(symbol, path, scope).map_err(err(symbol))?;
            file.links.push((RETURN_PROBE, id));
        }
        let (symbol, name) = FREE_PROBE;
        let p = uprobe(&mut self.ebpf, name).map_err(|_| AttachError::Missing(name))?;
        file.links.push((name, p.attach(symbol, path, scope).map_err(err(symbol))?));
        // Names are a bonus: a build without them still gives plaintext.
        let (symbol, name) = CLIENT_NAME_PROBE;
        self.attach_optional(path, scope, symbol, name, file);
        let (symbol, entry, ret) = SERVER_NAME_PROBES;
        if self.attach_optional(path, scope, symbol, entry, file) {
            self.attach_optional(path, scope, symbol, ret, file);
        }
        Ok(())
    }

    /// Program `name` on `symbol`, if the file has it; whether it went on.
    fn attach_optional(
        &mut self,
        path: &Path,
        scope: UProbeScope,
        symbol: &str,
        name: &'static str,
        file: &mut FileLinks,
    ) -> bool {
        let Ok(p) = uprobe(&mut self.ebpf, name) else { return false };
        match p.attach(symbol, path, scope) {
            Ok(id) => {
                file.links.push((name, id));
                true
            }
            Err(_) => false,
        }
    }

    fn detach_links(&mut self, file: FileLinks) {
        for (name, id) in file.links {
            if let Ok(p) = uprobe(&mut self.ebpf, name) {
                let _ = p.detach(id);
            }
        }
    }

    /// Takes every probe off the file attached as `key`.
    pub fn detach_file(&mut self, key: &str) {
        if let Some(file) = self.files.remove(key) {
            self.detach_links(file);
            tracing::debug!(key, "OpenSSL probes removed");
        }
    }

    /// The keys of the files probed now, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = self.files.keys().cloned().collect();
        v.sort();
        v
    }

    /// The network namespaces (inode numbers) whose processes are captured.
    pub fn set_netns(&mut self, inodes: &[u32]) -> Result<(), LoadError> {
        let want: HashSet<u32> = inodes.iter().copied().collect();
        let name = "tls_netns";
        let map = self.ebpf.map_mut(name).ok_or(LoadError::Missing(name))?;
        let mut map: BpfHashMap<&mut MapData, u32, u8> =
            BpfHashMap::try_from(map).map_err(|source| LoadError::Map { name, source })?;
        for gone in self.netns.difference(&want) {
            let _ = map.remove(gone);
        }
        for new in want.difference(&self.netns) {
            map.insert(new, 1, 0).map_err(|source| LoadError::Map { name, source })?;
        }
        self.netns = want;
        Ok(())
    }

    /// Hands every event in the ring to `f`, in ring order (causal within
    /// a process). Returns how many there were.
    pub fn drain(&mut self, mut f: impl FnMut(TlsEvent<'_>)) -> usize {
        let mut n = 0;
        let offset = self.clock_offset_ns;
        while let Some(item) = self.ring.next() {
            n += 1;
            let Some(h) = RawChunkHeader::parse(&item) else {
                self.malformed += 1;
                continue;
            };
            let key = TlsConnKey { tgid: h.tgid, ssl: h.ssl };
            let tuple = TlsTuple {
                local: Endpoint { ip: unmapped(h.tuple.local), port: h.tuple.lport },
                peer: Endpoint { ip: unmapped(h.tuple.peer), port: h.tuple.pport },
            };
            let ts = Timestamp((i128::from(h.ts_ns) + offset).max(0) as u64);
            let direction = match h.dir {
                DIR_WRITE => TlsDirection::Write,
                DIR_READ => TlsDirection::Read,
                DIR_CLOSE => {
                    f(TlsEvent::Closed(key, tuple, ts));
                    continue;
                }
                DIR_SNI => {
                    let name = item.get(HEADER_LEN..HEADER_LEN + h.len as usize).map(std::str::from_utf8);
                    match name {
                        Some(Ok(name)) => f(TlsEvent::ServerName(key, name)),
                        _ => self.malformed += 1,
                    }
                    continue;
                }
                _ => {
                    self.malformed += 1;
                    continue;
                }
            };
            let Some(data) = item.get(HEADER_LEN..HEADER_LEN + h.len as usize) else {
                self.malformed += 1;
                continue;
            };
            f(TlsEvent::Chunk(TlsChunk { key, tuple, netns: h.netns, ts, direction, offset: h.offset, data }));
        }
        n
    }

    /// What the programs counted so far.
    pub fn stats(&self) -> TlsStats {
        let mut stats = TlsStats { malformed: self.malformed, ..TlsStats::default() };
        let Some(map) = self.ebpf.map("tls_stats") else { return stats };
        let Ok(map) = PerCpuArray::<&MapData, u64>::try_from(map) else { return stats };
        let sum = |i: u32| map.get(&i, 0).map(|v| v.iter().sum::<u64>()).unwrap_or(0);
        stats.calls = sum(0);
        stats.before_tuple = sum(1);
        stats.read_faults = sum(2);
        stats.ring_full = sum(3);
        stats.lost_bytes = sum(4);
        stats.truncated = sum(5);
        stats
    }
}

/// Whether the ELF file at `path` defines OpenSSL (not merely imports it):
/// a `libssl`, or an executable with OpenSSL linked in statically.
pub fn defines_openssl(path: &Path) -> std::io::Result<bool> {
    use object::{Object, ObjectSymbol};
    // Read on demand: an executable may be hundreds of MiB, of which only
    // the headers and symbol tables are looked at.
    let cache = object::ReadCache::new(std::fs::File::open(path)?);
    let Ok(file) = object::File::parse(&cache) else { return Ok(false) };
    let defines = |s: &dyn Fn(&str) -> bool| {
        file.dynamic_symbols().any(|sym| sym.is_definition() && sym.name().is_ok_and(s))
            || file.symbols().any(|sym| sym.is_definition() && sym.name().is_ok_and(s))
    };
    Ok(defines(&|n| n == MARKER_SYMBOL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_layout_matches_the_c_struct() {
        assert_eq!(std::mem::size_of::<RawTuple>(), 40);
        assert_eq!(HEADER_LEN, 80);
    }

    #[test]
    fn a_header_parses_from_unaligned_bytes() {
        let mut item = [0u8; 1 + HEADER_LEN + 3];
        let b = &mut item[1..];
        b[0..8].copy_from_slice(&7u64.to_ne_bytes());
        b[16..20].copy_from_slice(&42u32.to_ne_bytes());
        b[24 + 10] = 0xff;
        b[24 + 11] = 0xff;
        b[24 + 12..24 + 16].copy_from_slice(&[10, 0, 0, 1]);
        b[56..58].copy_from_slice(&8443u16.to_ne_bytes());
        b[64..72].copy_from_slice(&100u64.to_ne_bytes());
        b[72..76].copy_from_slice(&3u32.to_ne_bytes());
        b[76..80].copy_from_slice(&DIR_READ.to_ne_bytes());
        let h = RawChunkHeader::parse(&item[1..]).unwrap();
        assert_eq!((h.ts_ns, h.tgid, h.tuple.lport, h.offset, h.len, h.dir), (7, 42, 8443, 100, 3, DIR_READ));
        assert_eq!(unmapped(h.tuple.local), "10.0.0.1".parse::<std::net::IpAddr>().unwrap());
        assert!(RawChunkHeader::parse(&item[..10]).is_none());
    }

    #[test]
    fn this_machine_s_libssl_defines_openssl_and_curl_only_imports_it() {
        let lib = Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
        if lib.exists() {
            assert!(defines_openssl(lib).unwrap());
        }
        let curl = Path::new("/usr/bin/curl");
        if curl.exists() {
            assert!(!defines_openssl(curl).unwrap());
        }
    }
}

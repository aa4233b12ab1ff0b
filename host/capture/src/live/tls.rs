//! Where TLS capture looks: the targeted pods' network namespaces, the
//! processes in them, and the OpenSSL each of those maps (a `libssl.so`, or
//! an executable with OpenSSL linked in), found through `/proc`.
//!
//! Probes go on files, once per file for every process that maps it, and
//! the programs filter by network namespace: a process that starts in a
//! targeted pod is captured as soon as its OpenSSL is probed, with no list
//! of PIDs to keep current. A file no targeted process has mapped for
//! [`UNUSED_SCANS`] scans loses its probes.

use super::discover::{NETNS_DIR, PodInterface};
use anyhow::{Context, Result};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use trawl_ebpf::TlsCapture;
use trawl_ebpf::tls::{TlsEvent, TlsStats, defines_openssl};

/// Scans a probed file may go unmapped by targeted processes before its
/// probes come off.
pub const UNUSED_SCANS: u32 = 6;

/// Files (or, per process, process-file pairs) probed at most.
pub const MAX_PROBED: usize = 1024;
const FULL: &str = "too many files with OpenSSL";

/// Whom the probes of a file break into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProbeScope {
    /// Every process that maps the file; the programs then look only at
    /// targeted ones. A process is captured from its first call, however
    /// short-lived, but every process sharing the file (the same image
    /// layer) pays the breakpoints, targeted or not.
    #[default]
    File,
    /// Only the targeted processes found by a scan: the others pay
    /// nothing, and a process is captured from the scan after it started
    /// (every 3 s), so short-lived clients may be missed.
    Process,
}

/// One process's view of `/proc`.
#[derive(Clone, Debug)]
pub struct ProcessNetns {
    pub pid: u32,
    pub netns: u32,
}

/// A file that may hold OpenSSL, as a process maps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedFile {
    /// `dev:inode` from the maps line: uprobes bind to the inode, and
    /// containers of one image share their lower layer's.
    pub key: String,
    /// A path this process resolves to that inode.
    pub path: PathBuf,
    /// A `libssl.so*` (rather than an executable checked by symbol).
    pub library: bool,
}

/// The network namespace inode a `/proc/PID/ns/net` link names.
pub fn netns_of(pid: u32) -> Option<u32> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    let s = link.to_str()?;
    s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// Every process and its network namespace (processes that went away or
/// cannot be read are skipped).
pub fn processes() -> Vec<ProcessNetns> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some(ProcessNetns { pid, netns: netns_of(pid)? }))
        .collect()
}

/// The local addresses of a network namespace, from one of its processes'
/// `/proc/PID/net/fib_trie` (`/32 host LOCAL` entries) and `if_inet6`.
pub fn local_addresses(pid: u32) -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(trie) = std::fs::read_to_string(format!("/proc/{pid}/net/fib_trie")) {
        let mut last: Option<IpAddr> = None;
        for line in trie.lines() {
            let t = line.trim_start_matches([' ', '|', '+', '-']).trim();
            if let Ok(ip) = t.parse::<IpAddr>() {
                last = Some(ip);
            } else if t.starts_with("/32 host LOCAL")
                && let Some(ip) = last
                && !out.contains(&ip)
            {
                out.push(ip);
            }
        }
    }
    if let Ok(v6) = std::fs::read_to_string(format!("/proc/{pid}/net/if_inet6")) {
        for line in v6.lines() {
            let Some(hex) = line.split_whitespace().next() else { continue };
            if let Ok(n) = u128::from_str_radix(hex, 16) {
                out.push(IpAddr::V6(std::net::Ipv6Addr::from(n)));
            }
        }
    }
    out
}

/// The files of `pid` that may hold OpenSSL: its `libssl.so*` mappings and
/// its executable. Paths go through `/proc/PID/root`, which the kernel
/// resolves in the process's own mount namespace (a container's image).
pub fn mapped_files(pid: u32) -> Vec<MappedFile> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { return Vec::new() };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let mut out: Vec<MappedFile> = Vec::new();
    for line in maps.lines() {
        // start-end perms offset dev inode path
        let mut fields = line.splitn(6, ' ');
        let (Some(range), Some(_perms), Some(_off), Some(dev), Some(inode), Some(path)) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = path.trim_start();
        if inode == "0" || !path.starts_with('/') {
            continue;
        }
        let library = Path::new(path).file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libssl.so"));
        let is_exe = exe.as_deref().is_some_and(|e| e == Path::new(path));
        if !library && !is_exe {
            continue;
        }
        let key = format!("{dev}:{inode}");
        if out.iter().any(|f| f.key == key) {
            continue;
        }
        // A library replaced on disk since the process started is only
        // reachable through map_files (CAP_SYS_ADMIN).
        let path = match path.strip_suffix(" (deleted)") {
            Some(_) => PathBuf::from(format!("/proc/{pid}/map_files/{range}")),
            None => PathBuf::from(format!("/proc/{pid}/root{path}")),
        };
        out.push(MappedFile { key, path, library });
    }
    out
}

/// What the last scan found, for the status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsScan {
    /// Targeted network namespaces.
    pub netns: usize,
    /// Processes in them.
    pub processes: usize,
    /// Files with OpenSSL probed now.
    pub files: Vec<String>,
    /// Files that could not be probed, and why.
    pub failed: Vec<String>,
}

#[derive(Debug)]
struct Probed {
    unused_scans: u32,
}

/// TLS capture on the targeted pods of this node.
#[derive(Debug)]
pub struct TlsTargets {
    capture: TlsCapture,
    scope: ProbeScope,
    probed: HashMap<String, Probed>,
    /// Files known not to define OpenSSL (executables that import it, or
    /// none at all), and files that failed: not looked at again.
    skipped: HashSet<String>,
    host_netns: Option<u32>,
    addresses: HashMap<u32, Vec<IpAddr>>,
    last: TlsScan,
}

impl TlsTargets {
    /// Loads the TLS programs with a ring of `ring_bytes`.
    pub fn start(ring_bytes: u32, scope: ProbeScope) -> Result<Self> {
        let capture = TlsCapture::load(ring_bytes).context("TLS capture")?;
        Ok(TlsTargets {
            capture,
            scope,
            probed: HashMap::new(),
            skipped: HashSet::new(),
            host_netns: netns_of(1),
            addresses: HashMap::new(),
            last: TlsScan::default(),
        })
    }

    /// Which network namespaces hold the `targeted` pods: a named one's
    /// inode, or for a routed pod the namespace whose local addresses
    /// include its IP. The host's namespace is never one.
    fn target_netns(&mut self, targeted: &[&PodInterface], procs: &[ProcessNetns]) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        let mut routed: HashSet<IpAddr> = HashSet::new();
        for pod in targeted {
            if pod.netns.starts_with("route:") {
                routed.extend(pod.ips.iter().copied());
            } else if let Ok(meta) = std::fs::metadata(Path::new(NETNS_DIR).join(&pod.netns)) {
                out.insert(meta.ino() as u32);
            }
        }
        if !routed.is_empty() {
            let mut first: HashMap<u32, u32> = HashMap::new();
            for p in procs {
                first.entry(p.netns).or_insert(p.pid);
            }
            self.addresses.retain(|ns, _| first.contains_key(ns));
            for (&ns, &pid) in &first {
                if Some(ns) == self.host_netns {
                    continue;
                }
                let ips = self.addresses.entry(ns).or_insert_with(|| local_addresses(pid));
                if ips.iter().any(|ip| routed.contains(ip)) {
                    out.insert(ns);
                }
            }
        }
        if let Some(host) = self.host_netns {
            out.remove(&host);
        }
        out
    }

    /// Points capture at the `targeted` pods: their namespaces go to the
    /// programs, and the OpenSSL their processes map is probed.
    pub fn retarget(&mut self, targeted: &[&PodInterface]) -> Result<&TlsScan> {
        let procs = processes();
        let netns = self.target_netns(targeted, &procs);
        let inodes: Vec<u32> = netns.iter().copied().collect();
        self.capture.set_netns(&inodes).context("TLS namespaces")?;
        let mut seen: HashSet<String> = HashSet::new();
        let mut failed = Vec::new();
        let mut processes = 0;
        let mut full = false;
        for p in procs.iter().filter(|p| netns.contains(&p.netns)) {
            processes += 1;
            for file in mapped_files(p.pid) {
                if self.skipped.contains(&file.key) {
                    continue;
                }
                // Per process, a file's probes are that process's own.
                let (key, pid) = match self.scope {
                    ProbeScope::File => (file.key.clone(), None),
                    ProbeScope::Process => (format!("{}@{}", p.pid, file.key), Some(p.pid)),
                };
                if self.probed.contains_key(&key) {
                    seen.insert(key);
                    continue;
                }
                if !file.library && !defines_openssl(&file.path).unwrap_or(false) {
                    self.skipped.insert(file.key);
                    continue;
                }
                // Each file costs a dozen perf events (and fds): a node
                // with ever more distinct ones is told, not followed.
                if self.probed.len() >= MAX_PROBED {
                    full = true;
                    continue;
                }
                match self.capture.attach_file(&key, &file.path, pid) {
                    Ok(probes) => {
                        tracing::info!(file = %file.path.display(), key, probes, "TLS capture on OpenSSL");
                        seen.insert(key.clone());
                        self.probed.insert(key, Probed { unused_scans: 0 });
                    }
                    Err(e) => {
                        tracing::warn!(file = %file.path.display(), error = %e, "cannot probe OpenSSL");
                        failed.push(format!("{}: {e}", file.path.display()));
                        self.skipped.insert(file.key);
                    }
                }
            }
        }
        // A process's own probes go with it at once; a file's wait a while
        // (its next process may be starting).
        let unused_scans = if self.scope == ProbeScope::Process { 1 } else { UNUSED_SCANS };
        let mut gone = Vec::new();
        for (key, probed) in &mut self.probed {
            if seen.contains(key) {
                probed.unused_scans = 0;
            } else {
                probed.unused_scans += 1;
                if probed.unused_scans >= unused_scans {
                    gone.push(key.clone());
                }
            }
        }
        for key in gone {
            self.probed.remove(&key);
            self.capture.detach_file(&key);
        }
        // Failed files are not tried again, so their reasons are kept.
        let kept = self.last.failed.iter().filter(|f| !f.starts_with(FULL)).cloned();
        failed.splice(0..0, kept);
        if full {
            failed.insert(0, format!("{FULL} ({MAX_PROBED} files): OpenSSL in more files goes unprobed"));
        }
        failed.truncate(16);
        self.last = TlsScan { netns: netns.len(), processes, files: self.capture.files(), failed };
        Ok(&self.last)
    }

    /// The last scan's findings.
    pub fn scan(&self) -> &TlsScan {
        &self.last
    }

    /// Hands every captured event to `f`.
    pub fn drain(&mut self, f: impl FnMut(TlsEvent<'_>)) -> usize {
        self.capture.drain(f)
    }

    pub fn stats(&self) -> TlsStats {
        self.capture.stats()
    }

    /// How sockets are learnt on this kernel.
    pub fn learner(&self) -> &'static str {
        self.capture.learner().name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_namespace_and_its_executable_is_listed() {
        let me = std::process::id();
        assert!(netns_of(me).is_some());
        let files = mapped_files(me);
        assert!(files.iter().any(|f| !f.library), "{files:?}");
        assert!(processes().iter().any(|p| p.pid == me));
    }

    #[test]
    fn loopback_is_a_local_address() {
        let ips = local_addresses(std::process::id());
        assert!(ips.contains(&"127.0.0.1".parse().unwrap()), "{ips:?}");
    }
}

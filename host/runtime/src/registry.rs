//! Which plugins exist: the embedded first-party set, plugin directories
//! that add to or override them by name, and a watcher that compiles
//! changed files off-thread for hot reload.

use super::wasm::WasmRuntime;
use super::{LoadError, LoadedPlugin, PluginSource, SharedPlugin, embedded};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer, notify::RecursiveMode};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

/// Life-cycle state of a plugin generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PluginState {
    /// Takes new connections.
    Active,
    /// Replaced or removed: finishes its open connections, takes no new ones.
    Draining,
    /// Gone.
    Retired,
    /// Faulted too often (or cannot be instantiated); takes nothing.
    Quarantined { reason: String },
    /// Could not be loaded at all.
    Rejected { reason: String },
    /// Faulted too often right after replacing another version, which
    /// took its place again (proxy-wasm's fail-reload); never tried again.
    RolledBack { reason: String },
}

/// What `trawl plugins` and the status API report per plugin generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub version: String,
    pub hash: String,
    pub generation: u64,
    pub source: String,
    #[serde(flatten)]
    pub state: PluginState,
    pub live_connections: u64,
    pub records: u64,
    pub faults: u64,
    pub detached_connections: u64,
    /// Calls on connections (not ticks).
    pub calls: u64,
    /// Bytes copied into the plugin by data and datagram calls.
    pub bytes_in: u64,
    /// Bytes copied into the plugin by probes.
    pub probe_bytes: u64,
    /// Stream bytes of the connections attached to it: what it was given
    /// to dissect, copied or not.
    pub stream_bytes: u64,
    /// Of those, the bytes it asked to skip (ABI v2): counted, not copied.
    pub skipped_bytes: u64,
    pub last_error: Option<String>,
    /// Port hints, as `tcp/80,udp/53`.
    pub ports: String,
    /// The fields its records carry, if it declares them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
}

impl PluginStatus {
    /// Bytes copied into the plugin per stream byte it was given: 1 when
    /// each byte crosses once, below 1 when it skips what it only counts,
    /// and growing with message size when a parser re-reads its input.
    pub fn amplification(&self) -> Option<f64> {
        (self.stream_bytes > 0).then(|| self.bytes_in as f64 / self.stream_bytes as f64)
    }
}

impl PluginStatus {
    /// A plugin that could not be loaded (or was refused): every counter 0.
    pub fn rejected(name: String, hash: String, source: String, reason: String) -> Self {
        PluginStatus {
            last_error: Some(reason.clone()),
            ..PluginStatus::unrun(name, String::new(), hash, source, PluginState::Rejected { reason })
        }
    }

    /// A loaded plugin before any connection, as `plugin` describes itself.
    pub fn loaded(plugin: &super::LoadedPlugin) -> Self {
        let info = &plugin.info;
        PluginStatus {
            ports: port_list(info),
            fields: plugin.fields.clone(),
            ..PluginStatus::unrun(
                info.name.clone(),
                info.version.clone(),
                plugin.hash.clone(),
                plugin.source.to_string(),
                PluginState::Active,
            )
        }
    }

    fn unrun(name: String, version: String, hash: String, source: String, state: PluginState) -> Self {
        PluginStatus {
            name,
            version,
            hash,
            generation: 0,
            source,
            state,
            live_connections: 0,
            records: 0,
            faults: 0,
            detached_connections: 0,
            calls: 0,
            bytes_in: 0,
            probe_bytes: 0,
            stream_bytes: 0,
            skipped_bytes: 0,
            last_error: None,
            ports: String::new(),
            fields: None,
        }
    }
}

/// How a plugin's protocol appears in map legends.
pub fn legend_entry(info: &trawl_sdk::PluginInfo) -> trawl_core::l7map::LegendEntry {
    trawl_core::l7map::LegendEntry {
        protocol: info.name.clone(),
        abbreviation: info.abbreviation.clone(),
        long_name: info.long_name.clone(),
        color: info.color.clone(),
    }
}

/// Port hints of a plugin, for listings.
pub fn port_list(info: &trawl_sdk::PluginInfo) -> String {
    let tcp = info.tcp_ports.iter().map(|p| format!("tcp/{p}"));
    let udp = info.udp_ports.iter().map(|p| format!("udp/{p}"));
    tcp.chain(udp).collect::<Vec<_>>().join(",")
}

/// What `trawl plugins [DIR]` lists: the embedded plugins, those in `dir`
/// (overriding by name) and the files in `dir` that were rejected.
pub fn list(dir: Option<&Path>) -> anyhow::Result<Vec<PluginStatus>> {
    let runtime = WasmRuntime::new(super::wasm::SandboxLimits::default())?;
    let mut set = PluginSet::embedded(runtime)?;
    if let Some(dir) = dir {
        set.add_dir(dir)?;
    }
    let dispatcher = super::Dispatcher::new(super::dispatch::DispatchConfig::default(), set.plugins());
    let mut out = dispatcher.status();
    out.extend(set.rejected().iter().map(Rejected::status));
    Ok(out)
}

/// A file that failed to load.
#[derive(Clone, Debug)]
pub struct Rejected {
    pub path: PathBuf,
    pub error: LoadError,
}

impl Rejected {
    pub fn status(&self) -> PluginStatus {
        PluginStatus::rejected(
            self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
            read_module(&self.path).map(|b| super::wasm::content_hash(&b)).unwrap_or_default(),
            self.path.display().to_string(),
            self.error.to_string(),
        )
    }
}

/// The plugins to start with.
#[derive(Debug)]
pub struct PluginSet {
    runtime: Arc<WasmRuntime>,
    plugins: BTreeMap<String, SharedPlugin>,
    rejected: Vec<Rejected>,
    dirs: Vec<PathBuf>,
}

fn is_wasm(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
}

/// Reads and loads one plugin file.
pub fn load_file(runtime: &Arc<WasmRuntime>, path: &Path) -> Result<LoadedPlugin, LoadError> {
    let bytes = read_module(path)?;
    runtime.load(&bytes, PluginSource::File(path.to_path_buf()))
}

/// A module file's bytes, refusing one over the size limit before reading
/// it (a plugin directory is not trusted to hold only small files).
fn read_module(path: &Path) -> Result<Vec<u8>, LoadError> {
    use std::io::Read;
    let read_error = |reason: String| LoadError::Read { path: path.display().to_string(), reason };
    let file = std::fs::File::open(path).map_err(|e| read_error(e.to_string()))?;
    let limit = super::wasm::MAX_MODULE_BYTES as u64;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| read_error(e.to_string()))?;
    if bytes.len() as u64 > limit {
        return Err(read_error(format!("larger than the {limit}-byte module limit")));
    }
    Ok(bytes)
}

impl PluginSet {
    /// The first-party plugins carried in the binary.
    pub fn embedded(runtime: Arc<WasmRuntime>) -> anyhow::Result<Self> {
        let mut set = PluginSet { runtime, plugins: BTreeMap::new(), rejected: Vec::new(), dirs: Vec::new() };
        for (name, bytes) in embedded::EMBEDDED {
            // One plugin that fails to load costs its protocol, not the run.
            match set.runtime.load(bytes, PluginSource::Embedded) {
                Ok(plugin) => {
                    set.plugins.insert(plugin.info.name.clone(), Arc::new(plugin));
                }
                Err(error) => {
                    tracing::warn!(plugin = name, %error, "embedded plugin rejected");
                    set.rejected.push(Rejected { path: PathBuf::from(format!("embedded:{name}")), error });
                }
            }
        }
        Ok(set)
    }

    /// An empty set (tests that bring their own plugins).
    pub fn empty(runtime: Arc<WasmRuntime>) -> Self {
        PluginSet { runtime, plugins: BTreeMap::new(), rejected: Vec::new(), dirs: Vec::new() }
    }

    pub fn runtime(&self) -> &Arc<WasmRuntime> {
        &self.runtime
    }

    /// Loads every `*.wasm` in `dir`; a plugin overrides one of the same name.
    /// Files that fail are kept as rejected, with the reason.
    pub fn add_dir(&mut self, dir: &Path) -> anyhow::Result<()> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("cannot read plugin directory {}: {e}", dir.display()))?;
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| is_wasm(p)).collect();
        paths.sort();
        for path in paths {
            match load_file(&self.runtime, &path) {
                Ok(p) => {
                    self.plugins.insert(p.info.name.clone(), Arc::new(p));
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "plugin rejected");
                    self.rejected.push(Rejected { path, error });
                }
            }
        }
        self.dirs.push(dir.to_path_buf());
        Ok(())
    }

    pub fn plugins(&self) -> Vec<SharedPlugin> {
        self.plugins.values().cloned().collect()
    }

    pub fn rejected(&self) -> &[Rejected] {
        &self.rejected
    }

    /// Starts watching the plugin directories for changes.
    pub fn watch(&self) -> anyhow::Result<Reloader> {
        Reloader::start(Arc::clone(&self.runtime), &self.dirs)
    }
}

/// A change the watcher compiled (or failed to).
#[derive(Debug)]
pub enum ReloadEvent {
    Loaded { path: PathBuf, plugin: SharedPlugin },
    Removed { path: PathBuf, name: String },
    Rejected(Rejected),
}

/// Watches plugin directories; compiles changed files on its own thread.
pub struct Reloader {
    events: Receiver<ReloadEvent>,
    _debouncer: Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish()
    }
}

/// How long file events settle before a reload (editors write in bursts).
const DEBOUNCE: Duration = Duration::from_millis(150);

impl Reloader {
    fn start(runtime: Arc<WasmRuntime>, dirs: &[PathBuf]) -> anyhow::Result<Self> {
        let (tx, rx) = channel::<ReloadEvent>();
        let (paths_tx, paths_rx) = channel::<Vec<PathBuf>>();
        let mut debouncer = new_debouncer(DEBOUNCE, move |res: DebounceEventResult| {
            if let Ok(events) = res {
                let _ = paths_tx.send(events.into_iter().map(|e| e.path).collect());
            }
        })?;
        for dir in dirs {
            debouncer.watcher().watch(dir, RecursiveMode::NonRecursive)?;
        }
        let mut names: HashMap<PathBuf, (String, String)> = HashMap::new();
        for dir in dirs {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if is_wasm(&path)
                    && let Ok(bytes) = read_module(&path)
                    && let Ok(p) = runtime.load(&bytes, PluginSource::File(path.clone()))
                {
                    names.insert(path, (p.info.name.clone(), p.hash.clone()));
                }
            }
        }
        std::thread::Builder::new().name("trawl-plugin-reload".into()).spawn(move || {
            compile_loop(&runtime, &paths_rx, &tx, names);
        })?;
        Ok(Reloader { events: rx, _debouncer: debouncer })
    }

    /// Changes compiled since the last call.
    pub fn poll(&self) -> Vec<ReloadEvent> {
        self.events.try_iter().collect()
    }
}

/// A Kubernetes ConfigMap volume changes by swapping its `..data` symlink
/// (the files are links through it), so no event names a changed file:
/// a change to a `..`-entry stands for every `*.wasm` of its directory, as
/// it is now and as it was (a key may be gone). Unchanged files cost a
/// hash each.
fn with_configmap_swaps(paths: Vec<PathBuf>, known: &HashMap<PathBuf, (String, String)>) -> Vec<PathBuf> {
    let swapped: Vec<PathBuf> = paths
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("..")))
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    let mut out = paths;
    for dir in swapped {
        let now = std::fs::read_dir(&dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| is_wasm(p));
        out.extend(now.collect::<Vec<_>>());
        out.extend(known.keys().filter(|k| k.parent() == Some(dir.as_path())).cloned());
    }
    out
}

fn compile_loop(
    runtime: &Arc<WasmRuntime>,
    paths_rx: &Receiver<Vec<PathBuf>>,
    tx: &Sender<ReloadEvent>,
    mut names: HashMap<PathBuf, (String, String)>,
) {
    while let Ok(paths) = paths_rx.recv() {
        let mut paths = with_configmap_swaps(paths, &names);
        paths.sort();
        paths.dedup();
        for path in paths.into_iter().filter(|p| is_wasm(p)) {
            if !path.exists() {
                if let Some((name, _)) = names.remove(&path) {
                    let _ = tx.send(ReloadEvent::Removed { path, name });
                }
                continue;
            }
            let bytes = match read_module(&path) {
                Ok(b) => b,
                Err(error) => {
                    if tx.send(ReloadEvent::Rejected(Rejected { path, error })).is_err() {
                        return;
                    }
                    continue;
                }
            };
            let hash = super::wasm::content_hash(&bytes);
            if names.get(&path).is_some_and(|(_, h)| *h == hash) {
                continue;
            }
            let started = std::time::Instant::now();
            let event = match runtime.load(&bytes, PluginSource::File(path.clone())) {
                Ok(p) => {
                    tracing::info!(path = %path.display(), plugin = %p.info.name, ms = started.elapsed().as_millis() as u64, "plugin compiled for reload");
                    names.insert(path.clone(), (p.info.name.clone(), hash));
                    ReloadEvent::Loaded { path, plugin: Arc::new(p) }
                }
                Err(error) => ReloadEvent::Rejected(Rejected { path, error }),
            };
            if tx.send(event).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Lays out `dir` as the kubelet writes a ConfigMap volume: the data in
    /// a timestamped directory, `..data` linking to it, each key a link
    /// through `..data`; a new version is swapped in by renaming a fresh
    /// `..data_tmp` link over `..data`.
    fn configmap_version(dir: &Path, version: &str, module: &[u8]) {
        let data = dir.join(format!("..{version}"));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("proto.wasm"), module).unwrap();
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
        if !dir.join("proto.wasm").exists() {
            std::os::unix::fs::symlink("..data/proto.wasm", dir.join("proto.wasm")).unwrap();
        }
    }

    /// `trawl_sdk::keys` repeats the first-party plugins' field names (the
    /// SDK cannot depend on the plugins): every name an embedded plugin
    /// declares is one the host's decode borrows rather than allocates.
    #[test]
    fn every_embedded_plugins_field_is_a_kept_name() {
        let runtime = WasmRuntime::new(super::super::wasm::SandboxLimits::default()).unwrap();
        let set = PluginSet::embedded(runtime).unwrap();
        assert!(set.plugins().len() >= 5);
        for plugin in set.plugins() {
            for field in plugin.fields.iter().flatten() {
                assert!(
                    trawl_sdk::keys::intern(field).is_some(),
                    "{}: {field} is not in trawl_sdk::keys",
                    plugin.info.name
                );
            }
        }
    }

    #[test]
    fn a_configmap_update_is_reloaded_though_no_event_names_the_file() {
        let dir = std::env::temp_dir().join(format!("trawl-configmap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let module = |name: &str| embedded::EMBEDDED.iter().find(|(n, _)| *n == name).unwrap().1;
        configmap_version(&dir, "2026_12_07_a", module("dns"));
        let runtime = WasmRuntime::new(super::super::wasm::SandboxLimits::default()).unwrap();
        let mut set = PluginSet::empty(runtime);
        set.add_dir(&dir).unwrap();
        assert_eq!(set.plugins().iter().map(|p| p.info.name.as_str()).collect::<Vec<_>>(), ["dns"]);
        let reloader = set.watch().unwrap();
        configmap_version(&dir, "2026_12_07_b", module("redis"));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let loaded = loop {
            let names: Vec<String> = reloader
                .poll()
                .into_iter()
                .filter_map(|e| match e {
                    ReloadEvent::Loaded { plugin, .. } => Some(plugin.info.name.clone()),
                    _ => None,
                })
                .collect();
            if !names.is_empty() || std::time::Instant::now() > deadline {
                break names;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(loaded, ["redis"], "the swapped-in version is loaded");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

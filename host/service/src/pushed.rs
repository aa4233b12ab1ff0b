//! Plugins pushed to a hub (`PUT /api/plugins/NAME`): validated before
//! anything changes (size, signature, compile and init in the sandbox,
//! ABI), kept on disk when the hub has a store (so they survive its
//! restart), and handed to every worker, now and when it connects.

use super::GraphState;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use trawl_core::l7map::LegendEntry;
use trawl_runtime::registry::{PluginStatus, legend_entry};
use trawl_runtime::signature::{PublicKey, SignatureError};
use trawl_runtime::wasm::{MAX_MODULE_BYTES, WasmRuntime, content_hash};
use trawl_runtime::{LoadError, PluginSource};

/// The default `--plugin-max-bytes`: several times a first-party plugin.
pub const DEFAULT_MAX_BYTES: usize = 8 << 20;

/// The most a push may carry whatever the flag says: the module must fit
/// one frame of the worker protocol (16 MiB) with room to spare.
pub const MAX_PUSH_BYTES: usize = 15 << 20;

/// Pushed plugins a hub keeps at most (each goes to every worker).
pub const MAX_PUSHED: usize = 64;

/// How a hub takes plugins.
#[derive(Clone, Debug)]
pub struct PushConfig {
    /// Where pushed modules are kept (`--plugin-store`); `None`: memory
    /// only, gone when the hub restarts.
    pub store: Option<PathBuf>,
    /// When set, every pushed module needs a valid Ed25519 signature.
    pub key: Option<PublicKey>,
    pub max_bytes: usize,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig { store: None, key: None, max_bytes: DEFAULT_MAX_BYTES }
    }
}

/// Why a push (or a delete) was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("the module is {size} bytes, over this hub's {max}-byte limit (--plugin-max-bytes)")]
    TooLarge { size: usize, max: usize },
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("the module calls itself {module:?}, not {url:?}: PUT it to /api/plugins/{module}")]
    NameMismatch { url: String, module: String },
    #[error("bad plugin name {0:?}: 1–64 letters, digits, '-', '_' or '.', not starting with '.'")]
    BadName(String),
    #[error("{0:?} is not a plugin pushed to this hub (embedded plugins stay)")]
    NotPushed(String),
    #[error("this hub keeps at most {MAX_PUSHED} pushed plugins: DELETE one first")]
    TooMany,
    #[error("this process takes no pushed plugins: only `trawl hub` does (here, use --plugins DIR --watch)")]
    NotAHub,
    #[error("cannot keep the module: {0}")]
    Store(String),
}

impl PushError {
    /// The HTTP status that answers it.
    pub fn status(&self) -> u16 {
        match self {
            PushError::TooLarge { .. } => 413,
            PushError::TooMany => 409,
            PushError::Signature(SignatureError::Missing | SignatureError::Mismatch) => 403,
            PushError::NotPushed(_) | PushError::NotAHub => 404,
            PushError::Store(_) => 500,
            _ => 400,
        }
    }
}

/// One pushed plugin.
#[derive(Clone, Debug)]
pub struct Pushed {
    pub sha256: String,
    pub module: Arc<Vec<u8>>,
    pub signature: Option<Vec<u8>>,
    pub status: PluginStatus,
    pub legend: LegendEntry,
    pub abi: u32,
    /// Unix seconds.
    pub pushed_at: u64,
}

impl Pushed {
    /// What `GET /api/plugins` adds under `pushed`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "sha256": self.sha256,
            "bytes": self.module.len(),
            "abi": self.abi,
            "signed": self.signature.is_some(),
            "pushed_at": self.pushed_at,
        })
    }
}

/// A hub's pushed plugins, and what they replaced.
#[derive(Debug)]
pub struct HubPlugins {
    config: PushConfig,
    runtime: Arc<WasmRuntime>,
    plugins: BTreeMap<String, Pushed>,
    /// Bumped on every change; workers' connections compare it.
    version: u64,
}

/// What a connection sends a worker: the list's version, and each pushed
/// plugin's name, hash and module.
pub type PushedSnapshot = (u64, Vec<(String, String, Arc<Vec<u8>>)>);

impl HubPlugins {
    pub fn new(config: PushConfig, runtime: Arc<WasmRuntime>) -> Self {
        HubPlugins { config, runtime, plugins: BTreeMap::new(), version: 1 }
    }

    pub fn config(&self) -> &PushConfig {
        &self.config
    }

    pub fn runtime(&self) -> &Arc<WasmRuntime> {
        &self.runtime
    }

    pub fn get(&self, name: &str) -> Option<&Pushed> {
        self.plugins.get(name)
    }

    pub fn snapshot(&self) -> PushedSnapshot {
        let list = self.plugins.iter().map(|(n, p)| (n.clone(), p.sha256.clone(), Arc::clone(&p.module))).collect();
        (self.version, list)
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Validates a module for `name`, touching nothing: run it off the
    /// lock (compiling takes a while).
    pub fn validate(
        config: &PushConfig,
        runtime: &Arc<WasmRuntime>,
        name: &str,
        module: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<Pushed, PushError> {
        // The name becomes a file name in the store: nothing that could
        // climb out of it.
        if !valid_name(name) {
            return Err(PushError::BadName(name.to_string()));
        }
        let max = config.max_bytes.min(MAX_MODULE_BYTES).min(MAX_PUSH_BYTES);
        if module.len() > max {
            return Err(PushError::TooLarge { size: module.len(), max });
        }
        if let Some(key) = &config.key {
            key.verify(module, signature.ok_or(SignatureError::Missing)?)?;
        }
        let sha256 = content_hash(module);
        let plugin = runtime.load(module, PluginSource::Pushed(sha256.clone()))?;
        if plugin.info.name != name {
            return Err(PushError::NameMismatch { url: name.to_string(), module: plugin.info.name.clone() });
        }
        let (status, legend) = (PluginStatus::loaded(&plugin), legend_entry(&plugin.info));
        let pushed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Ok(Pushed {
            sha256,
            module: Arc::new(module.to_vec()),
            signature: signature.map(<[u8]>::to_vec),
            status,
            legend,
            abi: plugin.abi,
            pushed_at,
        })
    }

    /// Writes a validated plugin's files next to their places in the store,
    /// synced, without touching the store: the slow part of keeping it,
    /// done off the service's lock. [`GraphState::accept_pushed`] renames
    /// them into place.
    pub fn stage(config: &PushConfig, pushed: &Pushed) -> Result<Staged, PushError> {
        let Some(store) = &config.store else { return Ok(Staged::default()) };
        let name = &pushed.status.name;
        let tag = &pushed.sha256[..16];
        let mut files = vec![(store.join(format!("{name}.wasm.{tag}.tmp")), store.join(format!("{name}.wasm")))];
        write_synced(&files[0].0, &pushed.module)?;
        if let Some(sig) = &pushed.signature {
            files.push((store.join(format!("{name}.wasm.sig.{tag}.tmp")), store.join(format!("{name}.wasm.sig"))));
            write_synced(&files[1].0, sig)?;
        }
        Ok(Staged { files, unsigned: store.join(format!("{name}.wasm.sig")) })
    }

    /// Keeps a validated plugin: its staged files into place, then into
    /// the list the workers follow.
    fn commit(&mut self, pushed: Pushed, staged: Staged) -> Result<(), PushError> {
        if !self.plugins.contains_key(&pushed.status.name) && self.plugins.len() >= MAX_PUSHED {
            return Err(PushError::TooMany);
        }
        let store_error = |e: std::io::Error| PushError::Store(e.to_string());
        for (from, to) in &staged.files {
            std::fs::rename(from, to).map_err(store_error)?;
        }
        if self.config.store.is_some() && pushed.signature.is_none() {
            drop(std::fs::remove_file(&staged.unsigned));
        }
        self.plugins.insert(pushed.status.name.clone(), pushed);
        self.version += 1;
        Ok(())
    }

    fn delete(&mut self, name: &str) -> Result<Pushed, PushError> {
        if !valid_name(name) || !self.plugins.contains_key(name) {
            return Err(PushError::NotPushed(name.to_string()));
        }
        if let Some(store) = &self.config.store {
            for file in [format!("{name}.wasm"), format!("{name}.wasm.sig")] {
                match std::fs::remove_file(store.join(&file)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(PushError::Store(e.to_string())),
                    _ => {}
                }
            }
        }
        self.version += 1;
        self.plugins.remove(name).ok_or_else(|| PushError::NotPushed(name.to_string()))
    }

    /// The modules a store holds (a restarted hub), each validated again.
    /// Returns those that no longer pass, with the reason.
    fn load_store(&mut self) -> Vec<(PathBuf, PushError)> {
        let Some(store) = self.config.store.clone() else { return Vec::new() };
        let mut refused = Vec::new();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&store)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        paths.sort();
        for path in paths {
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let loaded = std::fs::read(&path).map_err(|e| PushError::Store(e.to_string())).and_then(|module| {
                let sig = std::fs::read(path.with_extension("wasm.sig")).ok();
                Self::validate(&self.config, &self.runtime, &name, &module, sig.as_deref())
            });
            match loaded {
                Ok(p) => {
                    self.plugins.insert(name, p);
                }
                Err(e) => refused.push((path, e)),
            }
        }
        self.version += 1;
        refused
    }
}

/// A plugin name that is safe as a file name.
pub fn valid_name(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    (1..=64).contains(&name.len()) && !name.starts_with('.') && name.chars().all(ok)
}

/// Files of a push written beside the store, to be renamed into it.
#[derive(Debug, Default)]
pub struct Staged {
    /// (written, its place).
    files: Vec<(PathBuf, PathBuf)>,
    /// The signature file an unsigned push replaces.
    unsigned: PathBuf,
}

impl Drop for Staged {
    /// Whatever was not renamed into place (a push refused at the last
    /// step) goes.
    fn drop(&mut self) {
        for (from, _) in &self.files {
            drop(std::fs::remove_file(from));
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), PushError> {
    use std::io::Write;
    let store_error = |e: std::io::Error| PushError::Store(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(store_error)?;
    }
    let mut file = std::fs::File::create(path).map_err(store_error)?;
    file.write_all(bytes).map_err(store_error)?;
    file.sync_all().map_err(store_error)
}

impl GraphState {
    /// Takes pushed plugins (a hub), starting with those in its store.
    pub fn set_pushed_plugins(&mut self, mut hub: HubPlugins) {
        for (path, error) in hub.load_store() {
            tracing::warn!(path = %path.display(), %error, "a stored plugin is refused");
        }
        let kept: Vec<Pushed> = hub.plugins.values().cloned().collect();
        self.pushed = Some(hub);
        for p in kept {
            self.show_pushed(&p);
        }
    }

    pub fn pushed_plugins(&self) -> Option<&HubPlugins> {
        self.pushed.as_ref()
    }

    /// Shows a pushed plugin in the legend and the plugin list at once,
    /// before any worker has loaded it.
    fn show_pushed(&mut self, p: &Pushed) {
        self.upsert_legend(p.legend.clone());
        let name = &p.status.name;
        if let Some(base) = self.plugins.iter().find(|s| &s.name == name && !s.source.starts_with("hub:")) {
            self.replaced.entry(name.clone()).or_insert_with(|| base.clone());
        }
        self.plugins.retain(|s| &s.name != name);
        self.plugins.push(p.status.clone());
    }

    /// Keeps a plugin that [`HubPlugins::validate`] passed and
    /// [`HubPlugins::stage`] wrote.
    pub fn accept_pushed(&mut self, pushed: Pushed, staged: Staged) -> Result<(), PushError> {
        let hub = self.pushed.as_mut().ok_or(PushError::NotAHub)?;
        let shown = pushed.clone();
        hub.commit(pushed, staged)?;
        self.show_pushed(&shown);
        Ok(())
    }

    /// Takes a pushed plugin back; an embedded one of that name shows again.
    pub fn delete_pushed(&mut self, name: &str) -> Result<Pushed, PushError> {
        let hub = self.pushed.as_mut().ok_or(PushError::NotAHub)?;
        let gone = hub.delete(name)?;
        self.plugins.retain(|s| s.name != name);
        if let Some(base) = self.replaced.remove(name) {
            self.plugins.push(base);
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_cannot_leave_the_store() {
        for good in ["line-proto", "my-proto_2", "v1.2"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "..", "../x", "a/b", ".hidden", "a\\b", "x\0", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}

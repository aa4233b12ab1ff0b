//! A worker's side of plugins pushed by its hub: each module's hash is
//! checked, the module compiled and loaded in the worker's own sandbox
//! (never trusting the hub's word that it is sound), and handed to the
//! pipeline, which installs it for new connections. What fails is kept as
//! a rejected plugin in the status the hub shows.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use trawl_pipeline::pipeline::PluginChange;
use trawl_runtime::PluginSource;
use trawl_runtime::registry::PluginStatus;
use trawl_runtime::wasm::{SandboxLimits, WasmRuntime, content_hash};

/// Pushed plugins: what is installed (name → sha256), what the pipeline
/// has still to take, and what was refused.
#[derive(Debug, Default)]
pub struct WorkerPushed {
    runtime: OnceLock<Option<Arc<WasmRuntime>>>,
    installed: Mutex<BTreeMap<String, String>>,
    changes: Mutex<Vec<PluginChange>>,
    rejected: Mutex<BTreeMap<String, PluginStatus>>,
}

/// Changes waiting for the pipeline are one per plugin name (a newer one
/// replaces an older); beyond this many names the hub is flooding us, and
/// the oldest go, forgotten as installed so that a later push brings them.
const MAX_WAITING: usize = 256;

/// Refused pushes kept for the status, at most.
const MAX_REJECTED_SHOWN: usize = 64;

impl WorkerPushed {
    fn runtime(&self) -> Option<&Arc<WasmRuntime>> {
        self.runtime
            .get_or_init(|| {
                WasmRuntime::new(SandboxLimits::default())
                    .map_err(|e| tracing::warn!(error = %e, "cannot start a sandbox for pushed plugins"))
                    .ok()
            })
            .as_ref()
    }

    fn push(&self, change: PluginChange) {
        let name = |c: &PluginChange| match c {
            PluginChange::Install(p) => p.info.name.clone(),
            PluginChange::Remove(n) => n.clone(),
        };
        let mut changes = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        let this = name(&change);
        changes.retain(|c| name(c) != this);
        if changes.len() >= MAX_WAITING {
            let dropped = name(&changes.remove(0));
            self.installed.lock().unwrap_or_else(PoisonError::into_inner).remove(&dropped);
        }
        changes.push(change);
    }

    /// A module from the hub: checked, loaded, queued for the pipeline.
    pub fn install(&self, name: &str, sha256: &str, module: &[u8]) {
        let same = self.installed.lock().unwrap_or_else(PoisonError::into_inner).get(name).is_some_and(|h| h == sha256);
        if same {
            return;
        }
        let announced_ok = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        let result = if !announced_ok {
            Err("the hub announced a malformed sha256".to_string())
        } else if content_hash(module) != sha256 {
            Err(format!("the module's sha256 is not the {sha256} the hub announced"))
        } else {
            match self.runtime() {
                None => Err("no sandbox to load it in".to_string()),
                Some(rt) => match rt.load(module, PluginSource::Pushed(sha256.to_string())) {
                    Ok(p) if p.info.name != name => Err(format!("the module calls itself {:?}", p.info.name)),
                    Ok(p) => Ok(p),
                    Err(e) => Err(e.to_string()),
                },
            }
        };
        let mut rejected = self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(plugin) => {
                tracing::info!(plugin = name, version = %plugin.info.version, sha256, "plugin pushed by the hub loaded");
                rejected.remove(name);
                self.installed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(name.to_string(), sha256.to_string());
                self.push(PluginChange::Install(Arc::new(plugin)));
            }
            Err(reason) => {
                tracing::warn!(plugin = name, sha256, %reason, "plugin pushed by the hub refused");
                let hash = if announced_ok { sha256 } else { "" };
                let name: String = name.chars().take(64).collect();
                // A hub that pushes endless broken modules gets the first few shown.
                if rejected.len() < MAX_REJECTED_SHOWN || rejected.contains_key(&name) {
                    let status = refused(&name, hash, reason);
                    rejected.insert(name, status);
                }
            }
        }
    }

    /// The hub's list of pushed plugins: any installed one not on it was
    /// deleted there.
    pub fn keep_only(&self, plugins: &[(String, String)]) {
        let mut installed = self.installed.lock().unwrap_or_else(PoisonError::into_inner);
        let gone: Vec<String> = installed.keys().filter(|n| !plugins.iter().any(|(p, _)| p == *n)).cloned().collect();
        for name in gone {
            installed.remove(&name);
            tracing::info!(plugin = %name, "plugin deleted on the hub");
            self.push(PluginChange::Remove(name));
        }
        self.rejected.lock().unwrap_or_else(PoisonError::into_inner).retain(|n, _| plugins.iter().any(|(p, _)| p == n));
    }

    /// What the pipeline has to apply, in order.
    pub fn take_changes(&self) -> Vec<PluginChange> {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Pushes this worker refused, for its status.
    pub fn rejected(&self) -> Vec<PluginStatus> {
        self.rejected.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }
}

fn refused(name: &str, sha256: &str, reason: String) -> PluginStatus {
    let source = PluginSource::Pushed(sha256.to_string()).to_string();
    PluginStatus::rejected(name.to_string(), sha256.to_string(), source, reason)
}

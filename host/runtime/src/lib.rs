//! The plugin runtime: sandboxed wasm dissectors (and the same dissectors
//! linked natively, for comparison), dispatch of connections to them, and
//! hot reload.
//!
//! The host holds no protocol knowledge: everything protocol-specific comes
//! from a plugin's [`PluginInfo`] and its records.

pub mod dispatch;
pub mod embedded;
mod module_cache;
pub mod native;
pub mod records;
pub mod registry;
pub mod signature;
pub mod wasm;

use std::sync::Arc;
use trawl_sdk::abi::{ConnMeta, DataResult, Dir, L4, PluginInfo, Probe};

pub use dispatch::{DispatchStats, Dispatcher, HostRecord, Targeting};
pub use registry::{PluginSet, PluginState, PluginStatus};

/// A plugin misbehaved during a call. Never a panic: a typed error that the
/// dispatcher counts and turns into a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginFault {
    #[error("trapped: {0}")]
    Trap(String),
    #[error("ran past its deadline of {0} ms")]
    Timeout(u64),
    #[error("returned malformed output: {0}")]
    BadOutput(String),
    #[error("returned {0} bytes of output, over the cap")]
    OutputTooLarge(u64),
}

/// Why a plugin could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("not a valid wasm module: {0}")]
    Compile(String),
    #[error("{0}")]
    CompileDeadline(String),
    #[error("missing export `{0}`")]
    MissingExport(String),
    #[error("speaks plugin ABI v{found}; this host speaks v{oldest} and v{newest}")]
    AbiVersion { found: u32, oldest: u32, newest: u32 },
    #[error("cannot instantiate: {0}")]
    Instantiate(String),
    #[error("init failed: {0}")]
    Init(String),
}

/// One running instance of a plugin: the calls of the plugin ABI (v2, or
/// v1 for older plugins; see `sdk/ABI.md`).
pub trait PluginInstance: Send {
    /// The host's settings (redaction), once, before any traffic. A plugin
    /// without the optional export ignores them.
    fn configure(&mut self, _config: &trawl_sdk::redact::PluginConfig) -> Result<(), PluginFault> {
        Ok(())
    }
    fn probe(&mut self, l4: L4, dir: Dir, bytes: &[u8]) -> Result<Probe, PluginFault>;
    fn open(&mut self, conn: u64, meta: &ConnMeta) -> Result<DataResult, PluginFault>;
    #[allow(clippy::too_many_arguments)]
    fn data(
        &mut self,
        conn: u64,
        dir: Dir,
        flags: u32,
        ts: u64,
        bytes: &[u8],
        gap: u64,
    ) -> Result<DataResult, PluginFault>;
    fn datagram(&mut self, conn: u64, dir: Dir, ts: u64, bytes: &[u8]) -> Result<DataResult, PluginFault>;
    fn close(&mut self, conn: u64, ts: u64) -> Result<DataResult, PluginFault>;
    fn tick(&mut self, ts: u64) -> Result<DataResult, PluginFault>;
    /// Bytes of linear memory the instance holds (it never shrinks, so
    /// this is also its peak); `None` for native plugins.
    fn memory_bytes(&self) -> Option<u64> {
        None
    }
}

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// Compiled into the binary.
    Embedded,
    /// A `.wasm` file in a plugin directory.
    File(std::path::PathBuf),
    /// The dissector crate linked natively (benchmarks, comparisons).
    Native,
    /// Sent by the hub (`PUT /api/plugins/NAME`), with its sha256.
    Pushed(String),
}

impl std::fmt::Display for PluginSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginSource::Embedded => f.write_str("embedded"),
            PluginSource::File(p) => write!(f, "{}", p.display()),
            PluginSource::Native => f.write_str("native"),
            PluginSource::Pushed(hash) => write!(f, "hub:{}", hash.get(..12).unwrap_or(hash)),
        }
    }
}

/// Makes instances of one loaded plugin.
pub trait InstanceFactory: Send + Sync {
    fn instantiate(&self) -> Result<Box<dyn PluginInstance>, LoadError>;
}

/// A plugin ready to instantiate: its info, identity and factory.
pub struct LoadedPlugin {
    pub info: PluginInfo,
    /// The plugin ABI version it speaks.
    pub abi: u32,
    /// The fields its records carry, if it declares them (`trawl_fields`).
    pub fields: Option<Vec<String>>,
    /// sha256 of the module bytes (or a fixed tag for native plugins).
    pub hash: String,
    pub source: PluginSource,
    pub factory: Box<dyn InstanceFactory>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.info.name)
            .field("version", &self.info.version)
            .field("hash", &self.hash)
            .field("source", &self.source)
            .finish()
    }
}

pub type SharedPlugin = Arc<LoadedPlugin>;

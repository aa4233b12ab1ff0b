//! The wasmtime sandbox: core wasm modules speaking ABI v2, or v1 (the
//! version before, still accepted: see `sdk/ABI.md`).
//!
//! Every call runs under an epoch deadline, every store under a memory cap,
//! and every output is bounds-checked, size-capped and decoded as postcard
//! before the host believes it.

use super::{InstanceFactory, LoadError, LoadedPlugin, PluginFault, PluginInstance, PluginSource};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use trawl_sdk::abi::{self, ConnMeta, DataResult, Dir, L4, PluginInfo, Probe};
use wasmtime::{
    Caller, Config, Engine, Instance, Linker, Memory, Module, Store, StoreLimits, StoreLimitsBuilder, Trap, TypedFunc,
};

/// Limits every plugin runs under.
#[derive(Clone, Copy, Debug)]
pub struct SandboxLimits {
    /// Linear memory per instance.
    pub memory_bytes: usize,
    /// Wall-clock budget of one call.
    pub call_deadline: Duration,
    /// Largest output one call may return.
    pub max_output: u32,
    /// Longest a new module may take to compile before it is refused.
    pub compile_deadline: Duration,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            memory_bytes: 64 << 20,
            call_deadline: Duration::from_millis(200),
            max_output: 16 << 20,
            compile_deadline: Duration::from_secs(60),
        }
    }
}

/// Most elements of a plugin's tables (function tables: a Rust plugin has
/// a few hundred); unset, wasmtime lets a table grow without bound.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Most field names a plugin may declare, and their longest.
const MAX_FIELDS: usize = 1024;
const MAX_FIELD_NAME: usize = 64;

/// Load-time calls may take this many times the per-call deadline.
const LOAD_DEADLINE_FACTOR: u64 = 25;

/// How often the epoch advances; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The shared wasmtime engine, its epoch ticker and a module cache keyed by
/// content hash (a reload of unchanged bytes costs nothing).
pub struct WasmRuntime {
    engine: Engine,
    limits: SandboxLimits,
    cache: Mutex<HashMap<String, Module>>,
    stop: Arc<AtomicBool>,
    /// Compiles that overran the deadline and still run.
    overrunning: Arc<AtomicUsize>,
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime").field("limits", &self.limits).finish()
    }
}

impl Drop for WasmRuntime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// sha256 of module bytes, hex.
pub fn content_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The largest module accepted. Compile time grows with the code (a
/// first-party plugin is well under 1 MiB), and wasmparser's own limits
/// (function count, function body size, locals) bound the rest. Compiling
/// happens at start and on the reload thread, never on the packet path.
pub const MAX_MODULE_BYTES: usize = 16 << 20;

impl WasmRuntime {
    pub fn new(limits: SandboxLimits) -> anyhow::Result<Arc<Self>> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // For profiling plugins: `TRAWL_WASM_PROFILE=perfmap` names the
        // compiled guest functions in /tmp/perf-PID.map for `perf report`.
        if std::env::var("TRAWL_WASM_PROFILE").is_ok_and(|v| v == "perfmap") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("cannot start wasmtime: {e:#}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ticker, stop_flag) = (engine.clone(), Arc::clone(&stop));
        std::thread::Builder::new().name("trawl-epoch".into()).spawn(move || {
            while !stop_flag.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                ticker.increment_epoch();
            }
        })?;
        Ok(Arc::new(WasmRuntime {
            engine,
            limits,
            cache: Mutex::new(HashMap::new()),
            stop,
            overrunning: Arc::new(AtomicUsize::new(0)),
        }))
    }

    pub fn limits(&self) -> SandboxLimits {
        self.limits
    }

    /// Compiles (or finds in the cache), instantiates once to check the ABI
    /// version and read the plugin's info.
    pub fn load(self: &Arc<Self>, bytes: &[u8], source: PluginSource) -> Result<LoadedPlugin, LoadError> {
        if bytes.len() > MAX_MODULE_BYTES {
            return Err(LoadError::Compile(format!(
                "the module is {} bytes, over the {MAX_MODULE_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let hash = content_hash(bytes);
        let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&hash).cloned();
        let module = match cached {
            Some(m) => m,
            None => {
                let m = match self.load_disk_cache(&hash) {
                    Some(m) => m,
                    None => {
                        let m = self.compile(bytes)?;
                        self.store_disk_cache(&hash, &m);
                        m
                    }
                };
                self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(hash.clone(), m.clone());
                m
            }
        };
        for export in ["memory", "trawl_abi_version", "trawl_alloc", "trawl_init", "trawl_probe", "trawl_data"] {
            if module.get_export(export).is_none() {
                return Err(LoadError::MissingExport(export.into()));
            }
        }
        let mut factory = WasmFactory { runtime: Arc::clone(self), module, abi: abi::ABI_VERSION };
        let mut probe = factory.instantiate_raw()?;
        let version = probe.call_abi_version().map_err(|e| LoadError::Init(e.to_string()))?;
        if !(abi::ABI_OLDEST..=abi::ABI_VERSION).contains(&version) {
            return Err(LoadError::AbiVersion { found: version, oldest: abi::ABI_OLDEST, newest: abi::ABI_VERSION });
        }
        factory.abi = version;
        probe.abi = version;
        let mut info = probe.call_init().map_err(|e| LoadError::Init(e.to_string()))?;
        if info.name.is_empty() || info.name.len() > 64 {
            return Err(LoadError::Init(format!("bad plugin name {:?}", info.name)));
        }
        clamp_info(&mut info, &self.limits);
        let fields = probe.call_fields().map_err(|e| LoadError::Init(format!("fields: {e}")))?;
        Ok(LoadedPlugin { info, abi: version, fields, hash, source, factory: Box::new(factory) })
    }
}

/// Compiles that overran the deadline and may still run at once: past
/// these, new modules are refused until one finishes (each does: the
/// compiler is linear in the code, and the code is bounded).
pub const MAX_OVERRUNNING_COMPILES: usize = 2;

/// A compile's result, handed from its thread to whoever waits for it.
#[derive(Default)]
struct CompileSlot {
    result: Option<Result<Module, String>>,
    abandoned: bool,
}

impl WasmRuntime {
    /// Compiles on a thread of its own, waiting at most the compile
    /// deadline: wasmtime cannot stop a compile, so one that overruns is
    /// left to finish in the background, its result dropped, while the
    /// caller (start-up, or the reload thread) goes on.
    fn compile(&self, bytes: &[u8]) -> Result<Module, LoadError> {
        let running = self.overrunning.load(Ordering::Acquire);
        if running >= MAX_OVERRUNNING_COMPILES {
            return Err(LoadError::CompileDeadline(format!(
                "{running} modules that overran the compile deadline are still compiling; try again once they finish"
            )));
        }
        let slot = Arc::new((Mutex::new(CompileSlot::default()), Condvar::new()));
        let (engine, bytes_owned, theirs, overrunning) =
            (self.engine.clone(), bytes.to_vec(), Arc::clone(&slot), Arc::clone(&self.overrunning));
        std::thread::Builder::new()
            .name("trawl-compile".into())
            .spawn(move || {
                let result = Module::new(&engine, &bytes_owned).map_err(|e| format!("{e:#}"));
                let (lock, done) = &*theirs;
                let mut slot = lock.lock().unwrap_or_else(|e| e.into_inner());
                if slot.abandoned {
                    overrunning.fetch_sub(1, Ordering::AcqRel);
                } else {
                    slot.result = Some(result);
                    done.notify_all();
                }
            })
            .map_err(|e| LoadError::Compile(format!("cannot start a compile thread: {e}")))?;
        let (lock, done) = &*slot;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (mut guard, _) = done
            .wait_timeout_while(guard, self.limits.compile_deadline, |s| s.result.is_none())
            .unwrap_or_else(|e| e.into_inner());
        match guard.result.take() {
            Some(result) => result.map_err(LoadError::Compile),
            None => {
                guard.abandoned = true;
                self.overrunning.fetch_add(1, Ordering::AcqRel);
                Err(LoadError::CompileDeadline(format!(
                    "compiling took longer than {} s; the module is refused",
                    self.limits.compile_deadline.as_secs_f64()
                )))
            }
        }
    }

    fn load_disk_cache(&self, hash: &str) -> Option<Module> {
        let bytes = super::module_cache::load(hash)?;
        // SAFETY: these bytes are what `store_disk_cache` wrote with
        // `Module::serialize` for the module whose sha256 names them,
        // checked against a MAC keyed with a secret only this user can
        // read, from a directory only this user can write (see
        // `module_cache`). wasmtime also checks their header (version,
        // target, engine settings) and refuses a mismatch, in which case
        // the module is compiled afresh.
        #[allow(unsafe_code)]
        let module = unsafe { Module::deserialize(&self.engine, &bytes) };
        match module {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::debug!(hash, error = %e, "stale compiled module ignored");
                None
            }
        }
    }

    fn store_disk_cache(&self, hash: &str, module: &Module) {
        if let Ok(bytes) = module.serialize() {
            super::module_cache::store(hash, &bytes);
        }
    }
}

/// Most bytes a plugin may have the host keep for one connection
/// direction, whatever it declares: a quarter of its memory, since the
/// whole window is copied into that memory.
fn max_buffer_for(limits: &SandboxLimits) -> u32 {
    u32::try_from(limits.memory_bytes / 4).unwrap_or(u32::MAX)
}

/// Most bytes a probe may ask to see.
const MAX_PROBE_DEPTH: u32 = 64 * 1024;
/// Most ports a plugin may claim, per transport.
const MAX_PORTS: usize = 64;
/// Longest legend text (abbreviation, long name, colour, version).
const MAX_TEXT: usize = 64;

/// Holds what a plugin declares about itself to the host's limits: a
/// plugin's word is not the host's budget.
pub fn clamp_info(info: &mut PluginInfo, limits: &SandboxLimits) {
    let before = (info.max_buffer, info.probe_depth);
    info.max_buffer = info.max_buffer.min(max_buffer_for(limits));
    info.probe_depth = info.probe_depth.min(MAX_PROBE_DEPTH);
    if before != (info.max_buffer, info.probe_depth) {
        tracing::warn!(
            plugin = %info.name,
            max_buffer = before.0,
            probe_depth = before.1,
            "plugin asked for more than the host allows; held to its limits"
        );
    }
    info.tcp_ports.truncate(MAX_PORTS);
    info.udp_ports.truncate(MAX_PORTS);
    for text in [&mut info.version, &mut info.abbreviation, &mut info.long_name, &mut info.color] {
        if let Some((cut, _)) = text.char_indices().nth(MAX_TEXT) {
            text.truncate(cut);
        }
    }
}

struct WasmFactory {
    runtime: Arc<WasmRuntime>,
    module: Module,
    /// The ABI version the module speaks; its results are decoded so.
    abi: u32,
}

impl InstanceFactory for WasmFactory {
    fn instantiate(&self) -> Result<Box<dyn PluginInstance>, LoadError> {
        Ok(Box::new(self.instantiate_raw()?))
    }
}

struct HostState {
    limits: StoreLimits,
    logs: u64,
}

type Packed = TypedFunc<(), u64>;
/// `trawl_data(conn, dir, flags, ts, ptr, len, gap) -> packed`.
type DataFn = TypedFunc<(u64, u32, u32, u64, u32, u32, u64), u64>;
/// `trawl_datagram(flow, dir, ts, ptr, len) -> packed`.
type DatagramFn = TypedFunc<(u64, u32, u64, u32, u32), u64>;

struct Funcs {
    abi_version: TypedFunc<(), u32>,
    alloc: TypedFunc<u32, u32>,
    dealloc: Option<TypedFunc<(u32, u32), ()>>,
    init: Packed,
    fields: Option<Packed>,
    configure: Option<TypedFunc<(u32, u32), u32>>,
    probe: TypedFunc<(u32, u32, u32, u32), u32>,
    open: TypedFunc<(u64, u32, u32), u64>,
    data: DataFn,
    datagram: Option<DatagramFn>,
    close: Option<TypedFunc<(u64, u64), u64>>,
    tick: Option<TypedFunc<u64, u64>>,
}

/// One instance: a store, its memory and the reused input window.
pub struct WasmInstance {
    abi: u32,
    store: Store<HostState>,
    memory: Memory,
    funcs: Funcs,
    input_ptr: u32,
    input_cap: u32,
    deadline_ticks: u64,
    deadline_ms: u64,
    max_output: u32,
}

fn missing(name: &str) -> LoadError {
    LoadError::MissingExport(name.into())
}

impl WasmFactory {
    fn instantiate_raw(&self) -> Result<WasmInstance, LoadError> {
        let limits = self.runtime.limits;
        let engine = &self.runtime.engine;
        let state = HostState {
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .instances(1)
                .tables(4)
                .table_elements(MAX_TABLE_ELEMENTS)
                .memories(1)
                .build(),
            logs: 0,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        let ticks = (limits.call_deadline.as_millis() as u64 / EPOCH_TICK.as_millis() as u64).max(1);
        store.set_epoch_deadline(ticks);
        let mut linker: Linker<HostState> = Linker::new(engine);
        let inst_err = |e: wasmtime::Error| LoadError::Instantiate(format!("{e:#}"));
        linker
            .func_wrap("trawl", "log", |mut caller: Caller<'_, HostState>, level: u32, ptr: u32, len: u32| {
                caller.data_mut().logs += 1;
                let Some(wasmtime::Extern::Memory(mem)) = caller.get_export("memory") else {
                    return;
                };
                let data = mem.data(&caller);
                let end = (ptr as usize).saturating_add((len as usize).min(4096));
                if let Some(bytes) = data.get(ptr as usize..end) {
                    let msg = String::from_utf8_lossy(bytes);
                    tracing::debug!(level, message = %msg, "plugin log");
                }
            })
            .map_err(inst_err)?;
        linker.func_wrap("trawl", "abi_version", || abi::ABI_VERSION).map_err(inst_err)?;
        let instance: Instance = linker.instantiate(&mut store, &self.module).map_err(inst_err)?;
        let memory = instance.get_memory(&mut store, "memory").ok_or_else(|| missing("memory"))?;
        macro_rules! func {
            ($name:literal) => {
                instance
                    .get_typed_func(&mut store, $name)
                    .map_err(|e| LoadError::MissingExport(format!("{} ({e})", $name)))?
            };
        }
        macro_rules! optional {
            ($name:literal) => {
                instance.get_typed_func(&mut store, $name).ok()
            };
        }
        let funcs = Funcs {
            abi_version: func!("trawl_abi_version"),
            alloc: func!("trawl_alloc"),
            dealloc: optional!("trawl_dealloc"),
            init: func!("trawl_init"),
            fields: optional!("trawl_fields"),
            configure: optional!("trawl_configure"),
            probe: func!("trawl_probe"),
            open: func!("trawl_open"),
            data: func!("trawl_data"),
            datagram: optional!("trawl_datagram"),
            close: optional!("trawl_close"),
            tick: optional!("trawl_tick"),
        };
        Ok(WasmInstance {
            abi: self.abi,
            store,
            memory,
            funcs,
            input_ptr: 0,
            input_cap: 0,
            deadline_ticks: ticks,
            deadline_ms: limits.call_deadline.as_millis() as u64,
            max_output: limits.max_output,
        })
    }
}

impl std::fmt::Debug for WasmInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmInstance").field("input_cap", &self.input_cap).finish()
    }
}

impl WasmInstance {
    fn fault(&self, e: wasmtime::Error) -> PluginFault {
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PluginFault::Timeout(self.deadline_ms),
            Some(trap) => PluginFault::Trap(trap.to_string()),
            None => PluginFault::Trap(format!("{e:#}")),
        }
    }

    fn arm(&mut self) {
        self.store.set_epoch_deadline(self.deadline_ticks);
    }

    /// Load-time calls (version, init) run once per plugin, on a machine
    /// that may be busy compiling; they get a longer budget than traffic
    /// calls, which is still a bound for a plugin that never returns.
    fn arm_for_load(&mut self) {
        self.store.set_epoch_deadline(self.deadline_ticks.saturating_mul(LOAD_DEADLINE_FACTOR));
    }

    fn call_abi_version(&mut self) -> Result<u32, PluginFault> {
        self.arm_for_load();
        let f = self.funcs.abi_version.clone();
        f.call(&mut self.store, ()).map_err(|e| self.fault(e))
    }

    /// The fields the plugin declares, held to [`MAX_FIELDS`] names of
    /// [`MAX_FIELD_NAME`] identifier characters (others are dropped).
    fn call_fields(&mut self) -> Result<Option<Vec<String>>, PluginFault> {
        let Some(f) = self.funcs.fields.clone() else { return Ok(None) };
        self.arm_for_load();
        let packed = f.call(&mut self.store, ()).map_err(|e| self.fault(e))?;
        let names: Option<Vec<String>> = self.decode(packed)?;
        Ok(names.map(|names| {
            let identifier = |n: &String| {
                n.len() <= MAX_FIELD_NAME
                    && n.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            };
            names.into_iter().filter(identifier).take(MAX_FIELDS).collect()
        }))
    }

    fn call_init(&mut self) -> Result<PluginInfo, PluginFault> {
        self.arm_for_load();
        let f = self.funcs.init.clone();
        let packed = f.call(&mut self.store, ()).map_err(|e| self.fault(e))?;
        self.decode(packed)
    }

    /// Copies `bytes` into the instance's input window, growing it as needed.
    fn write_input(&mut self, bytes: &[u8]) -> Result<(u32, u32), PluginFault> {
        let len = u32::try_from(bytes.len()).map_err(|_| PluginFault::BadOutput("input over 4 GiB".into()))?;
        if len == 0 {
            return Ok((0, 0));
        }
        if len > self.input_cap {
            let new_cap = len.max(self.input_cap.saturating_mul(2)).max(64 * 1024);
            if let (Some(dealloc), true) = (self.funcs.dealloc.clone(), self.input_cap > 0) {
                self.arm();
                dealloc.call(&mut self.store, (self.input_ptr, self.input_cap)).map_err(|e| self.fault(e))?;
            }
            self.arm();
            let alloc = self.funcs.alloc.clone();
            let ptr = alloc.call(&mut self.store, new_cap).map_err(|e| self.fault(e))?;
            self.input_ptr = ptr;
            self.input_cap = new_cap;
        }
        self.memory
            .write(&mut self.store, self.input_ptr as usize, bytes)
            .map_err(|_| PluginFault::BadOutput("input window outside linear memory".into()))?;
        Ok((self.input_ptr, len))
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, packed: u64) -> Result<T, PluginFault> {
        postcard::from_bytes(self.output(packed)?).map_err(|e| PluginFault::BadOutput(format!("invalid postcard: {e}")))
    }

    /// The bytes a call returned, bounds- and size-checked.
    fn output(&self, packed: u64) -> Result<&[u8], PluginFault> {
        let (ptr, len) = abi::unpack(packed);
        if len > self.max_output {
            return Err(PluginFault::OutputTooLarge(u64::from(len)));
        }
        let data = self.memory.data(&self.store);
        let end = (ptr as usize)
            .checked_add(len as usize)
            .ok_or_else(|| PluginFault::BadOutput("output range overflows".into()))?;
        data.get(ptr as usize..end).ok_or_else(|| PluginFault::BadOutput("output outside linear memory".into()))
    }

    fn result(&self, packed: u64, given: usize) -> Result<DataResult, PluginFault> {
        abi::decode_result(self.output(packed)?, given, self.abi).map_err(PluginFault::BadOutput)
    }
}

impl PluginInstance for WasmInstance {
    fn memory_bytes(&self) -> Option<u64> {
        Some(self.memory.data_size(&self.store) as u64)
    }

    fn configure(&mut self, config: &trawl_sdk::redact::PluginConfig) -> Result<(), PluginFault> {
        let Some(f) = self.funcs.configure.clone() else {
            return Ok(());
        };
        let bytes = postcard::to_allocvec(config).map_err(|e| PluginFault::BadOutput(e.to_string()))?;
        let (ptr, len) = self.write_input(&bytes)?;
        self.arm();
        match f.call(&mut self.store, (ptr, len)).map_err(|e| self.fault(e))? {
            0 => Ok(()),
            code => Err(PluginFault::BadOutput(format!("configure answered {code}"))),
        }
    }

    fn probe(&mut self, l4: L4, dir: Dir, bytes: &[u8]) -> Result<Probe, PluginFault> {
        let (ptr, len) = self.write_input(bytes)?;
        self.arm();
        let f = self.funcs.probe.clone();
        let code = f.call(&mut self.store, (l4.code(), dir.code(), ptr, len)).map_err(|e| self.fault(e))?;
        Probe::from_code(code).ok_or_else(|| PluginFault::BadOutput(format!("probe answered {code}")))
    }

    fn open(&mut self, conn: u64, meta: &ConnMeta) -> Result<DataResult, PluginFault> {
        let bytes = postcard::to_allocvec(meta).map_err(|e| PluginFault::BadOutput(e.to_string()))?;
        let (ptr, len) = self.write_input(&bytes)?;
        self.arm();
        let f = self.funcs.open.clone();
        let packed = f.call(&mut self.store, (conn, ptr, len)).map_err(|e| self.fault(e))?;
        self.result(packed, 0)
    }

    fn data(
        &mut self,
        conn: u64,
        dir: Dir,
        flags: u32,
        ts: u64,
        bytes: &[u8],
        gap: u64,
    ) -> Result<DataResult, PluginFault> {
        let (ptr, len) = self.write_input(bytes)?;
        self.arm();
        let f = self.funcs.data.clone();
        let packed =
            f.call(&mut self.store, (conn, dir.code(), flags, ts, ptr, len, gap)).map_err(|e| self.fault(e))?;
        self.result(packed, bytes.len())
    }

    fn datagram(&mut self, conn: u64, dir: Dir, ts: u64, bytes: &[u8]) -> Result<DataResult, PluginFault> {
        let Some(f) = self.funcs.datagram.clone() else {
            return Ok(DataResult { status: abi::Status::Desync, ..DataResult::ok(0, Vec::new()) });
        };
        let (ptr, len) = self.write_input(bytes)?;
        self.arm();
        let packed = f.call(&mut self.store, (conn, dir.code(), ts, ptr, len)).map_err(|e| self.fault(e))?;
        self.result(packed, bytes.len())
    }

    fn close(&mut self, conn: u64, ts: u64) -> Result<DataResult, PluginFault> {
        let Some(f) = self.funcs.close.clone() else {
            return Ok(DataResult::ok(0, Vec::new()));
        };
        self.arm();
        let packed = f.call(&mut self.store, (conn, ts)).map_err(|e| self.fault(e))?;
        self.result(packed, 0)
    }

    fn tick(&mut self, ts: u64) -> Result<DataResult, PluginFault> {
        let Some(f) = self.funcs.tick.clone() else {
            return Ok(DataResult::ok(0, Vec::new()));
        };
        self.arm();
        let packed = f.call(&mut self.store, ts).map_err(|e| self.fault(e))?;
        self.result(packed, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module that takes a while to compile: one long function.
    fn slow_module(seed: u32) -> Vec<u8> {
        let body: String =
            (0..4_000).map(|i| format!("(local.set 0 (i32.add (local.get 0) (i32.const {})))", i ^ seed)).collect();
        wat::parse_str(format!("(module (func (param i32) {body}))")).unwrap()
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let until = std::time::Instant::now() + Duration::from_secs(120);
        while !done() {
            assert!(std::time::Instant::now() < until, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A compile past the deadline is refused with a clear error and left
    /// to finish in the background; a few such may run, no more; once they
    /// finish, compiling goes on as before.
    #[test]
    fn a_compile_past_its_deadline_is_refused_and_bounded() {
        let limits = SandboxLimits { compile_deadline: Duration::from_millis(1), ..Default::default() };
        let runtime = WasmRuntime::new(limits).unwrap();
        for seed in 0..MAX_OVERRUNNING_COMPILES as u32 {
            let Err(err) = runtime.compile(&slow_module(seed)) else { panic!("compiled within 1 ms") };
            assert!(err.to_string().contains("compiling took longer than 0.001 s"), "{err}");
        }
        let Err(err) = runtime.compile(&slow_module(99)) else { panic!("compiled within 1 ms") };
        assert!(err.to_string().contains("2 modules that overran the compile deadline are still compiling"), "{err}");
        wait_until("overrunning compiles finish", || runtime.overrunning.load(Ordering::Acquire) == 0);
        let generous = WasmRuntime::new(SandboxLimits::default()).unwrap();
        assert!(generous.compile(&slow_module(7)).is_ok());
        assert!(matches!(generous.compile(b"not wasm"), Err(LoadError::Compile(_))));
    }
}

//! The guest side of ABI v2: per-connection state, the `Progress` →
//! [`DataResult`] translation, and (on wasm) the raw exports.
//!
//! [`Guest`] is also the native entry point: the host's native backend and
//! plugin tests drive a dissector through it without any wasm.

use crate::abi::{self, ConnMeta, DataResult, Dir, L4, PluginInfo, Probe, Status};
use crate::{Ctx, Dissector, Output, Progress};
use std::collections::BTreeMap;

/// A dissector plus the state of every connection it serves.
pub struct Guest<D: Dissector> {
    dissector: D,
    conns: BTreeMap<u64, (ConnMeta, D::Conn)>,
    /// Output of the last wasm call; lives until the next one.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    out: Vec<u8>,
}

impl<D: Dissector> Default for Guest<D> {
    fn default() -> Self {
        Guest { dissector: D::default(), conns: BTreeMap::new(), out: Vec::new() }
    }
}

impl<D: Dissector> std::fmt::Debug for Guest<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guest").field("conns", &self.conns.len()).finish()
    }
}

fn desync(consumed: u32, events: Vec<abi::Event>) -> DataResult {
    DataResult { status: Status::Desync, consumed, needed: 0, skip: 0, events }
}

impl<D: Dissector> Guest<D> {
    pub fn info() -> PluginInfo {
        D::info()
    }

    pub fn probe(l4: L4, dir: Dir, bytes: &[u8]) -> Probe {
        D::probe(l4, dir, bytes)
    }

    /// Connections currently open.
    pub fn open_conns(&self) -> usize {
        self.conns.len()
    }

    /// The host's settings for this plugin: for now, its redaction policy
    /// (see [`crate::redact`]).
    pub fn configure(&mut self, config: crate::redact::PluginConfig) {
        crate::redact::set_policy(config.redact);
    }

    pub fn open(&mut self, conn: u64, meta: ConnMeta) -> DataResult {
        let state = self.dissector.open(&meta);
        self.conns.insert(conn, (meta, state));
        DataResult::ok(0, Vec::new())
    }

    /// Feeds in-order bytes; see [`abi::FLAG_FIN`] and [`abi::FLAG_GAP`].
    pub fn data(&mut self, conn: u64, dir: Dir, flags: u32, ts: u64, bytes: &[u8], gap: u64) -> DataResult {
        let Some((meta, state)) = self.conns.get_mut(&conn) else {
            return desync(0, Vec::new());
        };
        let mut out = Output::default();
        let mut cx = Ctx { meta, dir, ts, out: &mut out };
        if flags & abi::FLAG_GAP != 0 && !self.dissector.gap(state, &mut cx, gap) {
            return desync(0, cx.out.take());
        }
        let len = bytes.len() as u32;
        let mut consumed = 0u32;
        let mut needed = 0u32;
        let mut skip = 0u64;
        // Right after a skip the dissector hears of it even with no bytes.
        let mut skip_ended = flags & abi::FLAG_SKIPPED != 0;
        while consumed < len || std::mem::take(&mut skip_ended) {
            let progress = match self.dissector.data(state, &mut cx, &bytes[consumed as usize..]) {
                Progress::Skip { consumed, skip: 0 } => Progress::Done { consumed },
                p => p,
            };
            match progress {
                Progress::Done { consumed: 0 } => {
                    needed = len - consumed + 1;
                    break;
                }
                Progress::Done { consumed: c } => consumed += c.min(len - consumed),
                Progress::NeedMore { consumed: c, needed: n } => {
                    let c = c.min(len - consumed);
                    consumed += c;
                    needed = n.saturating_sub(c);
                    break;
                }
                Progress::Skip { consumed: c, skip: s } => {
                    consumed += c.min(len - consumed);
                    let here = u64::from(len - consumed);
                    if s > here {
                        // The rest goes by in the host, uncopied.
                        consumed = len;
                        skip = s - here;
                        break;
                    }
                    consumed += s as u32;
                    skip_ended = true;
                }
                Progress::Desync => return desync(consumed, cx.out.take()),
                Progress::Handover { consumed: c } => {
                    return DataResult {
                        status: Status::Handover,
                        consumed: consumed + c.min(len - consumed),
                        needed: 0,
                        skip: 0,
                        events: cx.out.take(),
                    };
                }
            }
        }
        if flags & abi::FLAG_FIN != 0 {
            self.dissector.fin(state, &mut cx, &bytes[consumed as usize..]);
            consumed = len;
            needed = 0;
            skip = 0;
        }
        DataResult { status: Status::Ok, consumed, needed, skip, events: cx.out.take() }
    }

    pub fn datagram(&mut self, flow: u64, dir: Dir, ts: u64, bytes: &[u8]) -> DataResult {
        let Some((meta, state)) = self.conns.get_mut(&flow) else {
            return desync(0, Vec::new());
        };
        let mut out = Output::default();
        let mut cx = Ctx { meta, dir, ts, out: &mut out };
        match self.dissector.datagram(state, &mut cx, bytes) {
            Progress::Desync => desync(0, cx.out.take()),
            _ => DataResult::ok(bytes.len() as u32, cx.out.take()),
        }
    }

    pub fn close(&mut self, conn: u64, ts: u64) -> DataResult {
        let mut out = Output::default();
        if let Some((meta, state)) = self.conns.remove(&conn) {
            self.dissector.close(state, &mut Ctx { meta: &meta, dir: Dir::ToServer, ts, out: &mut out });
        }
        DataResult::ok(0, out.take())
    }

    pub fn tick(&mut self, ts: u64) -> DataResult {
        let mut out = Output::default();
        self.dissector.tick(ts, &mut out);
        DataResult::ok(0, out.take())
    }
}

#[cfg(target_arch = "wasm32")]
mod wasm {
    #![allow(unsafe_code)]
    use super::*;
    use crate::abi::pack;

    /// Input bytes the host wrote at `ptr`.
    fn input<'a>(ptr: u32, len: u32) -> &'a [u8] {
        if len == 0 || ptr == 0 {
            return &[];
        }
        // SAFETY: the host only passes a (ptr, len) inside a buffer it got
        // from `trawl_alloc` with at least `len` bytes, and wrote it before
        // the call; nothing else aliases it during the call.
        unsafe { core::slice::from_raw_parts(ptr as usize as *const u8, len as usize) }
    }

    pub fn alloc(len: u32) -> u32 {
        let mut buf = Vec::<u8>::with_capacity(len.max(1) as usize);
        let ptr = buf.as_mut_ptr();
        core::mem::forget(buf);
        ptr as usize as u32
    }

    pub fn dealloc(ptr: u32, len: u32) {
        if ptr == 0 {
            return;
        }
        // SAFETY: `ptr` came from `alloc(len)`, which leaked a Vec with
        // capacity `len.max(1)`; rebuilding it with that capacity frees it.
        unsafe { drop(Vec::from_raw_parts(ptr as usize as *mut u8, 0, len.max(1) as usize)) }
    }

    pub fn host_log(level: u32, message: &str) {
        #[link(wasm_import_module = "trawl")]
        unsafe extern "C" {
            fn log(level: u32, ptr: u32, len: u32);
        }
        // SAFETY: the host reads `len` bytes at `ptr` from our memory during
        // the call; the string outlives it.
        unsafe { log(level, message.as_ptr() as usize as u32, message.len() as u32) }
    }

    pub fn export_probe<D: Dissector>(l4: u32, dir: u32, ptr: u32, len: u32) -> u32 {
        D::probe(L4::from_code(l4), Dir::from_code(dir), input(ptr, len)).code()
    }

    impl<D: Dissector> Guest<D> {
        fn emit<T: serde::Serialize>(&mut self, value: &T) -> u64 {
            self.out.clear();
            match postcard::to_extend(value, core::mem::take(&mut self.out)) {
                Ok(bytes) => {
                    self.out = bytes;
                    pack(self.out.as_ptr() as usize as u32, self.out.len() as u32)
                }
                Err(_) => 0,
            }
        }

        pub fn export_info(&mut self) -> u64 {
            self.emit(&D::info())
        }

        /// Packed postcard `Option<Vec<String>>`: the declared fields.
        pub fn export_fields(&mut self) -> u64 {
            self.emit(&D::fields())
        }

        /// 0 when the settings were taken, 1 when they could not be read.
        pub fn export_configure(&mut self, ptr: u32, len: u32) -> u32 {
            match postcard::from_bytes::<crate::redact::PluginConfig>(input(ptr, len)) {
                Ok(config) => {
                    self.configure(config);
                    0
                }
                Err(_) => 1,
            }
        }

        pub fn export_open(&mut self, conn: u64, ptr: u32, len: u32) -> u64 {
            let result = match postcard::from_bytes::<ConnMeta>(input(ptr, len)) {
                Ok(meta) => self.open(conn, meta),
                Err(_) => desync(0, Vec::new()),
            };
            self.emit(&result)
        }

        #[allow(clippy::too_many_arguments)]
        pub fn export_data(&mut self, conn: u64, dir: u32, flags: u32, ts: u64, ptr: u32, len: u32, gap: u64) -> u64 {
            let result = self.data(conn, Dir::from_code(dir), flags, ts, input(ptr, len), gap);
            self.emit(&result)
        }

        pub fn export_datagram(&mut self, flow: u64, dir: u32, ts: u64, ptr: u32, len: u32) -> u64 {
            let result = self.datagram(flow, Dir::from_code(dir), ts, input(ptr, len));
            self.emit(&result)
        }

        pub fn export_close(&mut self, conn: u64, ts: u64) -> u64 {
            let result = self.close(conn, ts);
            self.emit(&result)
        }

        pub fn export_tick(&mut self, ts: u64) -> u64 {
            let result = self.tick(ts);
            self.emit(&result)
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub use wasm::{alloc, dealloc, export_probe, host_log};

/// Native builds have no host to log to.
#[cfg(not(target_arch = "wasm32"))]
pub fn host_log(_level: u32, _message: &str) {}

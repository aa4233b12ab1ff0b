//! # trawl-sdk
//!
//! Write a trawl dissector plugin: implement [`Dissector`] for a type, call
//! [`export_dissector!`] once, and build the crate for
//! `wasm32-unknown-unknown`. The same crate also builds natively, so its
//! tests, benches and fuzz targets need no wasm.
//!
//! The host hands a plugin reassembled, in-order TCP bytes (and UDP
//! datagrams) for each connection, keeps whatever the plugin did not
//! consume, and calls again when more bytes arrive. The plugin keeps its
//! per-connection state in [`Dissector::Conn`]; the SDK stores one per
//! connection inside the plugin instance, so one instance serves every
//! connection of a worker thread.
//!
//! ```
//! use trawl_sdk::{Ctx, Dir, Dissector, PluginInfo, Probe, Progress, Record, L4};
//!
//! #[derive(Default)]
//! pub struct Echo;
//!
//! #[derive(Default)]
//! pub struct EchoConn {
//!     next_id: u64,
//! }
//!
//! impl Dissector for Echo {
//!     type Conn = EchoConn;
//!
//!     fn info() -> PluginInfo {
//!         PluginInfo { tcp_ports: vec![7], ..PluginInfo::new("echo") }
//!     }
//!
//!     fn probe(_l4: L4, _dir: Dir, bytes: &[u8]) -> Probe {
//!         if bytes.contains(&b'\n') { Probe::MatchWeak } else { Probe::NeedMore }
//!     }
//!
//!     fn data(&mut self, conn: &mut EchoConn, cx: &mut Ctx<'_>, bytes: &[u8]) -> Progress {
//!         // One record per complete line the client sends.
//!         let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
//!             return Progress::NeedMore { consumed: 0, needed: bytes.len() as u32 + 1 };
//!         };
//!         if cx.dir == Dir::ToServer {
//!             conn.next_id += 1;
//!             let line = String::from_utf8_lossy(&bytes[..end]);
//!             cx.record(Record::request(conn.next_id, "LINE", cx.ts, end as u64 + 1).summary(line).field("echo_len", end));
//!         }
//!         Progress::Done { consumed: end as u32 + 1 }
//!     }
//! }
//!
//! trawl_sdk::export_dissector!(Echo);
//! ```
#![deny(unsafe_code)]

/// The plugin's allocator in the sandbox (feature `allocator`, on by
/// default): Talc, where Rust's default dlmalloc spent a third of the HTTP
/// plugin's time building records, behind a cache of small blocks
/// ([`alloc::Cached`]), where Talc alone spent a tenth.
#[cfg(all(feature = "allocator", target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: alloc::Cached<talc::wasm::WasmDynamicTalc> =
    alloc::Cached::new(talc::wasm::new_wasm_dynamic_allocator());

// Built everywhere so its tests run natively; only the sandbox uses it.
#[cfg_attr(not(all(feature = "allocator", target_family = "wasm", not(target_feature = "atomics"))), allow(dead_code))]
mod alloc;

pub mod abi;
pub mod fields;
#[doc(hidden)]
pub mod glue;
pub mod keys;
pub mod pending;
pub mod redact;
pub mod stream;
pub mod testing;
pub mod value;

pub use abi::{ConnMeta, DataResult, Dir, Event, L4, PluginInfo, Probe, Record, Status, Value};
pub use fields::Fields;
pub use glue::Guest;
pub use pending::Pending;

/// Result of one parse step: the three-way answer every trawl parser gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Parsed something; `consumed` bytes are done with.
    Done { consumed: u32 },
    /// Cannot progress until `needed` bytes (in total, from the start of the
    /// input) are there; `consumed` bytes before them are done with.
    NeedMore { consumed: u32, needed: u32 },
    /// These bytes are not the protocol: detach and re-probe.
    Desync,
    /// The connection switched protocol (an upgrade); stop here.
    Handover { consumed: u32 },
    /// `consumed` bytes are done with, and the `skip` bytes after them (in
    /// this input or still to come) are only to be counted: the host never
    /// copies them in. Once they have passed, `data` is called again, with
    /// [`abi::FLAG_SKIPPED`] and the bytes that follow (perhaps none). A
    /// skip of 0 is [`Progress::Done`].
    Skip { consumed: u32, skip: u64 },
}

impl Progress {
    /// Needs at least one byte more than the `have` it was given (a message
    /// not yet complete, its length unknown).
    pub fn more(have: usize) -> Self {
        Progress::NeedMore { consumed: 0, needed: u32::try_from(have).unwrap_or(u32::MAX).saturating_add(1) }
    }
}

/// Collects the events of one call.
#[derive(Debug, Default)]
pub struct Output {
    pub(crate) events: Vec<Event>,
}

impl Output {
    pub fn record(&mut self, record: Record) {
        self.events.push(Event::Record(record));
    }

    pub fn upgrade(&mut self, protocol: &str) {
        self.events.push(Event::Upgrade { protocol: protocol.to_string() });
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn take(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

/// What a call is about: the connection, the direction and capture time
/// of the bytes, and where records go. One argument in place of many.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The connection (client, server, ports, transport).
    pub meta: &'a ConnMeta,
    /// Which way the bytes go. In `close` it is [`Dir::ToServer`].
    pub dir: Dir,
    /// Capture time of the bytes, in nanoseconds since the epoch.
    pub ts: u64,
    /// Where the call's records go.
    pub out: &'a mut Output,
}

impl Ctx<'_> {
    /// Reports a record.
    pub fn record(&mut self, record: Record) {
        self.out.record(record);
    }

    /// The connection switched to `protocol`.
    pub fn upgrade(&mut self, protocol: &str) {
        self.out.upgrade(protocol);
    }
}

/// A protocol dissector. Only `info`, `probe` and `data` are required.
pub trait Dissector: Default + 'static {
    /// Per-connection (or per-UDP-flow) state.
    type Conn: Default;

    /// Who the plugin is; called once when the host loads it. Start from
    /// [`PluginInfo::new`] and state only what differs.
    fn info() -> PluginInfo;

    /// The names of the fields its records carry (the keys of
    /// [`abi::Record::fields`]), so the display filter knows them before
    /// any record arrives and can name a misspelt one. `None` (the
    /// default): not declared, and the host checks no names.
    fn fields() -> Option<&'static [&'static str]> {
        None
    }

    /// Is this the plugin's protocol? Stateless: `bytes` are the first
    /// bytes the host saw in direction `dir`.
    fn probe(l4: L4, dir: Dir, bytes: &[u8]) -> Probe;

    /// A connection was attached to this plugin.
    fn open(&mut self, _meta: &ConnMeta) -> Self::Conn {
        Self::Conn::default()
    }

    /// In-order bytes of `cx.dir`, starting with what the previous call
    /// left unconsumed. Parse as much as is complete. `bytes` is empty
    /// only right after a [`Progress::Skip`] ended.
    fn data(&mut self, conn: &mut Self::Conn, cx: &mut Ctx<'_>, bytes: &[u8]) -> Progress;

    /// `len` bytes of `cx.dir` were lost. Return `false` to give up the
    /// connection. The default resyncs nothing and gives up.
    fn gap(&mut self, _conn: &mut Self::Conn, _cx: &mut Ctx<'_>, _len: u64) -> bool {
        false
    }

    /// The sender of `cx.dir` finished; `bytes` is whatever is still
    /// unconsumed (for example a body delimited by the connection close).
    fn fin(&mut self, _conn: &mut Self::Conn, _cx: &mut Ctx<'_>, _bytes: &[u8]) {}

    /// One UDP datagram of a flow.
    fn datagram(&mut self, _conn: &mut Self::Conn, _cx: &mut Ctx<'_>, _bytes: &[u8]) -> Progress {
        Progress::Desync
    }

    /// The connection ended; report anything still pending.
    fn close(&mut self, _conn: Self::Conn, _cx: &mut Ctx<'_>) {}

    /// Called periodically with the capture time.
    fn tick(&mut self, _ts: u64, _out: &mut Output) {}
}

/// Logs through the host (wasm) or to nowhere (native builds).
pub fn log(level: u32, message: &str) {
    glue::host_log(level, message);
}

/// Generates the wasm exports of ABI v2 for a [`Dissector`] type. Call it
/// once per plugin crate. On non-wasm targets it generates nothing, so the
/// crate can be linked natively next to other plugins.
#[macro_export]
macro_rules! export_dissector {
    ($t:ty) => {
        #[cfg(target_arch = "wasm32")]
        mod __trawl_exports {
            use super::*;
            static GUEST: ::std::sync::Mutex<Option<$crate::Guest<$t>>> = ::std::sync::Mutex::new(None);

            fn with<R>(f: impl FnOnce(&mut $crate::Guest<$t>) -> R) -> R {
                let mut guard = GUEST.lock().unwrap_or_else(|e| e.into_inner());
                f(guard.get_or_insert_with($crate::Guest::<$t>::default))
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn trawl_abi_version() -> u32 {
                $crate::abi::ABI_VERSION
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn trawl_alloc(len: u32) -> u32 {
                $crate::glue::alloc(len)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn trawl_dealloc(ptr: u32, len: u32) {
                $crate::glue::dealloc(ptr, len)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn trawl_init() -> u64 {
                with(|g| g.export_info())
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn trawl_fields() -> u64 {
                with(|g| g.export_fields())
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn trawl_configure(ptr: u32, len: u32) -> u32 {
                with(|g| g.export_configure(ptr, len))
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn trawl_probe(l4: u32, dir: u32, ptr: u32, len: u32) -> u32 {
                $crate::glue::export_probe::<$t>(l4, dir, ptr, len)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn trawl_open(conn: u64, ptr: u32, len: u32) -> u64 {
                with(|g| g.export_open(conn, ptr, len))
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn trawl_data(
                conn: u64,
                dir: u32,
                flags: u32,
                ts: u64,
                ptr: u32,
                len: u32,
                gap: u64,
            ) -> u64 {
                with(|g| g.export_data(conn, dir, flags, ts, ptr, len, gap))
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn trawl_datagram(flow: u64, dir: u32, ts: u64, ptr: u32, len: u32) -> u64 {
                with(|g| g.export_datagram(flow, dir, ts, ptr, len))
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn trawl_close(conn: u64, ts: u64) -> u64 {
                with(|g| g.export_close(conn, ts))
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn trawl_tick(ts: u64) -> u64 {
                with(|g| g.export_tick(ts))
            }
        }
    };
}

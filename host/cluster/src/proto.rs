//! The worker → hub protocol: postcard messages in length-prefixed frames
//! over TCP. A worker opens with `Hello` (protocol version, node, worker
//! id, boot id, shared token); the hub answers `Welcome` or `Refused`.
//!
//! Flow counters travel as cumulative totals per flow, so a resend (after
//! a reconnect, or by a worker that restarted and counted again) never
//! counts twice: the hub adds only what a flow's totals grew by.

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use trawl_core::engine::ConnInfo;
use trawl_core::{Endpoint, L4Proto};
use trawl_runtime::HostRecord;
use trawl_runtime::registry::{PluginState, PluginStatus};
use trawl_sdk::abi::Record;
pub use trawl_service::workers::WorkerCounters;

/// 3: records carry the SDK record and a sequence number; 4: worker
/// status is typed (counters, plugin status); 5: plugin status carries
/// probe, stream and skipped bytes (amplification); 6: worker counters
/// carry losses by cause, and the hub can reset a quarantined plugin; 7:
/// plugin status carries the fields a plugin declares; 8: flow totals carry
/// TCP health; 9: the hub pushes plugins (`InstallPlugin`,
/// `PushedPlugins`) and plugin state says when one was rolled back; 10:
/// the hub asks for packets (`PcapRequest`, answered by `Packets`), new
/// variants appended so the older ones keep their tags; 11: records say
/// whether they were read as TLS plaintext.
pub const PROTOCOL_VERSION: u16 = 11;
/// Frames larger than this are refused (a broken or hostile peer).
pub const MAX_FRAME: usize = 16 << 20;

/// A flow's totals so far, as one worker counted them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowTotals {
    pub tcp: bool,
    pub client: (IpAddr, u16),
    pub server: (IpAddr, u16),
    /// With the endpoints, what makes a flow the same flow when a worker
    /// sends it again.
    pub first_ts: u64,
    pub last_ts: u64,
    /// Packets, bytes, IP bytes.
    pub to_server: [u64; 3],
    pub to_client: [u64; 3],
    /// The TCP handshake decided who is the client.
    pub syn: bool,
    pub closed: bool,
    /// TCP health so far.
    pub health: trawl_core::tcp_health::EdgeHealth,
}

/// The closed flows of one conversation (client IP, server IP and port),
/// cumulative over a worker's counting epoch: what lets a restarted hub
/// get back flows that ended before it started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedTotals {
    pub tcp: bool,
    pub client: IpAddr,
    pub server: (IpAddr, u16),
    pub flows: u64,
    pub first_ts: u64,
    pub last_ts: u64,
    pub to_server: [u64; 3],
    pub to_client: [u64; 3],
}

/// Requests a worker counted but did not send as records (beyond its
/// record queue), per (client IP, server, protocol): cumulative over its
/// counting epoch, like [`ClosedTotals`], so the hub's L7 numbers stay
/// exact when records are only a sample.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsampledTotals {
    pub tcp: bool,
    pub src: IpAddr,
    pub dst: (IpAddr, u16),
    pub protocol: String,
    pub requests: u64,
    pub errors: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub last_ts: u64,
}

/// A plugin's record as it travels to the hub: the SDK record itself
/// (postcard all the way, no JSON inside) and the connection it came from.
/// The hub resolves its ends with its own identity (inventories, the
/// Kubernetes API).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireRecord {
    /// The record's number in its worker's counting epoch, from 0. With the
    /// node and the epoch it names the record: the hub drops a record it
    /// has by this name (a journal sent again, a replay restarted), never
    /// by content, so equal requests (pipelined `GET k` twice) both count.
    pub seq: u64,
    pub tcp: bool,
    pub client: (IpAddr, u16),
    pub server: (IpAddr, u16),
    pub plugin: String,
    pub plugin_version: String,
    pub generation: u64,
    pub record: Record,
    /// Read as TLS plaintext (see `ConnInfo::tls`), and its server name.
    pub tls: bool,
    pub tls_sni: Option<String>,
}

impl WireRecord {
    /// A plugin record for the wire, numbered `seq`; taken by value.
    pub fn new(h: HostRecord, seq: u64) -> Self {
        WireRecord {
            seq,
            tcp: h.conn.l4 == L4Proto::Tcp,
            client: (h.conn.client.ip, h.conn.client.port),
            server: (h.conn.server.ip, h.conn.server.port),
            plugin: h.plugin.to_string(),
            plugin_version: h.plugin_version.to_string(),
            generation: h.generation,
            record: h.record,
            tls: h.conn.tls,
            tls_sni: h.tls_sni,
        }
    }

    /// The plugin record again, to become an L7 record on this side.
    pub fn into_host(self) -> HostRecord {
        let end = |(ip, port)| Endpoint { ip, port };
        HostRecord {
            conn: ConnInfo {
                id: 0,
                l4: if self.tcp { L4Proto::Tcp } else { L4Proto::Udp },
                client: end(self.client),
                server: end(self.server),
                tls: self.tls,
            },
            plugin: self.plugin.into(),
            plugin_version: self.plugin_version.into(),
            generation: self.generation,
            record: self.record,
            tls_sni: self.tls_sni,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToHub {
    Hello {
        version: u16,
        node: String,
        worker_id: String,
        boot_id: String,
        /// Runs of a worker with the same epoch count the same traffic (a
        /// replay of the same part); a live worker's epoch is its boot.
        epoch: String,
        token: String,
    },
    Flows(Vec<FlowTotals>),
    /// Closed flows per conversation, cumulative for the epoch.
    Closed(Vec<ClosedTotals>),
    Records(Vec<WireRecord>),
    /// Requests beyond the record queue, per key, cumulative for the epoch.
    Unsampled(Vec<UnsampledTotals>),
    /// Counters of the worker itself: drops are data.
    Status(WorkerStatus),
    /// The recent packets a `PcapRequest` asked for (maybe none).
    Packets {
        id: u64,
        frames: Vec<WireFrame>,
    },
}

/// One captured frame, as the worker's ring holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireFrame {
    pub link: u32,
    pub ts: u64,
    pub wire_len: u32,
    pub data: Vec<u8>,
}

impl From<&trawl_service::packets::RingFrame> for WireFrame {
    fn from(f: &trawl_service::packets::RingFrame) -> Self {
        WireFrame { link: f.link.to_linktype(), ts: f.ts.0, wire_len: f.wire_len, data: f.data.to_vec() }
    }
}

impl From<WireFrame> for trawl_service::packets::RingFrame {
    fn from(f: WireFrame) -> Self {
        trawl_service::packets::RingFrame {
            link: trawl_core::LinkType::from_linktype(f.link),
            ts: trawl_core::Timestamp(f.ts),
            wire_len: f.wire_len,
            data: f.data.into(),
        }
    }
}

/// A worker's own counters and plugins, shown in the hub's health.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub counters: WorkerCounters,
    pub plugins: Vec<WirePluginStatus>,
}

/// A plugin's status as a worker sends it: [`PluginStatus`] in a shape
/// postcard carries (no flattened, internally tagged state).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePluginStatus {
    pub name: String,
    pub version: String,
    pub hash: String,
    pub generation: u64,
    pub source: String,
    pub state: WirePluginState,
    pub live_connections: u64,
    pub records: u64,
    pub faults: u64,
    pub detached_connections: u64,
    pub calls: u64,
    pub bytes_in: u64,
    pub probe_bytes: u64,
    pub stream_bytes: u64,
    pub skipped_bytes: u64,
    pub last_error: Option<String>,
    pub ports: String,
    pub fields: Option<Vec<String>>,
}

/// [`PluginState`] on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WirePluginState {
    Active,
    Draining,
    Retired,
    Quarantined(String),
    Rejected(String),
    RolledBack(String),
}

fn wire_state(state: PluginState) -> WirePluginState {
    match state {
        PluginState::Active => WirePluginState::Active,
        PluginState::Draining => WirePluginState::Draining,
        PluginState::Retired => WirePluginState::Retired,
        PluginState::Quarantined { reason } => WirePluginState::Quarantined(reason),
        PluginState::Rejected { reason } => WirePluginState::Rejected(reason),
        PluginState::RolledBack { reason } => WirePluginState::RolledBack(reason),
    }
}

fn host_state(state: WirePluginState) -> PluginState {
    match state {
        WirePluginState::Active => PluginState::Active,
        WirePluginState::Draining => PluginState::Draining,
        WirePluginState::Retired => PluginState::Retired,
        WirePluginState::Quarantined(reason) => PluginState::Quarantined { reason },
        WirePluginState::Rejected(reason) => PluginState::Rejected { reason },
        WirePluginState::RolledBack(reason) => PluginState::RolledBack { reason },
    }
}

/// Both directions copy the same fields; only the state changes shape.
macro_rules! plugin_status_from {
    ($from:ty => $to:ident, $state:expr) => {
        impl From<$from> for $to {
            fn from(p: $from) -> Self {
                $to {
                    state: $state(p.state),
                    name: p.name,
                    version: p.version,
                    hash: p.hash,
                    generation: p.generation,
                    source: p.source,
                    live_connections: p.live_connections,
                    records: p.records,
                    faults: p.faults,
                    detached_connections: p.detached_connections,
                    calls: p.calls,
                    bytes_in: p.bytes_in,
                    probe_bytes: p.probe_bytes,
                    stream_bytes: p.stream_bytes,
                    skipped_bytes: p.skipped_bytes,
                    last_error: p.last_error,
                    ports: p.ports,
                    fields: p.fields,
                }
            }
        }
    };
}

plugin_status_from!(PluginStatus => WirePluginStatus, wire_state);
plugin_status_from!(WirePluginStatus => PluginStatus, host_state);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToWorker {
    Welcome {
        version: u16,
    },
    Refused {
        reason: String,
    },
    /// The hub's capture filters (JSON, as `GET /api/capture-filters`):
    /// sent after Welcome and whenever they change.
    CaptureFilters {
        json: String,
    },
    /// An operator asked to take this plugin out of quarantine.
    ResetPlugin {
        name: String,
    },
    /// A plugin an operator pushed to the hub (`PUT /api/plugins/NAME`),
    /// validated there; the worker checks the hash and hot-loads it.
    InstallPlugin {
        name: String,
        sha256: String,
        module: Vec<u8>,
    },
    /// Every plugin the hub has pushed, by name and hash: sent after each
    /// change and on connecting. A pushed plugin not in it was deleted.
    PushedPlugins {
        plugins: Vec<(String, String)>,
    },
    /// `GET /api/pcap` on the hub: send the recent packets this selects
    /// (its shape is `trawl_service::pcap_api::WireSelection`'s).
    PcapRequest {
        id: u64,
        selection: trawl_service::pcap_api::WireSelection,
    },
}

/// Writes one frame: a 4-byte big-endian length, then postcard.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    write_encoded(w, &encode_frame(msg)?)
}

/// One frame, ready to write (to many peers: a pushed plugin is encoded
/// once, not once per worker).
pub fn encode_frame<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    let mut frame = vec![0u8; 4];
    frame = postcard::to_extend(msg, frame).map_err(io::Error::other)?;
    let len = frame.len() - 4;
    if len > MAX_FRAME {
        return Err(io::Error::other(format!("frame of {len} bytes is over the {MAX_FRAME}-byte limit")));
    }
    frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(frame)
}

/// Writes a frame from [`encode_frame`].
pub fn write_encoded(w: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    w.write_all(frame)?;
    w.flush()
}

/// Reads one frame, refusing oversized ones before allocating.
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> io::Result<T> {
    read_frame_limited(r, MAX_FRAME)
}

/// Reads one frame of at most `limit` bytes, refusing a bigger one before
/// allocating.
pub fn read_frame_limited<T: for<'de> Deserialize<'de>>(r: &mut impl Read, limit: usize) -> io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {len} bytes is over the limit")));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    postcard::from_bytes(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let msg = ToHub::Hello {
            version: 1,
            node: "n".into(),
            worker_id: "w".into(),
            boot_id: "b".into(),
            epoch: "e".into(),
            token: "t".into(),
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &msg).unwrap();
        assert_eq!(read_frame::<ToHub>(&mut buf.as_slice()).unwrap(), msg);
        let mut huge = (MAX_FRAME as u32 + 1).to_be_bytes().to_vec();
        huge.extend([0; 8]);
        assert!(read_frame::<ToHub>(&mut huge.as_slice()).is_err());
        assert!(read_frame::<ToHub>(&mut [0u8, 0, 0, 2, 0xff, 0xff].as_slice()).is_err(), "garbage is an error");
    }

    #[test]
    fn plugin_status_crosses_the_wire_unchanged() {
        let status = PluginStatus {
            name: "memo".into(),
            version: "1.0.0".into(),
            hash: "ab".into(),
            generation: 3,
            source: "dir".into(),
            state: PluginState::Quarantined { reason: "trapped 3 times".into() },
            live_connections: 1,
            records: 2,
            faults: 3,
            detached_connections: 4,
            calls: 5,
            bytes_in: 6,
            probe_bytes: 7,
            stream_bytes: 8,
            skipped_bytes: 9,
            last_error: Some("trapped".into()),
            ports: "tcp/11211".into(),
            fields: Some(vec!["memo_key".into()]),
        };
        let msg = ToHub::Status(WorkerStatus {
            counters: WorkerCounters { packets: 9, ..Default::default() },
            plugins: vec![status.clone().into()],
        });
        let mut buf = Vec::new();
        write_frame(&mut buf, &msg).unwrap();
        let ToHub::Status(back) = read_frame::<ToHub>(&mut buf.as_slice()).unwrap() else { panic!("not a status") };
        assert_eq!(back.counters.packets, 9);
        assert_eq!(back.plugins.into_iter().map(PluginStatus::from).collect::<Vec<_>>(), vec![status]);
    }
}

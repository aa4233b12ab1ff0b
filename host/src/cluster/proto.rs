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
use trawl_core::record::{L7Record, PluginRef};
use trawl_core::{Endpoint, L4Proto, Timestamp};

pub const PROTOCOL_VERSION: u16 = 2;
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

/// An L7 record without resolved workloads: the hub resolves them with
/// its own identity (inventories, Kubernetes API).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireRecord {
    pub protocol: String,
    pub tcp: bool,
    pub method: String,
    pub summary: String,
    pub status_code: Option<i64>,
    pub error: bool,
    pub request_size: u64,
    pub response_size: u64,
    pub elapsed_us: Option<u64>,
    pub request_ts: Option<u64>,
    pub response_ts: Option<u64>,
    pub src: (IpAddr, u16),
    pub dst: (IpAddr, u16),
    pub plugin: (String, String, u64),
    /// Plugin fields as JSON text (postcard carries no self-describing values).
    pub fields: String,
}

impl WireRecord {
    /// A record whose ends are not resolved, for the wire.
    pub fn from_l7(r: L7Record) -> Self {
        WireRecord {
            protocol: r.protocol,
            tcp: r.transport == L4Proto::Tcp,
            method: r.method,
            summary: r.summary,
            status_code: r.status_code,
            error: r.error,
            request_size: r.request_size,
            response_size: r.response_size,
            elapsed_us: r.elapsed_us,
            request_ts: r.request_ts.map(|t| t.0),
            response_ts: r.response_ts.map(|t| t.0),
            src: (r.src.ip, r.src.port),
            dst: (r.dst.ip, r.dst.port),
            plugin: (r.plugin.name, r.plugin.version, r.plugin.generation),
            fields: serde_json::Value::Object(r.fields).to_string(),
        }
    }

    /// The record again, its ends left for the receiver to resolve.
    pub fn into_l7(self) -> L7Record {
        let end = |(ip, port)| crate::records::unresolved_end(Endpoint { ip, port });
        L7Record {
            protocol: self.protocol,
            transport: if self.tcp { L4Proto::Tcp } else { L4Proto::Udp },
            method: self.method,
            summary: self.summary,
            status_code: self.status_code,
            error: self.error,
            request_size: self.request_size,
            response_size: self.response_size,
            elapsed_us: self.elapsed_us,
            request_ts: self.request_ts.map(Timestamp),
            response_ts: self.response_ts.map(Timestamp),
            src: end(self.src),
            dst: end(self.dst),
            plugin: PluginRef { name: self.plugin.0, version: self.plugin.1, generation: self.plugin.2 },
            fields: serde_json::from_str(&self.fields).unwrap_or_default(),
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
}

/// A worker's own counters, shown in the hub's health.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub packets: u64,
    pub open_flows: u64,
    pub conversations: u64,
    pub records_queued: u64,
    /// Records folded into counts because the queue was full.
    pub records_unsampled: u64,
    /// Records lost outright (the counts too had no room).
    pub records_dropped: u64,
    pub conversations_dropped: u64,
    pub journal_evicted: u64,
    /// Packets the kernel dropped before capture (AF_PACKET rings).
    pub ring_drops: u64,
    /// A replay that has sent everything.
    pub done: bool,
    /// The worker's plugins (`GET /api/plugins` entries) as JSON text:
    /// postcard carries no self-describing values.
    pub plugins: String,
}

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
}

/// Writes one frame: a 4-byte big-endian length, then postcard.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    let bytes = postcard::to_allocvec(msg).map_err(io::Error::other)?;
    if bytes.len() > MAX_FRAME {
        return Err(io::Error::other(format!("frame of {} bytes is over the {MAX_FRAME}-byte limit", bytes.len())));
    }
    w.write_all(&(bytes.len() as u32).to_be_bytes())?;
    w.write_all(&bytes)?;
    w.flush()
}

/// Reads one frame, refusing oversized ones before allocating.
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
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
}

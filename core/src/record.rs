//! The L7 record model: one request/response exchange as the map, the
//! filters and the CLI see it, whatever plugin produced it.

use crate::flow::Endpoint;
use crate::time::Timestamp;
use serde::Serialize;

/// One side of an exchange, with the workload it resolved to.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecordEndpoint {
    pub ip: std::net::IpAddr,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<RecordWorkload>,
    /// How the workload was found, as of the record's time.
    pub resolution_status: crate::identity::ResolutionStatus,
}

/// The parts of a workload a record carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordWorkload {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A dissected request/response pair.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct L7Record {
    pub protocol: String,
    /// The transport the exchange travelled over.
    pub transport: crate::decode::L4Proto,
    pub method: String,
    pub summary: String,
    pub status_code: Option<i64>,
    pub error: bool,
    pub request_size: u64,
    pub response_size: u64,
    /// Response time: first response byte minus first request byte.
    pub elapsed_us: Option<u64>,
    pub request_ts: Option<Timestamp>,
    pub response_ts: Option<Timestamp>,
    pub src: RecordEndpoint,
    pub dst: RecordEndpoint,
    /// Plugin that produced it: name, version and generation.
    pub plugin: PluginRef,
    /// The plugin's fields as it built them; JSON shows the values plainly.
    #[serde(serialize_with = "trawl_sdk::fields::serialize_plain")]
    pub fields: trawl_sdk::Fields,
    /// The exchange was TLS on the wire, read as plaintext at the TLS
    /// library (shown only when true).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// The server name (SNI) its TLS client asked for, where seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_sni: Option<String>,
}

/// Which plugin build made a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PluginRef {
    pub name: String,
    pub version: String,
    pub generation: u64,
}

impl L7Record {
    /// About how many bytes this record holds in memory: what the record
    /// log's byte budget counts.
    pub fn approx_size(&self) -> usize {
        let end = |e: &RecordEndpoint| {
            e.workload.as_ref().map_or(0, |w| 96 + w.kind.len() + w.namespace.len() + w.name.len())
        };
        std::mem::size_of::<L7Record>()
            + self.protocol.len()
            + self.method.len()
            + self.summary.len()
            + self.plugin.name.len()
            + self.plugin.version.len()
            + end(&self.src)
            + end(&self.dst)
            + self.fields.approx_size()
    }

    /// The time the exchange is filed under: its request, else its response.
    pub fn ts(&self) -> Timestamp {
        self.request_ts.or(self.response_ts).unwrap_or_default()
    }

    pub fn endpoints(&self) -> (Endpoint, Endpoint) {
        (Endpoint { ip: self.src.ip, port: self.src.port }, Endpoint { ip: self.dst.ip, port: self.dst.port })
    }
}

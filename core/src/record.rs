//! The L7 record model: one request/response exchange as the map, the
//! filters and the CLI see it, whatever plugin produced it.

use crate::flow::Endpoint;
use crate::identity::Workload;
use crate::time::Timestamp;
use serde::Serialize;
use std::sync::Arc;

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

/// The workload a record's end resolved to, shared with the identity that
/// resolved it: copying its kind, namespace, name and node into four
/// strings per end was eight allocations per record, and as many again
/// each time the record was cloned. Records show (JSON) and compare only
/// those four parts.
#[derive(Clone, Debug)]
pub struct RecordWorkload(Arc<Workload>);

impl RecordWorkload {
    pub fn new(workload: Arc<Workload>) -> Self {
        RecordWorkload(workload)
    }

    /// `pod`, `service`, `node` or `external`.
    pub fn kind(&self) -> &'static str {
        self.0.kind.as_str()
    }

    pub fn namespace(&self) -> &str {
        &self.0.namespace
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub fn node(&self) -> Option<&str> {
        self.0.node.as_deref()
    }
}

impl PartialEq for RecordWorkload {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.kind() == other.kind()
                && self.namespace() == other.namespace()
                && self.name() == other.name()
                && self.node() == other.node())
    }
}

impl Eq for RecordWorkload {}

impl Serialize for RecordWorkload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let node = self.node();
        let mut out = s.serialize_struct("RecordWorkload", 3 + usize::from(node.is_some()))?;
        out.serialize_field("kind", self.kind())?;
        out.serialize_field("namespace", self.namespace())?;
        out.serialize_field("name", self.name())?;
        match node {
            Some(node) => out.serialize_field("node", node)?,
            None => out.skip_field("node")?,
        }
        out.end()
    }
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
    pub name: Arc<str>,
    pub version: Arc<str>,
    pub generation: u64,
}

impl L7Record {
    /// About how many bytes this record holds in memory: what the record
    /// log's byte budget counts.
    pub fn approx_size(&self) -> usize {
        let end = |e: &RecordEndpoint| {
            e.workload.as_ref().map_or(0, |w| 96 + w.kind().len() + w.namespace().len() + w.name().len())
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

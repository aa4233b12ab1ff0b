//! Turning what plugins report into L7 records: endpoints, workloads,
//! latency; the plugin's fields move over as they are.

use crate::HostRecord;
use std::sync::Arc;
use trawl_core::identity::{Identity, ResolutionStatus};
use trawl_core::record::{L7Record, PluginRef, RecordEndpoint, RecordWorkload};
use trawl_core::{Endpoint, Timestamp, Workload};

/// An endpoint of a record with its resolved workload.
fn record_endpoint(e: &RecordEndpoint, w: &Arc<Workload>, resolution_status: ResolutionStatus) -> RecordEndpoint {
    RecordEndpoint { resolution_status, ip: e.ip, port: e.port, workload: Some(RecordWorkload::new(Arc::clone(w))) }
}

/// An endpoint whose workload is not looked up yet.
pub fn unresolved_end(e: Endpoint) -> RecordEndpoint {
    RecordEndpoint { ip: e.ip, port: e.port, workload: None, resolution_status: ResolutionStatus::Unresolved }
}

/// The L7 record of a plugin record, its ends not resolved yet (a hub gets
/// the plugin record from a worker; whoever holds the identity resolves
/// them). The one conversion from plugin record to L7 record: it takes the
/// record by value.
pub fn unresolved_l7(h: HostRecord) -> L7Record {
    let (src, dst) = h.src_dst();
    let protocol = h.protocol().to_string();
    let r = h.record;
    let elapsed_us = match (r.request_ts, r.response_ts) {
        (Some(a), Some(b)) if b >= a => Some((b - a) / 1000),
        _ => None,
    };
    L7Record {
        protocol,
        transport: h.conn.l4,
        tls: h.conn.tls,
        tls_sni: h.tls_sni,
        method: r.method,
        summary: r.summary,
        status_code: r.status_code,
        error: r.error,
        request_size: r.request_size,
        response_size: r.response_size,
        elapsed_us,
        request_ts: r.request_ts.map(Timestamp),
        response_ts: r.response_ts.map(Timestamp),
        src: unresolved_end(src),
        dst: unresolved_end(dst),
        plugin: PluginRef { name: h.plugin, version: h.plugin_version, generation: h.generation },
        fields: r.fields,
    }
}

/// Resolves a record's ends as of its time. Returns their workloads, for
/// the map.
pub fn resolve_ends(record: &mut L7Record, identity: &Identity) -> (Arc<Workload>, Arc<Workload>) {
    let at = record.ts();
    let resolve = |e: &mut RecordEndpoint| {
        let (w, status) = identity.resolve_endpoint_status(e.ip, e.port, at);
        *e = record_endpoint(e, &w, status);
        w
    };
    (resolve(&mut record.src), resolve(&mut record.dst))
}

/// The L7 record of a plugin record, with workloads resolved as of its time.
/// Returns the source and destination workloads too, for the map.
pub fn to_l7(h: HostRecord, identity: &Identity) -> (L7Record, Arc<Workload>, Arc<Workload>) {
    let mut record = unresolved_l7(h);
    let (src, dst) = resolve_ends(&mut record, identity);
    (record, src, dst)
}

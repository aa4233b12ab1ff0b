//! `/metrics`: the service's own counters, each worker's on a hub, the
//! plugins', and the service-graph series (Tempo's names) per workload.

use super::workers::WorkerHealth;
use super::{GraphState, SharedState, lock};

/// Prometheus text exposition of the service's counters.
pub fn metrics_text(state: &SharedState) -> String {
    let st = lock(state);
    let c = &st.counters;
    // On a hub the packets and drops are the workers': summed here, and
    // per worker below.
    // Workers the hub let go still count, so these never go back.
    let from_workers = |f: fn(&super::workers::WorkerCounters) -> u64| -> u64 {
        st.workers.values().map(|w| f(&w.counters)).sum::<u64>() + f(&st.workers_gone)
    };
    let packets = c.packets.max(from_workers(|w| w.packets));
    let bytes = c.bytes.max(from_workers(|w| w.bytes));
    let ring_drops = c.ring_drops.max(from_workers(|w| w.ring_drops));
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        out.push_str(&format!("# HELP trawl_{name} {help}\n# TYPE trawl_{name} counter\ntrawl_{name} {v}\n"));
    };
    counter("packets_received_total", "Packets read from the capture (on a hub: by every worker).", packets);
    counter("bytes_received_total", "Bytes of the packets read.", bytes);
    counter("packets_dropped_total", "Packets skipped: malformed, non-IP or unsupported.", c.packets_dropped);
    counter("flows_total", "Flows that ended.", c.flows);
    counter("records_total", "L7 records from targeted workloads.", c.records);
    counter("records_not_targeted_total", "L7 records dropped by the capture filters.", c.records_not_targeted);
    counter(
        "streams_not_targeted_total",
        "Connections neither reassembled nor dissected: no end is a targeted workload.",
        c.streams_not_targeted,
    );
    counter(
        "records_unsampled_total",
        "Requests workers counted without sending them as records (over their queues).",
        c.records_unsampled,
    );
    counter("records_matched_pairs_total", "Records with both a request and a response.", c.matched_pairs);
    // Not `plugin_faults_total`: that family is per plugin, below.
    counter(
        "dissector_faults_total",
        "Plugin traps, timeouts, memory and output faults, every plugin's.",
        c.plugin_faults,
    );
    counter(
        "external_addresses_folded_total",
        "Flows and records drawn on an 'other addresses' node: the maps already name 4,096 outside addresses.",
        c.external_addresses_folded,
    );
    counter("replay_loops_total", "Times the replayed capture started over.", c.replay_loops);
    counter("otlp_exports_total", "OTLP metric pushes the collector took.", c.otlp_exports);
    counter("otlp_export_failures_total", "OTLP metric pushes that failed (unreachable, refused).", c.otlp_failures);
    counter("ring_drops_total", "Packets the live payload rings dropped because they were full.", ring_drops);
    if let Some(h) = st.history().map(|h| h.stats()) {
        counter(
            "history_late_samples_total",
            "Samples too late for history (older than an hour, or than the process).",
            h.late_samples,
        );
        counter(
            "history_late_merged_samples_total",
            "Samples added to history intervals already closed.",
            h.late_merged_samples,
        );
        counter(
            "history_refused_samples_total",
            "Samples of new edges past an interval's edge limit.",
            h.refused_samples,
        );
        counter(
            "history_dropped_intervals_total",
            "Closed history intervals lost before the disk took them.",
            h.pending_dropped,
        );
        counter("history_write_errors_total", "Failed history commits (retried).", h.write_errors);
        counter(
            "history_evicted_intervals_total",
            "History intervals let go for retention or the byte budget.",
            h.intervals_evicted,
        );
    }
    counter(
        "records_log_evicted_total",
        "Records that left the record log for its count or byte budget (counted in the maps; a filter set later sees fewer).",
        c.records_log_evicted,
    );
    // Losses by cause: this process's own, or on a hub the workers' sum.
    let mut losses = c.losses;
    losses.add(&st.workers_gone.losses);
    for w in st.workers.values() {
        losses.add(&w.counters.losses);
    }
    for (name, help, f) in super::workers::Losses::FIELDS {
        counter(&format!("{name}_total"), help, f(&losses));
    }
    if let Some(h) = st.history().map(|h| h.stats()) {
        out.push_str(&format!(
            "# HELP trawl_history_file_bytes Size of the history file.\n# TYPE trawl_history_file_bytes gauge\ntrawl_history_file_bytes {}\n",
            h.file_bytes
        ));
    }
    if let Some(ring) = st.packet_ring() {
        let ring = ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        out.push_str(&format!(
            "# HELP trawl_pcap_ring_bytes Bytes of recent packets kept for /api/pcap.\n# TYPE trawl_pcap_ring_bytes gauge\ntrawl_pcap_ring_bytes {}\n",
            ring.held_bytes()
        ));
        out.push_str(&format!(
            "# HELP trawl_pcap_ring_evicted_total Packets that left the /api/pcap ring for its budget.\n# TYPE trawl_pcap_ring_evicted_total counter\ntrawl_pcap_ring_evicted_total {}\n",
            ring.evicted
        ));
    }
    out.push_str(&format!(
        "# HELP trawl_subscribers Connected map subscribers.\n# TYPE trawl_subscribers gauge\ntrawl_subscribers {}\n",
        c.subscribers
    ));
    worker_metrics(&st, &mut out);
    // Rendered from a copy, without the state: at 10,000 series that
    // takes a while, and readers of the map should not wait for it.
    let service_graph = st.service_graph().clone();
    let plugins = super::api::plugin_entries(&st);
    for (field, help) in [
        ("records", "Records the plugin produced."),
        ("faults", "Traps, timeouts, memory and output faults of the plugin."),
        ("calls", "Calls into the plugin on connections."),
        ("bytes_in", "Bytes the host copied into the plugin by data and datagram calls."),
        ("probe_bytes", "Bytes the host copied into the plugin to probe connections."),
        ("stream_bytes", "Stream bytes of the connections attached to the plugin."),
        ("skipped_bytes", "Stream bytes the plugin asked to skip: counted, never copied in."),
    ] {
        out.push_str(&format!("# HELP trawl_plugin_{field}_total {help}\n# TYPE trawl_plugin_{field}_total counter\n"));
        for p in &plugins {
            let name = label_value(p["name"].as_str().unwrap_or(""));
            out.push_str(&format!(
                "trawl_plugin_{field}_total{{plugin=\"{name}\"}} {}\n",
                p[field].as_u64().unwrap_or(0)
            ));
        }
    }
    out.push_str(
        "# HELP trawl_plugin_amplification Bytes copied into the plugin per stream byte (1: each byte crosses once).\n\
         # TYPE trawl_plugin_amplification gauge\n",
    );
    for p in &plugins {
        let (copied, given) = (p["bytes_in"].as_u64().unwrap_or(0), p["stream_bytes"].as_u64().unwrap_or(0));
        if given > 0 {
            let name = label_value(p["name"].as_str().unwrap_or(""));
            out.push_str(&format!(
                "trawl_plugin_amplification{{plugin=\"{name}\"}} {:.4}\n",
                copied as f64 / given as f64
            ));
        }
    }
    drop(st);
    super::service_graph::render(&service_graph, &mut out);
    out
}

/// Each worker's own counters on a hub, labelled by node and worker: where
/// packets were read and where anything was dropped or shed.
fn worker_metrics(st: &GraphState, out: &mut String) {
    if st.workers.is_empty() {
        return;
    }
    type Field = fn(&super::workers::WorkerCounters) -> u64;
    let fields: [(&str, &str, Field); 8] = [
        ("packets", "Packets the worker read.", |w| w.packets),
        ("bytes", "Bytes of the packets the worker read.", |w| w.bytes),
        ("ring_drops", "Packets the worker's payload rings dropped because they were full.", |w| w.ring_drops),
        ("records_unsampled", "Requests the worker counted without sending them as records.", |w| w.records_unsampled),
        ("records_dropped", "Records the worker lost outright (its counts had no room either).", |w| w.records_dropped),
        ("conversations_dropped", "Closed-flow conversations the worker could not keep.", |w| w.conversations_dropped),
        ("flows_dropped", "Flows the worker lost outright: its outbox was full (the hub away or behind).", |w| {
            w.flows_dropped
        }),
        ("journal_evicted", "Sent records the worker's journal let go before a hub restart could ask again.", |w| {
            w.journal_evicted
        }),
    ];
    let per_worker = |out: &mut String, name: &str, help: &str, v: &dyn Fn(&WorkerHealth) -> u64| {
        out.push_str(&format!("# HELP trawl_worker_{name}_total {help}\n# TYPE trawl_worker_{name}_total counter\n"));
        for w in st.workers.values() {
            out.push_str(&format!(
                "trawl_worker_{name}_total{{node=\"{}\",worker=\"{}\"}} {}\n",
                label_value(&w.node),
                label_value(&w.worker_id),
                v(w)
            ));
        }
    };
    for (name, help, f) in fields {
        per_worker(out, name, help, &|w| f(&w.counters));
    }
    for (name, help, f) in super::workers::Losses::FIELDS {
        per_worker(out, name, help, &|w| f(&w.counters.losses));
    }
}

/// A Prometheus label value, escaped as the text format asks: a plugin's
/// name is the plugin's to choose, and a quote or a newline in it must not
/// end the label or forge a sample.
pub(crate) fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_plugin_name_cannot_forge_a_metric() {
        let hostile = "x\"} 1\ntrawl_records_total 999\\";
        let escaped = super::label_value(hostile);
        assert_eq!(escaped, "x\\\"} 1\\ntrawl_records_total 999\\\\");
        assert!(!escaped.contains('\n'));
    }
}

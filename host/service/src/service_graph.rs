//! The service-graph series in Prometheus' text format, under Tempo's names
//! (`traces_service_graph_*`) and label conventions (`client`, `server`,
//! `connection_type`, `client_service_namespace`,
//! `server_service_namespace`), plus trawl's L4 series
//! (`trawl_service_graph_*`).

use std::fmt::Write;
use trawl_core::servicegraph::{LATENCY_BUCKETS, ServiceGraph, WorkloadName, connection_type};

/// The labels naming both ends of a series.
fn ends(out: &mut String, client: &WorkloadName, server: &WorkloadName) {
    let v = super::metrics::label_value;
    let _ = write!(
        out,
        "client=\"{}\",server=\"{}\",client_service_namespace=\"{}\",server_service_namespace=\"{}\",client_kind=\"{}\",server_kind=\"{}\"",
        v(&client.name),
        v(&server.name),
        v(&client.namespace),
        v(&server.namespace),
        v(&client.kind),
        v(&server.kind),
    );
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Appends every series of `g` to `out`.
pub(crate) fn render(g: &ServiceGraph, out: &mut String) {
    let l7 = g.l7();
    // Each series' labels, written once and reused by every line of it.
    let l7_labels: Vec<String> = l7
        .iter()
        .map(|(k, _)| {
            let mut s = String::new();
            ends(&mut s, &k.client, &k.server);
            if let Some(t) = connection_type(&k.protocol) {
                let _ = write!(s, ",connection_type=\"{t}\"");
            }
            let _ = write!(s, ",protocol=\"{}\"", super::metrics::label_value(&k.protocol));
            s
        })
        .collect();
    header(
        out,
        "traces_service_graph_request_total",
        "counter",
        "Requests from client to server workload, dissected from the wire (every flow counted once, summed over nodes).",
    );
    for ((_, s), labels) in l7.iter().zip(&l7_labels) {
        let _ = writeln!(out, "traces_service_graph_request_total{{{labels}}} {}", s.requests);
    }
    header(
        out,
        "traces_service_graph_request_failed_total",
        "counter",
        "Requests that failed: an error status or reply, as the protocol's dissector judged it.",
    );
    for ((_, s), labels) in l7.iter().zip(&l7_labels) {
        let _ = writeln!(out, "traces_service_graph_request_failed_total{{{labels}}} {}", s.failed);
    }
    // A capture point sees one request-to-response time; both sides'
    // histograms carry it, as the names Grafana's service graph reads.
    for side in ["server", "client"] {
        let name = format!("traces_service_graph_request_{side}_seconds");
        header(out, &name, "histogram", "Request-to-response time on the wire, where both were seen, in seconds.");
        for ((_, s), labels) in l7.iter().zip(&l7_labels) {
            let h = &s.latency;
            for (le, n) in LATENCY_BUCKETS.iter().map(|b| b.to_string()).chain(["+Inf".into()]).zip(h.cumulative()) {
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
            }
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_seconds);
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
        }
    }

    let l4 = g.l4();
    let l4_labels: Vec<String> = l4
        .iter()
        .map(|(k, _)| {
            let mut s = String::new();
            ends(&mut s, &k.client, &k.server);
            let _ = write!(s, ",transport=\"{}\"", k.transport.as_str());
            s
        })
        .collect();
    type Field = fn(&trawl_core::servicegraph::L4Series) -> u64;
    let directed: [(&str, &str, Field, Field); 2] = [
        (
            "bytes",
            "Bytes between two workloads (transport payload), each way.",
            |s| s.bytes_to_server,
            |s| s.bytes_to_client,
        ),
        ("packets", "Packets between two workloads, each way.", |s| s.packets_to_server, |s| s.packets_to_client),
    ];
    for (field, help, to_server, to_client) in directed {
        let name = format!("trawl_service_graph_{field}_total");
        header(out, &name, "counter", help);
        for ((_, s), labels) in l4.iter().zip(&l4_labels) {
            let _ = writeln!(out, "{name}{{{labels},direction=\"to_server\"}} {}", to_server(s));
            let _ = writeln!(out, "{name}{{{labels},direction=\"to_client\"}} {}", to_client(s));
        }
    }
    let plain: [(&str, &str, bool, Field); 4] = [
        ("flows_closed", "Connections between two workloads that ended.", false, |s| s.flows_closed),
        ("tcp_retransmits", "TCP segments sent again, both ways.", true, |s| s.retransmits),
        ("tcp_resets", "TCP connections reset by either end.", true, |s| s.resets),
        ("tcp_failed_connects", "TCP connects refused or never answered.", true, |s| s.failed_connects),
    ];
    for (field, help, tcp_only, f) in plain {
        let name = format!("trawl_service_graph_{field}_total");
        header(out, &name, "counter", help);
        for ((k, s), labels) in l4.iter().zip(&l4_labels) {
            if !tcp_only || k.transport == trawl_core::L4Proto::Tcp {
                let _ = writeln!(out, "{name}{{{labels}}} {}", f(s));
            }
        }
    }

    let folded = g.folded();
    header(out, "trawl_service_graph_series", "gauge", "Service-graph series kept (L7 and L4).");
    let _ = writeln!(out, "trawl_service_graph_series {}", g.series());
    header(out, "trawl_service_graph_max_series", "gauge", "Most series kept before new pairs fold into 'other'.");
    let _ = writeln!(out, "trawl_service_graph_max_series {}", g.max_series());
    header(
        out,
        "trawl_service_graph_folded_requests_total",
        "counter",
        "Requests counted under client=\"other\", server=\"other\": their pair came after the series cap.",
    );
    let _ = writeln!(out, "trawl_service_graph_folded_requests_total {}", folded.requests);
    header(
        out,
        "trawl_service_graph_folded_flow_updates_total",
        "counter",
        "Flow updates counted under the 'other' pair: their pair came after the series cap.",
    );
    let _ = writeln!(out, "trawl_service_graph_folded_flow_updates_total {}", folded.flow_deltas);
    header(
        out,
        "trawl_service_graph_expired_series_total",
        "counter",
        "Series let go after counting nothing for --metrics-series-idle (a pair that returns starts from zero).",
    );
    let _ = writeln!(out, "trawl_service_graph_expired_series_total {}", g.expired());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use crate::{CaptureFilter, GraphState};
    use std::sync::Arc;
    use trawl_core::{Identity, Workload, WorkloadKind};

    fn pod(deployment: usize, replica: usize) -> Workload {
        Workload {
            kind: WorkloadKind::Pod,
            namespace: format!("ns{}", deployment % 50),
            name: format!("app{deployment}-5f6b7c8d9-{replica:05}"),
            node: Some(format!("node-{}", replica % 40)),
            labels: [("pod-template-hash".to_string(), "5f6b7c8d9".to_string())].into(),
            owner: Some(format!("ReplicaSet/app{deployment}-5f6b7c8d9")),
        }
    }

    /// An HTTP record as the runtime makes them.
    fn http_record() -> trawl_core::record::L7Record {
        let mut st = GraphState::new(Arc::new(Identity::new()), CaptureFilter::default(), 10);
        crate::add_http_records(&mut st, 1, |_| "GET /".into());
        let record = st.records_since(0).1.next().map(|r| (**r).clone());
        record.expect("one record was added")
    }

    /// 10,000 Deployments of three pods each, every pod calling one
    /// database once.
    fn ten_thousand_workloads(max_series: usize) -> GraphState {
        let mut st = GraphState::new(Arc::new(Identity::new()), CaptureFilter::default(), 10)
            .with_metrics_max_series(max_series)
            .with_record_log_bytes(1 << 20);
        let mut db = pod(0, 0);
        (db.name, db.owner, db.namespace) = ("db-0".into(), Some("StatefulSet/db".into()), "data".into());
        let record = http_record();
        for deployment in 0..10_000 {
            for replica in 0..3 {
                st.add_record(record.clone(), &pod(deployment, replica), &db);
            }
        }
        st
    }

    fn lines<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(&format!("{name}{{"))).collect()
    }

    #[test]
    fn ten_thousand_workloads_are_ten_thousand_series_not_thirty_thousand_pods() {
        let st = ten_thousand_workloads(trawl_core::servicegraph::DEFAULT_MAX_SERIES);
        let mut text = String::new();
        super::render(st.service_graph(), &mut text);
        let totals = lines(&text, "traces_service_graph_request_total");
        assert_eq!(totals.len(), 10_000, "one series per Deployment");
        assert!(totals.iter().all(|l| l.ends_with(" 3")), "three replicas' requests each");
        assert!(text.contains("trawl_service_graph_folded_requests_total 0\n"));
        // Every histogram line of a series, and no more.
        let buckets = lines(&text, "traces_service_graph_request_server_seconds_bucket");
        assert_eq!(buckets.len(), 10_000 * (trawl_core::servicegraph::LATENCY_BUCKETS.len() + 1));
    }

    #[test]
    fn past_the_cap_the_long_tail_is_one_other_series_and_nothing_is_lost() {
        let st = ten_thousand_workloads(1_000);
        let mut text = String::new();
        super::render(st.service_graph(), &mut text);
        let totals = lines(&text, "traces_service_graph_request_total");
        assert_eq!(totals.len(), 1_001, "the cap, and the folded series");
        let other = totals.iter().find(|l| l.contains("client=\"other\",server=\"other\"")).copied();
        assert_eq!(other.and_then(|l| l.rsplit(' ').next()), Some("27000"), "{other:?}");
        assert!(text.contains("trawl_service_graph_folded_requests_total 27000\n"), "what was folded is counted");
        let sum: u64 = totals.iter().filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).sum();
        assert_eq!(sum, 30_000, "every request counted once");
    }

    #[test]
    fn series_idle_past_the_limit_leave_metrics_and_are_counted() {
        let mut st = ten_thousand_workloads(trawl_core::servicegraph::DEFAULT_MAX_SERIES).with_metrics_series_idle(900);
        assert_eq!(st.expire_series(), 0, "all counted just now");
        // Data time moves on an hour with nothing new between them.
        st.advance_to(trawl_core::Timestamp(st.now().as_nanos() + 3_600 * 1_000_000_000));
        assert_eq!(st.expire_series(), 10_000);
        let mut text = String::new();
        super::render(st.service_graph(), &mut text);
        assert!(lines(&text, "traces_service_graph_request_total").is_empty());
        assert!(text.contains("trawl_service_graph_expired_series_total 10000\n"), "what went is counted");
    }
}

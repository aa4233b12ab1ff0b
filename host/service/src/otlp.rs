//! OTLP export (`--otlp-endpoint`): the service-graph series pushed to an
//! OpenTelemetry collector over OTLP/HTTP (protobuf), cumulative, under
//! semantic-convention names where they exist:
//!
//! | protocol | metric | reported by |
//! |---|---|---|
//! | HTTP/1, HTTP/2 | `http.server.request.duration` | the server |
//! | gRPC | `rpc.server.call.duration` (`rpc.system.name`) | the server |
//! | Redis | `db.client.operation.duration` (`db.system.name`) | the client |
//! | Kafka | `messaging.client.operation.duration` (`messaging.system`) | the client |
//! | others (DNS, plugins) | `trawl.request.duration` (`trawl.protocol`) | the server |
//!
//! Each workload is a resource with its `k8s.*` attributes (namespace and
//! its Deployment, StatefulSet, DaemonSet… name), `service.name` and
//! `service.namespace`; the workload at the other end is on the data points
//! (`trawl.peer.*`, and `server.address` for client-side metrics). Failed
//! requests are the histogram's points with `error.type`, as the
//! conventions say; `trawl.requests` and `trawl.requests.failed` count
//! every request, timed or not, and `trawl.network.io` and
//! `trawl.network.packets` carry the L4 series.

use super::{SharedState, lock};
use bytes::Bytes;
use http_body_util::Full;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram as OtlpHistogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use std::collections::BTreeMap;
use std::time::Duration;
use trawl_core::servicegraph::{Histogram, LATENCY_BUCKETS, ServiceGraph, WorkloadName};

/// The semantic conventions' version the names follow.
const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.42.0";

/// Where and how often to push.
#[derive(Clone, Debug)]
pub struct OtlpConfig {
    /// `http://HOST:PORT` (then `/v1/metrics`), or the full metrics URL
    /// (as `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` is given, with a path).
    pub endpoint: String,
    pub interval: Duration,
    /// `k8s.cluster.name` on every resource, if known.
    pub cluster: Option<String>,
}

impl OtlpConfig {
    /// The metrics URL: the endpoint as given when it names a path, else
    /// with `/v1/metrics` (a collector's base address).
    pub fn url(&self) -> Result<String, String> {
        let e = self.endpoint.trim_end_matches('/');
        let Some(rest) = e.strip_prefix("http://") else {
            return Err(format!("--otlp-endpoint {e}: only http:// is spoken (a collector's OTLP/HTTP port, 4318)"));
        };
        Ok(if rest.contains('/') { e.to_string() } else { format!("{e}/v1/metrics") })
    }
}

fn kv(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

/// Which end reports a protocol's duration metric, under which name, with
/// which attributes naming the system.
fn convention(protocol: &str) -> (&'static str, Side, Vec<KeyValue>) {
    match protocol {
        "http" | "http2" => ("http.server.request.duration", Side::Server, vec![kv("network.protocol.name", "http")]),
        "grpc" => ("rpc.server.call.duration", Side::Server, vec![kv("rpc.system.name", "grpc")]),
        "redis" => ("db.client.operation.duration", Side::Client, vec![kv("db.system.name", "redis")]),
        "kafka" => ("messaging.client.operation.duration", Side::Client, vec![kv("messaging.system", "kafka")]),
        other => ("trawl.request.duration", Side::Server, vec![kv("trawl.protocol", other)]),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// A workload as an OTLP resource.
fn resource(w: &WorkloadName, cluster: Option<&str>) -> Resource {
    let mut attributes = vec![kv("service.name", w.name.as_str()), kv("service.namespace", w.namespace.as_str())];
    let k8s = match w.kind.as_str() {
        kind @ ("deployment" | "statefulset" | "daemonset" | "cronjob" | "job" | "replicaset" | "pod") => {
            Some(format!("k8s.{kind}.name"))
        }
        "node" => Some("k8s.node.name".to_string()),
        _ => None,
    };
    if let Some(key) = k8s {
        attributes.push(kv(&key, w.name.as_str()));
    }
    if !matches!(w.kind.as_str(), "external" | "node" | "other") {
        attributes.push(kv("k8s.namespace.name", w.namespace.as_str()));
    }
    attributes.push(kv("trawl.workload.kind", w.kind.as_str()));
    if let Some(c) = cluster {
        attributes.push(kv("k8s.cluster.name", c));
    }
    Resource { attributes, ..Default::default() }
}

fn peer(w: &WorkloadName) -> Vec<KeyValue> {
    vec![
        kv("trawl.peer.workload.name", w.name.as_str()),
        kv("trawl.peer.workload.kind", w.kind.as_str()),
        kv("trawl.peer.k8s.namespace.name", w.namespace.as_str()),
    ]
}

struct Times {
    start: u64,
    now: u64,
}

fn histogram_point(h: &Histogram, attributes: Vec<KeyValue>, t: &Times) -> HistogramDataPoint {
    HistogramDataPoint {
        attributes,
        start_time_unix_nano: t.start,
        time_unix_nano: t.now,
        count: h.count,
        sum: Some(h.sum_seconds),
        bucket_counts: h.buckets.to_vec(),
        explicit_bounds: LATENCY_BUCKETS.to_vec(),
        ..Default::default()
    }
}

fn sum_point(value: u64, attributes: Vec<KeyValue>, t: &Times) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: t.start,
        time_unix_nano: t.now,
        value: Some(number_data_point::Value::AsInt(value as i64)),
        ..Default::default()
    }
}

/// The metrics of one resource, by name: (unit, description, data).
#[derive(Default)]
struct Metrics(BTreeMap<&'static str, (&'static str, &'static str, Option<metric::Data>)>);

impl Metrics {
    fn histogram(&mut self, name: &'static str, description: &'static str, point: HistogramDataPoint) {
        let entry = self.0.entry(name).or_insert((
            "s",
            description,
            Some(metric::Data::Histogram(OtlpHistogram {
                data_points: Vec::new(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
        ));
        if let Some(metric::Data::Histogram(h)) = &mut entry.2 {
            h.data_points.push(point);
        }
    }

    fn counter(&mut self, name: &'static str, unit: &'static str, description: &'static str, point: NumberDataPoint) {
        let entry = self.0.entry(name).or_insert((
            unit,
            description,
            Some(metric::Data::Sum(Sum {
                data_points: Vec::new(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
        ));
        if let Some(metric::Data::Sum(s)) = &mut entry.2 {
            s.data_points.push(point);
        }
    }
}

/// Every series of `g` as one export request: a resource per workload.
/// `start` is when counting began, `now` the points' time (unix ns).
pub fn request(g: &ServiceGraph, cluster: Option<&str>, start: u64, now: u64) -> ExportMetricsServiceRequest {
    let t = Times { start, now };
    let mut by_workload: BTreeMap<&WorkloadName, Metrics> = BTreeMap::new();
    for (key, s) in g.l7() {
        let (name, side, mut system) = convention(&key.protocol);
        let (reporter, other) = match side {
            Side::Server => (&key.server, &key.client),
            Side::Client => (&key.client, &key.server),
        };
        let mut attributes = peer(other);
        attributes.append(&mut system);
        if side == Side::Client {
            attributes.push(kv("server.address", format!("{}.{}", key.server.name, key.server.namespace)));
        }
        attributes.push(kv("trawl.protocol", key.protocol.as_str()));
        attributes.dedup_by(|a, b| a.key == b.key);
        let m = by_workload.entry(reporter).or_default();
        let description = "Request-to-response time on the wire, where both were seen.";
        let ok = s.latency.without(&s.failed_latency);
        if ok.count > 0 {
            m.histogram(name, description, histogram_point(&ok, attributes.clone(), &t));
        }
        if s.failed_latency.count > 0 {
            let mut failed = attributes.clone();
            // The dissector judged these failed; it names no finer cause.
            failed.push(kv("error.type", "_OTHER"));
            m.histogram(name, description, histogram_point(&s.failed_latency, failed, &t));
        }
        m.counter(
            "trawl.requests",
            "{request}",
            "Requests, timed or not.",
            sum_point(s.requests, attributes.clone(), &t),
        );
        m.counter("trawl.requests.failed", "{request}", "Requests that failed.", sum_point(s.failed, attributes, &t));
    }
    for (key, s) in g.l4() {
        let mut attributes = peer(&key.server);
        attributes.push(kv("network.transport", key.transport.as_str()));
        let m = by_workload.entry(&key.client).or_default();
        let with = |direction: &str| {
            let mut a = attributes.clone();
            a.push(kv("network.io.direction", direction));
            a
        };
        let io = "Bytes the workload sent to (transmit) and received from (receive) its peer.";
        m.counter("trawl.network.io", "By", io, sum_point(s.bytes_to_server, with("transmit"), &t));
        m.counter("trawl.network.io", "By", io, sum_point(s.bytes_to_client, with("receive"), &t));
        let packets = "Packets the workload sent to and received from its peer.";
        m.counter("trawl.network.packets", "{packet}", packets, sum_point(s.packets_to_server, with("transmit"), &t));
        m.counter("trawl.network.packets", "{packet}", packets, sum_point(s.packets_to_client, with("receive"), &t));
    }
    let scope =
        InstrumentationScope { name: "trawl".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() };
    let resource_metrics = by_workload
        .into_iter()
        .map(|(w, m)| ResourceMetrics {
            resource: Some(resource(w, cluster)),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope.clone()),
                metrics: m
                    .0
                    .into_iter()
                    .map(|(name, (unit, description, data))| Metric {
                        name: name.into(),
                        unit: unit.into(),
                        description: description.into(),
                        data,
                        ..Default::default()
                    })
                    .collect(),
                schema_url: SCHEMA_URL.into(),
            }],
            schema_url: String::new(),
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }
}

fn unix_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Pushes `state`'s series to the collector every `config.interval` until
/// the runtime stops. A failed push is counted and logged, and the next
/// one carries everything again (the series are cumulative).
pub async fn run(state: SharedState, config: OtlpConfig) -> Result<(), String> {
    let url = config.url()?;
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    let start = unix_nanos();
    let mut every = tokio::time::interval(config.interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        // A copy under the lock (a millisecond at 10,000 series); the
        // request is built and encoded off the runtime's threads, without it.
        let graph = lock(&state).service_graph().clone();
        let cluster = config.cluster.clone();
        let built = tokio::task::spawn_blocking(move || {
            request(&graph, cluster.as_deref(), start, unix_nanos()).encode_to_vec()
        });
        let Ok(body) = built.await else { continue };
        let pushed = push(&client, &url, body).await;
        let mut st = lock(&state);
        match pushed {
            Ok(()) => st.counters_mut().otlp_exports += 1,
            Err(e) => {
                st.counters_mut().otlp_failures += 1;
                tracing::warn!(url = %url, error = %e, "OTLP push failed; the next carries everything again");
            }
        }
    }
}

async fn push(
    client: &hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
    body: Vec<u8>,
) -> Result<(), String> {
    let req = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| "no answer in 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    if resp.status().is_success() { Ok(()) } else { Err(format!("the collector answered {}", resp.status())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_gets_the_metrics_path_unless_it_names_one() {
        let url = |e: &str| OtlpConfig { endpoint: e.into(), interval: Duration::from_secs(1), cluster: None }.url();
        assert_eq!(url("http://otel:4318"), Ok("http://otel:4318/v1/metrics".into()));
        assert_eq!(url("http://otel:4318/"), Ok("http://otel:4318/v1/metrics".into()));
        assert_eq!(url("http://otel:4318/custom/metrics"), Ok("http://otel:4318/custom/metrics".into()));
        assert!(url("https://otel:4318").is_err());
    }
}

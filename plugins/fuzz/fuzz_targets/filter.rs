//! Random text as a KFL2 display filter, as a browser, `/api/map` or the
//! MCP server would send it: compiled plainly and against a closed
//! vocabulary, and, when it compiles, evaluated on records of every field
//! type. A hostile filter gets an error or a `false`, never a panic, a
//! hang or a huge allocation: its size and comprehension nesting are
//! bounded at compile time.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::OnceLock;
use trawl_core::decode::L4Proto;
use trawl_core::identity::{ResolutionStatus, Workload, WorkloadKind};
use trawl_core::l7map::LegendEntry;
use trawl_core::record::{L7Record, PluginRef, RecordEndpoint, RecordWorkload};
use trawl_sdk::{Fields, Value};
use trawl_service::Filter;
use trawl_service::vocabulary::Vocabulary;

fn endpoint(last: u8, port: u16, workload: Option<(&str, &str, &str)>) -> RecordEndpoint {
    RecordEndpoint {
        ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
        port,
        workload: workload.map(|(kind, namespace, name)| {
            let kind = match kind {
                "pod" => WorkloadKind::Pod,
                "service" => WorkloadKind::Service,
                "node" => WorkloadKind::Node,
                _ => WorkloadKind::External,
            };
            RecordWorkload::new(Arc::new(Workload {
                kind,
                namespace: namespace.into(),
                name: name.into(),
                node: Some("node-a".into()),
                labels: Default::default(),
                owner: None,
            }))
        }),
        resolution_status: if workload.is_some() { ResolutionStatus::Resolved } else { ResolutionStatus::Unresolved },
    }
}

fn records() -> Vec<L7Record> {
    let mut fields = Fields::new();
    fields.insert("path", "/api/v1/items?page=2");
    fields.insert("host", "shop.example");
    fields.insert("status", Value::Int(503));
    fields.insert("ratio", Value::Float(f64::NAN));
    fields.insert("big", Value::Float(1e308));
    fields.insert("nothing", Value::Null);
    fields.insert("flag", Value::Bool(true));
    fields.insert("tags", Value::List(vec![Value::from("a"), Value::Int(-1), Value::List(vec![])]));
    let mut headers = Fields::new();
    headers.insert("content-type", "application/json");
    headers.insert("x-empty", "");
    fields.insert("request_headers", Value::Map(headers));
    let http = L7Record {
        protocol: "http".into(),
        transport: L4Proto::Tcp,
        method: "GET".into(),
        summary: "/api/v1/items?page=2".into(),
        status_code: Some(503),
        error: true,
        request_size: 120,
        response_size: u64::MAX,
        elapsed_us: Some(1500),
        request_ts: Some(trawl_core::Timestamp(1_700_000_000_000_000_000)),
        response_ts: Some(trawl_core::Timestamp(u64::MAX)),
        src: endpoint(1, 40000, Some(("pod", "shop", "frontend-7d9f"))),
        dst: endpoint(2, 8080, Some(("service", "shop", "catalog"))),
        plugin: PluginRef { name: "http".into(), version: "0.1.0".into(), generation: 1 },
        fields,
        tls: true,
        tls_sni: Some("shop.example".into()),
    };
    let dns = L7Record {
        protocol: "dns".into(),
        transport: L4Proto::Udp,
        method: "A".into(),
        summary: "catalog.shop.svc.cluster.local".into(),
        status_code: None,
        error: false,
        request_size: 0,
        response_size: 0,
        elapsed_us: None,
        request_ts: None,
        response_ts: None,
        src: endpoint(3, 53000, None),
        dst: endpoint(4, 53, None),
        plugin: PluginRef { name: "dns".into(), version: "0.1.0".into(), generation: 7 },
        fields: Fields::new(),
        tls: false,
        tls_sni: None,
    };
    vec![http, dns]
}

fn legend() -> Vec<LegendEntry> {
    ["http", "dns", "redis"]
        .map(|p| LegendEntry { protocol: p.into(), abbreviation: p.into(), long_name: p.into(), color: "#000".into() })
        .to_vec()
}

struct Fixture {
    records: Vec<L7Record>,
    legend: Vec<LegendEntry>,
    closed: Vocabulary,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let declared = ["path".to_string(), "host".into(), "status".into(), "request_headers".into()];
        Fixture { records: records(), legend: legend(), closed: Vocabulary::new([("http", Some(&declared[..]))]) }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let source = String::from_utf8_lossy(data);
    let f = fixture();
    let Ok(filter) = Filter::compile(&source) else { return };
    // A closed vocabulary refuses the names it does not know, with where
    // they stand; the position it gives is inside the filter.
    if let Err(e) = Filter::compile_in(&source, &f.closed) {
        assert!(e.position <= source.len(), "{e:?} for {source:?}");
    }
    for record in &f.records {
        let _ = filter.matches(record, &f.legend);
    }
});

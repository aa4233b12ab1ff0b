//! Broken and hostile plugins next to the good ones: an infinite loop in
//! `data`, a trap in `probe`, a memory bomb, a table bomb, a 100 MB
//! output, invalid postcard, a depth bomb (500k nested lists), an event
//! bomb (900k events in one answer), a wrong ABI version and a panic; and
//! a plugin declaring a 4 GiB `max_buffer`. Each is a core wasm module
//! built here from text, speaking ABI v1 just well enough to be loaded.
//!
//! The demo capture carries HTTP, DNS and Redis. The hostile plugin claims
//! the Redis port with the highest priority, so the Redis connections go to
//! it (and, once it is quarantined, to the redis plugin), while HTTP and DNS
//! stay with the embedded plugins. The checks: trawl exits cleanly, HTTP and DNS
//! records are the same as without the hostile plugin, L4 counts are the
//! same, and the hostile plugin's status says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use serde_json::Value;
use std::path::Path;
use trawl_sdk::abi::v1::DataResult;
use trawl_sdk::abi::{Event, PluginInfo, Status};

fn info(name: &str) -> Vec<u8> {
    postcard::to_allocvec(&PluginInfo {
        name: name.into(),
        version: "6.6.6".into(),
        abbreviation: "BAD".into(),
        long_name: "Hostile test plugin".into(),
        color: "#000000".into(),
        // Claims Redis's port and outranks the redis plugin, so the Redis
        // connections of the demo capture go to it.
        tcp_ports: vec![6379],
        udp_ports: vec![],
        priority: 100,
        probe_depth: 64,
        accepts_gaps: true,
        max_buffer: 1 << 20,
    })
    .unwrap()
}

fn ok_result() -> Vec<u8> {
    postcard::to_allocvec(&DataResult { status: Status::Ok, consumed: 0, needed: 0, events: vec![] }).unwrap()
}

fn wat_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("\\{x:02x}")).collect()
}

/// A module whose `trawl_data` body (and optionally probe and ABI version)
/// is the given text.
fn module(name: &str, abi: u32, probe_body: &str, data_body: &str) -> Vec<u8> {
    module_with(name, &info(name), abi, probe_body, data_body, "")
}

/// As [`module`], with the plugin's info given and `extra` (data segments,
/// helper functions) added to the module.
fn module_with(name: &str, info: &[u8], abi: u32, probe_body: &str, data_body: &str, extra: &str) -> Vec<u8> {
    let ok = ok_result();
    let text = format!(
        r#"(module
  (memory (export "memory") 32)
  (data (i32.const 1024) "{info}")
  (data (i32.const 4096) "{ok}")
  (data (i32.const 8192) "\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff")
  {extra}
  (func (export "trawl_abi_version") (result i32) (i32.const {abi}))
  (func (export "trawl_alloc") (param i32) (result i32) (i32.const 65536))
  (func (export "trawl_dealloc") (param i32 i32))
  (func (export "trawl_init") (result i64) (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const {info_len})))
  (func (export "trawl_probe") (param i32 i32 i32 i32) (result i32) {probe_body})
  (func (export "trawl_open") (param i64 i32 i32) (result i64) (i64.or (i64.shl (i64.const 4096) (i64.const 32)) (i64.const {ok_len})))
  (func (export "trawl_data") (param i64 i32 i32 i64 i32 i32 i64) (result i64) {data_body})
  (func (export "trawl_close") (param i64 i64) (result i64) (i64.or (i64.shl (i64.const 4096) (i64.const 32)) (i64.const {ok_len})))
)"#,
        info = wat_bytes(info),
        ok = wat_bytes(&ok),
        info_len = info.len(),
        ok_len = ok.len(),
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"))
}

const MATCH: &str = "(i32.const 2)";

fn hostile() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    vec![
        ("loop", module("bad-loop", 1, MATCH, "(loop $l (br $l)) (unreachable)"), "deadline"),
        ("probe-trap", module("bad-probe", 1, "(unreachable)", "(unreachable)"), "trapped"),
        (
            "memory-bomb",
            // Grow until the sandbox says no, then abort as Rust's OOM does.
            module(
                "bad-memory",
                1,
                MATCH,
                "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 64)) (i32.const -1)))) (unreachable)",
            ),
            "trapped",
        ),
        (
            "huge-output",
            module("bad-output", 1, MATCH, "(i64.or (i64.shl (i64.const 0) (i64.const 32)) (i64.const 104857600))"),
            "over the cap",
        ),
        (
            "garbage",
            module("bad-postcard", 1, MATCH, "(i64.or (i64.shl (i64.const 8192) (i64.const 32)) (i64.const 12))"),
            "invalid postcard",
        ),
        (
            "table-bomb",
            // Grow a table until the sandbox says no, then abort.
            module_with(
                "bad-table",
                &info("bad-table"),
                1,
                MATCH,
                "(loop $l (br_if $l (i32.ne (table.grow $t (ref.null func) (i32.const 100000)) (i32.const -1)))) (unreachable)",
                "(table $t 1 funcref)",
            ),
            "trapped",
        ),
        ("depth-bomb", depth_bomb(), "nested deeper than 32"),
        ("event-bomb", event_bomb(), "more than 65536 events"),
        // A Rust panic in a wasm32-unknown-unknown plugin is an abort: `unreachable`.
        ("panic", module("bad-panic", 1, MATCH, "(unreachable)"), "unreachable"),
        // The host speaks v2 and the version before; v3 is the future.
        ("abi-v3", module("bad-abi", 3, MATCH, "(unreachable)"), "ABI v3"),
    ]
}

/// Where the bombs below keep their answer: past the input window (64 KiB
/// at 65536) and within the module's 2 MiB of memory.
const ANSWER_AT: usize = 262_144;

/// Answers `data` with `answer` (bytes at [`ANSWER_AT`]).
fn answering(name: &str, answer: &[u8]) -> Vec<u8> {
    let extra = format!("(data (i32.const {ANSWER_AT}) \"{}\")", wat_bytes(answer));
    let body = format!("(i64.or (i64.shl (i64.const {ANSWER_AT}) (i64.const 32)) (i64.const {}))", answer.len());
    module_with(name, &info(name), 1, MATCH, &body, &extra)
}

/// One record whose field is 500,000 one-element lists deep, as postcard
/// writes it (variant 5, length 1, …, then Null): decoding it recursively
/// without a depth limit overflowed the host's stack.
fn depth_bomb() -> Vec<u8> {
    let record = trawl_sdk::abi::Record {
        fields: [("x".to_string(), trawl_sdk::abi::Value::Null)].into(),
        ..Default::default()
    };
    let mut answer = postcard::to_allocvec(&DataResult {
        status: Status::Ok,
        consumed: 0,
        needed: 0,
        events: vec![Event::Record(record)],
    })
    .unwrap();
    // The last byte is the field's Null: make it the bomb.
    answer.pop();
    for _ in 0..500_000 {
        answer.extend_from_slice(&[5, 1]);
    }
    answer.push(0);
    answering("bad-depth", &answer)
}

/// 900,000 `Upgrade` events of two bytes each: decoded, they were about a
/// hundred times their size.
fn event_bomb() -> Vec<u8> {
    const EVENTS: u32 = 900_000;
    // Status Ok, consumed 0, needed 0, then the count as a varint.
    let mut header = vec![0u8, 0, 0];
    let mut n = EVENTS;
    while n >= 128 {
        header.push((n as u8 & 127) | 128);
        n >>= 7;
    }
    header.push(n as u8);
    let start = ANSWER_AT - header.len();
    let len = header.len() + 2 * EVENTS as usize;
    // The events (variant 1, empty protocol: bytes 1, 0) are written by a
    // loop, not carried as 1.8 MB of module text.
    let body = format!(
        "(local $p i32)
    (local.set $p (i32.const {ANSWER_AT}))
    (loop $l
      (i32.store16 (local.get $p) (i32.const 1))
      (local.set $p (i32.add (local.get $p) (i32.const 2)))
      (br_if $l (i32.lt_u (local.get $p) (i32.const {end}))))
    (i64.or (i64.shl (i64.const {start}) (i64.const 32)) (i64.const {len}))",
        end = ANSWER_AT + 2 * EVENTS as usize,
    );
    let extra = format!("(data (i32.const {start}) \"{}\")", wat_bytes(&header));
    module_with("bad-events", &info("bad-events"), 1, MATCH, &body, &extra)
}

struct Run {
    records: Vec<Value>,
    stats: String,
    status: Vec<Value>,
}

fn replay(capture: &Path, plugins: Option<&Path>, status: &Path) -> Run {
    let mut args = vec![
        "replay".to_string(),
        capture.display().to_string(),
        "--emit".into(),
        "records".into(),
        "--stats".into(),
        "--plugin-status".into(),
        status.display().to_string(),
        // Re-instantiate at once after a fault, so every Redis connection
        // meets the bad plugin and the quarantine rule is what stops it.
        "--plugin-backoff-ms".into(),
        "0".into(),
    ];
    if let Some(dir) = plugins {
        args.push("--plugins".into());
        args.push(dir.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = support::run_trawl(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "trawl failed: {stderr}");
    let stats = stderr.lines().find(|l| l.starts_with("trawl replay:")).unwrap_or_default().to_string();
    let status: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(status).unwrap()).unwrap();
    Run { records: support::json_lines(&out.stdout), stats, status }
}

/// The L4 part of the stats line: packets, bytes and flows.
fn l4_part(stats: &str) -> String {
    let packets = stats.split(" in ").next().unwrap_or_default();
    let flows = stats.split("s; ").nth(1).and_then(|s| s.split(" flows").next()).unwrap_or_default();
    format!("{packets} / {flows} flows")
}

fn good(records: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = records
        .iter()
        .filter(|r| r["plugin"]["name"] == "http" || r["plugin"]["name"] == "dns")
        .map(|r| {
            let mut r = r.clone();
            r["plugin"]["generation"] = Value::Null;
            r.to_string()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn hostile_plugins_cannot_hurt_the_host() {
    let capture = support::project_root().join("examples/demo/demo.pcap");
    let base_dir = support::scratch("baseline");
    let baseline = replay(&capture, None, &base_dir.join("status.json"));
    let base_good = good(&baseline.records);
    assert!(base_good.len() >= 15, "baseline should have HTTP and DNS records: {}", base_good.len());

    for (label, wasm, expect) in hostile() {
        let dir = support::scratch(label);
        std::fs::write(dir.join(format!("{label}.wasm")), &wasm).unwrap();
        let run = replay(&capture, Some(&dir), &dir.join("status.json"));
        assert_eq!(good(&run.records), base_good, "{label}: good plugins' records changed");
        assert_eq!(l4_part(&run.stats), l4_part(&baseline.stats), "{label}: L4 counts changed");
        let bad = run
            .status
            .iter()
            .find(|s| s["name"].as_str().is_some_and(|n| n.starts_with("bad-") || n == label))
            .unwrap_or_else(|| panic!("{label}: no status for the bad plugin: {:?}", run.status));
        let state = bad["state"].as_str().unwrap();
        let reason = bad["reason"].as_str().or(bad["last_error"].as_str()).unwrap_or_default();
        if label == "abi-v3" {
            assert_eq!(state, "rejected", "{label}: {bad}");
        } else {
            assert_eq!(state, "quarantined", "{label}: {bad}");
            assert!(bad["faults"].as_u64().unwrap() >= 3, "{label}: {bad}");
        }
        assert!(reason.contains(expect), "{label}: reason {reason:?} should mention {expect:?}");
        for s in &run.status {
            if s["name"] == "http" || s["name"] == "dns" {
                assert_eq!(s["state"], "active", "{label}: {s}");
                assert_eq!(s["faults"], 0, "{label}: {s}");
            }
        }
    }
}

/// A plugin that declares a 4 GiB `max_buffer` and asks for all of it
/// before it parses anything is held to the host's limit (a quarter of
/// its 64 MiB): the connection that would have kept gigabytes is detached
/// at 16 MiB, and says so, and the host, the other connections and the L4
/// counts go on.
#[test]
fn a_plugin_cannot_declare_its_way_past_the_buffer_limit() {
    use crate::support::segments::{Conversation, write_pcap};
    let mut greedy = postcard::from_bytes::<PluginInfo>(&info("greedy")).unwrap();
    greedy.max_buffer = u32::MAX;
    let greedy = postcard::to_allocvec(&greedy).unwrap();
    let wait = postcard::to_allocvec(&DataResult { status: Status::Ok, consumed: 0, needed: u32::MAX, events: vec![] })
        .unwrap();
    let extra = format!("(data (i32.const {ANSWER_AT}) \"{}\")", wat_bytes(&wait));
    let body = format!("(i64.or (i64.shl (i64.const {ANSWER_AT}) (i64.const 32)) (i64.const {}))", wait.len());
    let dir = support::scratch("greedy");
    std::fs::write(dir.join("greedy.wasm"), module_with("greedy", &greedy, 1, MATCH, &body, &extra)).unwrap();
    // 24 MiB from a client to port 6379, in MTU-sized segments.
    let mut c = Conversation::open(([10, 0, 0, 1].into(), 40_000), ([10, 0, 0, 2].into(), 6379), 1_700_000_000_000_000);
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..24 {
        c.send(true, &chunk);
    }
    let capture = dir.join("flood.pcap");
    write_pcap(&capture, &c.close());
    let run = replay(&capture, Some(&dir), &dir.join("status.json"));
    let status = run.status.iter().find(|s| s["name"] == "greedy").unwrap();
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("buffered over 16777216 bytes"), "{status}");
    assert!(run.stats.contains("1 flows") || run.stats.contains(" 1 flow"), "{}", run.stats);
}

/// LEB128, as postcard writes a `u32`.
const WAT_VARINT: &str = r#"(func $varint (param $p i32) (param $v i32) (result i32)
    (loop $l
      (if (i32.lt_u (local.get $v) (i32.const 128))
        (then (i32.store8 (local.get $p) (local.get $v)) (return (i32.add (local.get $p) (i32.const 1)))))
      (i32.store8 (local.get $p) (i32.or (i32.and (local.get $v) (i32.const 127)) (i32.const 128)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (local.set $v (i32.shr_u (local.get $v) (i32.const 7)))
      (br $l))
    (local.get $p))"#;

/// `memo`, a plugin no host code knows: it takes Redis's port (outranking
/// the redis plugin) and reports one `NOTE` record per data call, having
/// consumed all of it. It speaks ABI v1, the version before the host's, so
/// it also shows that v1 plugins keep loading and working. Its result is postcard written by hand: status Ok,
/// `consumed` (the input's length), then a fixed tail (needed 0 and one
/// record event).
fn memo_module() -> Vec<u8> {
    let mut info = postcard::from_bytes::<PluginInfo>(&info("memo")).unwrap();
    info.abbreviation = "MEMO".into();
    info.long_name = "Memo test protocol".into();
    info.color = "#8a2be2".into();
    let info = postcard::to_allocvec(&info).unwrap();
    let record = trawl_sdk::abi::Record {
        method: "NOTE".into(),
        summary: "memo".into(),
        request_size: 1,
        fields: [("memo_kind".to_string(), trawl_sdk::abi::Value::from("note"))].into(),
        ..Default::default()
    };
    let result = DataResult { status: Status::Ok, consumed: 0, needed: 0, events: vec![Event::Record(record)] };
    let encoded = postcard::to_allocvec(&result).unwrap();
    // Status Ok and consumed 0 are one byte each; the rest is the tail.
    let tail = &encoded[2..];
    let extra = format!("(data (i32.const 16384) \"{}\")\n  {WAT_VARINT}", wat_bytes(tail));
    let data_body = format!(
        "(local $end i32)
    (i32.store8 (i32.const 20000) (i32.const 0))
    (local.set $end (call $varint (i32.const 20001) (local.get 5)))
    (memory.copy (local.get $end) (i32.const 16384) (i32.const {len}))
    (local.set $end (i32.add (local.get $end) (i32.const {len})))
    (i64.or (i64.shl (i64.const 20000) (i64.const 32)) (i64.extend_i32_u (i32.sub (local.get $end) (i32.const 20000))))",
        len = tail.len()
    );
    module_with("memo", &info, 1, MATCH, &data_body, &extra)
}

/// A plugin's name is a KFL2 flag with no host change: `memo` loaded from
/// a `--plugins` directory, then filtered on by name (true on its records,
/// false on every other protocol's) and by one of its fields.
#[test]
fn a_plugin_from_a_directory_is_a_kfl2_flag_by_its_name() {
    let dir = support::scratch("memo-plugin");
    std::fs::write(dir.join("memo.wasm"), memo_module()).unwrap();
    let (_server, port) = support::serve_demo(&["--speed", "max", "--plugins", dir.to_str().unwrap()]);
    let edges = |filter: &str| -> Vec<Value> {
        let q = filter.replace(' ', "%20").replace('&', "%26").replace('"', "%22").replace('!', "%21");
        let start = std::time::Instant::now();
        loop {
            let map = support::get_json(port, &format!("/api/map?map=l7&group_by=pod&filter={q}"));
            let edges = map["edges"].as_array().cloned().unwrap_or_default();
            if !edges.is_empty() || start.elapsed() > std::time::Duration::from_secs(20) {
                return edges;
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    };
    let protocols = |edges: &[Value]| -> Vec<String> {
        let mut p: Vec<String> = edges.iter().filter_map(|e| e["protocol"].as_str().map(str::to_string)).collect();
        p.sort();
        p.dedup();
        p
    };
    let memo = edges("memo && memo_kind == \"note\" && dst.port == 6379");
    assert!(!memo.is_empty(), "memo's records should pass `memo && …`");
    assert_eq!(protocols(&memo), ["memo"]);
    assert!(memo.iter().all(|e| e["requests"].as_u64() > Some(0)), "{memo:?}");
    // False, not an error, on other protocols' records.
    let others = edges("!memo && (http || dns)");
    assert_eq!(protocols(&others), ["dns", "http"], "{others:?}");
    let plugins = support::get_json(port, "/api/plugins");
    let entry = plugins.as_array().unwrap().iter().find(|p| p["name"] == "memo").cloned().unwrap_or_default();
    assert_eq!((entry["state"].as_str(), entry["abbreviation"].as_str()), (Some("active"), Some("MEMO")), "{plugins}");
}

/// `curl -X POST` with an optional bearer token; the HTTP status.
fn post(port: u16, path: &str, token: Option<&str>) -> u16 {
    let mut c = std::process::Command::new("curl");
    c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"]);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = c.arg(format!("http://127.0.0.1:{port}{path}")).output().unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap()
}

/// A plugin quarantined for trapping comes back when an operator resets
/// it (admin token only): on probation, so its next trap sends it straight
/// back, which its status then says.
#[test]
fn an_operator_takes_a_quarantined_plugin_back() {
    let dir = support::scratch("reset");
    std::fs::write(dir.join("bad-trap.wasm"), module("bad-trap", 1, MATCH, "(unreachable)")).unwrap();
    let dir = dir.display().to_string();
    let (_serve, port) = support::serve_demo(&[
        "--speed",
        "max",
        "--loop",
        "--plugins",
        &dir,
        "--api-token",
        "reader",
        "--admin-token",
        "admin",
    ]);
    let plugin = || -> Value {
        let out = std::process::Command::new("curl")
            .args(["-sf", "-H", "Authorization: Bearer reader", &format!("http://127.0.0.1:{port}/api/plugins")])
            .output()
            .unwrap();
        let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        list.as_array().and_then(|l| l.iter().find(|p| p["name"] == "bad-trap").cloned()).unwrap_or(Value::Null)
    };
    support::wait_for("the plugin quarantined", || plugin()["state"] == "quarantined");
    let before = plugin();
    assert!(before["reason"].as_str().unwrap_or_default().contains("trying again in"), "{before}");
    assert_eq!(post(port, "/api/plugins/bad-trap/reset", None), 401);
    assert_eq!(post(port, "/api/plugins/bad-trap/reset", Some("reader")), 403);
    assert_eq!(post(port, "/api/plugins/no-such-plugin/reset", Some("admin")), 404);
    assert_eq!(post(port, "/api/plugins/bad-trap/reset", Some("admin")), 202);
    support::wait_for("the reset plugin to fault on probation", || {
        plugin()["reason"].as_str().is_some_and(|r| r.contains("probation"))
    });
    let after = plugin();
    assert!(after["faults"].as_u64() > before["faults"].as_u64(), "it ran again: {after}");
}

/// A module over the size limit is refused before it is read whole or
/// compiled, and says why; the run goes on without it.
#[test]
fn an_oversized_module_is_refused_unread() {
    let dir = support::scratch("oversized");
    let mut huge = b"\0asm\x01\0\0\0".to_vec();
    huge.resize(17 << 20, 0);
    std::fs::write(dir.join("huge.wasm"), &huge).unwrap();
    let capture = support::project_root().join("examples/demo/demo.pcap");
    let run = replay(&capture, Some(&dir), &dir.join("status.json"));
    let huge = run.status.iter().find(|s| s["name"] == "huge").unwrap_or_else(|| panic!("{:?}", run.status));
    assert_eq!(huge["state"], "rejected", "{huge}");
    assert!(huge["reason"].as_str().unwrap_or_default().contains("module limit"), "{huge}");
    assert!(!run.records.is_empty(), "the embedded plugins still ran");
}

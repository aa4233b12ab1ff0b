//! deploy/: the plain manifests and the Helm chart (rendered by Helm's own
//! engine through the PyPI package helm-python-sdk) validate against the
//! Kubernetes schemas (PyPI kubernetes-validate, strict), render the same
//! objects with least privilege, and carry a ConfigMap that trawl itself
//! loads: the hub started with it runs exactly the plugins and capture
//! filters it names. The Dockerfile builds with the README's steps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use serde_json::Value;
use std::process::{Command, Stdio};
use support::{Terminated, free_port, project_root};

use support::get_json as get;

#[test]
fn manifests_and_chart_validate_and_their_config_runs() {
    let py = support::python_with("helm_python, kubernetes_validate, yaml")
        .expect("helm-python-sdk and kubernetes-validate are missing: scripts/test.sh installs them");
    let out_dir = support::scratch("deploy");
    let out = Command::new(py)
        .arg(project_root().join("tests/deploy/validate.py"))
        .arg(project_root())
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "validate.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert!(problems.is_empty(), "deploy/ has problems:\n{}", serde_json::to_string_pretty(problems).unwrap());
    assert!(report["validated"].as_u64().unwrap() >= 20, "{report}");

    // The certificates the chart and deploy/hub-tls.sh make work: a hub
    // serves them, and a worker checking them against their CA, by the
    // name the worker DaemonSet dials, connects and is counted.
    let chart_tls = std::path::PathBuf::from(report["chart_tls"].as_str().unwrap());
    assert_hub_tls_works(&chart_tls, "chart");
    let script_tls = out_dir.join("script-tls");
    let made =
        Command::new("sh").arg(project_root().join("deploy/hub-tls.sh")).env("OUT", &script_tls).output().unwrap();
    assert!(made.status.success(), "hub-tls.sh: {}", String::from_utf8_lossy(&made.stderr));
    let secret = String::from_utf8_lossy(&made.stdout);
    assert!(secret.contains("name: trawl-hub-tls") && secret.contains("tls.key:"), "{secret}");
    assert_hub_tls_works(&script_tls, "hub-tls.sh");

    for (name, c) in report["configs"].as_object().unwrap() {
        let ui = free_port();
        let _hub = Terminated(
            support::trawl()
                .args(["hub", "--token", "t", "--workers", "127.0.0.1:0", "--listen", &format!("127.0.0.1:{ui}")])
                .arg("--config")
                .arg(c["path"].as_str().unwrap())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        support::wait_for("trawl hub", || std::net::TcpStream::connect(("127.0.0.1", ui)).is_ok());
        let mut plugins: Vec<String> = get(ui, "/api/plugins")
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no plugin list"))
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        let mut want: Vec<String> =
            c["config"]["plugins"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
        plugins.sort();
        want.sort();
        assert_eq!(plugins, want, "{name}: the hub runs other plugins than its ConfigMap names");

        let filters = get(ui, "/api/capture-filters");
        let cf = &c["config"]["capture_filters"];
        let regex = cf["pod_regex"].as_str().filter(|r| !r.is_empty());
        assert_eq!(filters["pod_regex"].as_str(), regex, "{name}: {filters}");
        assert_eq!(filters["namespaces"], cf["namespaces"], "{name}");
        assert_eq!(filters["exclude_namespaces"], cf["exclude_namespaces"], "{name}");
    }
}

/// A hub with `dir`'s `tls.crt`/`tls.key` takes a worker that trusts
/// `dir`'s `ca.crt` and dials `trawl-hub.trawl.svc`.
fn assert_hub_tls_works(dir: &std::path::Path, what: &str) {
    let (workers, ui) = (free_port(), free_port());
    let creds = dir.join("nodes");
    std::fs::write(&creds, "node-1 n0de-cred\n").unwrap();
    let _hub = Terminated(
        support::trawl()
            .args(["hub", "--workers", &format!("127.0.0.1:{workers}"), "--listen", &format!("127.0.0.1:{ui}")])
            .arg("--tls-cert")
            .arg(dir.join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.join("tls.key"))
            .arg("--node-credentials")
            .arg(&creds)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    support::wait_for("trawl hub", || std::net::TcpStream::connect(("127.0.0.1", ui)).is_ok());
    let out = support::trawl()
        .args(["worker", "--hub", &format!("127.0.0.1:{workers}"), "--node", "node-1", "--token", "n0de-cred"])
        .arg("--hub-ca")
        .arg(dir.join("ca.crt"))
        .args(["--hub-name", "trawl-hub.trawl.svc", "--speed", "max", "--replay"])
        .arg(project_root().join("examples/demo/demo.pcap"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{what}: a worker over TLS failed: {}", String::from_utf8_lossy(&out.stderr));
    support::wait_for(what, || get(ui, "/api/map?map=l4")["edges"].as_array().is_some_and(|e| !e.is_empty()));
}

/// The image is built the way the README tells a user to build.
#[test]
fn dockerfile_builds_with_the_readme_steps() {
    let dockerfile = std::fs::read_to_string(project_root().join("deploy/Dockerfile")).unwrap();
    let readme = std::fs::read_to_string(project_root().join("README.md")).unwrap();
    let steps = [
        "apt-get install -y --no-install-recommends clang libbpf-dev",
        "rustup target add wasm32-unknown-unknown",
        "cargo build --release --locked -p trawl-host --bin trawl",
    ];
    for step in steps {
        assert!(dockerfile.contains(step), "the Dockerfile lacks `{step}`");
        assert!(readme.contains(step), "the README lacks the Dockerfile's step `{step}`");
    }
    let toolchain = std::fs::read_to_string(project_root().join("rust-toolchain.toml")).unwrap();
    let channel = toolchain.lines().find_map(|l| l.strip_prefix("channel = ")).unwrap().trim_matches('"');
    assert!(dockerfile.contains(&format!("FROM rust:{channel}-")), "the build stage is not on the pinned {channel}");
}

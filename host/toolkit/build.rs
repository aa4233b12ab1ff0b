//! Bundles the SDK for `trawl plugin new`: its source, with a standalone
//! Cargo.toml, and the source of every crate it depends on (from the
//! workspace's Cargo.lock, found in Cargo's registry, which holds them
//! because this very build compiled them). A plugin crate then builds
//! offline, with nothing but a Rust toolchain.
//!
//! Bundle format: entries of (u32 LE path length, path, u32 LE length,
//! bytes). An entry `VENDORED` says the dependencies are inside.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Default)]
struct Package {
    name: String,
    version: String,
    checksum: Option<String>,
    deps: Vec<String>,
}

fn lock_packages(lock: &str) -> Vec<Package> {
    let mut out = Vec::new();
    let mut cur: Option<Package> = None;
    let mut in_deps = false;
    for line in lock.lines() {
        let line = line.trim();
        if line == "[[package]]" {
            out.extend(cur.take());
            cur = Some(Package::default());
            in_deps = false;
            continue;
        }
        let Some(p) = cur.as_mut() else { continue };
        let value = |l: &str| l.split_once('=').map(|(_, v)| v.trim().trim_matches('"').to_string());
        if in_deps {
            if line == "]" {
                in_deps = false;
            } else {
                p.deps.push(line.trim_end_matches(',').trim_matches('"').to_string());
            }
        } else if line.starts_with("name = ") {
            p.name = value(line).unwrap_or_default();
        } else if line.starts_with("version = ") {
            p.version = value(line).unwrap_or_default();
        } else if line.starts_with("checksum = ") {
            p.checksum = value(line);
        } else if line == "dependencies = [" {
            in_deps = true;
        }
    }
    out.extend(cur);
    out
}

/// The SDK's dependency closure: (name, version, checksum) of every
/// registry crate it needs.
fn closure(packages: &[Package]) -> Vec<&Package> {
    let find = |dep: &str| -> Option<&Package> {
        let (name, version) = dep.split_once(' ').map_or((dep, None), |(n, v)| (n, Some(v)));
        packages.iter().find(|p| p.name == name && version.is_none_or(|v| p.version == v))
    };
    let mut seen = BTreeSet::new();
    let mut todo = vec!["trawl-sdk".to_string()];
    let mut out = Vec::new();
    while let Some(dep) = todo.pop() {
        let Some(p) = find(&dep) else { continue };
        if !seen.insert((p.name.clone(), p.version.clone())) {
            continue;
        }
        todo.extend(p.deps.iter().cloned());
        if p.checksum.is_some() {
            out.push(p);
        }
    }
    out
}

fn registry_sources() -> Vec<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let Some(src) = home.map(|h| h.join("registry/src")) else { return Vec::new() };
    std::fs::read_dir(src).into_iter().flatten().flatten().map(|e| e.path()).collect()
}

fn add_tree(bundle: &mut Vec<u8>, root: &Path, dir: &Path, prefix: &str) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name == "target" || name == ".git" {
            continue;
        }
        if path.is_dir() {
            add_tree(bundle, root, &path, prefix);
        } else if let Ok(bytes) = std::fs::read(&path) {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            add(bundle, &format!("{prefix}{rel}"), &bytes);
        }
    }
}

fn add(bundle: &mut Vec<u8>, path: &str, bytes: &[u8]) {
    bundle.extend_from_slice(&(path.len() as u32).to_le_bytes());
    bundle.extend_from_slice(path.as_bytes());
    bundle.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    bundle.extend_from_slice(bytes);
}

/// The SDK's Cargo.toml with the workspace's inherited values written in.
fn standalone_manifest(sdk: &str, workspace: &str) -> String {
    let mut tables: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    let mut table = "";
    for line in workspace.lines() {
        if line.starts_with('[') {
            table = line.trim();
        } else if let Some((k, v)) = line.split_once(" = ") {
            tables.entry(table).or_default().insert(k.trim().to_string(), v.to_string());
        }
    }
    let mut out = String::new();
    let mut table = "";
    let mut skip_table = false;
    for line in sdk.lines() {
        if line.starts_with('[') {
            table = line.trim();
            skip_table = table == "[lints]";
            if skip_table {
                continue;
            }
        }
        if skip_table {
            continue;
        }
        let from = if table == "[package]" { "[workspace.package]" } else { "[workspace.dependencies]" };
        let inherited =
            |key: &str| tables.get(from).and_then(|t| t.get(key)).cloned().unwrap_or_else(|| "\"*\"".into());
        if let Some((key, _)) = line.split_once(".workspace = true") {
            let key = key.trim();
            out.push_str(&format!("{key} = {}\n", inherited(key)));
        } else if let Some((key, rest)) = line.split_once("= { workspace = true") {
            // `name = { workspace = true, optional = true }`: the workspace's
            // entry with these keys added.
            let key = key.trim();
            let value = inherited(key);
            let base = match value.trim().strip_prefix('{').and_then(|v| v.trim_end().strip_suffix('}')) {
                Some(table) => table.trim().to_string(),
                None => format!("version = {value}"),
            };
            out.push_str(&format!("{key} = {{ {base}{}\n", rest.trim_end()));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    let sdk = root.join("sdk");
    for p in [root.join("Cargo.lock"), root.join("Cargo.toml"), sdk.clone()] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let mut bundle = Vec::new();
    add_tree(&mut bundle, &sdk.join("src"), &sdk.join("src"), "sdk/src/");
    // Its manifest names the examples, and an author learns from them.
    add_tree(&mut bundle, &sdk.join("examples"), &sdk.join("examples"), "sdk/examples/");
    for doc in ["README.md", "ABI.md"] {
        if let Ok(bytes) = std::fs::read(sdk.join(doc)) {
            add(&mut bundle, &format!("sdk/{doc}"), &bytes);
        }
    }
    let sdk_toml = std::fs::read_to_string(sdk.join("Cargo.toml")).expect("sdk/Cargo.toml");
    let ws_toml = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    add(&mut bundle, "sdk/Cargo.toml", standalone_manifest(&sdk_toml, &ws_toml).as_bytes());

    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let packages = lock_packages(&lock);
    let registries = registry_sources();
    let mut vendored = true;
    for p in closure(&packages) {
        let dir_name = format!("{}-{}", p.name, p.version);
        let Some(dir) = registries.iter().map(|r| r.join(&dir_name)).find(|d| d.join("Cargo.toml").exists()) else {
            println!("cargo:warning=plugin kit: {dir_name} not in Cargo's registry; new plugins will fetch it");
            vendored = false;
            continue;
        };
        add_tree(&mut bundle, &dir, &dir, &format!("vendor/{dir_name}/"));
        let checksum = format!(r#"{{"files":{{}},"package":"{}"}}"#, p.checksum.as_deref().unwrap_or(""));
        add(&mut bundle, &format!("vendor/{dir_name}/.cargo-checksum.json"), checksum.as_bytes());
    }
    if vendored {
        add(&mut bundle, "VENDORED", b"");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("sdk-bundle.bin");
    std::fs::write(out, bundle).expect("cannot write the SDK bundle");
}

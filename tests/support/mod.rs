//! Shared helpers of the cross-crate tests: finding the capture corpus and
//! running the `trawl` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The test corpus (`TRAWL_CORPUS`, default `../shared/data` beside the
/// project root). `None` means "skip": the test prints why. Under `CI=true` a
/// missing corpus is a failure instead.
pub fn corpus() -> Option<PathBuf> {
    let dir = match std::env::var_os("TRAWL_CORPUS") {
        Some(d) => PathBuf::from(d),
        None => project_root().join("../shared/data"),
    };
    if dir.join("README.md").is_file() {
        return Some(dir);
    }
    let why = format!("capture corpus not found at {} (set TRAWL_CORPUS)", dir.display());
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}");
    }
    eprintln!("SKIP: {why}");
    None
}

pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every capture under `dir` (sorted), as paths.
pub fn captures(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("pcap" | "pcapng")) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn trawl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trawl"))
}

/// Runs `trawl` with `args` and returns its output.
pub fn run_trawl(args: &[&str]) -> Output {
    trawl().args(args).output().expect("cannot run trawl")
}

/// Parses JSON lines.
pub fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

//! `trawl plugin build [DIR]`: the plugin crate in DIR as a release wasm
//! module, then the checks the agent makes when it loads one (exports, ABI
//! version, size, compile and init within the sandbox's limits), and a
//! one-line reason when anything fails.

use crate::bundle;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use trawl_runtime::wasm::{SandboxLimits, WasmRuntime};
use trawl_runtime::{LoadError, LoadedPlugin, PluginSource};

pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// A module that built and passed the checks.
#[derive(Debug)]
pub struct Built {
    /// `DIR/NAME.wasm`, named after the plugin.
    pub path: PathBuf,
    pub plugin: LoadedPlugin,
    pub size: usize,
}

impl Built {
    /// What `trawl plugin build` prints.
    pub fn summary(&self) -> String {
        let info = &self.plugin.info;
        let ports = trawl_runtime::registry::port_list(info);
        format!(
            "built {}: {} {} (\"{}\", {}), plugin ABI v{}, {:.1} KiB, ports {}, sha256 {}",
            self.path.display(),
            info.name,
            info.version,
            info.long_name,
            info.color,
            self.plugin.abi,
            self.size as f64 / 1024.0,
            if ports.is_empty() { "none".into() } else { ports },
            &self.plugin.hash[..16],
        )
    }
}

/// Checks a module as the agent would load it; the error says what is
/// wrong in one line.
pub fn check_module(bytes: &[u8], name: &str) -> anyhow::Result<LoadedPlugin> {
    let runtime = WasmRuntime::new(SandboxLimits::default())?;
    check_with(&runtime, bytes, name)
}

pub(crate) fn check_with(runtime: &Arc<WasmRuntime>, bytes: &[u8], name: &str) -> anyhow::Result<LoadedPlugin> {
    runtime.load(bytes, PluginSource::Pushed(trawl_runtime::wasm::content_hash(bytes))).map_err(|e| {
        let hint = match &e {
            LoadError::MissingExport(_) => ": is `trawl_sdk::export_dissector!(YourType);` in src/lib.rs?",
            LoadError::AbiVersion { .. } => ": rebuild it against this trawl's SDK (`trawl plugin build`)",
            _ => "",
        };
        anyhow::anyhow!("{name}: {e}{hint}")
    })
}

/// Whether rustc has the wasm target's standard library.
fn has_wasm_target(dir: &Path) -> bool {
    let out =
        Command::new("rustc").args(["--print", "target-libdir", "--target", WASM_TARGET]).current_dir(dir).output();
    let Ok(out) = out else { return false };
    let libdir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    out.status.success() && std::fs::read_dir(libdir).is_ok_and(|mut d| d.next().is_some())
}

fn ensure_wasm_target(dir: &Path) -> anyhow::Result<()> {
    if has_wasm_target(dir) {
        return Ok(());
    }
    eprintln!("adding the {WASM_TARGET} target (rustup target add {WASM_TARGET})");
    let added = Command::new("rustup").args(["target", "add", WASM_TARGET]).current_dir(dir).status();
    match added {
        Ok(s) if s.success() && has_wasm_target(dir) => Ok(()),
        Ok(_) => bail!("cannot add the {WASM_TARGET} target: `rustup target add {WASM_TARGET}` failed"),
        Err(_) => bail!("the {WASM_TARGET} target is missing and there is no rustup to add it"),
    }
}

/// Builds the plugin crate in `dir` and checks the module.
pub fn build(dir: &Path) -> anyhow::Result<Built> {
    let manifest = dir.join("Cargo.toml");
    let toml = std::fs::read_to_string(&manifest)
        .with_context(|| format!("no plugin crate in {}: run `trawl plugin new NAME` first", dir.display()))?;
    if toml.contains(&format!("{}/sdk", bundle::DIR)) && bundle::ensure(dir)? {
        eprintln!("wrote the trawl SDK into {}", dir.join(bundle::DIR).display());
    }
    ensure_wasm_target(dir)?;
    let mut child = Command::new("cargo")
        .args(["build", "--release", "--target", WASM_TARGET, "--message-format=json-render-diagnostics"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot run cargo")?;
    let stdout = child.stdout.take().context("no cargo output")?;
    let manifest_abs = std::fs::canonicalize(&manifest).unwrap_or(manifest);
    let mut wasm = None;
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        let ours = msg["manifest_path"].as_str().is_some_and(|p| Path::new(p) == manifest_abs);
        if msg["reason"] == "compiler-artifact" && ours {
            let mut files = msg["filenames"].as_array().into_iter().flatten().filter_map(|f| f.as_str());
            if let Some(f) = files.rfind(|f| f.ends_with(".wasm")) {
                wasm = Some(PathBuf::from(f));
            }
        }
    }
    let status = child.wait().context("cargo did not finish")?;
    if !status.success() {
        bail!("cargo build failed (its errors are above)");
    }
    let wasm = wasm.context("cargo built no .wasm: is `crate-type = [\"cdylib\", …]` in Cargo.toml's [lib]?")?;
    let bytes = std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let file_name = wasm.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let plugin = check_module(&bytes, &file_name)?;
    let path = dir.join(format!("{}.wasm", plugin.info.name));
    std::fs::write(&path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Built { path, plugin, size: bytes.len() })
}

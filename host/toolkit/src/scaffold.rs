//! `trawl plugin new NAME [DIR]`: a complete plugin crate that builds
//! offline: Cargo.toml, `.cargo/config.toml` (wasm32, and the SDK's
//! dependencies from `.trawl/vendor`), a working dissector with tests, a
//! README with the next commands, and the SDK itself in `.trawl/`.

use crate::bundle;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

const LIB_TEMPLATE: &str = include_str!("template/lib.rs.txt");

/// A plugin name: what the map's legend and KFL2 call the protocol.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok_start = name.starts_with(|c: char| c.is_ascii_lowercase());
    let ok_rest = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok_start || !ok_rest || name.len() > 32 {
        bail!("bad plugin name {name:?}: use 1–32 lowercase letters, digits, '-' or '_', starting with a letter");
    }
    Ok(())
}

/// `line-proto` → `LineProto`.
fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

fn cargo_toml(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the wasm module trawl loads; rlib: native tests, benches, fuzzing.
crate-type = ["cdylib", "rlib"]

[dependencies]
# Written out by `trawl plugin new` and refreshed by `trawl plugin build`.
trawl-sdk = {{ path = "{dir}/sdk" }}

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"
strip = "debuginfo"

# A crate of its own, even inside another workspace.
[workspace]
"#,
        dir = bundle::DIR
    )
}

fn cargo_config() -> String {
    let mut c = String::from(
        "# `cargo build` makes the wasm module. Native tests: `cargo test --target \"$(rustc -vV | sed -n 's/^host: //p')\"`.\n[build]\ntarget = \"wasm32-unknown-unknown\"\n",
    );
    if bundle::vendored() {
        c.push_str(&format!(
            "\n# The SDK's dependencies come with trawl: no network needed.\n[source.crates-io]\nreplace-with = \"trawl-vendored\"\n\n[source.trawl-vendored]\ndirectory = \"{}/vendor\"\n",
            bundle::DIR
        ));
    }
    c
}

fn readme(name: &str, port: u16) -> String {
    format!(
        r#"# {name}: a trawl dissector plugin

`src/lib.rs` is a working dissector for a simple line protocol on TCP port
{port}. Make it parse yours, then:

```sh
trawl plugin build                          # → {name}.wasm, checked like the agent checks it
trawl plugin test {name}.wasm capture.pcap  # records and a conformance report
curl -X PUT -H "Authorization: Bearer $TOKEN" --data-binary @{name}.wasm \
     http://HUB:8899/api/plugins/{name}       # every worker of a cluster, in a second
```

`trawl plugin test … --bless --expect golden.jsonl` writes golden records;
`--expect golden.jsonl` alone checks against them (a plugin's CI).

Native unit tests: `cargo test --target "$(rustc -vV | sed -n 's/^host: //p')"`.

`.trawl/` holds the trawl SDK and its dependencies; `trawl plugin build`
writes it again when missing, so it need not be committed.
"#
    )
}

/// Writes a new plugin crate named `name` into `dir` (default `./NAME`),
/// which must not exist or be empty. Returns the directory.
pub fn new_plugin(name: &str, dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        bail!("{} exists and is not empty", dir.display());
    }
    let port = 7000 + (name.bytes().map(u16::from).sum::<u16>() % 1000);
    let field = name.replace('-', "_");
    let lib = LIB_TEMPLATE
        .replace("{{NAME}}", name)
        .replace("{{TYPE}}", &type_name(name))
        .replace("{{FIELD}}", &field)
        .replace("{{PORT}}", &port.to_string());
    let files = [
        ("Cargo.toml", cargo_toml(name)),
        (".cargo/config.toml", cargo_config()),
        ("src/lib.rs", lib),
        ("README.md", readme(name, port)),
        (".gitignore", format!("/target\n/{}\n/*.wasm\n", bundle::DIR)),
    ];
    for (path, text) in files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&target, text).with_context(|| format!("cannot write {}", target.display()))?;
    }
    bundle::ensure(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_are_checked_and_typed() {
        assert!(check_name("line-proto").is_ok());
        assert!(check_name("LineProto").is_err() && check_name("1x").is_err() && check_name("a b").is_err());
        assert_eq!(type_name("line-proto_v2"), "LineProtoV2");
    }

    #[test]
    fn a_new_crate_has_everything_and_refuses_a_full_directory() {
        let dir = std::env::temp_dir().join(format!("trawl-scaffold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        new_plugin("line-proto", Some(&dir)).unwrap();
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct LineProto;") && !lib.contains("{{"), "{lib}");
        assert!(dir.join(".trawl/sdk/src/lib.rs").exists() && dir.join(".trawl/STAMP").exists());
        assert!(new_plugin("line-proto", Some(&dir)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

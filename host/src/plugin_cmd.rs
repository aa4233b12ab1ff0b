//! `trawl plugin new|build|test|keygen|sign`: the plugin author's commands.

use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use trawl_host::plugins::signature::SigningKey;
use trawl_toolkit::{builder, conformance, scaffold};

#[derive(Debug, Subcommand)]
pub(crate) enum PluginCommand {
    /// Write a new plugin crate: a working dissector for a line protocol,
    /// its tests, and the SDK alongside (it builds offline).
    New {
        /// The protocol's name, as the map's legend and KFL2 will call it.
        name: String,
        /// Where (default: ./NAME).
        dir: Option<PathBuf>,
    },
    /// Build the plugin crate in DIR as a release wasm module (adding the
    /// wasm target if missing) and check it as the agent would load it.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run a plugin alone in the agent's sandbox over captures: its records
    /// on stdout, a conformance report on stderr. Fails on a fault, a
    /// difference from --expect, or amplification over 2.
    Test {
        plugin: PathBuf,
        #[arg(required = true)]
        captures: Vec<PathBuf>,
        /// Golden records (JSON lines) to compare with.
        #[arg(long, value_name = "GOLDEN.jsonl")]
        expect: Option<PathBuf>,
        /// Write the records to the --expect file instead of comparing.
        #[arg(long, requires = "expect")]
        bless: bool,
    },
    /// Make an Ed25519 key pair for signing plugins: PRIVATE.pem, and its
    /// public half (for `trawl hub --plugin-key`) as PRIVATE.pub.pem.
    Keygen {
        #[arg(value_name = "PRIVATE.pem")]
        key: PathBuf,
    },
    /// Sign a module: writes the detached signature as MODULE.wasm.sig.
    Sign {
        #[arg(long, value_name = "PRIVATE.pem")]
        key: PathBuf,
        module: PathBuf,
    },
}

pub(crate) fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::New { name, dir } => {
            let dir = scaffold::new_plugin(&name, dir.as_deref())?;
            println!("created the plugin crate {} in {}", name, dir.display());
            println!(
                "next:\n  cd {}\n  trawl plugin build\n  trawl plugin test {name}.wasm CAPTURE.pcap",
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Build { dir } => {
            let built = builder::build(&dir)?;
            println!("{}", built.summary());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Test { plugin, captures, expect, bless } => {
            let opts = conformance::TestOptions { plugin, captures, expect, bless };
            let stdout = std::io::stdout();
            let report = conformance::run(&opts, &mut stdout.lock())?;
            eprintln!("{report}");
            Ok(if report.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        PluginCommand::Keygen { key } => {
            if key.exists() {
                anyhow::bail!("{} exists; not overwriting a key", key.display());
            }
            let pem = SigningKey::generate()?;
            let public = SigningKey::parse(&pem)?.public_key();
            write_private(&key, &pem)?;
            let public_path = key.with_extension("pub.pem");
            std::fs::write(&public_path, public.to_pem())
                .with_context(|| format!("cannot write {}", public_path.display()))?;
            println!("private key {} (keep it secret), public key {}", key.display(), public_path.display());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Sign { key, module } => {
            let pem = std::fs::read_to_string(&key).with_context(|| format!("cannot read {}", key.display()))?;
            let bytes = std::fs::read(&module).with_context(|| format!("cannot read {}", module.display()))?;
            let signature = SigningKey::parse(&pem)?.sign(&bytes);
            let mut sig_path = module.clone().into_os_string();
            sig_path.push(".sig");
            std::fs::write(&sig_path, format!("{signature}\n")).context("cannot write the signature")?;
            println!("signed {}: {}", module.display(), PathBuf::from(sig_path).display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes a private key readable by its owner only.
fn write_private(path: &std::path::Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(pem.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

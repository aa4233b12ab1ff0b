//! Builds the eBPF programs in `src/bpf/` with clang: the L4 flow counters
//! and, as a separate object so that a failure there never costs the
//! counters, the TLS plaintext probes. Without clang the crate still
//! builds (so `cargo run -- demo` works on a bare machine) and says at run
//! time that live counting needs clang at build time.

use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: [&str; 2] = ["flows", "tls"];

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-env-changed=TRAWL_CLANG");
    println!("cargo:rustc-check-cfg=cfg(trawl_ebpf_built)");
    let clang = std::env::var("TRAWL_CLANG").unwrap_or_else(|_| "clang".into());
    // The multiarch include dir holds asm/types.h for linux/bpf.h; the
    // PT_REGS macros of bpf_tracing.h need the target's register names.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("/usr/include/{}-linux-gnu", if arch == "x86_64" { "x86_64" } else { &arch });
    let target_arch = match arch.as_str() {
        "aarch64" => "-D__TARGET_ARCH_arm64",
        _ => "-D__TARGET_ARCH_x86",
    };
    let mut built = true;
    for name in PROGRAMS {
        let src = format!("src/bpf/{name}.bpf.c");
        println!("cargo:rerun-if-changed={src}");
        let object = out.join(format!("{name}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf", target_arch, "-I", &multiarch, "-c", &src, "-o"])
            .arg(&object)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("{clang} failed to build {src} ({s}); fix the program or unset TRAWL_CLANG"),
            Err(e) => {
                println!(
                    "cargo:warning=eBPF programs not built ({clang}: {e}); live L4 counting and TLS capture need `apt-get install clang libbpf-dev` and a rebuild"
                );
                built = false;
                std::fs::write(&object, b"").expect("OUT_DIR is writable");
            }
        }
    }
    if built {
        println!("cargo:rustc-cfg=trawl_ebpf_built");
    }
}

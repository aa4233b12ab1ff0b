//! Builds the eBPF programs in `src/bpf/` with clang. Without clang the
//! crate still builds (so `cargo run -- demo` works on a bare machine) and
//! says at run time that live counting needs clang at build time.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let src = "src/bpf/flows.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=TRAWL_CLANG");
    println!("cargo:rustc-check-cfg=cfg(trawl_ebpf_built)");
    let clang = std::env::var("TRAWL_CLANG").unwrap_or_else(|_| "clang".into());
    let object = out.join("flows.bpf.o");
    // The multiarch include dir holds asm/types.h for linux/bpf.h.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("/usr/include/{}-linux-gnu", if arch == "x86_64" { "x86_64" } else { &arch });
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-I", &multiarch, "-c", src, "-o"])
        .arg(&object)
        .status();
    match status {
        Ok(s) if s.success() => println!("cargo:rustc-cfg=trawl_ebpf_built"),
        Ok(s) => panic!("{clang} failed to build {src} ({s}); fix the program or unset TRAWL_CLANG"),
        Err(e) => {
            println!(
                "cargo:warning=eBPF programs not built ({clang}: {e}); live L4 counting needs `apt-get install clang libbpf-dev` and a rebuild"
            );
            std::fs::write(&object, b"").expect("OUT_DIR is writable");
        }
    }
}

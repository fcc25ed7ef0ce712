//! Compiles the workload programs the reference runs in containers — `probe` and `pause`,
//! standard-library-only sources under `conformance/probe/` — into static binaries, so the
//! `shipshape` binary can carry them and build its images offline (see `src/images.rs`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    for program in ["probe", "pause"] {
        let src = manifest
            .join("../conformance/probe")
            .join(format!("{program}.rs"));
        println!("cargo::rerun-if-changed={}", src.display());
        let status = Command::new(&rustc)
            .args([
                "--edition",
                "2024",
                "-C",
                "opt-level=2",
                "-C",
                "strip=symbols",
            ])
            .args(["-C", "target-feature=+crt-static", "--crate-name", program])
            .arg(&src)
            .arg("-o")
            .arg(out.join(program))
            .status()
            .expect("rustc runs");
        assert!(status.success(), "failed to compile {}", src.display());
    }
}

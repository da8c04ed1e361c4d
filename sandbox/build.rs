//! Builds the LD_PRELOAD recorder (`sandbox/preload`, its own workspace because it needs
//! `panic = "abort"`) so that `sandbox::trace::fast_path` can embed it: one `vt` binary,
//! nothing to install next to it.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let preload = manifest_dir.join("preload");
    for watched in [
        "preload/src",
        "preload/Cargo.toml",
        "preload/Cargo.lock",
        "preload-abi/src",
    ] {
        println!(
            "cargo::rerun-if-changed={}",
            manifest_dir.join(watched).display()
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = out_dir.join("preload-target");
    let status = Command::new(cargo)
        .args(["build", "--release", "--locked", "--manifest-path"])
        .arg(preload.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // The outer build's flags (coverage, sanitizers, `-D warnings` from clippy) are for
        // the outer crates; the recorder has its own profile.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .status()
        .expect("cannot run cargo to build sandbox/preload");
    assert!(
        status.success(),
        "building sandbox/preload failed: {status}"
    );
    let built = target_dir.join("release").join("libvt_preload.so");
    let bytes =
        std::fs::read(&built).unwrap_or_else(|e| panic!("cannot read {}: {e}", built.display()));
    std::fs::write(out_dir.join("libvt_preload.so"), &bytes)
        .unwrap_or_else(|e| panic!("cannot write the recorder into {}: {e}", out_dir.display()));
    // Names vt's reusable copy of the library (`trace::library_file`): a new build gets a
    // new file, never an old one of the same name. FNV-1a: a name, not a security check
    // (vt compares the bytes before each use).
    let digest = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    println!("cargo::rustc-env=VT_PRELOAD_DIGEST={digest:016x}");
}

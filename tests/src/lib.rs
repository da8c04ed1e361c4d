//! Helpers shared by vt's end-to-end suites (see `tests/tests/`).

pub mod oracle;

use std::path::PathBuf;

/// The `vt` binary under test: `$VT` if set, else the one next to this test's target dir.
pub fn vt_binary() -> PathBuf {
    if let Some(explicit) = std::env::var_os("VT") {
        return PathBuf::from(explicit);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/<test> → target/debug/vt
    let candidate = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("vt"));
    match candidate {
        Some(path) if path.exists() => path,
        _ => panic!(
            "the vt binary is not built next to {}: run `cargo build -p vt-executor` first, or set VT=/path/to/vt",
            exe.display()
        ),
    }
}

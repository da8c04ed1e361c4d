//! Two things about how RocksDB's C++ is linked into vt.
//!
//! **libstdc++, statically**, into everything that links RocksDB (vt, the test binaries,
//! the examples).
//!
//! RocksDB is C++; librocksdb-sys asks for `-lstdc++`, which the linker resolves to
//! `libstdc++.so.6`. Loading that library costs every vt process ~0.6 ms before `main`
//! (its own relocations and the lookup of every C++ symbol vt imports from it; measured
//! with `bench/fixed_cost.py`: `vt --version` 3.3 → 2.7 ms), and it ties the prebuilt
//! binary to a libstdc++ at least as new as the build machine's (`GLIBCXX_3.4.30`).
//! Linked statically, only the parts RocksDB uses come along, resolved at link time.
//!
//! How: a directory holding only `libstdc++.a` (a link to the compiler's own) goes on the
//! library search path. The linker looks for `-lstdc++` in each directory in turn, the
//! shared library first, and this directory comes before the compiler's, so it finds the
//! archive. Cargo passes a build script's search paths on to the link of every crate that
//! depends on this one. Where the compiler has no `libstdc++.a`, the link stays dynamic.
//!
//! **RocksDB's static constructors, deferred** to the first open of the store, in this
//! crate's own binaries (vt, its tests and examples): a linker script moves them out of
//! `.init_array` (see `src/cache/rocksdb_init.rs`, which runs them).
//!
//! **vt itself, as a position-dependent executable** (`-no-pie`). A PIE is relocated by the
//! loader at every start: ~29 500 relative relocations here, which write into (and so copy)
//! ~95 pages of pointers to vt's own code and constants. That was ~0.3 ms of every vt
//! process (`vt --version` 1.69 → 1.42 ms, measured side by side; a packed `DT_RELR`
//! table made no difference, as the pages are still written). The cost is ASLR for vt's
//! own image (its libraries, heap, stacks and mappings are still randomized); Go's
//! linux/amd64 executables, turbo's and esbuild's among them, are linked the same way.
//! Only the `vt` binary on glibc: tests and examples keep the default.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Inserted into the linker's default layout (GNU ld and lld both take `INSERT`): the
/// `.init_array` entries of librocksdb-sys's objects (members of its rlib, where rustc
/// bundles `librocksdb.a`), in the order the loader would run them (by priority, then in
/// link order), go to a section of their own instead; `KEEP` because nothing refers to
/// them by name. After `.data`, among the writable sections: next to `.init_array` it
/// would split the read-only-after-relocation run (lld refuses that), as the marker that
/// `rocksdb_init.rs` adds makes it a plain data section.
const DEFER_ROCKSDB_INIT: &str = "\
SECTIONS
{
  vt_rocksdb_init : {
    KEEP(*librocksdb_sys-*.rlib:*(SORT_BY_INIT_PRIORITY(.init_array.*)))
    KEEP(*librocksdb_sys-*.rlib:*(.init_array))
    KEEP(*(vt_rocksdb_init))
  }
}
INSERT AFTER .data;
";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=VT_DYNAMIC_LIBSTDCXX");
    // Only on Linux: elsewhere librocksdb-sys links libc++ or MSVC's runtime, left as they
    // are, and the loader is not glibc's.
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let Some(out) = std::env::var_os("OUT_DIR")
        .filter(|_| linux)
        .map(PathBuf::from)
    else {
        return;
    };
    defer_rocksdb_init(&out);
    // glibc only: musl targets link static-pie executables, which this would contradict.
    if std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "gnu") {
        println!("cargo:rustc-link-arg-bin=vt=-no-pie");
    }
    // VT_DYNAMIC_LIBSTDCXX=1 keeps the shared library.
    if std::env::var_os("VT_DYNAMIC_LIBSTDCXX").is_none() {
        link_libstdcxx_statically(&out);
    }
}

fn defer_rocksdb_init(out: &Path) {
    let script = out.join("defer-rocksdb-init.ld");
    if let Err(e) = std::fs::write(&script, DEFER_ROCKSDB_INIT) {
        println!(
            "cargo:warning=cannot write {}: {e}; RocksDB's constructors run at every start",
            script.display()
        );
        return;
    }
    println!("cargo:rustc-link-arg=-Wl,-T,{}", script.display());
}

fn link_libstdcxx_statically(out: &Path) {
    let Some(archive) = static_libstdcxx() else {
        println!(
            "cargo:warning=no libstdc++.a next to the C++ compiler: vt links libstdc++ \
             dynamically (install the compiler's static C++ library, e.g. Debian's \
             libstdc++-12-dev, for a binary that starts faster and runs on older systems)"
        );
        return;
    };
    let dir = out.join("static-libstdcxx");
    let link = dir.join("libstdc++.a");
    // Made anew: whatever else a directory on the linker's path holds is linked too (a
    // stale `libgcc_s.so` left there by an experiment linked gcc's unwinder statically into
    // builds that no longer asked for it).
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) =
        std::fs::create_dir_all(&dir).and_then(|()| std::os::unix::fs::symlink(&archive, &link))
    {
        println!(
            "cargo:warning=cannot link {} into {}: {e}; libstdc++ stays dynamic",
            archive.display(),
            dir.display()
        );
        return;
    }
    println!("cargo:rerun-if-changed={}", archive.display());
    println!("cargo:rustc-link-search=native={}", dir.display());
}

/// The C++ compiler's `libstdc++.a`, as `c++ -print-file-name` names it (it echoes the bare
/// name back when it has none).
fn static_libstdcxx() -> Option<PathBuf> {
    let compiler = cc::Build::new()
        .cpp(true)
        .cargo_metadata(false)
        .try_get_compiler()
        .ok()?;
    let output = Command::new(compiler.path())
        .arg("-print-file-name=libstdc++.a")
        .output()
        .ok()?;
    let printed = String::from_utf8(output.stdout).ok()?;
    let path = Path::new(printed.trim());
    (output.status.success() && path.is_absolute() && path.is_file())
        .then(|| path.canonicalize().ok())
        .flatten()
}

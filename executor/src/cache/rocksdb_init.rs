//! RocksDB's C++ static initialisers, run when a process first opens the store instead of
//! before `main` in every vt.
//!
//! RocksDB builds its option tables (hash maps of `std::string` to type info), registries
//! and constant strings in ~150 static constructors, which the loader runs before `main`:
//! ~0.6 ms of every vt process, most of `vt --version` after the loader, and a cost that
//! `vt exec --no-cache`, `vt trace`, `vt run --no-cache` and `vt run --dry-run` pay for a
//! database they never open.
//!
//! The link moves them: `build.rs` gives the linker a script (inserted into its default
//! layout) that puts the `.init_array` entries of librocksdb-sys's objects into a section
//! of their own, `vt_rocksdb_init`, which the loader does not know about. [`ensure`] runs
//! them, in their link order, once per process, before the first RocksDB call: every
//! call goes through [`super::store`], whose entry points (the opens, and the column-family
//! helpers) call it first. A binary linked without the script (another crate's tests, a
//! system RocksDB) has only [`MARKER`] in the section and ran the constructors at start:
//! [`ensure`] then calls nothing.

use std::sync::Once;

/// One entry of the section: a constructor, or the null marker.
type Constructor = Option<unsafe extern "C" fn()>;

/// Makes the section exist in every binary that links this crate, so the linker defines
/// its bounds; null, so [`ensure`] skips it.
#[used]
#[unsafe(link_section = "vt_rocksdb_init")]
static MARKER: Constructor = None;

unsafe extern "C" {
    // The linker's bounds of the `vt_rocksdb_init` section (defined for any section whose
    // name is a C identifier).
    static __start_vt_rocksdb_init: Constructor;
    static __stop_vt_rocksdb_init: Constructor;
}

/// The constructors the link deferred, in order (the marker left out).
fn deferred() -> Vec<unsafe extern "C" fn()> {
    // The marker is read so that no linker drops its section (and with it the bounds).
    // SAFETY: a plain read of a static.
    let _ = unsafe { std::ptr::read_volatile(&raw const MARKER) };
    let start = (&raw const __start_vt_rocksdb_init).cast::<Constructor>();
    let stop = (&raw const __stop_vt_rocksdb_init).cast::<Constructor>();
    let count = (stop as usize - start as usize) / std::mem::size_of::<Constructor>();
    (0..count)
        // SAFETY: the section is an array of pointer-sized entries between its bounds: the
        // marker and `.init_array` entries, which are function pointers or null.
        .filter_map(|i| unsafe { start.add(i).read() })
        .collect()
}

/// Runs RocksDB's deferred static constructors unless this process already has: call it
/// before anything of RocksDB's.
pub fn ensure() {
    static DONE: Once = Once::new();
    DONE.call_once(|| {
        let _timing = sandbox::timings::phase("rocksdb static initialisers");
        for constructor in deferred() {
            // SAFETY: these are the constructors the loader would have run before `main`,
            // in the same order, each exactly once (the `Once`); none of RocksDB's code
            // has run yet, as every use goes through the store, which calls this first.
            unsafe { constructor() };
        }
    });
}

/// Starts [`ensure`] on a thread of its own, for a process that will open the store: the
/// constructors (~1 ms, mostly page faults in RocksDB's code) then overlap whatever the
/// process does before its first open, which waits for them if they are still running.
pub fn start_in_background() {
    if deferred().is_empty() {
        return;
    }
    // A thread that cannot start leaves the work to the first open.
    // Started before vt's signal thread: it must not take a stop signal meant for it.
    let _ = sandbox::spawn_without_signals("vt-rocksdb-init", ensure);
}

/// How many constructors the link deferred (0 where it did not).
pub fn deferred_count() -> usize {
    deferred().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This crate's own binaries (vt, these tests) link with the script: if the
    /// linker stopped honouring it, RocksDB's constructors would quietly be back at every
    /// start. (A wrong section would show up as a crash at the first open, which every
    /// cache test makes.)
    #[test]
    fn the_link_defers_rocksdbs_constructors() {
        assert!(
            deferred_count() > 50,
            "only {} RocksDB constructors deferred: is build.rs's linker script applied?",
            deferred_count()
        );
    }

    #[test]
    fn the_store_works_after_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _) = super::super::store::Store::open(dir.path().join("db")).expect("open");
        drop(store);
    }
}

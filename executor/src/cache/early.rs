//! The cache opened while the workspace is read.
//!
//! A run's cache is opened after its workspace is read, and both take milliseconds: a fully
//! cached run of 100 packages read its workspace for 3.3 ms, then opened the cache for
//! 3.7–5.5 ms (RocksDB's read-only open replays its log and opens a table per column
//! family; the deferred file is read), on the main thread, one after the other. The cache's
//! directory follows from the workspace's root alone, which is found before the packages
//! are read: `vt run` and `vt exec` start the open then ([`start`]), on a thread of its own,
//! and take it where they would have opened it ([`take`]).
//!
//! Only an open that changes nothing is made ahead: read-only, of a cache that exists
//! ([`Cache::open_existing_read_only`]). Creating, repairing or wiping a cache, and the
//! read-write open a cache needs when its log or deferred file has grown, stay where they
//! were, so an error in the workspace never leaves a cache half made. The early open's
//! directory lock is let go before [`take`] returns without it: the later open of the same
//! directory in this process would wait for it forever.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, sync_channel};

use super::Cache;

/// The open under way: its directory, and where its result comes.
static STARTED: Mutex<Option<(PathBuf, Receiver<Option<Cache>>)>> = Mutex::new(None);

/// Starts opening the cache at `dir` (for the workspace at `root`) on another thread, if it
/// exists; once per process.
pub fn start(dir: PathBuf, root: &Path) {
    if !dir.join("CURRENT").is_file() {
        return;
    }
    let Ok(mut started) = STARTED.lock() else {
        return;
    };
    if started.is_some() {
        return;
    }
    let (send, receive) = sync_channel(1);
    let root = root.to_path_buf();
    let opening = dir.clone();
    let spawned = std::thread::Builder::new()
        .name("vt-cache-open".into())
        .spawn(move || {
            let cache = sandbox::timings::time("cache open: ahead, on its own thread", || {
                Cache::open_existing_read_only(&opening, &root)
            });
            let _ = send.send(cache);
        });
    if spawned.is_ok() {
        *started = Some((dir, receive));
    }
}

/// The cache [`start`] opened at `dir`, once it is open; `None` if none was started there or
/// it could not be opened read-only (the caller opens it as before).
pub fn take(dir: &Path) -> Option<Cache> {
    let (opened_at, receive) = STARTED.lock().ok()?.take()?;
    // Waited for even when it is for another directory: its lock must be gone first.
    let cache = receive.recv().ok()??;
    (opened_at == dir).then_some(cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test: [`STARTED`] is the process's.
    #[test]
    fn an_existing_cache_is_opened_ahead_read_only_and_taken_only_for_its_directory() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("cache");
        // No cache yet: nothing is started, nothing is made.
        start(dir.clone(), temp.path());
        assert!(!dir.exists(), "the early open made the cache directory");
        assert!(take(&dir).is_none());
        assert!(Cache::open_existing_read_only(&dir, temp.path()).is_none());

        drop(Cache::open(&dir, temp.path()).expect("made"));
        start(dir.clone(), temp.path());
        let cache = take(&dir).expect("opened ahead");
        assert!(!cache.store().expect("lease").writable(), "read-only");
        // A write still works: the lease reopens it read-write.
        assert!(cache.store_to_write().expect("write lease").writable());
        drop(cache);

        // Taken for another directory: dropped (its lock with it), and the caller opens.
        start(dir.clone(), temp.path());
        assert!(take(&temp.path().join("elsewhere")).is_none());
        drop(Cache::open(&dir, temp.path()).expect("not locked by the early open"));
        // Taken once.
        assert!(take(&dir).is_none());
    }
}

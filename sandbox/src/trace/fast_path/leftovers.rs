//! The buffer directories a vt left behind when it was killed, removed by the next vt.
//!
//! Each traced task's processes write their records into files of a directory vt makes in
//! `/dev/shm` (`vt-preload-…`) and removes when the task is done. A vt killed outright
//! (`SIGKILL`, the OOM killer, a CI job's timeout) removes nothing: its directory stays, and
//! on `/dev/shm` that is memory, until the machine restarts. A build's buffers are a few MiB
//! (the 200-file C build's 600 buffers: ~17 MiB), so a runner that kills vt now and then
//! slowly fills `/dev/shm`, and with it its memory.
//!
//! So a vt holds an exclusive `flock` on each buffer directory it uses, for as long as it
//! uses it; the lock goes when its process does, however it ends. Once per process, vt
//! removes every `vt-preload-…` directory of its user in the same place whose lock it can
//! take: nobody uses those. A directory is only used by the vt that locked it: one that
//! finds its new directory locked, gone, or no longer the one at its path once locked (a
//! sweep — another vt's, or its own on another thread — took it between its creation and
//! the lock) makes another.

use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;

use nix::fcntl::{Flock, FlockArg};

/// The name every buffer directory starts with: what a sweep looks at.
const PREFIX: &str = "vt-preload-";

/// How recently changed a directory is left alone by a sweep (its owner may be about to
/// lock it); far more than the microseconds between a directory's creation and its lock,
/// and than the file system's coarse clock.
const FRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// A fresh buffer directory, locked until dropped (then removed).
pub(super) struct LockedDir {
    // Removed before the lock goes: no sweep can see it unlocked while it is still there.
    dir: tempfile::TempDir,
    /// `None` on a file system without `flock` (where no sweep can take it either).
    _lock: Option<Flock<File>>,
}

impl LockedDir {
    /// Makes and locks a directory in `parent`.
    pub(super) fn new(parent: &Path) -> Result<LockedDir, String> {
        let mut last = None;
        // A sweep (another vt's, or this one's on another thread) can take a directory
        // only in the moment between its creation and its lock; three tries in a row
        // losing that race is a broken lock.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix(PREFIX)
                .tempdir_in(parent)
                .map_err(|e| format!("cannot create a directory in {}: {e}", parent.display()))?;
            match lock(dir.path()) {
                Ok(lock) => {
                    return Ok(LockedDir {
                        dir,
                        _lock: Some(lock),
                    });
                }
                // Taken by a sweep: being removed, or removed already.
                Err(Refused::Swept(e)) => last = Some(e),
                // No locks here (some network file systems): used as before, unlocked.
                Err(Refused::NoLocks) => return Ok(LockedDir { dir, _lock: None }),
                Err(Refused::Other(e)) => {
                    return Err(format!("cannot lock {}: {e}", dir.path().display()));
                }
            }
        }
        Err(format!(
            "cannot lock a buffer directory in {}: {}",
            parent.display(),
            last.map_or_else(|| "no attempt".into(), |e| e.to_string())
        ))
    }

    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Why a directory could not be locked.
#[derive(Debug)]
enum Refused {
    /// A sweep holds it, or has removed it (it is gone, or no longer the directory at its
    /// path): not to be used.
    Swept(io::Error),
    /// The file system has no `flock`.
    NoLocks,
    Other(io::Error),
}

/// An exclusive lock on the directory `path`, without waiting.
fn lock(path: &Path) -> Result<Flock<File>, Refused> {
    match File::open(path) {
        Ok(handle) => lock_open(handle, path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Refused::Swept(e)),
        Err(e) => Err(Refused::Other(e)),
    }
}

/// The lock on `handle`, an open directory that was at `path`, if that is still where it
/// is once locked: a sweep that removed it between the open and the lock has let its own
/// lock go, and the lock then taken is on a directory nobody can see.
fn lock_open(handle: File, path: &Path) -> Result<Flock<File>, Refused> {
    let locked = match Flock::lock(handle, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((_, errno)) => {
            return Err(match errno {
                nix::errno::Errno::EWOULDBLOCK => Refused::Swept(errno.into()),
                nix::errno::Errno::ENOLCK
                | nix::errno::Errno::EOPNOTSUPP
                | nix::errno::Errno::ENOSYS
                | nix::errno::Errno::EINVAL => Refused::NoLocks,
                other => Refused::Other(other.into()),
            });
        }
    };
    let opened = locked.metadata().map_err(Refused::Other)?;
    match std::fs::symlink_metadata(path) {
        Ok(now) if now.dev() == opened.dev() && now.ino() == opened.ino() => Ok(locked),
        Ok(_) => Err(Refused::Swept(io::Error::other(
            "replaced while it was locked",
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Refused::Swept(e)),
        Err(e) => Err(Refused::Other(e)),
    }
}

/// Set once this process has swept: a caller that comes while another sweeps waits for it.
static SWEPT: OnceLock<()> = OnceLock::new();

/// Whether this process has swept already.
pub(super) fn swept() -> bool {
    SWEPT.get().is_some()
}

/// [`sweep`], once per process; returns once it is done (by this caller or another).
pub(super) fn sweep_once(parent: &Path) {
    SWEPT.get_or_init(|| {
        sweep(parent);
    });
}

/// Removes the buffer directories of this user in `parent` that no process has locked, and
/// says how many.
pub(super) fn sweep(parent: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    // A directory made since shortly before this sweep may be one a vt has made and not
    // locked yet (its own tasks' included: this runs beside them): left alone, the race
    // is not there to lose. A killed vt's directory is older, or the next sweep takes it.
    let fresh_since = std::time::SystemTime::now() - FRESH;
    let mut removed = 0;
    for entry in entries.flatten() {
        if !entry.file_name().as_bytes().starts_with(PREFIX.as_bytes()) {
            continue;
        }
        let path = entry.path();
        let left = std::fs::symlink_metadata(&path).is_ok_and(|m| {
            m.is_dir() && m.uid() == uid && m.modified().is_ok_and(|at| at < fresh_since)
        });
        if !left {
            continue;
        }
        // Held while it is removed: its owner, if it only just made it, finds it locked
        // and makes another.
        if let Ok(_held) = lock(&path)
            && std::fs::remove_dir_all(&path).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes `dir` look as if it had last changed an hour ago (as a killed vt's does).
    fn age(dir: &Path) {
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        File::open(dir)
            .and_then(|d| d.set_modified(hour_ago))
            .expect("set the directory's time");
    }

    #[test]
    fn only_directories_nobody_holds_are_swept() {
        let parent = tempfile::tempdir().expect("tempdir");
        let held = LockedDir::new(parent.path()).expect("locked dir");
        std::fs::write(held.path().join("1.0"), b"records").expect("write");
        // What a killed vt leaves: a buffer directory with a buffer, and no lock.
        let left = parent.path().join(format!("{PREFIX}killed"));
        std::fs::create_dir(&left).expect("mkdir");
        std::fs::write(left.join("2.0"), b"records").expect("write");
        let fresh = parent.path().join(format!("{PREFIX}fresh"));
        std::fs::create_dir(&fresh).expect("mkdir");
        age(&left);
        // Not a buffer directory: never touched.
        let other = parent.path().join("vt-library-x");
        std::fs::create_dir(&other).expect("mkdir");
        assert_eq!(sweep(parent.path()), 1);
        assert!(!left.exists(), "a directory nobody holds stays");
        assert!(
            fresh.is_dir(),
            "a directory made a moment ago (perhaps not locked yet) was swept"
        );
        assert!(
            held.path().join("1.0").is_file(),
            "a held directory was swept"
        );
        assert!(other.is_dir());
        let held_path = held.path().to_path_buf();
        drop(held);
        assert!(!held_path.exists(), "a dropped directory is removed");
    }

    #[test]
    fn a_directory_a_sweep_removed_before_its_owner_locked_it_is_not_used() {
        let parent = tempfile::tempdir().expect("tempdir");
        // Removed before its owner opened it.
        let gone = parent.path().join(format!("{PREFIX}gone"));
        assert!(matches!(lock(&gone), Err(Refused::Swept(_))));
        // Removed between its owner's open and its lock (the sweep's lock already let go):
        // the lock is taken, on a directory no path leads to any more.
        let removed = parent.path().join(format!("{PREFIX}removed"));
        std::fs::create_dir(&removed).expect("mkdir");
        let handle = File::open(&removed).expect("open");
        std::fs::remove_dir(&removed).expect("rmdir");
        assert!(matches!(
            lock_open(handle, &removed),
            Err(Refused::Swept(_))
        ));
        // … or to another directory made there since.
        std::fs::create_dir(&removed).expect("mkdir");
        let handle = File::open(&removed).expect("open");
        std::fs::remove_dir(&removed).expect("rmdir");
        std::fs::create_dir(&removed).expect("mkdir again");
        assert!(matches!(
            lock_open(handle, &removed),
            Err(Refused::Swept(_))
        ));
        // The control: still there, the same directory.
        let kept = parent.path().join(format!("{PREFIX}kept"));
        std::fs::create_dir(&kept).expect("mkdir");
        assert!(lock(&kept).is_ok());
    }

    #[test]
    fn directories_made_while_sweeps_run_are_there_and_held() {
        // A sweep (once per vt, on a thread of its own) runs while the first tasks make
        // their directories: each of those must exist and be held once made, or the task
        // is planned on a directory that is gone (seen as `vt run -j2 --sandbox` failing).
        let parent = tempfile::tempdir().expect("tempdir");
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    sweep(parent.path());
                }
            });
            // The sweeping thread stops however this one ends (a failed check included).
            struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            let _stop = Stop(&stop);
            for _ in 0..2_000 {
                let dir = LockedDir::new(parent.path()).expect("a locked directory");
                assert!(dir.path().is_dir(), "{} is gone", dir.path().display());
                assert!(dir._lock.is_some());
            }
        });
    }

    #[test]
    fn a_directory_locked_by_another_before_its_owner_is_not_used() {
        let parent = tempfile::tempdir().expect("tempdir");
        let first = LockedDir::new(parent.path()).expect("locked dir");
        // A second lock on the same directory (another open file, as another vt's sweep
        // would take it) is refused while the first holds it.
        assert!(matches!(lock(first.path()), Err(Refused::Swept(_))));
        let second = LockedDir::new(parent.path()).expect("another dir");
        assert_ne!(first.path(), second.path());
    }
}

//! Quieting the directories outside the workspace. The mark covers the whole file system,
//! but an event outside the workspace is only ever dropped at the end (the tracer alone
//! records what the task read there). A C build's reads of system headers and libraries
//! were 97 % of its events (22 784 of 23 523 for `make -j2` of 200 files), each queued by
//! the kernel, read, parsed and resolved for nothing, and the reader's wake-ups to read
//! them cost the build ~3 % of its CPU.
//!
//! So while the task runs, the reader tells the group to ignore the opens of files in such
//! a directory (an ignore mark on the directory, for its children) the first time the
//! directory shows up with nothing but opens in it. Changes there are still reported, and
//! every directory in a running task's workspace (and the workspace's parent, which names
//! the workspace itself) is never quieted. The group serves the tasks of the whole process
//! (`super::Group`): a task that starts hears again, first, every quieted directory in its
//! own workspace (its ignore mark removed), so that what an earlier task quieted never
//! hides a later task's reads.
//!
//! A quieted directory could be moved into the workspace while the task runs (`mv
//! /tmp/stage pkg/dist` after reading from it): its opens there would then go unreported,
//! and a tracer's miss among them would not be caught. The reader keeps a descriptor of
//! each directory it quieted; at the end, one that is in the workspace now is a tracing
//! gap (the run is not cached), never a silent hole in the cross-check.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustc_hash::{FxHashMap, FxHashSet};

use super::{OUTPUT_EVENTS, RawEvent, fd_path, holds_the_workspace, is_under, open_handle};

/// What a quieted directory's ignore mark ignores: opens (and executions) of its entries,
/// files and directories alike.
const QUIETED: u64 =
    libc::FAN_OPEN | libc::FAN_OPEN_EXEC | libc::FAN_EVENT_ON_CHILD | libc::FAN_ONDIR;

/// At most this many directories are quieted per group: each holds a descriptor for as long
/// as it is quieted, and a task that walks a large tree outside the workspace (`find /usr`)
/// must not take vt's descriptors. A build's reads outside are in a few dozen directories (15 for
/// the C build of `bench/`); past the limit the group reports everything, as before.
pub(super) const MAX_QUIETED: usize = 256;

pub(super) struct Quiet {
    /// Any descriptor on the marked file system, for `open_by_handle_at`.
    mount: OwnedFd,
    /// Where `mount` was when the quieted directories' paths (`Quieted::now`) were taken:
    /// a rename above the file system (of a directory a mount point is in) moves every
    /// path on it without an event.
    mount_was: Option<PathBuf>,
    /// Set when a quieted directory may have moved since its path was taken: a directory
    /// was renamed on the file system, events were lost, or the group was not listening.
    /// Asking each directory where it is now is a `readlink` apiece (up to
    /// [`MAX_QUIETED`], ~1.3 ms per task start when asked every time); so they are asked
    /// only then ([`Quiet::refresh`]).
    stale: bool,
    /// Directories (by handle) already decided on, quieted or not.
    decided: FxHashSet<Vec<u8>>,
    quieted: Vec<Quieted>,
    /// Set when the kernel refuses an ignore mark (`FAN_MARK_IGNORE` is Linux 6.0): the
    /// group then reports everything, as before.
    refused: bool,
}

/// A quieted directory: where it was, where it is (`None`: removed) as last asked, a
/// descriptor that follows it, and its handle.
struct Quieted {
    was: PathBuf,
    now: Option<PathBuf>,
    dir: OwnedFd,
    handle: Vec<u8>,
}

impl Quiet {
    pub(super) fn new(mount: OwnedFd) -> Quiet {
        Quiet {
            mount_was: fd_path(&mount),
            mount,
            stale: false,
            decided: FxHashSet::default(),
            quieted: Vec::new(),
            refused: false,
        }
    }

    /// Looks at events not looked at before (`new`) and quiets each new directory outside
    /// every workspace in `roots` (the running tasks') that has only opens among them.
    pub(super) fn look(&mut self, fanotify: RawFd, new: &[RawEvent], roots: &[&Path]) {
        if self.refused || self.quieted.len() >= MAX_QUIETED {
            return;
        }
        // Each new directory in this batch → whether anything in it changed.
        let mut batch: FxHashMap<&[u8], bool> = FxHashMap::default();
        for event in new {
            if !self.decided.contains(event.dir_handle.as_slice()) {
                *batch.entry(&event.dir_handle).or_default() |= event.mask & OUTPUT_EVENTS != 0;
            }
        }
        for (handle, changed) in batch {
            self.decided.insert(handle.to_vec());
            if changed {
                continue;
            }
            let Some(dir) = open_handle(&self.mount, handle) else {
                continue;
            };
            let Some(path) = fd_path(&dir) else { continue };
            if roots.iter().any(|root| holds_the_workspace(&path, root)) {
                continue;
            }
            if self.quieted.len() >= MAX_QUIETED {
                return;
            }
            if quiet(fanotify, &dir).is_err() {
                self.refused = true;
                return;
            }
            self.quieted.push(Quieted {
                now: Some(path.clone()),
                was: path,
                dir,
                handle: handle.to_vec(),
            });
        }
    }

    /// Hears again every quieted directory that holds the workspace `root` now (for a task
    /// of `root` about to start): its ignore mark removed, and it may be decided on again
    /// once no running task's workspace is in it. An error (the mark could not be removed)
    /// means the group may not serve `root`. The directories not quieted for a change seen
    /// in an earlier task's time are decided on again too, as each task's own group did.
    pub(super) fn hear_again(&mut self, fanotify: RawFd, root: &Path) -> std::io::Result<()> {
        self.decided = self.quieted.iter().map(|q| q.handle.clone()).collect();
        self.refresh();
        let mut at = 0;
        while let Some(quieted) = self.quieted.get(at) {
            match &quieted.now {
                // Removed: nothing will be opened in it, and its mark goes with its last
                // reference, this descriptor. Let go, so it does not count to the limit.
                None => {}
                Some(now) if holds_the_workspace(now, root) => {
                    unquiet(fanotify, &quieted.dir)?;
                }
                Some(_) => {
                    at += 1;
                    continue;
                }
            }
            let heard = self.quieted.swap_remove(at);
            self.decided.remove(&heard.handle);
        }
        Ok(())
    }

    /// Notes what `new` events say of the quieted directories' paths: a directory renamed
    /// away from a place that is one of them or above one ([`Quiet::saw_moved`]).
    pub(super) fn saw(&mut self, new: &[RawEvent]) {
        for event in new.iter().filter(|e| is_directory_moved_away(e.mask)) {
            self.saw_moved(&event.dir_handle, &event.name);
        }
    }

    /// A directory was renamed away from `name` in the directory of handle `from`: the
    /// quieted directories' paths are asked again if one was there or below. A rename
    /// elsewhere (a layer's removal, overlayfs's own checks: one or two per sandboxed task)
    /// changes none of them. The old place is taken from where `from` is now: had `from`
    /// moved too, its own rename (an event too) is one above, found from a place that did
    /// not move. A `from` gone cannot be told: asked again.
    pub(super) fn saw_moved(&mut self, from: &[u8], name: &[u8]) {
        if self.stale || self.quieted.is_empty() {
            return;
        }
        let Some(mut was) = open_handle(&self.mount, from).and_then(|dir| fd_path(&dir)) else {
            self.stale = true;
            return;
        };
        was.push(std::ffi::OsStr::from_bytes(name));
        self.stale = self
            .quieted
            .iter()
            .any(|q| q.now.as_ref().is_some_and(|now| is_under(now, &was)));
    }

    /// Says the paths may have changed unseen (events lost, or the group not listening).
    pub(super) fn lost_sight(&mut self) {
        self.stale = true;
    }

    /// Asks each quieted directory where it is now, if one may have moved since the last
    /// time (or the file system itself did).
    fn refresh(&mut self) {
        let mount_now = fd_path(&self.mount);
        if !self.stale && mount_now == self.mount_was {
            return;
        }
        for quieted in &mut self.quieted {
            quieted.now = fd_path(&quieted.dir)
                .filter(|now| !now.as_os_str().as_bytes().ends_with(b" (deleted)"));
        }
        self.mount_was = mount_now;
        self.stale = false;
    }

    /// The quieted directories that are in the workspace `root` now: (where it was, where
    /// it is).
    pub(super) fn moved_in(&mut self, root: &Path) -> Vec<(PathBuf, PathBuf)> {
        self.refresh();
        self.quieted
            .iter()
            .filter_map(|q| Some((q.was.clone(), q.now.clone()?)))
            .filter(|(_, now)| holds_the_workspace(now, root))
            .collect()
    }

    #[cfg(test)]
    pub(super) fn quieted(&self) -> Vec<PathBuf> {
        self.quieted.iter().map(|q| q.was.clone()).collect()
    }
}

/// Whether an event's `mask` is a directory's rename away from its place.
pub(super) fn is_directory_moved_away(mask: u64) -> bool {
    mask & libc::FAN_ONDIR != 0 && mask & libc::FAN_MOVED_FROM != 0
}

/// Removes the ignore mark: the group hears of opens of `dir`'s entries again.
fn unquiet(fanotify: RawFd, dir: &OwnedFd) -> std::io::Result<()> {
    ignore_mark(fanotify, dir, libc::FAN_MARK_REMOVE | libc::FAN_MARK_IGNORE)
}

/// Adds the ignore mark: the group stops hearing of opens of `dir`'s entries.
fn quiet(fanotify: RawFd, dir: &OwnedFd) -> std::io::Result<()> {
    ignore_mark(
        fanotify,
        dir,
        libc::FAN_MARK_ADD | libc::FAN_MARK_IGNORE_SURV,
    )
}

/// Adds or removes (`flags`) the quieting's ignore mark on `dir`.
fn ignore_mark(fanotify: RawFd, dir: &OwnedFd, flags: libc::c_uint) -> std::io::Result<()> {
    // SAFETY: marks, in a group of ours, the directory an open descriptor of ours is on
    // ("." from it: a null path would need a descriptor that is not `O_PATH`).
    let rc =
        unsafe { libc::fanotify_mark(fanotify, flags, QUIETED, dir.as_raw_fd(), c".".as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `handle_type` + bytes of `path`'s file handle, as an event names a directory.
    fn handle_of(path: &Path) -> Vec<u8> {
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
        let mut raw = vec![0u8; 8 + 128];
        raw[0..4].copy_from_slice(&128u32.to_ne_bytes());
        let mut mount_id = 0;
        // SAFETY: a file_handle buffer of 128 bytes, as its first field says.
        let rc = unsafe {
            libc::name_to_handle_at(
                libc::AT_FDCWD,
                c_path.as_ptr(),
                raw.as_mut_ptr().cast(),
                &mut mount_id,
                0,
            )
        };
        assert_eq!(
            rc,
            0,
            "name_to_handle_at: {}",
            std::io::Error::last_os_error()
        );
        let bytes = u32::from_ne_bytes(raw[0..4].try_into().expect("4")) as usize;
        raw[4..8 + bytes].to_vec()
    }

    /// Only a rename of a quieted directory or of one above it makes the paths be asked
    /// again; a rename elsewhere (a layer's, overlayfs's own) does not, and one from a
    /// directory that cannot be found any more does.
    #[test]
    fn only_a_rename_at_or_above_a_quieted_directory_makes_the_paths_stale() {
        // open_by_handle_at needs CAP_DAC_READ_SEARCH (as fanotify's group needs root).
        if !nix::unistd::geteuid().is_root() {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            eprintln!("skipped: handles need root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let top = std::fs::canonicalize(dir.path()).expect("canonical");
        std::fs::create_dir_all(top.join("a/b/c")).expect("mkdir");
        std::fs::create_dir_all(top.join("gone")).expect("mkdir");
        let open = |p: &Path| OwnedFd::from(std::fs::File::open(p).expect("open"));
        let mut quiet = Quiet::new(open(&top));
        let c = top.join("a/b/c");
        quiet.quieted.push(Quieted {
            was: c.clone(),
            now: Some(c.clone()),
            dir: open(&c),
            handle: handle_of(&c),
        });
        let gone = handle_of(&top.join("gone"));
        std::fs::remove_dir(top.join("gone")).expect("rmdir");
        for (from, name, stale) in [
            (top.as_path(), "elsewhere", false),
            (&top.join("a/b"), "cc", false),
            (&top.join("a/b"), "c", true),
            (&top.join("a"), "b", true),
            (top.as_path(), "a", true),
        ] {
            quiet.stale = false;
            quiet.saw_moved(&handle_of(from), name.as_bytes());
            assert_eq!(quiet.stale, stale, "{}/{name}", from.display());
        }
        quiet.stale = false;
        quiet.saw_moved(&gone, b"x");
        assert!(quiet.stale, "a directory gone cannot be told");
    }
}

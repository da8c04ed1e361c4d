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
//! every directory in the workspace (and the workspace's parent, which names the workspace
//! itself) is never quieted.
//!
//! A quieted directory could be moved into the workspace while the task runs (`mv
//! /tmp/stage pkg/dist` after reading from it): its opens there would then go unreported,
//! and a tracer's miss among them would not be caught. The reader keeps a descriptor of
//! each directory it quieted; at the end, one that is in the workspace now is a tracing
//! gap (the run is not cached), never a silent hole in the cross-check.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use rustc_hash::{FxHashMap, FxHashSet};

use super::{OUTPUT_EVENTS, RawEvent, fd_path, holds_the_workspace, open_handle};

/// What a quieted directory's ignore mark ignores: opens (and executions) of its entries,
/// files and directories alike.
const QUIETED: u64 =
    libc::FAN_OPEN | libc::FAN_OPEN_EXEC | libc::FAN_EVENT_ON_CHILD | libc::FAN_ONDIR;

/// At most this many directories are quieted per task: each holds a descriptor until the
/// end, and a task that walks a large tree outside the workspace (`find /usr`) must not
/// take vt's descriptors. A build's reads outside are in a few dozen directories (15 for
/// the C build of `bench/`); past the limit the group reports everything, as before.
pub(super) const MAX_QUIETED: usize = 256;

pub(super) struct Quiet {
    /// Any descriptor on the marked file system, for `open_by_handle_at`.
    mount: OwnedFd,
    /// The workspace, canonical.
    root: PathBuf,
    /// Directories (by handle) already decided on, quieted or not.
    decided: FxHashSet<Vec<u8>>,
    quieted: Vec<Quieted>,
    /// How many of the read events were looked at.
    looked: usize,
    /// Set when the kernel refuses an ignore mark (`FAN_MARK_IGNORE` is Linux 6.0): the
    /// group then reports everything, as before.
    refused: bool,
}

/// A directory quieted while the task ran: where it was, and a descriptor that follows it.
struct Quieted {
    was: PathBuf,
    dir: OwnedFd,
}

impl Quiet {
    pub(super) fn new(mount: OwnedFd, root: &Path) -> Quiet {
        Quiet {
            mount,
            root: root.to_path_buf(),
            decided: FxHashSet::default(),
            quieted: Vec::new(),
            looked: 0,
            refused: false,
        }
    }

    /// Looks at the events read since the last call and quiets each new directory outside
    /// the workspace that has only opens among them.
    pub(super) fn look(&mut self, fanotify: RawFd, events: &[RawEvent]) {
        let new = events.get(self.looked..).unwrap_or_default();
        self.looked = events.len();
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
            if holds_the_workspace(&path, &self.root) {
                continue;
            }
            if self.quieted.len() >= MAX_QUIETED {
                return;
            }
            if quiet(fanotify, &dir).is_err() {
                self.refused = true;
                return;
            }
            self.quieted.push(Quieted { was: path, dir });
        }
    }

    /// The quieted directories that are in the workspace now: (where it was, where it is).
    pub(super) fn moved_in(&self) -> Vec<(PathBuf, PathBuf)> {
        self.quieted
            .iter()
            .filter_map(|q| Some((q.was.clone(), fd_path(&q.dir)?)))
            .filter(|(_, now)| holds_the_workspace(now, &self.root))
            .collect()
    }

    #[cfg(test)]
    pub(super) fn quieted(&self) -> Vec<PathBuf> {
        self.quieted.iter().map(|q| q.was.clone()).collect()
    }
}

/// Adds the ignore mark: the group stops hearing of opens of `dir`'s entries.
fn quiet(fanotify: RawFd, dir: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: marks, in a group of ours, the directory an open descriptor of ours is on
    // ("." from it: a null path would need a descriptor that is not `O_PATH`).
    let rc = unsafe {
        libc::fanotify_mark(
            fanotify,
            libc::FAN_MARK_ADD | libc::FAN_MARK_IGNORE_SURV,
            QUIETED,
            dir.as_raw_fd(),
            c".".as_ptr(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

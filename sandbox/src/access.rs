//! What a traced process tree did to the filesystem, in one normalized form.
//!
//! Paths are absolute and lexically clean (`.`/`..`/`//` removed, with `..` resolved the way
//! the kernel does, through symlinks). Everything a tracer could not see or decode is a
//! [`Gap`]: a log with gaps must never produce a cache entry.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;

/// How a path was touched. See DESIGN.md §3 for each kind's role in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessKind {
    /// Opened for reading (contents are an input).
    Read,
    /// Metadata or existence probed, or a directory opened without being listed.
    Stat,
    /// Directory listed (its entry names are an input).
    ReadDir,
    /// Looked up and not found (ENOENT/ENOTDIR): must still be absent.
    Missing,
    /// Existing file opened for writing, or its metadata changed.
    Write,
    /// Created (file, directory, node, link).
    Create,
    /// Unlinked or removed.
    Delete,
    /// Source of a rename (it no longer exists under this name).
    RenameFrom,
    /// Destination of a rename.
    RenameTo,
    /// Executed.
    Exec,
}

impl AccessKind {
    /// Kinds whose path becomes a cache input.
    pub fn is_input(self) -> bool {
        matches!(
            self,
            AccessKind::Read
                | AccessKind::Stat
                | AccessKind::ReadDir
                | AccessKind::Missing
                | AccessKind::Exec
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AccessKind::Read => "read",
            AccessKind::Stat => "stat",
            AccessKind::ReadDir => "read_dir",
            AccessKind::Missing => "missing",
            AccessKind::Write => "write",
            AccessKind::Create => "create",
            AccessKind::Delete => "delete",
            AccessKind::RenameFrom => "rename_from",
            AccessKind::RenameTo => "rename_to",
            AccessKind::Exec => "exec",
        }
    }
}

/// One observation, in the order the tracer saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Access {
    pub kind: AccessKind,
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// Thread id (in vt's pid namespace) that made the call.
    pub pid: u32,
    /// CLOCK_MONOTONIC nanoseconds when the call was made (0: unknown, e.g. an open only
    /// fanotify saw). Orders accesses from different sources and processes, which is what
    /// "read before written" is decided on.
    pub at_ns: u64,
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock the preload recorder stamps records with.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| (t.tv_sec() as u64) * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Something the tracer could not observe or decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub pid: u32,
    pub syscall: String,
    pub reason: String,
}

/// Everything one traced run observed.
#[derive(Debug, Default, Clone, Serialize)]
pub struct AccessLog {
    /// Which backend produced the log (e.g. `seccomp`).
    pub tracer: String,
    pub accesses: Vec<Access>,
    pub gaps: Vec<Gap>,
    /// Notifications (or traps) handled, for overhead accounting.
    pub notifications: u64,
    /// Notifications per syscall name: what to make cheaper next.
    pub notified_by_syscall: std::collections::BTreeMap<&'static str, u64>,
    /// Calls the LD_PRELOAD recorder observed without a notification.
    pub fast_path_records: u64,
}

impl AccessLog {
    /// Records an access made now (the supervisor decodes a call while it is stopped).
    pub fn push(&mut self, kind: AccessKind, path: PathBuf, pid: u32) {
        self.push_at(kind, path, pid, monotonic_ns());
    }

    pub fn push_at(&mut self, kind: AccessKind, path: PathBuf, pid: u32, at_ns: u64) {
        self.accesses.push(Access {
            kind,
            path,
            pid,
            at_ns,
        });
    }

    /// Counts one notification (or trap) of syscall `nr`.
    pub fn count_notification(&mut self, nr: i64) {
        self.notifications += 1;
        let name = crate::trace::syscalls::lookup(nr).map_or("other", |s| s.name);
        *self.notified_by_syscall.entry(name).or_default() += 1;
    }

    pub fn gap(&mut self, pid: u32, syscall: impl Into<String>, reason: impl Into<String>) {
        self.gaps.push(Gap {
            pid,
            syscall: syscall.into(),
            reason: reason.into(),
        });
    }

    /// The distinct `(kind, path)` pairs, sorted: the shape tests and `vt trace` print.
    pub fn distinct(&self) -> BTreeSet<(AccessKind, PathBuf)> {
        self.accesses
            .iter()
            .map(|a| (a.kind, a.path.clone()))
            .collect()
    }

    pub fn is_complete(&self) -> bool {
        self.gaps.is_empty()
    }
}

fn lossy_path<S: serde::Serializer>(
    path: &std::path::Path,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    // JSON strings must be UTF-8; non-UTF-8 bytes show as U+FFFD here. The cache does not
    // go through JSON and keeps the exact bytes.
    serializer.serialize_str(&path.to_string_lossy())
}

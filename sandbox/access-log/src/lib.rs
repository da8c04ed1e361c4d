//! What a traced process tree did to the filesystem, in one normalized form, whichever
//! tracer saw it (seccomp/ptrace on Linux, interposition on macOS, ETW on Windows), and the
//! [`Tracer`] trait those backends share.
//!
//! Paths are absolute and lexically clean (`.`/`..`/`//` removed, with `..` resolved the way
//! the kernel does, through symlinks). Everything a tracer could not see or decode is a
//! [`Gap`]: a log with gaps must never produce a cache entry.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// How a path was touched. See docs/architecture.md, "Fingerprint", for each kind's role in the cache.
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

    /// Every kind, for parsing and listing.
    pub const ALL: [AccessKind; 10] = [
        AccessKind::Read,
        AccessKind::Stat,
        AccessKind::ReadDir,
        AccessKind::Missing,
        AccessKind::Write,
        AccessKind::Create,
        AccessKind::Delete,
        AccessKind::RenameFrom,
        AccessKind::RenameTo,
        AccessKind::Exec,
    ];

    /// The kind [`Self::as_str`] names (`None` for anything else).
    pub fn parse(name: &str) -> Option<AccessKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
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

/// One observation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Access {
    pub kind: AccessKind,
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// Thread id (in vt's pid namespace) that made the call; the process id for calls the
    /// Linux preload recorder saw.
    pub pid: u32,
    /// CLOCK_MONOTONIC nanoseconds when the call was made (0: unknown, e.g. an open only
    /// fanotify saw). Orders accesses from different sources and processes, which is what
    /// "read before written" is decided on.
    pub at_ns: u64,
}

/// A monotonic clock in nanoseconds: on Unix CLOCK_MONOTONIC, the clock the Linux preload
/// recorder stamps its records with; elsewhere time since this process first asked.
pub fn monotonic_ns() -> u64 {
    #[cfg(unix)]
    {
        // SAFETY: all-zero is a valid timespec, and clock_gettime only writes it.
        let mut now: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: a valid clock id and a pointer to a live timespec.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
            return 0;
        }
        (now.tv_sec as u64) * 1_000_000_000 + now.tv_nsec as u64
    }
    #[cfg(not(unix))]
    {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_nanos() as u64
    }
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
    /// Each recorder's accesses in the order it made them, recorders one after the other:
    /// what needs one order for all (read before written?) sorts by `at_ns`, as
    /// [`AccessLog::sequence`] does.
    pub accesses: Vec<Access>,
    pub gaps: Vec<Gap>,
    /// Notifications (or traps) handled, for overhead accounting.
    pub notifications: u64,
    /// Notifications per syscall name: what to make cheaper next.
    pub notified_by_syscall: std::collections::BTreeMap<&'static str, u64>,
    /// Calls the LD_PRELOAD recorder observed without a notification.
    pub fast_path_records: u64,
    /// Processes the recorder saw, including those whose accesses all repeated another
    /// process's (kept once, see `sandbox::trace::fast_path`): which processes are the task's.
    #[serde(skip)]
    pub processes: std::collections::BTreeSet<u32>,
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

    /// Counts one notification (or trap, or event) of the call named `name`.
    pub fn count_notification(&mut self, name: &'static str) {
        self.notifications += 1;
        *self.notified_by_syscall.entry(name).or_default() += 1;
    }

    pub fn gap(&mut self, pid: u32, syscall: impl Into<String>, reason: impl Into<String>) {
        self.gaps.push(Gap {
            pid,
            syscall: syscall.into(),
            reason: reason.into(),
        });
    }

    /// The distinct `(kind, path)` pairs, sorted: what the shape tests compare.
    pub fn distinct(&self) -> BTreeSet<(AccessKind, PathBuf)> {
        self.distinct_by_path()
            .into_iter()
            .map(|(kind, path)| (kind, path.to_path_buf()))
            .collect()
    }

    /// The distinct `(kind, path)` pairs in [`AccessLog::distinct`]'s order (kind, then the
    /// path's components), borrowed: the rows of `vt trace --json`. Sorted by bytes with the
    /// separator ranked lowest ([`component_order`]) instead of walking components, and
    /// without copying every path into a set: a node build's 8 000-row log rendered in 4.4
    /// instead of 10 ms.
    #[cfg(unix)]
    pub fn distinct_by_kind(&self) -> Vec<(AccessKind, &Path)> {
        use std::os::unix::ffi::OsStrExt;
        let mut rows: Vec<_> = self
            .distinct_keys()
            .into_iter()
            .map(|((_, kind), path)| (kind, path))
            .collect();
        rows.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| {
                component_order(a.1.as_os_str().as_bytes(), b.1.as_os_str().as_bytes())
            })
        });
        rows
    }

    /// The distinct `(kind, path)` pairs ordered by the path's bytes, then kind: the rows of
    /// `vt trace`'s text log. Byte order (what `LC_ALL=C sort` gives).
    pub fn distinct_by_path(&self) -> Vec<(AccessKind, &Path)> {
        let mut rows = self.distinct_keys();
        rows.sort_unstable_by_key(|(key, _)| *key);
        rows.into_iter()
            .map(|((_, kind), path)| (kind, path))
            .collect()
    }

    /// The distinct `(kind, path)` pairs in no order, keyed by the path's bytes.
    fn distinct_keys(&self) -> Vec<((&[u8], AccessKind), &Path)> {
        // Hash first: a build's log repeats paths by the hundred thousand. Keyed by bytes:
        // hashing a `Path` walks its components (the paths are clean, so equal paths have
        // equal bytes).
        let unique: rustc_hash::FxHashMap<(&[u8], AccessKind), &Path> = self
            .accesses
            .iter()
            .map(|a| {
                (
                    (a.path.as_os_str().as_encoded_bytes(), a.kind),
                    a.path.as_path(),
                )
            })
            .collect();
        unique.into_iter().collect()
    }

    /// Every `(kind, path)` in the order the calls began (ties: as recorded): the shape
    /// fixture tests compare.
    pub fn sequence(&self) -> Vec<(AccessKind, PathBuf)> {
        let mut accesses: Vec<&Access> = self.accesses.iter().collect();
        accesses.sort_by_key(|a| a.at_ns);
        accesses
            .into_iter()
            .map(|a| (a.kind, a.path.clone()))
            .collect()
    }

    pub fn is_complete(&self) -> bool {
        self.gaps.is_empty()
    }

    /// Adds what another recorder of the same run observed (another supervisor thread).
    pub fn absorb(&mut self, other: AccessLog) {
        self.absorb_all([other]);
    }

    /// [`AccessLog::absorb`] for several logs.
    ///
    /// Not sorted by time here: of a C build's 150 000 accesses, only the cache's digest
    /// needs one order, and it sorts references; moving the accesses themselves into order
    /// was a third of what `vt` did after the build ended.
    pub fn absorb_all(&mut self, others: impl IntoIterator<Item = AccessLog>) {
        for other in others {
            self.accesses.extend(other.accesses);
            self.gaps.extend(other.gaps);
            self.notifications += other.notifications;
            for (name, count) in other.notified_by_syscall {
                *self.notified_by_syscall.entry(name).or_default() += count;
            }
            self.fast_path_records += other.fast_path_records;
            self.processes.extend(other.processes);
        }
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

/// A running, traced process tree.
pub trait Traced {
    /// The root process's id.
    fn id(&self) -> u32;
    /// Waits until the root has exited *and* every descendant is gone, then returns the
    /// root's status and what the whole tree did.
    fn wait(self: Box<Self>) -> Result<(std::process::ExitStatus, AccessLog), TracerError>;
}

/// A tracer backend: starts a command so that everything its process tree does to the file
/// system ends up in one [`AccessLog`].
///
/// This is the contract of the *portable* backends: the macOS and Windows fallbacks
/// implement it, and a platform's executor would start tasks through it. The Linux executor
/// does not: it calls `sandbox::trace::spawn_jailed` directly, because a Linux task also
/// carries what no other platform has (the sandbox's mount plan, the LD_PRELOAD fast path,
/// the per-task IPC socket kept open across exec). `sandbox::LinuxTracer` implements the
/// trait too, and `sandbox/tests/tracer_trait.rs` holds it to the contract, so the three
/// backends are interchangeable where the trait is enough: tracing a plain command.
pub trait Tracer {
    /// A short name for logs (`seccomp`, `ptrace`, `interpose`, `etw`).
    fn name(&self) -> &'static str;
    /// Starts `command` (stdio, env and cwd as the caller set them) traced.
    fn spawn(&self, command: std::process::Command) -> Result<Box<dyn Traced>, TracerError>;
}

/// How `Path`'s `Ord` orders two clean Unix paths (no `//`, `.` or trailing `/`, as a log's
/// are), from their bytes: component by component is byte order with the separator below
/// every other byte (`a/b` before `a.b`, `a/c` before `ab/c`).
#[cfg(unix)]
fn component_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let rank = |byte: u8| if byte == b'/' { 0 } else { u16::from(byte) + 1 };
    a.iter()
        .map(|&byte| rank(byte))
        .cmp(b.iter().map(|&byte| rank(byte)))
}

/// Why a backend could not trace (its own error, boxed so the trait stays object safe).
pub type TracerError = Box<dyn std::error::Error + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorbing_another_recorder_keeps_the_time_order_and_sums_counts() {
        let mut one = AccessLog::default();
        one.push_at(AccessKind::Read, "/a".into(), 1, 10);
        one.push_at(AccessKind::Write, "/c".into(), 1, 30);
        one.count_notification("openat");
        let mut two = AccessLog::default();
        two.push_at(AccessKind::Stat, "/b".into(), 2, 20);
        two.count_notification("openat");
        two.count_notification("execve");
        two.gap(2, "openat", "gone");
        one.absorb(two);
        let paths: Vec<_> = one.sequence().into_iter().map(|(_, path)| path).collect();
        assert_eq!(paths, [PathBuf::from("/a"), "/b".into(), "/c".into()]);
        assert_eq!(one.notifications, 3);
        assert_eq!(one.notified_by_syscall["openat"], 2);
        assert_eq!(one.gaps.len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn component_order_is_paths_order() {
        let paths = [
            "/", "/a", "/a/b", "/a.b", "/a/c", "/ab/c", "/a-b/c", "/a/b/c", "/a/b.c", "/b", "/a b",
            "/a\u{e9}", "/A", "/a/", "/a0", "/a/0",
        ];
        for a in paths {
            for b in paths {
                let (a, b) = (a.trim_end_matches('/'), b.trim_end_matches('/'));
                let (a, b) = (
                    if a.is_empty() { "/" } else { a },
                    if b.is_empty() { "/" } else { b },
                );
                assert_eq!(
                    component_order(a.as_bytes(), b.as_bytes()),
                    Path::new(a).cmp(Path::new(b)),
                    "{a} against {b}"
                );
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn distinct_by_kind_is_distincts_order() {
        let mut log = AccessLog::default();
        for (i, (kind, path)) in [
            (AccessKind::Read, "/a.b"),
            (AccessKind::Stat, "/a/b"),
            (AccessKind::Read, "/a/b"),
            (AccessKind::Read, "/a.b"),
            (AccessKind::Read, "/ab/c"),
            (AccessKind::Read, "/a/c"),
        ]
        .into_iter()
        .enumerate()
        {
            log.push_at(kind, path.into(), 1, i as u64);
        }
        let fast: Vec<(AccessKind, PathBuf)> = log
            .distinct_by_kind()
            .into_iter()
            .map(|(kind, path)| (kind, path.to_path_buf()))
            .collect();
        let sorted: Vec<(AccessKind, PathBuf)> = log.distinct().into_iter().collect();
        assert_eq!(fast, sorted);
    }
}

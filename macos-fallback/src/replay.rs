//! Events from every injected process → one [`AccessLog`], with gaps for whatever the
//! library could not have seen.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use access_log::{AccessKind, AccessLog};

use crate::event::{Call, Event, errno, flags};
use crate::paths::Resolver;
use crate::sip;

/// A process the tracer saw in the task's tree (from its own process watcher, independent
/// of the library): the check that nothing ran uninjected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenProcess {
    pub pid: u32,
    pub exe: PathBuf,
}

fn path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

fn failed_lookup(result: i32) -> bool {
    result == -errno::ENOENT || result == -errno::ENOTDIR
}

/// What a call on an existing-or-not path observed: `done` when it worked, the absence when
/// the lookup failed, and existence (a `Stat`) when it failed for another reason.
fn outcome(result: i32, done: AccessKind) -> AccessKind {
    if result >= 0 {
        done
    } else if failed_lookup(result) {
        AccessKind::Missing
    } else {
        AccessKind::Stat
    }
}

/// Builds the log, event by event, in time order.
#[derive(Debug, Default)]
pub struct Replay {
    resolver: Resolver,
    log: AccessLog,
    /// Processes that said hello (the library is loaded in them).
    injected: BTreeSet<u32>,
}

impl Replay {
    pub fn new() -> Replay {
        Replay {
            log: AccessLog {
                tracer: "interpose".into(),
                ..AccessLog::default()
            },
            ..Replay::default()
        }
    }

    /// Replays `events` (any order: they are sorted by time, ties keep their order).
    pub fn events(&mut self, events: impl IntoIterator<Item = Event>) {
        let mut events: Vec<Event> = events.into_iter().collect();
        events.sort_by_key(|e| e.at_ns);
        for event in events {
            self.event(event);
        }
    }

    fn push(&mut self, kind: AccessKind, path: PathBuf, (pid, at_ns): (u32, u64)) {
        self.log.push_at(kind, path, pid, at_ns);
    }

    fn event(&mut self, event: Event) {
        let pid = event.pid;
        let when = (event.pid, event.at_ns);
        let name = match &event.call {
            Call::Hello { .. } => "hello",
            Call::Open { .. } => "open",
            Call::Probe { .. } => "stat",
            Call::ListDir { .. } => "readdir",
            Call::Exec { .. } => "exec",
            Call::Mkdir { .. } => "mkdir",
            Call::Unlink { .. } => "unlink",
            Call::Rmdir { .. } => "rmdir",
            Call::Rename { .. } => "rename",
            Call::Chdir { .. } => "chdir",
            Call::Forked { .. } => "fork",
        };
        self.log.count_notification(name);
        let resolve = |replay: &Replay, dir: Option<&[u8]>, raw: &[u8]| {
            let dir = dir.filter(|d| !d.is_empty()).map(path);
            replay.resolver.resolve(pid, dir, path(raw))
        };
        let Some(resolved) = (match &event.call {
            Call::Hello { cwd, .. } => {
                self.resolver.hello(pid, path(cwd));
                self.injected.insert(pid);
                return;
            }
            Call::Forked { child } => {
                self.resolver.forked(pid, *child);
                return;
            }
            Call::Open { dir, path, .. } => resolve(self, Some(dir), path),
            Call::Probe { path, .. }
            | Call::ListDir { path, .. }
            | Call::Exec { path, .. }
            | Call::Mkdir { path, .. }
            | Call::Unlink { path, .. }
            | Call::Rmdir { path, .. }
            | Call::Chdir { path, .. } => resolve(self, None, path),
            Call::Rename { from, .. } => resolve(self, None, from),
        }) else {
            self.log.gap(
                pid,
                name,
                "a relative path from a process whose working directory is unknown",
            );
            return;
        };
        match event.call {
            Call::Open {
                flags: f, result, ..
            } => {
                let creates = f & flags::O_CREAT != 0;
                let writes = f & flags::O_ACCMODE != flags::O_RDONLY || f & flags::O_TRUNC != 0;
                let kind = if result >= 0 {
                    if creates && f & flags::O_EXCL != 0 {
                        AccessKind::Create
                    } else if creates || writes {
                        AccessKind::Write
                    } else if f & flags::O_DIRECTORY != 0 {
                        AccessKind::Stat
                    } else {
                        AccessKind::Read
                    }
                } else if failed_lookup(result) && !creates {
                    AccessKind::Missing
                } else if failed_lookup(result) {
                    // O_CREAT failing with ENOENT: a directory on the way is missing.
                    match resolved.parent() {
                        Some(parent) => {
                            self.push(AccessKind::Missing, parent.to_path_buf(), when);
                            return;
                        }
                        None => return,
                    }
                } else {
                    AccessKind::Stat
                };
                self.push(kind, resolved, when);
            }
            Call::Probe { result, .. } => {
                self.push(outcome(result, AccessKind::Stat), resolved, when);
            }
            Call::ListDir { result, .. } => {
                self.push(outcome(result, AccessKind::ReadDir), resolved, when);
            }
            Call::Exec { result, .. } => {
                if failed_lookup(result) {
                    self.push(AccessKind::Missing, resolved, when);
                    return;
                }
                if sip::refuses_injection(&resolved) {
                    self.log.gap(
                        pid,
                        "exec",
                        format!(
                            "{} is protected by SIP: dyld drops DYLD_INSERT_LIBRARIES, so what \
                             it (and any child it starts) does is not seen",
                            resolved.display()
                        ),
                    );
                }
                self.push(AccessKind::Exec, resolved, when);
            }
            Call::Mkdir { result, .. } => {
                let kind = match result {
                    0.. => AccessKind::Create,
                    r if r == -errno::EEXIST => AccessKind::Stat,
                    r if failed_lookup(r) => AccessKind::Missing,
                    _ => AccessKind::Stat,
                };
                self.push(kind, resolved, when);
            }
            Call::Unlink { result, .. } | Call::Rmdir { result, .. } => {
                self.push(outcome(result, AccessKind::Delete), resolved, when);
            }
            Call::Rename { to, result, .. } => {
                if result < 0 {
                    return; // nothing moved; the failed lookup of `from` is not worth more
                }
                let Some(target) = resolve(self, None, &to) else {
                    self.log
                        .gap(pid, "rename", "relative target with an unknown cwd");
                    return;
                };
                self.push(AccessKind::RenameFrom, resolved, when);
                self.push(AccessKind::RenameTo, target, when);
            }
            Call::Chdir { path: raw, result } => {
                if result >= 0 {
                    self.resolver.chdir(pid, path(&raw));
                    self.push(AccessKind::Stat, resolved, when);
                } else if failed_lookup(result) {
                    self.push(AccessKind::Missing, resolved, when);
                }
            }
            Call::Hello { .. } | Call::Forked { .. } => {}
        }
    }

    /// The log, with a gap for every process of the tree that never said hello (it ran
    /// without the library: protected itself, or started by a protected parent).
    pub fn finish(mut self, seen: &[SeenProcess]) -> AccessLog {
        let mut reported: BTreeMap<u32, ()> = BTreeMap::new();
        for process in seen {
            if !self.injected.contains(&process.pid) && reported.insert(process.pid, ()).is_none() {
                self.log.gap(
                    process.pid,
                    "exec",
                    format!(
                        "{} ran without vt's library (SIP-protected, or started by a protected \
                         program): its file accesses are not seen",
                        process.exe.display()
                    ),
                );
            }
        }
        self.log
    }
}

//! Kernel events of the whole machine → the task's [`AccessLog`].
//!
//! A create says what was asked (path, disposition) and its `OperationEnd` what happened
//! (status, created or opened); the read, write and listing events on the same file object
//! say how the handle was used. ETW carries no access mask, so "read" means "read events were
//! seen", not "opened for reading": a handle opened and never read is a `Stat`.

use std::collections::HashMap;
use std::path::PathBuf;

use access_log::{AccessKind, AccessLog};

use crate::events::{EtwEvent, create, status};
use crate::nt_paths::VolumeMap;
use crate::tree::ProcessTree;

/// NT devices that are not files: their opens are neither inputs nor outputs.
const NOT_FILES: &[&str] = &[
    r"\Device\NamedPipe",
    r"\Device\ConDrv",
    r"\Device\Afd",
    r"\Device\Null",
    r"\Device\KsecDD",
    r"\Device\CNG",
    r"\Device\DeviceApi",
];

struct Pending {
    pid: u32,
    file_object: u64,
    options: u32,
    path: String,
    at: u64,
}

struct OpenFile {
    pid: u32,
    path: PathBuf,
    read: bool,
    written: bool,
    listed: bool,
    delete_on_close: bool,
}

pub struct Replay {
    volumes: VolumeMap,
    tree: ProcessTree,
    pending: HashMap<u64, Pending>,
    open: HashMap<u64, OpenFile>,
    log: AccessLog,
}

impl Replay {
    /// Replays for the tree rooted at `root` (the process the tracer started).
    pub fn new(root: u32, volumes: VolumeMap) -> Replay {
        Replay {
            volumes,
            tree: ProcessTree::new(root),
            pending: HashMap::new(),
            open: HashMap::new(),
            log: AccessLog {
                tracer: "etw".into(),
                ..AccessLog::default()
            },
        }
    }

    /// The Win32 path for `nt`; `None` (after recording a gap) for a file vt cannot name.
    fn name(&mut self, pid: u32, what: &str, nt: &str) -> Option<PathBuf> {
        if NOT_FILES.iter().any(|d| nt.starts_with(d)) {
            return None;
        }
        match self.volumes.to_win32(nt) {
            Some(path) => Some(PathBuf::from(path)),
            None => {
                self.log.gap(pid, what, format!("no Win32 name for {nt}"));
                None
            }
        }
    }

    fn push(&mut self, kind: AccessKind, path: PathBuf, pid: u32, at: u64) {
        // 100 ns ticks → ns, so accesses order like the other backends' logs.
        self.log.push_at(kind, path, pid, at.saturating_mul(100));
    }

    pub fn event(&mut self, event: EtwEvent) {
        match event {
            EtwEvent::ProcessStart {
                pid,
                parent,
                image,
                at,
            } => {
                if self.tree.started(pid, parent) {
                    self.log.count_notification("process");
                    if let Some(path) = self.name(pid, "process", &image) {
                        self.push(AccessKind::Exec, path, pid, at);
                    }
                }
            }
            EtwEvent::ProcessStop { pid, .. } => self.tree.stopped(pid),
            EtwEvent::Create {
                pid,
                irp,
                file_object,
                options,
                path,
                at,
            } if self.tree.contains(pid) => {
                self.log.count_notification("create");
                self.pending.insert(
                    irp,
                    Pending {
                        pid,
                        file_object,
                        options,
                        path,
                        at,
                    },
                );
            }
            EtwEvent::OperationEnd { irp, status, info } => {
                let Some(request) = self.pending.remove(&irp) else {
                    return; // not a create of the task's, or another kind of request
                };
                self.created(request, status, info);
            }
            EtwEvent::Read {
                file_object, at, ..
            } => {
                if let Some((pid, path)) = self.first_use(file_object, |f| &mut f.read) {
                    self.push(AccessKind::Read, path, pid, at);
                }
            }
            EtwEvent::Write {
                file_object, at, ..
            } => {
                if let Some((pid, path)) = self.first_use(file_object, |f| &mut f.written) {
                    self.push(AccessKind::Write, path, pid, at);
                }
            }
            EtwEvent::DirEnum {
                file_object, at, ..
            } => {
                if let Some((pid, path)) = self.first_use(file_object, |f| &mut f.listed) {
                    self.push(AccessKind::ReadDir, path, pid, at);
                }
            }
            EtwEvent::Delete { pid, path, at, .. } if self.tree.contains(pid) => {
                if let Some(path) = self.name(pid, "delete", &path) {
                    self.push(AccessKind::Delete, path, pid, at);
                }
            }
            EtwEvent::Rename {
                pid,
                path,
                new_path,
                at,
                ..
            } if self.tree.contains(pid) => {
                let from = self.name(pid, "rename", &path);
                let to = self.name(pid, "rename", &new_path);
                if let (Some(from), Some(to)) = (from, to) {
                    self.push(AccessKind::RenameFrom, from, pid, at);
                    self.push(AccessKind::RenameTo, to, pid, at);
                }
            }
            EtwEvent::Close { file_object } => {
                if let Some(file) = self.open.remove(&file_object)
                    && file.delete_on_close
                {
                    let at = self.log.accesses.last().map_or(0, |a| a.at_ns / 100);
                    self.push(AccessKind::Delete, file.path, file.pid, at);
                }
            }
            EtwEvent::Lost { count } => self.log.gap(
                0,
                "etw",
                format!("the ETW session dropped {count} events; what they said is unknown"),
            ),
            // File events of processes outside the task.
            EtwEvent::Create { .. } | EtwEvent::Delete { .. } | EtwEvent::Rename { .. } => {}
        }
    }

    /// Marks a use of an open file; the file's pid and path the first time only.
    fn first_use(
        &mut self,
        file_object: u64,
        flag: impl Fn(&mut OpenFile) -> &mut bool,
    ) -> Option<(u32, PathBuf)> {
        let file = self.open.get_mut(&file_object)?;
        let seen = flag(file);
        if *seen {
            return None;
        }
        *seen = true;
        Some((file.pid, file.path.clone()))
    }

    fn created(&mut self, request: Pending, status: u32, info: u64) {
        let Pending {
            pid,
            file_object,
            options,
            path,
            at,
        } = request;
        let Some(path) = self.name(pid, "create", &path) else {
            return;
        };
        let disposition = options >> create::DISPOSITION_SHIFT;
        if status::is_not_found(status) {
            // Opening a missing name is a negative input; creating under a missing
            // directory is too (the directory's absence), which the same path records.
            self.push(AccessKind::Missing, path, pid, at);
            return;
        }
        if !status::is_success(status) {
            // Exists but refused (sharing, access, FILE_CREATE on an existing name).
            self.push(AccessKind::Stat, path, pid, at);
            return;
        }
        let kind = match (info, disposition) {
            (create::INFO_CREATED, _) => AccessKind::Create,
            (create::INFO_OVERWRITTEN | create::INFO_SUPERSEDED, _) => AccessKind::Write,
            _ => AccessKind::Stat,
        };
        self.push(kind, path.clone(), pid, at);
        self.open.insert(
            file_object,
            OpenFile {
                pid,
                path,
                read: false,
                written: kind == AccessKind::Write,
                listed: false,
                delete_on_close: options & create::FILE_DELETE_ON_CLOSE != 0,
            },
        );
    }

    /// The log, with a gap if a create never got its result.
    pub fn finish(mut self) -> AccessLog {
        for (_, request) in std::mem::take(&mut self.pending) {
            self.log.gap(
                request.pid,
                "create",
                format!("no result for the create of {}", request.path),
            );
        }
        self.log
    }
}

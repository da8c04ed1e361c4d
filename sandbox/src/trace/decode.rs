//! From one stopped syscall to the accesses it will make.
//!
//! The supervisor answers CONTINUE, so it never sees the syscall's result. Where the result
//! matters (did the lookup fail? will `O_CREAT` create?) the decoder looks at the file
//! system itself *while the tracee is still stopped*, which is what the call will see
//! (barring a concurrent writer, which is then an output of the task anyway).

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::access::AccessKind;

use super::paths::{absolute_clean, without_self_links};
use super::syscalls::{Follow, Op, OpenFlags, PathArg, Syscall};
use super::tracee::{self, DirError, ReadError};

/// Longest path the kernel accepts (including the NUL).
const PATH_MAX: usize = libc::PATH_MAX as usize;

/// Why a notification produced no accesses.
#[derive(Debug, PartialEq, Eq)]
pub enum NoAccess {
    /// The call touches no path (bad pointer, tracee gone, fd that is not a file, …).
    Nothing,
    /// The call touches something vt cannot name: a tracing gap.
    Gap(String),
}

pub type Decoded = Result<Vec<(AccessKind, PathBuf)>, NoAccess>;

/// What the decoder needs to know about one stopped call.
pub struct Call<'a> {
    pub tid: u32,
    pub syscall: &'a Syscall,
    pub args: [u64; 6],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Existence {
    File,
    Dir,
    Missing,
    /// Exists or not, we cannot tell (EACCES, ELOOP, …): treated as existing, so it is
    /// hashed (and found unreadable) rather than assumed absent.
    Unknown,
}

pub(super) fn probe(path: &Path, follow: bool) -> Existence {
    let metadata = if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    };
    match metadata {
        Ok(m) if m.is_dir() => Existence::Dir,
        Ok(_) => Existence::File,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            Existence::Missing
        }
        Err(_) => Existence::Unknown,
    }
}

/// `found` if `path` exists (as the call will look it up), else `Missing`.
fn found_or_missing(path: &Path, follow: bool, found: AccessKind) -> AccessKind {
    if probe(path, follow) == Existence::Missing {
        AccessKind::Missing
    } else {
        found
    }
}

impl Call<'_> {
    fn arg(&self, index: u8) -> u64 {
        self.args[usize::from(index)]
    }

    fn follows(&self, follow: Follow) -> bool {
        match follow {
            Follow::Always => true,
            Follow::Never => false,
            Follow::UnlessNoFollowIn(i) => self.arg(i) & libc::AT_SYMLINK_NOFOLLOW as u64 == 0,
            Follow::IfFollowIn(i) => self.arg(i) & libc::AT_SYMLINK_FOLLOW as u64 != 0,
        }
    }

    /// The absolute, clean path a path argument names.
    fn resolve(&self, arg: PathArg) -> Result<PathBuf, NoAccess> {
        let raw = match tracee::read_c_string(self.tid, self.arg(arg.path), PATH_MAX - 1) {
            Ok(raw) => raw,
            Err(ReadError::Fault) | Err(ReadError::Gone) => return Err(NoAccess::Nothing),
            Err(ReadError::TooLong) => {
                // The kernel refuses it with ENAMETOOLONG before touching anything; record it
                // anyway so a pathological tool is visible.
                return Err(NoAccess::Gap(format!(
                    "path argument longer than PATH_MAX ({PATH_MAX})"
                )));
            }
            Err(ReadError::Other(errno)) => {
                return Err(NoAccess::Gap(format!("cannot read path argument: {errno}")));
            }
        };
        let dirfd = arg.dirfd.map(|i| self.arg(i) as i32);
        if raw.is_empty() {
            // Only meaningful with AT_EMPTY_PATH: the call acts on the dirfd itself.
            return match dirfd {
                Some(fd) if fd >= 0 => self.dir(Some(fd)),
                _ => Err(NoAccess::Nothing),
            };
        }
        let path = if raw.starts_with(b"/") {
            absolute_clean(None, &raw)
        } else {
            absolute_clean(Some(&self.dir(dirfd)?), &raw)
        };
        Ok(without_self_links(path, self.tid))
    }

    fn dir(&self, dirfd: Option<i32>) -> Result<PathBuf, NoAccess> {
        match tracee::base_dir(self.tid, dirfd) {
            Ok(dir) => Ok(dir),
            Err(DirError::Gone) | Err(DirError::NotAPath) => Err(NoAccess::Nothing),
            Err(DirError::Unnamed(e)) => Err(NoAccess::Gap(format!(
                "cannot name the directory of a relative lookup: {e}"
            ))),
            Err(DirError::Deleted(dir)) => Err(NoAccess::Gap(format!(
                "lookup relative to deleted directory {}",
                dir.display()
            ))),
        }
    }

    fn open_flags(&self, flags: OpenFlags) -> Result<i32, NoAccess> {
        match flags {
            OpenFlags::Arg(i) => Ok(self.arg(i) as i32),
            OpenFlags::Creat => Ok(libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC),
            OpenFlags::OpenHow(i) => match tracee::read_u64(self.tid, self.arg(i)) {
                Ok(flags) => Ok(flags as i32),
                Err(_) => Err(NoAccess::Nothing),
            },
        }
    }
}

/// Looks up syscall `nr` and decodes the stopped call; the error names the syscall.
pub fn decode_syscall(
    tid: u32,
    nr: i64,
    args: [u64; 6],
) -> Result<Vec<(AccessKind, PathBuf)>, (&'static str, NoAccess)> {
    let Some(syscall) = super::syscalls::lookup(nr) else {
        return Err((
            "unknown",
            NoAccess::Gap(format!("stopped in syscall {nr}, which vt does not decode")),
        ));
    };
    decode(&Call { tid, syscall, args }).map_err(|e| (syscall.name, e))
}

/// Adds what a decoded call did to `log`: its accesses, or a gap.
pub fn record(
    log: &mut crate::access::AccessLog,
    tid: u32,
    decoded: Result<Vec<(AccessKind, PathBuf)>, (&'static str, NoAccess)>,
) {
    match decoded {
        Ok(accesses) => {
            for (kind, path) in accesses {
                log.push(kind, path, tid);
            }
        }
        Err((_, NoAccess::Nothing)) => {}
        Err((name, NoAccess::Gap(reason))) => log.gap(tid, name, reason),
    }
}

/// Decodes one call into the accesses it makes.
pub fn decode(call: &Call<'_>) -> Decoded {
    use AccessKind::*;
    Ok(match call.syscall.op {
        Op::Open { path, flags } => {
            let flags = call.open_flags(flags)?;
            let path = call.resolve(path)?;
            let existence = probe(&path, flags & libc::O_NOFOLLOW == 0);
            open_accesses(path, flags, existence)
        }
        Op::Probe { path, follow } => {
            let path = call.resolve(path)?;
            let kind = found_or_missing(&path, call.follows(follow), Stat);
            vec![(kind, path)]
        }
        Op::Exec { path } => exec_accesses(call.resolve(path)?),
        Op::ListDir { fd } => match tracee::fd_path(call.tid, call.arg(fd) as i32) {
            Ok(dir) => vec![(ReadDir, dir)],
            Err(DirError::Unnamed(e)) => {
                return Err(NoAccess::Gap(format!(
                    "cannot name the listed directory: {e}"
                )));
            }
            Err(DirError::Deleted(dir)) => {
                return Err(NoAccess::Gap(format!(
                    "listing of deleted directory {}",
                    dir.display()
                )));
            }
            Err(_) => return Err(NoAccess::Nothing),
        },
        Op::MakeDir { path } | Op::MakeNode { path } | Op::Symlink { link: path } => {
            let path = call.resolve(path)?;
            vec![(creation(&path), path)]
        }
        Op::Remove { path } => {
            let path = call.resolve(path)?;
            let kind = found_or_missing(&path, false, Delete);
            vec![(kind, path)]
        }
        Op::Rename { from, to } => {
            let from = call.resolve(from)?;
            let to = call.resolve(to)?;
            if probe(&from, false) == Existence::Missing {
                vec![(Missing, from)]
            } else {
                vec![(RenameFrom, from), (RenameTo, to)]
            }
        }
        Op::Link { from, to, follow } => {
            let from = call.resolve(from)?;
            let to = call.resolve(to)?;
            if probe(&from, call.follows(follow)) == Existence::Missing {
                vec![(Missing, from)]
            } else {
                vec![(Stat, from), (Create, to)]
            }
        }
        Op::Modify { path, follow } => {
            let path = call.resolve(path)?;
            let kind = found_or_missing(&path, call.follows(follow), Write);
            vec![(kind, path)]
        }
        Op::OpenByHandle => {
            return Err(NoAccess::Gap(
                "open_by_handle_at opens a file by handle, not by a path vt can see".into(),
            ));
        }
    })
}

/// What an `open` of `path` with `flags` does, given whether the path existed when it was
/// looked up. Shared by the supervisor (which probes) and the preload's records (whose
/// result says).
pub(super) fn open_accesses(
    path: PathBuf,
    flags: i32,
    existence: Existence,
) -> Vec<(AccessKind, PathBuf)> {
    use AccessKind::*;
    let created = flags & libc::O_CREAT != 0;
    if flags & libc::O_TMPFILE == libc::O_TMPFILE {
        // An unnamed file in this directory: the directory is only looked up.
        let kind = if existence == Existence::Missing {
            Missing
        } else {
            Stat
        };
        return vec![(kind, path)];
    }
    match existence {
        Existence::Missing if created && parent_exists(&path) => vec![(Create, path)],
        Existence::Missing => vec![(Missing, path)],
        Existence::Dir => vec![(Stat, path)],
        _ if created && flags & libc::O_EXCL != 0 => vec![(Stat, path)],
        _ if flags & libc::O_PATH != 0 => vec![(Stat, path)],
        _ => match flags & libc::O_ACCMODE {
            libc::O_RDONLY => vec![(Read, path)],
            libc::O_WRONLY => vec![(Write, path)],
            _ => vec![(Read, path.clone()), (Write, path)],
        },
    }
}

/// What executing `path` reads: the file, and a script's `#!` interpreter, which the kernel
/// opens without any syscall we could see.
pub(super) fn exec_accesses(path: PathBuf) -> Vec<(AccessKind, PathBuf)> {
    use AccessKind::*;
    if probe(&path, true) == Existence::Missing {
        return vec![(Missing, path)];
    }
    let mut accesses = Vec::with_capacity(2);
    if let Some(interpreter) = shebang_interpreter(&path) {
        let kind = if probe(&interpreter, true) == Existence::Missing {
            Missing
        } else {
            Exec
        };
        accesses.push((kind, interpreter));
    }
    accesses.push((Exec, path));
    accesses
}

/// Whether `path`'s directory exists, so that creating `path` can succeed; if it does not,
/// the call fails with ENOENT and the lookup is a `Missing` input, not an output.
fn parent_exists(path: &Path) -> bool {
    path.parent()
        .is_some_and(|parent| probe(parent, true) == Existence::Dir)
}

/// What a call that creates `path` (without following a final symlink) will do.
fn creation(path: &Path) -> AccessKind {
    match probe(path, false) {
        Existence::Missing if parent_exists(path) => AccessKind::Create,
        Existence::Missing => AccessKind::Missing,
        _ => AccessKind::Stat, // EEXIST: only looked up
    }
}

/// The absolute interpreter path of a `#!` script, if `path` is one.
fn shebang_interpreter(path: &Path) -> Option<PathBuf> {
    let mut head = [0u8; 256];
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.read(&mut head).ok()?;
    let line = head[..len].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    let interpreter = line
        .split(|&b| b == b' ' || b == b'\t')
        .find(|token| !token.is_empty())?;
    interpreter
        .starts_with(b"/")
        .then(|| absolute_clean(None, std::ffi::OsStr::from_bytes(interpreter).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_is_parsed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("s");
        std::fs::write(&script, "#!  /bin/sh -e\necho\n").expect("write");
        assert_eq!(shebang_interpreter(&script), Some(PathBuf::from("/bin/sh")));
        std::fs::write(&script, "\x7fELF").expect("write");
        assert_eq!(shebang_interpreter(&script), None);
    }
}

//! Watching what a process tree does to the filesystem.
//!
//! [`spawn`] starts a command under the seccomp user-notify tracer (DESIGN.md §3): the child
//! installs a filter that stops every path syscall of it and all its descendants, hands the
//! listener fd to a supervisor thread, and then execs. [`TracedChild::wait`] returns the
//! exit status and the [`AccessLog`] once the *whole tree* is gone.
//!
//! Not here yet (tracked in issue 4's notes): the fanotify second source, the ptrace
//! fallback, and the LD_PRELOAD fast path.

pub mod bpf;
mod decode;
pub mod filter;
mod notify;
pub mod paths;
mod supervisor;
pub mod syscalls;
mod tracee;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

use crate::access::AccessLog;
use crate::reaper;

/// Environment variable that forces a tracer backend (`seccomp` or `ptrace`).
pub const TRACER_ENV: &str = "VT_TRACER";

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error(
        "seccomp user notification is not available here ({source}).\n  \
         hint: an outer seccomp supervisor (some container runtimes, WSL2) can refuse a second \
         listener with EBUSY, and kernels before 5.0 lack it; run vt outside that container \
         or with docker/seccomp.json"
    )]
    SeccompUnavailable { source: std::io::Error },
    #[error("the tracer backend {0:?} is not available in this build (VT_TRACER accepts: seccomp)")]
    UnknownBackend(String),
    #[error("tracer setup failed: {0}")]
    Setup(std::io::Error),
    #[error("the supervisor failed while tracing: {0}")]
    Supervisor(std::io::Error),
}

/// A running traced process tree.
pub struct TracedChild {
    pid: u32,
    status: Receiver<ExitStatus>,
    supervisor: JoinHandle<Result<AccessLog, TraceError>>,
}

impl TracedChild {
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Waits for the root's exit status and for every descendant to be gone.
    pub fn wait(self) -> Result<(ExitStatus, AccessLog), TraceError> {
        let status = self
            .status
            .recv()
            .map_err(|_| TraceError::Setup(std::io::Error::other("the reaper thread stopped")))?;
        let log = self.supervisor.join().map_err(|_| {
            TraceError::Supervisor(std::io::Error::other("the supervisor thread panicked"))
        })??;
        Ok((status, log))
    }
}

/// Starts `command` traced. The command's stdio, env and cwd are used as set by the caller.
pub fn spawn(mut command: Command) -> Result<TracedChild, TraceError> {
    match std::env::var(TRACER_ENV).ok().as_deref() {
        None | Some("") | Some("seccomp") => {}
        Some(other) => return Err(TraceError::UnknownBackend(other.to_owned())),
    }
    let program = command.get_program().to_string_lossy().into_owned();
    let (parent_end, child_end): (OwnedFd, OwnedFd) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| TraceError::Setup(e.into()))?;

    // The supervisor thread must already be waiting for the listener: the child's `execve`
    // is itself a notified syscall, and `Command::spawn` blocks until that exec completes.
    let supervisor = std::thread::Builder::new()
        .name("vt-supervisor".into())
        .spawn(move || {
            let listener = match notify::recv_handover(parent_end.as_raw_fd()) {
                Ok(Some(notify::Handover::Listener(fd))) => notify::Listener::new(fd),
                Ok(Some(notify::Handover::Failed(errno))) => {
                    return Err(TraceError::SeccompUnavailable {
                        source: std::io::Error::from_raw_os_error(errno),
                    });
                }
                Ok(None) => {
                    return Err(TraceError::Setup(std::io::Error::other(
                        "the child never sent its listener",
                    )));
                }
                Err(e) => return Err(TraceError::Setup(e)),
            };
            let mut log = AccessLog {
                tracer: "seccomp".into(),
                ..AccessLog::default()
            };
            supervisor::supervise(&listener, &mut log).map_err(TraceError::Supervisor)?;
            Ok(log)
        })
        .map_err(TraceError::Setup)?;

    let program_filter = filter::tracing_filter(libc::SECCOMP_RET_USER_NOTIF);
    let child_raw = child_end.as_raw_fd();
    // SAFETY: the closure runs between fork and exec and only makes syscalls (setpgid,
    // prctl, seccomp, sendmsg, close) on memory prepared before the fork: async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            // Own process group, so the whole tree can be signalled together.
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let listener = match notify::install_listener(&program_filter) {
                Ok(listener) => listener,
                Err(e) => {
                    // std reports only the errno to the parent; say on our socket that it
                    // came from seccomp and not from exec.
                    let errno = e.raw_os_error().unwrap_or(libc::EINVAL);
                    let _ = notify::send_failure(child_raw, errno);
                    return Err(e);
                }
            };
            let sent = notify::send_listener(child_raw, listener);
            // The tracee must not keep the listener: it could answer its own notifications.
            libc::close(listener);
            sent
        })
    };
    let spawned = reaper::spawn(&mut command);
    drop(child_end);
    let (child, status) = match spawned {
        Ok(spawned) => spawned,
        Err(e) => {
            return Err(match supervisor.join() {
                Ok(Err(unavailable @ TraceError::SeccompUnavailable { .. })) => unavailable,
                _ => TraceError::Spawn { program, source: e },
            });
        }
    };
    Ok(TracedChild {
        pid: child.id(),
        status,
        supervisor,
    })
}

//! The ptrace fallback, for where seccomp user notification cannot be had (an outer
//! supervisor holds the listener, old kernels): the same BPF filter with `SECCOMP_RET_TRACE`,
//! so only path syscalls stop, and the same decoder reading the stopped tracee.
//!
//! Ordering matters: `SECCOMP_RET_TRACE` with no tracer that asked for seccomp events fails
//! the syscall with ENOSYS, so the tracer must be attached *before* the child's `execve`,
//! while `Command::spawn` blocks until that `execve` completes. So a dedicated tracer thread
//! `PTRACE_SEIZE`s the child while the child waits in `pre_exec` on a pipe, and that thread
//! is then the only waiter for the tree (ptrace reports tracee stops to the tracer thread).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};
use std::thread::JoinHandle;

use nix::sys::ptrace::{self, Options};
use nix::unistd::Pid;

use crate::access::AccessLog;

use super::TraceError;
use super::{decode, filter};

const PTRACE_EVENT_SECCOMP: i32 = 7;
const PTRACE_EVENT_STOP: i32 = 128;

pub struct PtraceChild {
    pub pid: u32,
    pub tracer: JoinHandle<Result<(ExitStatus, AccessLog), TraceError>>,
}

fn pipe() -> Result<(std::fs::File, std::fs::File), TraceError> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| TraceError::Setup(e.into()))?;
    Ok((read.into(), write.into()))
}

/// One traced tree at a time in this process. A tracer thread waits with
/// `waitpid(-1, __WALL)`, which also returns the stops and exits of *another* thread's
/// tracees (Linux lets any thread of a process wait for every thread's children and
/// tracees): the stolen stop is then continued by a thread that is not its tracer (ESRCH)
/// and that tracee sits stopped forever. `__WNOTHREAD` would keep each thread to its own
/// tracees but leave orphans reparented to vt unreaped, so parallel tasks take turns.
struct Turn;

static TURN: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
static TURN_FREED: std::sync::Condvar = std::sync::Condvar::new();

impl Turn {
    fn take() -> Turn {
        static SAID: std::sync::Once = std::sync::Once::new();
        let mut busy = TURN.lock().unwrap_or_else(|p| p.into_inner());
        if *busy {
            SAID.call_once(|| {
                // Never a panic on a closed stderr (vt piped into `head`).
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    b"vt: the ptrace tracer runs one task at a time; parallel tasks wait for \
                      their turn (seccomp user notification, the default, runs them together)\n",
                );
            });
        }
        while *busy {
            busy = TURN_FREED.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        *busy = true;
        Turn
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        *TURN.lock().unwrap_or_else(|p| p.into_inner()) = false;
        TURN_FREED.notify_one();
    }
}

pub fn spawn(mut command: Command) -> Result<PtraceChild, TraceError> {
    let turn = Turn::take();
    let program = command.get_program().to_string_lossy().into_owned();
    // child → tracer: "my pid"; tracer → child: "attached, go on" (or EOF: give up).
    let (mut pid_read, pid_write) = pipe()?;
    let (go_read, mut go_write) = pipe()?;
    // Orphans of the tree must come back to vt to be waited for.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };

    let tracer = std::thread::Builder::new()
        .name("vt-ptrace".into())
        .spawn(move || {
            // Held until the whole tree is gone (also when setup fails).
            let _turn = turn;
            let mut pid_bytes = [0u8; 4];
            if pid_read.read_exact(&mut pid_bytes).is_err() {
                return Err(TraceError::Setup(std::io::Error::other(
                    "the child exited before tracing began",
                )));
            }
            let root = Pid::from_raw(i32::from_ne_bytes(pid_bytes));
            let options = Options::PTRACE_O_TRACESECCOMP
                | Options::PTRACE_O_TRACEFORK
                | Options::PTRACE_O_TRACEVFORK
                | Options::PTRACE_O_TRACECLONE
                | Options::PTRACE_O_TRACEEXEC
                | Options::PTRACE_O_EXITKILL;
            if let Err(errno) = ptrace::seize(root, options) {
                drop(go_write); // the child reads EOF and fails its spawn
                return Err(TraceError::PtraceUnavailable {
                    source: errno.into(),
                });
            }
            go_write.write_all(&[1]).map_err(TraceError::Setup)?;
            drop(go_write);
            trace_tree(root)
        })
        .map_err(TraceError::Setup)?;

    let program_filter = filter::tracing_filter(libc::SECCOMP_RET_TRACE, None);
    let pid_fd = pid_write.as_raw_fd();
    let go_fd = go_read.as_raw_fd();
    // SAFETY: between fork and exec the closure only makes syscalls (getpid, write, read,
    // setpgid, prctl, seccomp) on memory prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            let pid = libc::getpid().to_ne_bytes();
            if libc::write(pid_fd, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
                return Err(std::io::Error::last_os_error());
            }
            let mut go = 0u8;
            loop {
                match libc::read(go_fd, (&mut go as *mut u8).cast(), 1) {
                    1 => break,
                    0 => return Err(std::io::Error::from_raw_os_error(libc::EPERM)),
                    _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {
                        continue;
                    }
                    _ => return Err(std::io::Error::last_os_error()),
                }
            }
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The ptrace fallback serves kernels older than user-notify; before 4.17 the
            // flag itself is EINVAL, and the filter goes in without it.
            super::notify::install_filter(&program_filter, &[super::notify::OBSERVE_ONLY, 0])
                .map(|_| ())
        })
    };
    let spawned = command.spawn();
    drop((pid_write, go_read));
    match spawned {
        // The tracer thread waits for (and reaps) the child; std's handle is not used.
        Ok(child) => Ok(PtraceChild {
            pid: child.id(),
            tracer,
        }),
        Err(e) => Err(match tracer.join() {
            Ok(Err(unavailable @ TraceError::PtraceUnavailable { .. })) => unavailable,
            _ => TraceError::Spawn { program, source: e },
        }),
    }
}

/// Runs the tree to completion: answers every stop, decodes seccomp stops, and returns the
/// root's exit status once no traced process is left.
fn trace_tree(root: Pid) -> Result<(ExitStatus, AccessLog), TraceError> {
    let mut log = AccessLog {
        tracer: "ptrace".into(),
        ..AccessLog::default()
    };
    let mut root_status = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into our integer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
        if pid < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => break, // every traced process (and orphan) is gone
                _ => return Err(TraceError::Supervisor(std::io::Error::last_os_error())),
            }
        }
        let tracee = Pid::from_raw(pid);
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            if tracee == root {
                root_status = Some(ExitStatus::from_raw(status));
            }
            continue;
        }
        if !libc::WIFSTOPPED(status) {
            continue;
        }
        let signal = libc::WSTOPSIG(status);
        let event = status >> 16;
        let inject = match event {
            PTRACE_EVENT_SECCOMP => {
                record(tracee, &mut log);
                0
            }
            // fork/vfork/clone/exec events and group-stops: just continue. (A tracee's own
            // SIGSTOP/SIGTSTP is not honoured under tracing; builds do not rely on it.)
            PTRACE_EVENT_STOP => 0,
            e if e != 0 => 0,
            // Signal-delivery stop: deliver the signal as the kernel would have.
            _ => signal,
        };
        // SAFETY: PTRACE_CONT on a tracee in a ptrace-stop; a tracee killed meanwhile
        // yields ESRCH, which is harmless.
        unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, inject as libc::c_long) };
    }
    let status = root_status.ok_or_else(|| {
        TraceError::Supervisor(std::io::Error::other(
            "the traced command's exit status was lost",
        ))
    })?;
    Ok((status, log))
}

fn record(tracee: Pid, log: &mut AccessLog) {
    let Ok(regs) = ptrace::getregs(tracee) else {
        return;
    };
    let tid = tracee.as_raw() as u32;
    let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
    crate::access::count_notification(log, regs.orig_rax as i64);
    decode::record(
        log,
        tid,
        decode::decode_syscall(tid, regs.orig_rax as i64, args),
    );
}

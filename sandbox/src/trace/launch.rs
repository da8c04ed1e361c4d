//! Starting a traced task without `fork`.
//!
//! `Command::spawn` with a `pre_exec` hook (installing the seccomp filter needs one) forks:
//! the kernel copies vt's page tables and write-protects every private page, and after each
//! task start every page vt's threads write faults once more. Measured with `perf trace` and
//! `perf stat` on 100 tiny tasks: the fork took ~0.4 ms, and the cost grows with vt's memory
//! (a large task graph, a filled memtable). A [`Launch`] starts the child with
//! `clone(CLONE_VM | CLONE_VFORK)` instead, as glibc's `posix_spawn` does: the child runs on
//! vt's memory until it execs, so nothing is copied, and the calling thread waits until the
//! exec is done.
//!
//! Sharing vt's memory means the child may only make async-signal-safe syscalls on data
//! prepared before the clone: [`Prepared`] is that data (C strings and pointer arrays, the
//! filter), built and inspected by plain code; [`start`] is the thin syscall layer.
//!
//! The sandbox (namespaces cannot be entered by a process that shares its parent's memory)
//! and the ptrace backend start the same [`Launch`] through [`Launch::into_command`].

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};

use libc::{c_char, c_int, c_void, sock_filter};

use super::notify;

/// What to run, as plain data.
#[derive(Debug)]
pub struct Launch {
    /// An absolute path: there is no `PATH` search in the child (see [`super::program`]).
    pub program: PathBuf,
    pub arg0: OsString,
    pub args: Vec<OsString>,
    /// The task's whole environment.
    pub env: BTreeMap<OsString, OsString>,
    pub cwd: PathBuf,
    /// `None`: vt's own stdin.
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Descriptors the task inherits under their own numbers (close-on-exec is cleared in
    /// the child only, so no other task's child gets them). The caller keeps them open
    /// until the launch has started.
    pub inherit: Vec<RawFd>,
}

impl Launch {
    /// The same launch as a `Command` (started with `fork`), for the sandbox and ptrace.
    pub fn into_command(self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .arg0(&self.arg0)
            .args(&self.args)
            .env_clear()
            .envs(&self.env)
            .current_dir(&self.cwd)
            .stdin(self.stdin.map_or_else(Stdio::inherit, Stdio::from))
            .stdout(Stdio::from(self.stdout))
            .stderr(Stdio::from(self.stderr));
        let inherit = self.inherit;
        // SAFETY: between fork and exec, only the two async-signal-safe helpers below on
        // data prepared before the fork.
        unsafe {
            command.pre_exec(move || {
                for &fd in &inherit {
                    keep_across_exec(fd)?;
                }
                reset_signal_mask()
            });
        }
        command
    }
}

/// Clears `fd`'s close-on-exec flag in this process (a child's, between fork or clone and
/// exec). Async-signal-safe.
fn keep_across_exec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD with 0 only changes `fd`'s descriptor flags; EBADF is reported.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unblocks every signal on the calling thread: a mask survives exec, and vt's threads block
/// SIGINT, SIGTERM and SIGHUP (std does not reset it for a child). Async-signal-safe, for a
/// child between fork or clone and exec.
pub fn reset_signal_mask() -> io::Result<()> {
    // SAFETY: an empty set on the stack, read by pthread_sigmask.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The step of the child's setup that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub enum Step {
    ProcessGroup = 1,
    Stdio = 2,
    Inherit = 3,
    Chdir = 4,
    Filter = 5,
    Handover = 6,
    Exec = 7,
}

impl Step {
    fn from_code(code: i64) -> Option<Step> {
        [
            Step::ProcessGroup,
            Step::Stdio,
            Step::Inherit,
            Step::Chdir,
            Step::Filter,
            Step::Handover,
            Step::Exec,
        ]
        .into_iter()
        .find(|s| *s as i64 == code)
    }

    fn describe(self) -> &'static str {
        match self {
            Step::ProcessGroup => "cannot make its own process group",
            Step::Stdio => "cannot set up its stdin, stdout and stderr",
            Step::Inherit => "cannot pass it vt's IPC socket",
            Step::Chdir => "cannot enter its working directory",
            Step::Filter => "cannot install the tracing filter",
            Step::Handover => "cannot hand the tracing listener to vt",
            Step::Exec => "cannot execute the program",
        }
    }
}

/// The value the child passes in `execve`'s unused fourth argument so that the tracing
/// filter lets its exec through without stopping for the supervisor ([`exempts_exec`]);
/// random per vt process, `None` if the kernel gave no random bytes.
///
/// The exec of the task's program is vt's own call, on a path vt chose: vt records it
/// itself (as the supervisor would, [`super::decode::exec_accesses`]) and saves the task's
/// start a round trip to the supervisor thread. A process of the task cannot pass the
/// value without knowing it (64 random bits, held in vt's memory and in the filter, which
/// only a process allowed to ptrace it with `CAP_SYS_ADMIN` can read back).
pub fn exec_token() -> Option<u64> {
    static TOKEN: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *TOKEN.get_or_init(|| {
        let mut bytes = [0u8; 8];
        // SAFETY: fills our 8-byte buffer.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        (n == bytes.len() as isize)
            .then(|| u64::from_ne_bytes(bytes))
            .filter(|&token| token != 0)
    })
}

/// Whether the exec of `program` by a [`Prepared`] child passes the filter without a stop:
/// an absolute path (what vt records is then what the kernel executes) and a token.
pub fn exempts_exec(program: &std::path::Path) -> bool {
    program.is_absolute() && exec_token().is_some()
}

/// Everything the child uses, prepared before the clone.
pub struct Prepared {
    path: CString,
    /// The strings `argv_ptrs` and `envp_ptrs` point into.
    argv: Vec<CString>,
    envp: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    envp_ptrs: Vec<*const c_char>,
    cwd: CString,
    /// The descriptors for 0, 1, 2 (-1: keep vt's).
    stdio: [RawFd; 3],
    inherit: Vec<RawFd>,
    filter: Vec<sock_filter>,
    /// The child's end of the socket the listener is handed over on.
    handover: RawFd,
    /// The working directory, opened: set when the cloning thread already holds the filter
    /// ([`Prepared::inheriting`]). The child then enters it with `fchdir` (a `chdir` by path
    /// would itself stop for the supervisor) and installs nothing.
    inherited: Option<OwnedFd>,
    /// Passed to `execve` as its fourth argument ([`exec_token`]); 0: a plain `execve`.
    exec_token: u64,
    /// Whether the child makes a process group of its own (not in a sandbox, whose task
    /// process leads a session of its own).
    own_group: bool,
    /// Set by a child whose setup failed: `step << 32 | errno`.
    failed: AtomicI64,
}

fn c_string(bytes: &[u8], what: &str) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

impl Prepared {
    /// `launch`'s strings and descriptors as the child needs them; `launch` must outlive
    /// the start (it owns the descriptors).
    pub fn new(launch: &Launch, filter: Vec<sock_filter>, handover: RawFd) -> io::Result<Prepared> {
        let path = c_string(launch.program.as_os_str().as_bytes(), "the program's path")?;
        let mut argv = vec![c_string(launch.arg0.as_bytes(), "argv[0]")?];
        for arg in &launch.args {
            argv.push(c_string(arg.as_bytes(), "an argument")?);
        }
        let mut envp = Vec::with_capacity(launch.env.len());
        for (name, value) in &launch.env {
            let mut entry = name.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            envp.push(c_string(&entry, "an environment variable")?);
        }
        let pointers = |strings: &[CString]| -> Vec<*const c_char> {
            strings
                .iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        Ok(Prepared {
            path,
            argv_ptrs: pointers(&argv),
            envp_ptrs: pointers(&envp),
            argv,
            envp,
            cwd: c_string(launch.cwd.as_os_str().as_bytes(), "the working directory")?,
            stdio: [
                launch.stdin.as_ref().map_or(-1, AsRawFd::as_raw_fd),
                launch.stdout.as_raw_fd(),
                launch.stderr.as_raw_fd(),
            ],
            inherit: launch.inherit.clone(),
            filter,
            handover,
            inherited: None,
            exec_token: exec_token()
                .filter(|_| exempts_exec(&launch.program))
                .unwrap_or(0),
            own_group: true,
            failed: AtomicI64::new(0),
        })
    }

    /// `launch` for a child of a thread that already holds the tracing filter
    /// ([`super::armed`]): the child inherits the filter and its listener is the thread's.
    pub fn inheriting(launch: &Launch) -> io::Result<Prepared> {
        let mut prepared = Prepared::new(launch, Vec::new(), -1)?;
        let cwd = nix::fcntl::open(
            launch.cwd.as_path(),
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| {
            let cause = io::Error::from(e);
            io::Error::new(cause.kind(), format!("{}: {cause}", Step::Chdir.describe()))
        })?;
        prepared.inherited = Some(cwd);
        Ok(prepared)
    }

    /// For a sandbox's task process, which leads a session of its own: the child keeps it.
    pub(crate) fn in_a_session_of_its_own(&mut self) {
        self.own_group = false;
    }

    /// The step a child of this launch failed at before its exec, and why; `None` if it
    /// did not fail (it exec'd, or has not run).
    pub(crate) fn failure(&self) -> Option<io::Error> {
        let failed = self.failed.load(Ordering::SeqCst);
        if failed == 0 {
            return None;
        }
        let errno = (failed & 0xffff_ffff) as i32;
        let step = Step::from_code(failed >> 32).unwrap_or(Step::Exec);
        let cause = io::Error::from_raw_os_error(errno);
        Some(if step == Step::Exec {
            cause
        } else {
            io::Error::new(cause.kind(), format!("{}: {cause}", step.describe()))
        })
    }

    /// Whether a child of this launch failed before its exec (no allocation: for a child
    /// on vt's memory).
    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst) != 0
    }

    /// argv as the child will see it (for tests).
    pub fn argv(&self) -> Vec<&[u8]> {
        self.argv.iter().map(|s| s.as_bytes()).collect()
    }

    /// The environment as the child will see it (for tests).
    pub fn envp(&self) -> Vec<&[u8]> {
        self.envp.iter().map(|s| s.as_bytes()).collect()
    }
}

/// The child, between the clone and the exec, on vt's memory: syscalls only, no allocation,
/// no locks. On failure it records the step and errno in `failed` and exits.
extern "C" fn child(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Prepared` that `start` passed, alive until the exec (the
    // parent's thread is suspended by CLONE_VFORK until then).
    let p = unsafe { &*(arg as *const Prepared) };
    exec_prepared(p)
}

/// The child's steps from its process group to the exec, for [`child`] and for a
/// sandbox's task process (`jail::apply::chain`), which runs them after its own. Returns
/// only on failure, recorded in `p.failed`, by exiting.
pub(crate) fn exec_prepared(p: &Prepared) -> c_int {
    let fail = |step: Step, errno: i32| -> c_int {
        p.failed
            .store(((step as i64) << 32) | i64::from(errno), Ordering::SeqCst);
        // SAFETY: ends the child without running anything of vt's.
        unsafe { libc::_exit(127) }
    };
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL)
    };
    // SAFETY: plain syscalls on descriptors and strings prepared before the clone.
    unsafe {
        // vt ignores SIGPIPE; a task starts with the default, as std's children do.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        // Own process group, so the whole tree can be signalled together (in a sandbox the
        // process leads a session of its own already).
        if p.own_group && libc::setpgid(0, 0) != 0 {
            return fail(Step::ProcessGroup, errno());
        }
        for (target, &fd) in p.stdio.iter().enumerate() {
            let target = target as RawFd;
            let ok = if fd < 0 {
                true
            } else if fd == target {
                keep_across_exec(fd).is_ok()
            } else {
                libc::dup2(fd, target) >= 0
            };
            if !ok {
                return fail(Step::Stdio, errno());
            }
        }
        for &fd in &p.inherit {
            if let Err(e) = keep_across_exec(fd) {
                return fail(Step::Inherit, e.raw_os_error().unwrap_or(libc::EINVAL));
            }
        }
        let entered = match &p.inherited {
            Some(dir) => libc::fchdir(dir.as_raw_fd()),
            None => libc::chdir(p.cwd.as_ptr()),
        };
        if entered != 0 {
            return fail(Step::Chdir, errno());
        }
    }
    // With `inherited`, the filter came with the clone and the listener is the cloning
    // thread's.
    if p.inherited.is_none() {
        let listener = match notify::install_listener(&p.filter) {
            Ok(listener) => listener,
            Err(e) => {
                let code = e.raw_os_error().unwrap_or(libc::EINVAL);
                let _ = notify::send_failure(p.handover, code);
                return fail(Step::Filter, code);
            }
        };
        let sent = notify::send_listener(p.handover, listener);
        // SAFETY: the tracee must not keep the listener (it could answer its own
        // notifications).
        unsafe { libc::close(listener) };
        if let Err(e) = sent {
            return fail(Step::Handover, e.raw_os_error().unwrap_or(libc::EINVAL));
        }
    }
    // Last, so that no signal is handled between the clone and here.
    let _ = reset_signal_mask();
    // SAFETY: execve with null-terminated arrays of pointers into `p`'s strings (and, as
    // the fourth argument, which execve ignores, the token the filter lets through).
    unsafe {
        if p.exec_token != 0 {
            libc::syscall(
                libc::SYS_execve,
                p.path.as_ptr(),
                p.argv_ptrs.as_ptr(),
                p.envp_ptrs.as_ptr(),
                p.exec_token as libc::c_long,
            );
        } else {
            libc::execve(p.path.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
        }
    }
    fail(Step::Exec, errno())
}

/// Clones `child(arg)` on `stack_top` with `CLONE_VM | CLONE_VFORK` and every signal
/// blocked on the calling thread meanwhile (the child borrows its memory, and no handler of
/// vt's may run in it; the child inherits that mask); returns the child's pid once it has
/// exec'd or exited.
///
/// # Safety
/// `stack_top` must be the top of memory the child can use as its stack, and `arg` what
/// `child` expects, both alive until this returns.
pub(crate) unsafe fn clone_vfork(
    child: extern "C" fn(*mut c_void) -> c_int,
    stack_top: *mut c_void,
    arg: *mut c_void,
) -> io::Result<c_int> {
    // SAFETY: as the caller promised.
    unsafe { clone_vfork_then(child, stack_top, arg, || {}) }
}

/// [`clone_vfork`], then `then` with every signal still blocked: for a child whose own
/// children go on running on the calling thread's memory after it ends (the sandbox's
/// init), which the calling thread must not disturb until they say they are done.
///
/// # Safety
/// As [`clone_vfork`].
pub(crate) unsafe fn clone_vfork_then(
    child: extern "C" fn(*mut c_void) -> c_int,
    stack_top: *mut c_void,
    arg: *mut c_void,
    then: impl FnOnce(),
) -> io::Result<c_int> {
    // SAFETY: all-zero sigset_t values, filled by sigfillset and pthread_sigmask; the clone
    // as the caller promised.
    unsafe {
        let (mut all, mut old): (libc::sigset_t, libc::sigset_t) =
            (std::mem::zeroed(), std::mem::zeroed());
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child,
            stack_top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            arg,
        );
        let clone_errno = io::Error::last_os_error();
        if pid >= 0 {
            then();
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_errno);
        }
        Ok(pid)
    }
}

/// The child's stack: it runs only the few calls above.
const STACK: usize = 64 * 1024;

/// Starts the child; returns once it has exec'd (its pid) or failed (the error names the
/// step; the reaper reaps the exited child).
pub fn start(prepared: &Prepared) -> io::Result<u32> {
    let mut stack: Vec<u8> = Vec::with_capacity(STACK);
    // The stack grows down from its 16-byte aligned top.
    let top = (stack.as_mut_ptr() as usize + STACK) & !15;
    // SAFETY: the stack outlives the child's use of it (CLONE_VFORK returns after the exec
    // or the exit), and so does `prepared`.
    let pid = unsafe {
        clone_vfork(
            child,
            top as *mut c_void,
            (prepared as *const Prepared).cast_mut().cast(),
        )?
    };
    drop(stack);
    prepared.failure().map_or(Ok(pid as u32), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(env: &[(&str, &str)]) -> Launch {
        let null = || OwnedFd::from(std::fs::File::open("/dev/null").expect("/dev/null"));
        Launch {
            program: "/bin/sh".into(),
            arg0: "sh".into(),
            args: vec!["-c".into(), "exit 3".into()],
            env: env.iter().map(|(k, v)| (k.into(), v.into())).collect(),
            cwd: "/".into(),
            stdin: None,
            stdout: null(),
            stderr: null(),
            inherit: vec![],
        }
    }

    #[test]
    fn the_child_gets_argv_0_the_arguments_and_exactly_the_environment() {
        let launch = launch(&[("PATH", "/usr/bin:/bin"), ("A", "1")]);
        let prepared = Prepared::new(&launch, Vec::new(), -1).expect("prepared");
        assert_eq!(prepared.argv(), [&b"sh"[..], b"-c", b"exit 3"]);
        assert_eq!(prepared.envp(), [&b"A=1"[..], b"PATH=/usr/bin:/bin"]);
        assert_eq!(prepared.argv_ptrs.last(), Some(&std::ptr::null()));
        assert_eq!(prepared.envp_ptrs.len(), 3);
        assert_eq!(prepared.stdio[0], -1, "stdin is vt's");
    }

    #[test]
    fn a_nul_byte_is_a_clear_error_not_a_truncated_argument() {
        let mut bad = launch(&[]);
        bad.args.push("a\0b".into());
        let err = Prepared::new(&bad, Vec::new(), -1).err().expect("refused");
        assert!(err.to_string().contains("NUL"), "{err}");
    }

    fn start_traced(
        launch: &Launch,
    ) -> io::Result<(u32, std::sync::mpsc::Receiver<std::process::ExitStatus>)> {
        let (ours, theirs) = std::os::unix::net::UnixDatagram::pair().expect("socketpair");
        let allow_all = vec![crate::trace::bpf::ret(libc::SECCOMP_RET_ALLOW)];
        let prepared = Prepared::new(launch, allow_all, theirs.as_raw_fd()).expect("prepared");
        let started = crate::reaper::spawn_with(|| start(&prepared));
        drop(ours);
        started
    }

    #[test]
    fn a_started_child_runs_in_its_directory_and_its_exit_status_arrives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut run = launch(&[("PATH", "/usr/bin:/bin")]);
        run.args = vec!["-c".into(), "pwd > where.txt; exit 3".into()];
        run.cwd = dir.path().to_owned();
        let (_pid, status) = start_traced(&run).expect("started");
        let status = status.recv().expect("status");
        assert_eq!(status.code(), Some(3));
        let written = std::fs::read_to_string(dir.path().join("where.txt")).expect("where.txt");
        assert_eq!(
            std::path::Path::new(written.trim()),
            std::fs::canonicalize(dir.path()).expect("canonical")
        );
    }

    #[test]
    fn a_failed_setup_step_is_named_and_a_missing_program_is_enoent() {
        let mut bad_dir = launch(&[]);
        bad_dir.cwd = "/nonexistent/vt-launch-test".into();
        let err = start_traced(&bad_dir).expect_err("refused");
        assert!(err.to_string().contains("working directory"), "{err}");
        let mut missing = launch(&[]);
        missing.program = "/nonexistent/vt-launch-test/sh".into();
        let err = start_traced(&missing).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn failed_steps_are_named() {
        assert_eq!(Step::from_code(Step::Chdir as i64), Some(Step::Chdir));
        assert!(Step::Chdir.describe().contains("working directory"));
    }
}

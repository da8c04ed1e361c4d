//! Starting a sandbox without a fork of vt: its processes are `clone(CLONE_VM)` children
//! that run on vt's memory until the task execs, as [`crate::trace::launch`] starts an
//! unsandboxed task.
//!
//! Why: a fork copies vt's page tables and write-protects every private page of vt, and
//! the sandbox forked three times (A, B, C below); vt's threads then fault once on every
//! page they write. Nothing of vt's memory is copied here.
//!
//! - **A** (`clone(CLONE_VM | CLONE_VFORK)` of vt's thread, which waits until A exits,
//!   then, its signals still blocked, until B says the task has exec'd) enters the network
//!   namespace made ahead, creates the other namespaces and writes the id maps, as in the
//!   forked sandbox; then clones B with `CLONE_PARENT`, so that B is vt's child, and exits.
//! - **B** is pid 1 of the new pid namespace. It makes its own process group (vt signals
//!   the sandbox through it), builds the root and clones C (`CLONE_VFORK`: B waits for the
//!   exec). Then it is the namespace's init: it reaps, and when C ends it writes C's wait
//!   status to a pipe vt reads and exits with C's exit code (pid 1 cannot die of C's
//!   signal), which kills whatever is left in the namespace.
//!   A signal vt forwards (SIGINT, SIGTERM, SIGHUP) ends it the same way, with that signal
//!   as the task's status: pid 1 would drop those signals, but all signals are blocked in
//!   B, and blocked signals are queued for it to take with `rt_sigtimedwait`.
//! - **C** leads a session of its own, locks itself down (no_new_privs, landlock, no
//!   capabilities: B keeps its capabilities in the new user namespace, so C, having none
//!   and being landlocked, cannot ptrace B, which shares vt's memory), installs the
//!   deny-list and runs the launch's own steps: descriptors, working directory, the
//!   tracing filter handed to vt's supervisor, the exec.
//!
//! B keeps running on vt's memory after vt's thread goes on, on a stack of its own that vt
//! frees only once B is reaped ([`Started::init_stack`]). From the moment it tells vt the
//! task has exec'd it makes raw system calls only (`raw`), touching no thread-local
//! state: it shares the thread pointer of vt's thread (its `errno`). Until then vt's thread
//! is suspended (in the clone of A, then in a read of the started pipe with every signal
//! blocked: no handler of vt's runs on that thread while B and C use its thread pointer).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libc::{c_int, c_void};

use super::init::die_with_parent;
use super::{Prepared, Step, syscall};
use crate::trace::launch;

/// Whether this build can start a sandbox without a fork (the raw system calls of B's
/// init are written for these architectures).
pub fn starts_without_fork() -> bool {
    cfg!(any(target_arch = "x86_64", target_arch = "aarch64"))
}

/// A child's stack: mapped, with a guard page below it, unmapped on drop.
pub struct Stack {
    base: *mut c_void,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; moving it between threads is
// fine (only B uses it, until vt drops it after B is reaped).
unsafe impl Send for Stack {}

impl Stack {
    fn new(len: usize) -> io::Result<Stack> {
        // SAFETY: a fresh anonymous private mapping, then its lowest page made inaccessible.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let stack = Stack { base, len };
            if libc::mprotect(base, page_size(), libc::PROT_NONE) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(stack)
        }
    }

    /// The 16-byte aligned top the stack grows down from.
    fn top(&self) -> *mut c_void {
        ((self.base as usize + self.len) & !15) as *mut c_void
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf with a constant name.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as usize } else { 4096 }
}

/// A's and C's stacks: they run the setup steps only.
const SETUP_STACK: usize = 256 * 1024;
/// B's: the root's construction, then its init loop.
const INIT_STACK: usize = 256 * 1024;

/// What A, B and C share (vt's memory; vt's thread is suspended while they read it).
struct Chain<'a> {
    jail: *mut Prepared,
    task: &'a launch::Prepared,
    init_stack: *mut c_void,
    task_stack: *mut c_void,
    /// B's pid as vt sees it, set by A: 0 if B was never cloned.
    init_pid: AtomicI32,
    /// Set by C when a sandbox step of its own failed (reported on the report pipe).
    task_failed: AtomicBool,
    /// Set by B once C has exec'd, just before it tells vt.
    started: AtomicBool,
    /// B tells vt's thread the task has exec'd (one byte; end of file: it has not). vt
    /// closes its write end once A is gone, so the read ends at B's word or when B and C
    /// are gone. (A process another thread of vt's starts meanwhile inherits a copy: a
    /// failed sandbox's end of file then waits for that one to close it too.)
    started_read: AtomicI32,
    started_write: AtomicI32,
    /// Where B writes C's wait status.
    status_write: RawFd,
    /// When each process reached each point (`VT_TIMINGS`), see [`Moment`].
    moments: Moments,
}

/// The points of the chain whose times `VT_TIMINGS` reports, in order.
#[derive(Clone, Copy)]
enum Moment {
    AStarted = 1,
    NamespacesMade,
    BStarted,
    RootBuilt,
    CStarted,
    LockedDown,
    /// vt's thread runs again: A has exited after B's word that C exec'd.
    Back,
}

/// The spans between consecutive moments, as phases.
const SPANS: [&str; 7] = [
    "sandbox: clone A",
    "sandbox: A namespaces",
    "sandbox: clone B",
    "sandbox: B root",
    "sandbox: clone C",
    "sandbox: C lockdown",
    "sandbox: C exec, back to vt",
];

/// Nanoseconds since `start` at each [`Moment`] (0: not reached); the clock is read only
/// when timings are on. Atomics, because A, B and C write them on vt's memory; vt reads
/// them after A has exited.
struct Moments {
    start: Option<Instant>,
    at: [AtomicU64; SPANS.len() + 1],
}

impl Moments {
    fn new() -> Moments {
        Moments {
            start: crate::timings::on().then(Instant::now),
            at: Default::default(),
        }
    }

    /// Notes `moment` now (a vDSO clock read: no system call, no `errno`).
    fn note(&self, moment: Moment) {
        if let Some(start) = self.start {
            let ns = start.elapsed().as_nanos().max(1) as u64;
            self.at[moment as usize].store(ns, Ordering::Relaxed);
        }
    }

    fn record(&self) {
        if let Some(start) = self.start {
            let at: Vec<Duration> = self
                .at
                .iter()
                .map(|ns| Duration::from_nanos(ns.load(Ordering::Relaxed)))
                .collect();
            crate::timings::record_spans(&SPANS, start, &at);
        }
    }
}

/// A sandbox whose task has exec'd.
pub struct Started {
    /// B's pid: vt's child, whose end is the task's.
    pub pid: u32,
    /// B's stack, which it runs on until it exits: keep it until B is reaped.
    pub init_stack: Stack,
    /// The task's wait status, written by B as it ends (non-blocking; empty if B was
    /// killed).
    pub status: OwnedFd,
}

impl Prepared {
    /// Starts `task` in this sandbox without a fork of vt; returns once the task has
    /// exec'd. On failure, the step is on the report pipe (a sandbox step) or in the
    /// returned error (the launch's own steps).
    pub fn start(&mut self, task: &launch::Prepared) -> io::Result<Started> {
        let setup_stack = Stack::new(SETUP_STACK)?;
        let task_stack = Stack::new(SETUP_STACK)?;
        let init_stack = Stack::new(INIT_STACK)?;
        let (status, status_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        let (started_read, started_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let mut started_write = Some(started_write);
        let chain = Chain {
            jail: self as *mut Prepared,
            task,
            init_stack: init_stack.top(),
            task_stack: task_stack.top(),
            init_pid: AtomicI32::new(0),
            task_failed: AtomicBool::new(false),
            started: AtomicBool::new(false),
            started_read: AtomicI32::new(started_read.as_raw_fd()),
            started_write: AtomicI32::new(started_write.as_ref().map_or(-1, |fd| fd.as_raw_fd())),
            status_write: status_write.as_raw_fd(),
            moments: Moments::new(),
        };
        // SAFETY: A runs on `setup_stack` with every signal blocked (no handler of vt's
        // runs in A, B or C; B keeps them blocked, see the module docs). This thread waits
        // until A exits, then, signals still blocked, for B's word that C has exec'd (or
        // the pipe's end, when B or C failed), after which B no longer reads `chain`; the
        // stacks and `chain` outlive that.
        unsafe {
            launch::clone_vfork_then(
                outer,
                setup_stack.top(),
                (&chain as *const Chain).cast_mut().cast(),
                || {
                    // A's copies are gone with A: B's (and C's until its exec) remain.
                    drop(started_write.take());
                    let mut byte = 0u8;
                    while libc::read(started_read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) < 0
                        && *libc::__errno_location() == libc::EINTR
                    {}
                },
            )?
        };
        drop(started_read);
        // A has exited; the reaper reaps it (it is no task's root).
        chain.moments.note(Moment::Back);
        chain.moments.record();
        drop((status_write, setup_stack, task_stack));
        let init = chain.init_pid.load(Ordering::SeqCst);
        if chain.started.load(Ordering::SeqCst) && init > 0 {
            return Ok(Started {
                pid: init as u32,
                init_stack,
                status,
            });
        }
        // B is gone or going (it exits when its task did not start): its stack can go
        // only once it has exited, so it is kept for good in that rare case.
        if init > 0 {
            std::mem::forget(init_stack);
        }
        Err(task
            .failure()
            .unwrap_or_else(|| io::Error::other("the sandbox did not start its task")))
    }
}

/// A: namespaces and id maps, then B; then it exits (vt's thread waits for B's word).
extern "C" fn outer(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Chain` that `start` passed; vt's thread is suspended until B's
    // word, and only A uses `jail` until it has cloned B.
    let chain = unsafe { &*(arg as *const Chain) };
    let jail = unsafe { &mut *chain.jail };
    // SAFETY: syscalls on values prepared before the clone.
    unsafe {
        chain.moments.note(Moment::AStarted);
        die_with_parent();
        if jail.enter_namespaces().is_err() {
            libc::_exit(127);
        }
        chain.moments.note(Moment::NamespacesMade);
        let init = clone_or_exit(
            jail,
            init,
            chain.init_stack,
            libc::CLONE_VM | libc::CLONE_PARENT | libc::SIGCHLD,
            arg,
        );
        chain.init_pid.store(init, Ordering::SeqCst);
        // vt's thread waits for B's word itself: it wakes on B's write rather than on A's
        // exit after A's own wake-up (~0.1 ms of every sandbox's start in a run).
        libc::_exit(0)
    }
}

/// Clones `child` on `stack` with `flags`; on failure reports the fork step on `jail`'s
/// pipe and exits, as the chain's processes do.
///
/// # Safety
/// As `libc::clone`: `stack` is the top of memory `child` may use, `arg` what it expects.
unsafe fn clone_or_exit(
    jail: &Prepared,
    child: extern "C" fn(*mut c_void) -> c_int,
    stack: *mut c_void,
    flags: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: as the caller promised.
    unsafe {
        let pid = libc::clone(child, stack, flags, arg);
        if pid < 0 {
            jail.report(Step::Fork, *libc::__errno_location());
            libc::_exit(127);
        }
        pid
    }
}

/// B: the root, then C, then init.
extern "C" fn init(arg: *mut c_void) -> c_int {
    // SAFETY: as in `outer`: vt's thread waits for B's word (A has cloned B and exits), so
    // `chain` and `jail` are B's alone until B writes to the started pipe.
    let chain = unsafe { &*(arg as *const Chain) };
    let jail = unsafe { &mut *chain.jail };
    // SAFETY: syscalls on prepared values; raw ones only after the word to vt.
    unsafe {
        chain.moments.note(Moment::BStarted);
        libc::setpgid(0, 0);
        die_with_parent();
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        libc::close(chain.started_read.load(Ordering::SeqCst));
        if jail.build_root(&syscall::Linux).is_err() {
            libc::_exit(127);
        }
        chain.moments.note(Moment::RootBuilt);
        let task = clone_or_exit(
            jail,
            task,
            chain.task_stack,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            arg,
        );
        if chain.task_failed.load(Ordering::SeqCst) || chain.task.has_failed() {
            libc::_exit(127);
        }
        let status_write = chain.status_write;
        let started_write = chain.started_write.load(Ordering::SeqCst);
        chain.started.store(true, Ordering::SeqCst);
        // From here on, `chain` is gone and vt's thread runs: raw system calls only.
        raw::write(started_write, &[1u8]);
        raw::close_all_but(status_write);
        raw::init_until(task, status_write)
    }
}

/// C: its session, its lockdown, the deny-list, then the launch's own steps and the exec.
extern "C" fn task(arg: *mut c_void) -> c_int {
    // SAFETY: as in `init`; B is suspended until C execs or exits (CLONE_VFORK).
    let chain = unsafe { &*(arg as *const Chain) };
    let jail = unsafe { &mut *chain.jail };
    // SAFETY: syscalls on prepared values.
    unsafe {
        chain.moments.note(Moment::CStarted);
        let ready = jail
            .check(Step::Session, libc::setsid())
            .and_then(|()| {
                die_with_parent();
                jail.lock_down()
            })
            .and_then(|()| jail.install_deny_list());
        if ready.is_err() {
            chain.task_failed.store(true, Ordering::SeqCst);
            libc::_exit(127);
        }
        chain.moments.note(Moment::LockedDown);
    }
    launch::exec_prepared(chain.task)
}

/// System calls that touch no thread-local state (glibc's wrappers set `errno`, which B
/// shares with a thread of vt's), for B once vt's thread runs again.
mod raw {
    use libc::{c_int, c_long};

    #[cfg(target_arch = "x86_64")]
    unsafe fn syscall4(n: c_long, a: c_long, b: c_long, c: c_long, d: c_long) -> c_long {
        let ret: c_long;
        // SAFETY: the caller passes a valid system call; `syscall` clobbers rcx and r11.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") n => ret,
                in("rdi") a,
                in("rsi") b,
                in("rdx") c,
                in("r10") d,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    #[cfg(target_arch = "aarch64")]
    unsafe fn syscall4(n: c_long, a: c_long, b: c_long, c: c_long, d: c_long) -> c_long {
        let ret: c_long;
        // SAFETY: the caller passes a valid system call.
        unsafe {
            std::arch::asm!(
                "svc 0",
                in("x8") n,
                inlateout("x0") a => ret,
                in("x1") b,
                in("x2") c,
                in("x3") d,
                options(nostack),
            );
        }
        ret
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    unsafe fn syscall4(_: c_long, _: c_long, _: c_long, _: c_long, _: c_long) -> c_long {
        // Never reached: `starts_without_fork` is false on other architectures.
        -(libc::ENOSYS as c_long)
    }

    pub(super) fn write(fd: c_int, bytes: &[u8]) {
        // SAFETY: writes from a live buffer.
        unsafe {
            syscall4(
                libc::SYS_write,
                fd as c_long,
                bytes.as_ptr() as c_long,
                bytes.len() as c_long,
                0,
            )
        };
    }

    pub(super) fn close_all_but(keep: c_int) {
        // SAFETY: closes descriptors of this process (B) only.
        unsafe {
            if keep > 0 {
                syscall4(libc::SYS_close_range, 0, (keep - 1) as c_long, 0, 0);
            }
            syscall4(
                libc::SYS_close_range,
                (keep + 1) as c_long,
                c_long::from(u32::MAX),
                0,
                0,
            );
        }
    }

    fn exit(code: c_int) -> ! {
        loop {
            // SAFETY: ends this process.
            unsafe { syscall4(libc::SYS_exit_group, code as c_long, 0, 0, 0) };
        }
    }

    /// pid 1's loop: reap every child; when `task` ends, or SIGINT, SIGTERM or SIGHUP
    /// comes (from vt: every signal is blocked, so they are queued), write the task's
    /// status (the signal's, for those) to `status` and exit.
    pub(super) fn init_until(task: c_int, status: c_int) -> ! {
        let bit = |signal: c_int| 1u64 << (signal - 1);
        let set: u64 =
            bit(libc::SIGCHLD) | bit(libc::SIGINT) | bit(libc::SIGTERM) | bit(libc::SIGHUP);
        // The status goes to vt twice: whole on the pipe, and as B's own exit code (a
        // signal's as 128 + its number), so that a task that failed can never look like
        // one that succeeded, even to a reader that missed the pipe.
        let relay = |raw_status: c_int| -> ! {
            write(status, &raw_status.to_ne_bytes());
            exit(if libc::WIFEXITED(raw_status) {
                libc::WEXITSTATUS(raw_status)
            } else {
                128 + libc::WTERMSIG(raw_status)
            })
        };
        loop {
            loop {
                let mut raw_status: c_int = 0;
                // SAFETY: wait4 writes the status into our local.
                let reaped = unsafe {
                    syscall4(
                        libc::SYS_wait4,
                        -1,
                        &mut raw_status as *mut c_int as c_long,
                        (libc::WNOHANG | libc::__WALL) as c_long,
                        0,
                    )
                };
                if reaped == task as c_long {
                    relay(raw_status);
                }
                if reaped == -(libc::ECHILD as c_long) {
                    exit(1);
                }
                if reaped <= 0 {
                    break;
                }
            }
            // SAFETY: waits for a signal of `set` (8 bytes: the kernel's sigset_t).
            let signal = unsafe {
                syscall4(
                    libc::SYS_rt_sigtimedwait,
                    &set as *const u64 as c_long,
                    0,
                    0,
                    8,
                )
            } as c_int;
            if signal == libc::SIGINT || signal == libc::SIGTERM || signal == libc::SIGHUP {
                relay(signal);
            }
        }
    }
}

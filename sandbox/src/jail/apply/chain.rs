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

/// The points of a frame's start from its go ([`Frame::go`]) whose times `VT_TIMINGS`
/// reports, in order.
#[derive(Clone, Copy)]
enum FrameMoment {
    Woken = 1,
    FilesOwn,
    RootBuilt,
    CStarted,
    LockedDown,
    Back,
}

/// The spans between consecutive frame moments, as phases.
const FRAME_SPANS: [&str; 6] = [
    "sandbox: frame, go to B",
    "sandbox: frame, B's own descriptors",
    "sandbox: frame, the task's mounts and root",
    "sandbox: clone C",
    "sandbox: C lockdown",
    "sandbox: C exec, back to vt",
];

/// Nanoseconds since `start` at each moment (0: not reached); the clock is read only when
/// timings are on. Atomics, because A, B and C write them on vt's memory; vt reads them
/// once B has said its word.
struct Moments {
    spans: &'static [&'static str],
    start: Option<Instant>,
    at: [AtomicU64; 8],
}

impl Moments {
    fn new() -> Moments {
        Moments::of(&SPANS)
    }

    fn of(spans: &'static [&'static str]) -> Moments {
        Moments {
            spans,
            start: crate::timings::on().then(Instant::now),
            at: Default::default(),
        }
    }

    /// Notes moment `index` now (a vDSO clock read: no system call, no `errno`).
    fn note_at(&self, index: usize) {
        if let Some(start) = self.start {
            let ns = start.elapsed().as_nanos().max(1) as u64;
            self.at[index].store(ns, Ordering::Relaxed);
        }
    }

    fn note(&self, moment: Moment) {
        self.note_at(moment as usize);
    }

    fn record(&self) {
        if let Some(start) = self.start {
            let at: Vec<Duration> = self.at[..=self.spans.len()]
                .iter()
                .map(|ns| Duration::from_nanos(ns.load(Ordering::Relaxed)))
                .collect();
            crate::timings::record_spans(self.spans, start, &at);
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
        if let Some(frame) = self.frame.take() {
            return crate::timings::time("sandbox: frame, go to exec", || frame.go(self, task));
        }
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

/// A sandbox's outer processes started before their task is known ([`super::super::frame`]):
/// A made the namespaces, B builds the frame's part of the root (the system directories,
/// `/etc`, `/dev`, `/proc`, the scratch directories) and then waits for [`Frame::go`].
///
/// The difference from [`Prepared::start`]: A and B share vt's descriptor table
/// (`CLONE_FILES`) instead of taking a copy of it at A's clone, and B takes its own copy
/// only at its go (`unshare(CLONE_FILES)`), so it has every descriptor vt made for the
/// task meanwhile (its output pipes, the tracer's socket, the overlay's socket, the report
/// pipe), at the numbers vt's task launch names. Until then B adds only what it closes
/// again (its captured mounts) to vt's table. A and B are cloned from the frame thread of
/// [`super::super::frame`], which blocks every signal and waits, like the caller of
/// [`Prepared::start`], until B no longer uses its thread pointer ([`FrameWait`]).
pub struct Frame {
    shared: std::sync::Arc<FrameShared>,
    init_pid: c_int,
    /// B's pidfd (`CLONE_PIDFD`): readable once B has exited.
    pidfd: OwnedFd,
    /// One byte here is B's go.
    go: OwnedFd,
    /// B writes a byte here once its task has exec'd.
    started: OwnedFd,
    /// One byte here lets the frame thread go on ([`FrameWait`]): B no longer uses its thread
    /// pointer.
    release: OwnedFd,
    /// The task's wait status, which B writes as it ends (non-blocking).
    status: OwnedFd,
    /// The ends B uses, open in vt's table until B has its own copies (after its go).
    _b_ends: [OwnedFd; 3],
    /// Where the frame's own steps report: kept open, so that B's report of a failed step
    /// is a write like any other (nobody reads it: the task's sandbox is then built whole,
    /// and says what failed itself).
    _report: OwnedFd,
    used: bool,
}

/// What A, B and C of a frame share (vt's memory), at a place that stays put: the frame
/// thread and the task's thread each hold it until B no longer reads it.
struct FrameShared {
    /// The frame's part of the plan: A's and B's before the go.
    frame: std::cell::UnsafeCell<Prepared>,
    /// The task's part and its launch: set by [`Frame::go`] before the go, B's and C's after.
    jail: std::sync::atomic::AtomicPtr<Prepared>,
    task: std::sync::atomic::AtomicPtr<launch::Prepared>,
    /// The go's [`FRAME_SPANS`], set with the task.
    moments: std::sync::atomic::AtomicPtr<Moments>,
    init_stack: std::sync::Mutex<Option<Stack>>,
    init_top: *mut c_void,
    task_stack: Stack,
    /// Set by A: B's pid as vt sees it, and its pidfd in vt's table.
    init_pid: AtomicI32,
    pidfd: AtomicI32,
    task_failed: AtomicBool,
    started: AtomicBool,
    go_read: RawFd,
    started_write: RawFd,
    status_write: RawFd,
}

// SAFETY: the frame's `Prepared` is used by A and B only (vt's threads do not touch it
// until B has exited or said its word); the rest is atomics, a mutex and plain numbers.
unsafe impl Send for FrameShared {}
// SAFETY: as above.
unsafe impl Sync for FrameShared {}

/// What the frame thread waits for before it may run anything else: word from the task's
/// thread that B said its task has exec'd (B makes raw system calls only from then on), or
/// B's end.
///
/// Not B's word itself: the frame thread then goes on to build the next frame, and woken
/// with the task's thread, it took the CPU that thread was to run on (a run of 100
/// sandboxed tasks: 0.2 ms more from the task's exec back to vt).
pub struct FrameWait {
    _shared: std::sync::Arc<FrameShared>,
    release: OwnedFd,
    pidfd: OwnedFd,
}

impl FrameWait {
    /// Returns once B no longer uses this thread's thread pointer.
    pub fn wait(self) {
        wait_for_word(&self.release, &self.pidfd);
    }
}

/// Waits until `started` has a byte for this reader (which it takes), or B (`pidfd`) has
/// exited: whether B said its word.
fn wait_for_word(started: &OwnedFd, pidfd: &OwnedFd) -> bool {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: started.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll on two pollfds we own.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return false;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            let mut byte = 0u8;
            // SAFETY: reads one byte into a local.
            let read = unsafe { libc::read(started.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
            return read == 1;
        }
        if fds[1].revents != 0 {
            return false;
        }
    }
}

impl Prepared {
    /// Starts a frame of this (the frame's) part on the calling thread, which must block
    /// every signal and then call [`FrameWait::wait`] before it does anything else.
    /// Returns once A has exited (B is then building the frame's mounts).
    pub fn start_frame(self, report: OwnedFd) -> io::Result<(Frame, FrameWait)> {
        let setup_stack = Stack::new(SETUP_STACK)?;
        let task_stack = Stack::new(SETUP_STACK)?;
        let init_stack = Stack::new(INIT_STACK)?;
        let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
        let (go_read, go) = nix::unistd::pipe2(cloexec)?;
        let (started, started_write) = nix::unistd::pipe2(cloexec)?;
        let (release_read, release) = nix::unistd::pipe2(cloexec)?;
        let (status, status_write) = nix::unistd::pipe2(cloexec | nix::fcntl::OFlag::O_NONBLOCK)?;
        let shared = std::sync::Arc::new(FrameShared {
            frame: std::cell::UnsafeCell::new(self),
            jail: Default::default(),
            task: Default::default(),
            moments: Default::default(),
            init_top: init_stack.top(),
            init_stack: std::sync::Mutex::new(Some(init_stack)),
            task_stack,
            init_pid: AtomicI32::new(0),
            pidfd: AtomicI32::new(-1),
            task_failed: AtomicBool::new(false),
            started: AtomicBool::new(false),
            go_read: go_read.as_raw_fd(),
            started_write: started_write.as_raw_fd(),
            status_write: status_write.as_raw_fd(),
        });
        let arg = std::sync::Arc::as_ptr(&shared).cast_mut().cast();
        // SAFETY: A runs on `setup_stack` with every signal blocked; this returns once A has
        // exited, and `shared` (B's and C's) outlives B's use of it (`FrameWait`).
        unsafe {
            launch::clone_vfork_with(
                frame_outer,
                setup_stack.top(),
                arg,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES | libc::SIGCHLD,
            )?
        };
        drop(setup_stack);
        let init_pid = shared.init_pid.load(Ordering::SeqCst);
        let pidfd = shared.pidfd.load(Ordering::SeqCst);
        if init_pid <= 0 || pidfd < 0 {
            return Err(io::Error::other("the sandbox's frame did not start"));
        }
        // SAFETY: A put B's pidfd in vt's table (they share it) for us alone.
        let pidfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pidfd) };
        let wait = FrameWait {
            _shared: std::sync::Arc::clone(&shared),
            release: release_read,
            pidfd: pidfd.try_clone()?,
        };
        Ok((
            Frame {
                shared,
                init_pid,
                pidfd,
                go,
                started,
                release,
                status,
                _b_ends: [go_read, started_write, status_write],
                _report: report,
                used: false,
            },
            wait,
        ))
    }
}

impl Frame {
    /// Gives B its task: `jail`, the task's part of the plan (built on this frame), and
    /// `task`; returns once the task has exec'd, as [`Prepared::start`] does.
    fn go(mut self, jail: &mut Prepared, task: &launch::Prepared) -> io::Result<Started> {
        self.used = true;
        let shared = &self.shared;
        let moments = Moments::of(&FRAME_SPANS);
        shared
            .moments
            .store((&moments as *const Moments).cast_mut(), Ordering::SeqCst);
        shared.jail.store(jail as *mut Prepared, Ordering::SeqCst);
        shared.task.store(
            (task as *const launch::Prepared).cast_mut(),
            Ordering::SeqCst,
        );
        // SAFETY: writes one byte from a local to our pipe.
        let sent = unsafe { libc::write(self.go.as_raw_fd(), [1u8].as_ptr().cast(), 1) } == 1;
        let word = sent && wait_for_word(&self.started, &self.pidfd);
        if word {
            moments.note_at(FrameMoment::Back as usize);
            moments.record();
        }
        if word && shared.started.load(Ordering::SeqCst) {
            let init_stack = shared
                .init_stack
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            // SAFETY: writes one byte from a local to our pipe.
            unsafe { libc::write(self.release.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
            if let Some(init_stack) = init_stack {
                return Ok(Started {
                    pid: self.init_pid as u32,
                    init_stack,
                    status: self.status.try_clone()?,
                });
            }
        }
        // B is gone or going: it did not start its task.
        self.kill();
        Err(task
            .failure()
            .unwrap_or_else(|| io::Error::other("the sandbox did not start its task")))
    }

    fn kill(&self) {
        // SAFETY: sends SIGKILL through a pidfd we own (B is vt's child, not reaped before
        // its pidfd is readable; a B that has exited takes nothing).
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

impl Drop for Frame {
    /// A frame no task used: B (and with it its namespaces) goes. The reaper reaps it.
    fn drop(&mut self) {
        if !self.used {
            self.kill();
        }
    }
}

/// A of a frame: the namespaces and id maps, then B (sharing vt's descriptor table, its
/// pidfd put there); then it exits.
extern "C" fn frame_outer(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `FrameShared` of `start_frame`, whose thread waits until A
    // exits; only A uses the frame's part until it has cloned B.
    let shared = unsafe { &*(arg as *const FrameShared) };
    let frame = unsafe { &mut *shared.frame.get() };
    // SAFETY: syscalls on values prepared before the clone.
    unsafe {
        die_with_parent();
        if frame.enter_namespaces().is_err() {
            libc::_exit(127);
        }
        let mut pidfd: c_int = -1;
        let init = libc::clone(
            frame_init,
            shared.init_top,
            libc::CLONE_VM
                | libc::CLONE_PARENT
                | libc::CLONE_FILES
                | libc::CLONE_PIDFD
                | libc::SIGCHLD,
            arg,
            &mut pidfd as *mut c_int,
        );
        if init < 0 {
            frame.report(Step::Fork, *libc::__errno_location());
            libc::_exit(127);
        }
        shared.pidfd.store(pidfd, Ordering::SeqCst);
        shared.init_pid.store(init, Ordering::SeqCst);
        libc::_exit(0)
    }
}

/// B of a frame: the frame's mounts, then its go; then its own descriptor table, the task's
/// mounts and the root, C, and init, as B of [`Prepared::start`].
extern "C" fn frame_init(arg: *mut c_void) -> c_int {
    // SAFETY: as in `frame_outer`: B alone uses the frame's part once A has exited; the
    // task's part and launch are B's from the go until its word (vt's thread waits).
    let shared = unsafe { &*(arg as *const FrameShared) };
    let frame = unsafe { &mut *shared.frame.get() };
    // SAFETY: syscalls on prepared values; raw ones only after the word.
    unsafe {
        libc::setpgid(0, 0);
        die_with_parent();
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        if frame.build_frame(&syscall::Linux).is_err() {
            libc::_exit(127);
        }
        let mut byte = 0u8;
        loop {
            let read = libc::read(shared.go_read, (&mut byte as *mut u8).cast(), 1);
            if read == 1 {
                break;
            }
            if read < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            // The frame was let go.
            libc::_exit(127);
        }
        let moments = &*shared.moments.load(Ordering::SeqCst);
        moments.note_at(FrameMoment::Woken as usize);
        // A descriptor table of B's own, as vt's is now: the task's descriptors are in it.
        if libc::unshare(libc::CLONE_FILES) != 0 {
            libc::_exit(127);
        }
        moments.note_at(FrameMoment::FilesOwn as usize);
        let jail = &mut *shared.jail.load(Ordering::SeqCst);
        let task = &*shared.task.load(Ordering::SeqCst);
        if jail.finish_frame(&syscall::Linux).is_err() {
            libc::_exit(127);
        }
        moments.note_at(FrameMoment::RootBuilt as usize);
        let child = libc::clone(
            frame_task,
            shared.task_stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            arg,
        );
        if child < 0 {
            jail.report(Step::Fork, *libc::__errno_location());
            libc::_exit(127);
        }
        if shared.task_failed.load(Ordering::SeqCst) || task.has_failed() {
            libc::_exit(127);
        }
        let status_write = shared.status_write;
        let started_write = shared.started_write;
        shared.started.store(true, Ordering::SeqCst);
        // From here on, vt's threads run again: raw system calls only.
        raw::write(started_write, &[1u8]);
        raw::close_all_but(status_write);
        raw::init_until(child, status_write)
    }
}

/// C of a frame: as C of [`Prepared::start`].
extern "C" fn frame_task(arg: *mut c_void) -> c_int {
    // SAFETY: as in `frame_init`; B is suspended until C execs or exits (CLONE_VFORK).
    let shared = unsafe { &*(arg as *const FrameShared) };
    let jail = unsafe { &mut *shared.jail.load(Ordering::SeqCst) };
    let task = unsafe { &*shared.task.load(Ordering::SeqCst) };
    let moments = unsafe { &*shared.moments.load(Ordering::SeqCst) };
    moments.note_at(FrameMoment::CStarted as usize);
    // SAFETY: syscalls on prepared values.
    unsafe {
        let ready = jail
            .check(Step::Session, libc::setsid())
            .and_then(|()| {
                die_with_parent();
                jail.lock_down()
            })
            .and_then(|()| jail.install_deny_list());
        if ready.is_err() {
            shared.task_failed.store(true, Ordering::SeqCst);
            libc::_exit(127);
        }
    }
    moments.note_at(FrameMoment::LockedDown as usize);
    launch::exec_prepared(task)
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

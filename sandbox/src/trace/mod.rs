//! Watching what a process tree does to the filesystem.
//!
//! [`spawn`] starts a command under the seccomp user-notify tracer (docs/architecture.md, "Trace and jail"): the child
//! installs a filter that stops every path syscall of it and all its descendants, hands the
//! listener fd to a supervisor thread, and then execs. [`TracedChild::wait`] returns the
//! exit status and the [`AccessLog`] once the *whole tree* is gone.
//!
//! Where user notification is unavailable the same filter returns `SECCOMP_RET_TRACE` and a
//! ptrace tracer does the supervisor's job ([`ptrace`]). `VT_TRACER=seccomp|ptrace` forces
//! one; by default vt probes once and uses seccomp when it can.
//!
//! Two more sources feed the same [`AccessLog`]: the LD_PRELOAD recorder ([`fast_path`]),
//! which makes the common libc calls cheap, and fanotify ([`fanotify`]), which checks the
//! workspace side of both.

mod armed;
pub mod bpf;
mod decode;
pub mod fanotify;
pub mod fast_path;
pub mod filter;
pub mod launch;
mod library_file;
pub use library_file::{temp_user_dir, user_subdir};
mod notify;
pub mod paths;
pub mod program;
mod ptrace;
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
    #[error(
        "ptrace is not available here ({source}).\n  \
         hint: a container's seccomp profile or kernel.yama.ptrace_scope=3 can forbid it"
    )]
    PtraceUnavailable { source: std::io::Error },
    #[error("unknown tracer backend VT_TRACER={0:?} (expected: seccomp or ptrace)")]
    UnknownBackend(String),
    #[error("tracer setup failed: {0}")]
    Setup(std::io::Error),
    #[error("the supervisor failed while tracing: {0}")]
    Supervisor(std::io::Error),
    #[error(transparent)]
    Jail(#[from] crate::jail::JailError),
    #[error(
        "--sandbox needs the seccomp tracer, and this run uses ptrace ({0}).\n  \
         hint: unset VT_TRACER, or run without --sandbox"
    )]
    SandboxNeedsSeccomp(&'static str),
}

/// A running traced process tree.
pub struct TracedChild {
    pid: u32,
    backend: Running,
    /// The fanotify second source, or why it is not running.
    second_source: Result<fanotify::Watch, String>,
    /// The LD_PRELOAD recorder's buffers, or why there is no fast path.
    fast_path: Result<fast_path::Injection, String>,
    /// The sandbox the tree runs in, if any.
    jail: Option<crate::jail::Installed>,
    /// Directories of the caller's own files (see [`TracedChild::not_the_tasks`]).
    callers: Vec<std::path::PathBuf>,
    /// Lookups the caller made for the task before it started ([`TracedChild::looked_up`]).
    looked_up: Vec<crate::access::Access>,
}

/// The supervisor thread: what it saw, once the task's tree is gone.
type Supervisor = JoinHandle<Result<AccessLog, TraceError>>;

enum Running {
    Seccomp {
        status: Receiver<ExitStatus>,
        supervisor: Supervisor,
    },
    Ptrace(JoinHandle<Result<(ExitStatus, AccessLog), TraceError>>),
}

impl TracedChild {
    fn started(
        pid: u32,
        backend: Running,
        second_source: Result<fanotify::Watch, String>,
        fast_path: Result<fast_path::Injection, String>,
        jail: Option<crate::jail::Installed>,
    ) -> TracedChild {
        TracedChild {
            pid,
            backend,
            second_source,
            fast_path,
            jail,
            callers: Vec::new(),
            looked_up: Vec::new(),
        }
    }

    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Files under `dir` are the caller's, written by its own threads while the task runs
    /// (vt's cache). A descriptor of one that a task process inherited across its fork and
    /// that exec closed after the caller's own close is reported by fanotify as the task's
    /// write; it is not one.
    pub fn not_the_tasks(&mut self, dir: &std::path::Path) {
        self.callers.push(dir.to_owned());
    }

    /// `missing` were looked for on the task's behalf before it started, at `at_ns`
    /// (monotonic): the `PATH` search of its program ([`program::find`]). They are the
    /// task's lookups, as if it had made them itself.
    pub fn looked_up(&mut self, missing: Vec<std::path::PathBuf>, at_ns: u64) {
        let pid = self.pid;
        self.looked_up
            .extend(missing.into_iter().map(|path| crate::access::Access {
                kind: crate::access::AccessKind::Missing,
                path,
                pid,
                at_ns,
            }));
    }

    /// The task's program executed by vt's own call, which the filter let through without
    /// a stop ([`launch::exec_token`]; `None`: the exec was stopped and the supervisor
    /// recorded it): recorded here as the supervisor would have.
    fn with_exec(mut self, exempt: Option<ExemptExec>) -> TracedChild {
        let Some(ExemptExec { program, at_ns }) = exempt else {
            return self;
        };
        let pid = self.pid;
        let program = paths::absolute_clean(None, program.as_os_str().as_encoded_bytes());
        self.looked_up.extend(
            decode::exec_accesses(program)
                .into_iter()
                .map(|(kind, path)| crate::access::Access {
                    kind,
                    path,
                    pid,
                    at_ns,
                }),
        );
        self
    }

    /// Waits for the root's exit status and for every descendant to be gone.
    pub fn wait(mut self) -> Result<(ExitStatus, AccessLog), TraceError> {
        let panicked =
            || TraceError::Supervisor(std::io::Error::other("the tracer thread panicked"));
        match self.backend {
            Running::Seccomp { status, supervisor } => {
                let running = crate::timings::phase("task runs");
                let status = crate::reaper::wait_for(self.pid, &status).ok_or_else(|| {
                    TraceError::Setup(std::io::Error::other("the reaper thread stopped"))
                })?;
                running.end();
                let joined = crate::timings::phase("end: supervisors' logs");
                let log = supervisor.join().map_err(|_| panicked())??;
                joined.end();
                Ok((status, log))
            }
            Running::Ptrace(tracer) => tracer.join().map_err(|_| panicked())?,
        }
        .map(|(mut status, mut log)| {
            if let Some(jail) = &mut self.jail {
                jail.release_mounts();
                // Every process of the task is gone (the tracer saw the last one end).
                jail.release_network();
                // A sandbox's init that ran on vt's memory cannot end the way the task did
                // (it is pid 1): it wrote the task's status.
                if let Some(relayed) = jail.relayed_status() {
                    status = relayed;
                }
            }
            log.accesses.extend(self.looked_up);
            if let Ok(watch) = &self.second_source {
                watch.stop_watching();
            }
            match &self.fast_path {
                Ok(injection) => {
                    crate::timings::time("end: preload buffers", || injection.collect(&mut log));
                    log.tracer.push_str("+preload");
                }
                Err(why) => log.tracer.push_str(&format!(" (no preload: {why})")),
            }
            if let Some(jail) = &self.jail {
                // Scratch /tmp, /proc, /dev and the empty directories holding mount points
                // are the sandbox's own: not the host's paths, so neither inputs nor outputs.
                log.accesses.retain(|a| jail.plan().shows_host(&a.path));
                // What the sandbox left out or re-created decided what the task could find
                // there: seen before the task started, as if it had looked itself.
                for (path, kind) in &jail.plan().looked_at {
                    log.push_at(*kind, path.clone(), self.pid, 0);
                }
                log.tracer.push_str("+sandbox");
            }
            match self.second_source {
                Ok(watch) => {
                    let mut own_dirs = match &self.fast_path {
                        Ok(injection) => injection.own_dirs(),
                        Err(_) => Vec::new(),
                    };
                    own_dirs.extend(self.callers.iter().map(|d| d.as_path()));
                    crate::timings::time("end: fanotify", || watch.finish(&mut log, &own_dirs));
                    log.tracer.push_str("+fanotify");
                }
                Err(why) => log.tracer.push_str(&format!(" (no fanotify: {why})")),
            }
            (status, log)
        })
    }
}

/// Which tracer to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Seccomp,
    Ptrace,
}

/// The backend `VT_TRACER` asks for, or the best this machine supports.
pub fn choose_backend() -> Result<Backend, TraceError> {
    match std::env::var(TRACER_ENV).ok().as_deref() {
        Some("seccomp") => Ok(Backend::Seccomp),
        Some("ptrace") => Ok(Backend::Ptrace),
        None | Some("") => Ok(
            if crate::timings::time("spawn: seccomp probe", seccomp_notify_available) {
                Backend::Seccomp
            } else {
                Backend::Ptrace
            },
        ),
        Some(other) => Err(TraceError::UnknownBackend(other.to_owned())),
    }
}

/// Whether this process may create a seccomp listener: a throwaway thread installs an
/// allow-all filter with `NEW_LISTENER` (filters and no_new_privs are per thread, so vt
/// itself is untouched) and reports whether the kernel gave it a listener. Probed once,
/// or answered by the thread [`probe_seccomp_in_background`] or [`arm_in_background`]
/// started.
pub fn seccomp_notify_available() -> bool {
    *SECCOMP_AVAILABLE.get_or_init(|| {
        let started = PROBE.lock().ok().and_then(|mut probe| probe.take());
        started
            .and_then(|answer| answer.recv().ok())
            // A thread that ended without an answer (it could not start its supervisor):
            // ask again.
            .or_else(|| start_probe().and_then(|answer| answer.recv().ok()))
            .unwrap_or(false)
    })
}

static SECCOMP_AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// The probe's answer as soon as it has one, without waiting: 0 while it runs, then
/// [`PROBED_YES`] or [`PROBED_NO`]. (Not `SECCOMP_AVAILABLE` itself: a thread that waits
/// for the probe inside its `get_or_init` would wait for the probe, and the probe's `set`
/// for that initialization to end.)
static PROBED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
const PROBED_YES: u8 = 1;
const PROBED_NO: u8 = 2;

/// Whether seccomp listeners are known to be available (`None`: not known yet).
fn seccomp_known() -> Option<bool> {
    if let Some(&known) = SECCOMP_AVAILABLE.get() {
        return Some(known);
    }
    match PROBED.load(std::sync::atomic::Ordering::Acquire) {
        PROBED_YES => Some(true),
        PROBED_NO => Some(false),
        _ => None,
    }
}

/// Where the probe started ahead of the first task will answer, if one was.
static PROBE: std::sync::Mutex<Option<Receiver<bool>>> = std::sync::Mutex::new(None);

/// Starts the probe behind [`seccomp_notify_available`] now, for a process that will
/// trace: its thread and filter (~0.25 ms) then overlap reading the workspace instead of
/// delaying the first task's start.
pub fn probe_seccomp_in_background() {
    if std::env::var_os(TRACER_ENV).is_some_and(|v| !v.is_empty()) {
        return; // the backend is chosen by name: no probe
    }
    if let Ok(mut probe) = PROBE.lock()
        && probe.is_none()
    {
        *probe = start_probe();
    }
}

/// Arms a thread with the tracing filter now ([`armed`]), for a process whose next task
/// starts without a sandbox: the filter's installation and the supervisor's start then
/// overlap reading the workspace (or the task before) instead of delaying the task's exec.
/// Arming is the seccomp probe too. `ahead` runs on that thread first: the caller's own
/// preparations for the task's start (see [`armed::arm`]).
pub fn arm_in_background(ahead: fn()) {
    let named = std::env::var_os(TRACER_ENV).filter(|v| !v.is_empty());
    if named.as_ref().is_some_and(|v| v != "seccomp") {
        return; // ptrace by name (or a name `choose_backend` refuses)
    }
    let answer = match PROBE.lock() {
        // Answering the probe when no backend is named, and nobody else is probing.
        Ok(mut probe) if named.is_none() && probe.is_none() && seccomp_known().is_none() => {
            let (answer, answered) = std::sync::mpsc::sync_channel(1);
            *probe = Some(answered);
            Some(answer)
        }
        _ => None,
    };
    armed::arm(ahead, move |available| {
        record_probe(available);
        if let Some(answer) = answer {
            let _ = answer.send(available);
        }
    });
}

fn record_probe(available: bool) {
    PROBED.store(
        if available { PROBED_YES } else { PROBED_NO },
        std::sync::atomic::Ordering::Release,
    );
}

fn start_probe() -> Option<Receiver<bool>> {
    let (answer, answered) = std::sync::mpsc::sync_channel(1);
    crate::spawn_without_signals("vt-seccomp-probe", move || {
        let allow_all = [bpf::ret(libc::SECCOMP_RET_ALLOW)];
        let available = match notify::install_listener(&allow_all) {
            Ok(fd) => {
                // SAFETY: closing the listener fd we were just given.
                unsafe { libc::close(fd) };
                true
            }
            Err(_) => false,
        };
        record_probe(available);
        let _ = answer.send(available);
    })
    .ok()?;
    Some(answered)
}

/// Starts `command` traced. The command's stdio, env and cwd are used as set by the caller.
pub fn spawn(command: Command) -> Result<TracedChild, TraceError> {
    spawn_jailed(command, None)
}

/// Starts `command` traced and, with `jail`, inside that sandbox.
pub fn spawn_jailed(
    mut command: Command,
    jail: Option<&crate::jail::Jail>,
) -> Result<TracedChild, TraceError> {
    let backend = choose_backend()?;
    if jail.is_some() && backend == Backend::Ptrace {
        return Err(TraceError::SandboxNeedsSeccomp(
            if std::env::var_os(TRACER_ENV).is_some() {
                "VT_TRACER=ptrace"
            } else {
                "seccomp user notification is not available"
            },
        ));
    }
    let fast_path = crate::timings::time("spawn: preload library and buffers", || {
        fast_path::library()
            .and_then(|library| fast_path::Injection::prepare(&mut command, &library))
    });
    // The sandbox's pre-exec goes first: the tracer's must run inside it, in the task.
    let mut jail = match jail {
        Some(jail) => {
            let own = private_dirs(&fast_path);
            Some(crate::timings::time("spawn: jail plan", || {
                jail.install(&mut command, &own)
            })?)
        }
        None => None,
    };
    // Started first, so it sees the task from its first syscall.
    let second_source = crate::timings::time("spawn: fanotify", || {
        start_second_source(&command, &fast_path)
    });
    let _spawning = crate::timings::phase("spawn: fork, filter, exec");
    let (pid, backend) = match backend {
        Backend::Seccomp => match spawn_seccomp(command) {
            Ok(spawned) => spawned,
            Err(e) => {
                return Err(jail
                    .as_ref()
                    .and_then(|j| j.setup_error())
                    .map(TraceError::from)
                    .unwrap_or(e));
            }
        },
        Backend::Ptrace => {
            let child = ptrace::spawn(command)?;
            (child.pid, Running::Ptrace(child.tracer))
        }
    };
    if let Some(jail) = &mut jail {
        jail.hold_mounts(pid);
    }
    Ok(TracedChild::started(
        pid,
        backend,
        second_source,
        fast_path,
        jail,
    ))
}

/// Starts `launch` traced in `jail`'s sandbox without a fork of vt (`jail::apply::chain`),
/// where this build and the seccomp backend allow it; otherwise as a `Command`
/// ([`spawn_jailed`]).
pub fn spawn_jailed_launch(
    mut launch: launch::Launch,
    jail: &crate::jail::Jail,
) -> Result<TracedChild, TraceError> {
    if !crate::jail::apply::starts_without_fork()
        || !launch.program.is_absolute()
        || choose_backend()? == Backend::Ptrace
    {
        return spawn_jailed(launch.into_command(), Some(jail));
    }
    let (fast_path, _) = inject_recorder(&mut launch);
    let own = private_dirs(&fast_path);
    let (mut installed, mut sandbox) =
        crate::timings::time("spawn: jail plan", || jail.prepare(&own))?;
    let second_source = crate::timings::time("spawn: fanotify", || {
        start_second_source_at(&launch.cwd, &fast_path)
    });
    let _spawning = crate::timings::phase("spawn: clone, filter, exec");
    let program = launch.program.to_string_lossy().into_owned();
    let exempt = ExemptExec::of(&launch);
    let (mut prepared, supervisor, child_end) = prepare_notified(&launch, &program)?;
    prepared.in_a_session_of_its_own();
    let mut started = None;
    let spawned = crate::timings::time("spawn: clone to exec", || {
        reaper::spawn_with(|| {
            let sandbox = sandbox.start(&prepared)?;
            let pid = sandbox.pid;
            started = Some(sandbox);
            Ok(pid)
        })
    });
    drop((prepared, child_end, sandbox));
    let (pid, status) = match (spawned, started) {
        (Ok((pid, status)), Some(started)) => {
            installed.adopt(started);
            (pid, status)
        }
        (spawned, _) => {
            // A sandbox step that failed says more than the launch's error.
            if let Some(failed) = installed.setup_error() {
                return Err(failed.into());
            }
            let e = spawned
                .err()
                .unwrap_or_else(|| std::io::Error::other("the sandbox did not start"));
            return Err(not_started(supervisor, program, e));
        }
    };
    drop(launch);
    installed.hold_mounts(pid);
    let child = TracedChild::started(
        pid,
        Running::Seccomp { status, supervisor },
        second_source,
        fast_path,
        Some(installed),
    );
    Ok(child.with_exec(exempt))
}

/// The task's own exec when it passes the filter unstopped ([`launch::exempts_exec`]): vt
/// records it itself once the task has started ([`TracedChild::with_exec`]), as made now,
/// just before the clone.
struct ExemptExec {
    program: std::path::PathBuf,
    at_ns: u64,
}

impl ExemptExec {
    fn of(launch: &launch::Launch) -> Option<ExemptExec> {
        launch::exempts_exec(&launch.program).then(|| ExemptExec {
            program: launch.program.clone(),
            at_ns: crate::access::monotonic_ns(),
        })
    }
}

/// fanotify over the file system of the command's working directory (the workspace).
fn start_second_source(
    command: &Command,
    fast_path: &Result<fast_path::Injection, String>,
) -> Result<fanotify::Watch, String> {
    let root = match command.get_current_dir() {
        Some(dir) => dir.to_path_buf(),
        None => std::env::current_dir().map_err(|e| format!("no working directory: {e}"))?,
    };
    start_second_source_at(&root, fast_path)
}

/// fanotify over the file system of `root`; its reader also reads the recorder's buffers
/// while the task runs.
fn start_second_source_at(
    root: &std::path::Path,
    fast_path: &Result<fast_path::Injection, String>,
) -> Result<fanotify::Watch, String> {
    if std::env::var(fanotify::FANOTIFY_ENV).is_ok_and(|v| v == "off") {
        return Err(format!("{}=off", fanotify::FANOTIFY_ENV));
    }
    let while_running = fast_path
        .as_ref()
        .ok()
        .map(fast_path::Injection::reader_while_running);
    fanotify::start(root, while_running).map_err(|e| e.to_string())
}

/// Starts `launch` traced, without `fork` when the seccomp backend traces it (see
/// [`launch`]); with ptrace, as a `Command`.
///
/// The seccomp probe ([`seccomp_notify_available`]) is not waited for: its thread and filter
/// took longer than the rest of a lone `vt exec`'s start. Until it has answered, the task
/// is started under seccomp anyway; a child that cannot install the filter has run nothing
/// of the task, and is then started again under ptrace.
pub fn spawn_launch(mut launch: launch::Launch) -> Result<TracedChild, TraceError> {
    let armed = crate::timings::time("spawn: armed thread", armed::take);
    let optimistic = match std::env::var_os(TRACER_ENV).filter(|v| !v.is_empty()) {
        _ if armed.is_some() => false,
        None => match seccomp_known() {
            Some(true) => false,
            Some(false) => return spawn(launch.into_command()),
            None => true,
        },
        Some(_) => {
            if choose_backend()? == Backend::Ptrace {
                return spawn(launch.into_command());
            }
            false
        }
    };
    let preload = std::ffi::OsStr::new("LD_PRELOAD");
    let existing = launch.env.get(preload).cloned();
    let (fast_path, injected) = inject_recorder(&mut launch);
    let second_source = crate::timings::time("spawn: fanotify", || {
        start_second_source_at(&launch.cwd, &fast_path)
    });
    let _spawning = crate::timings::phase("spawn: clone, filter, exec");
    let program = launch.program.to_string_lossy().into_owned();
    let exempt = ExemptExec::of(&launch);
    let (pid, status, supervisor) = match armed {
        Some(armed) => start_armed(armed, &launch, program)?,
        None => {
            let (prepared, supervisor, child_end) = prepare_notified(&launch, &program)?;
            let started = crate::timings::time("spawn: clone to exec", || {
                reaper::spawn_with(|| launch::start(&prepared))
            });
            // vt's copies of the task's descriptors and of the handover end close here (the
            // launch's only once it is known not to be needed again).
            drop(prepared);
            drop(child_end);
            match started {
                Ok((pid, status)) => (pid, status, supervisor),
                Err(e) => {
                    return match not_started(supervisor, program, e) {
                        TraceError::SeccompUnavailable { .. } if optimistic => {
                            // The probe's answer, had it been waited for: start it under
                            // ptrace, without this attempt's recorder and buffers.
                            drop((fast_path, second_source));
                            for name in &injected {
                                launch.env.remove(name);
                            }
                            if let Some(existing) = existing {
                                launch.env.insert(preload.to_owned(), existing);
                            }
                            spawn(launch.into_command())
                        }
                        refused => Err(refused),
                    };
                }
            }
        }
    };
    drop(launch);
    let child = TracedChild::started(
        pid,
        Running::Seccomp { status, supervisor },
        second_source,
        fast_path,
        None,
    );
    Ok(child.with_exec(exempt))
}

/// Starts `launch` as a child of the `armed` thread, and arms the next one if more tasks
/// are coming ([`keep_armed`]).
fn start_armed(
    armed: armed::Armed,
    launch: &launch::Launch,
    program: String,
) -> Result<(u32, Receiver<ExitStatus>, Supervisor), TraceError> {
    let prepared = launch::Prepared::inheriting(launch).map_err(|source| TraceError::Spawn {
        program: program.clone(),
        source,
    })?;
    let started = crate::timings::time("spawn: clone to exec", || {
        reaper::spawn_with(|| armed.start(&prepared))
    });
    drop(prepared);
    if KEEP_ARMED.load(std::sync::atomic::Ordering::Relaxed) {
        arm_in_background(|| {});
    }
    let supervisor = armed.into_supervisor();
    match started {
        Ok((pid, status)) => Ok((pid, status, supervisor)),
        Err(e) => Err(not_started(supervisor, program, e)),
    }
}

/// Set by [`keep_armed`].
static KEEP_ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Arms the next thread each time an armed one starts a task: for a run of several tasks.
/// (A lone task's run would pay for a thread and a filter it never uses.)
pub fn keep_armed() {
    KEEP_ARMED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Why a child under the seccomp supervisor did not start: the supervisor's word if the
/// filter could not be installed (the child said so on the handover socket), else `e`.
fn not_started(supervisor: Supervisor, program: String, e: std::io::Error) -> TraceError {
    match supervisor.join() {
        Ok(Err(unavailable @ TraceError::SeccompUnavailable { .. })) => unavailable,
        _ => TraceError::Spawn { program, source: e },
    }
}

/// The recorder injected into `launch`'s environment (`LD_PRELOAD` and its buffers), or
/// why there is no fast path; with the names of the variables it set, for a start that
/// must take them out again.
fn inject_recorder(
    launch: &mut launch::Launch,
) -> (
    Result<fast_path::Injection, String>,
    Vec<std::ffi::OsString>,
) {
    let existing = launch.env.get(std::ffi::OsStr::new("LD_PRELOAD")).cloned();
    let mut injected = Vec::new();
    let fast_path = crate::timings::time("spawn: preload library and buffers", || {
        fast_path::library()
            .and_then(|library| fast_path::Injection::prepare_env(existing, &library))
            .map(|(injection, vars)| {
                injected.extend(vars.iter().map(|(name, _)| name.clone()));
                launch.env.extend(vars);
                injection
            })
    });
    (fast_path, injected)
}

/// vt's own directories a sandboxed task must see (the recorder's buffers and library).
fn private_dirs(fast_path: &Result<fast_path::Injection, String>) -> Vec<(&std::path::Path, bool)> {
    fast_path
        .as_ref()
        .map_or_else(|_| Vec::new(), fast_path::Injection::private_dirs)
}

/// `launch` prepared for a child that installs the tracing filter itself and hands its
/// listener to the supervisor started here, already waiting; with the child's end of the
/// handover socket (vt's copy closes once the child has started).
fn prepare_notified(
    launch: &launch::Launch,
    program: &str,
) -> Result<(launch::Prepared, Supervisor, OwnedFd), TraceError> {
    let (parent_end, child_end) = handover_pair()?;
    let supervisor = start_supervisor(parent_end)?;
    let prepared = launch::Prepared::new(
        launch,
        filter::task_filter().to_vec(),
        child_end.as_raw_fd(),
    )
    .map_err(|source| TraceError::Spawn {
        program: program.to_owned(),
        source,
    })?;
    Ok((prepared, supervisor, child_end))
}

fn handover_pair() -> Result<(OwnedFd, OwnedFd), TraceError> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| TraceError::Setup(e.into()))
}

/// The supervisor thread, waiting for the listener on `parent_end`. It must already wait
/// when the child starts: the child's `execve` is itself a notified syscall, and starting
/// the child returns only once that exec completed.
fn start_supervisor(parent_end: OwnedFd) -> Result<Supervisor, TraceError> {
    std::thread::Builder::new()
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
            supervise_listener(listener)
        })
        .map_err(TraceError::Setup)
}

/// Serves `listener` until the task's tree is gone; what it saw.
fn supervise_listener(listener: notify::Listener) -> Result<AccessLog, TraceError> {
    let mut log = AccessLog {
        tracer: "seccomp".into(),
        ..AccessLog::default()
    };
    supervisor::supervise_on(&listener, supervisor::threads(), &mut log)
        .map_err(TraceError::Supervisor)?;
    Ok(log)
}

fn spawn_seccomp(mut command: Command) -> Result<(u32, Running), TraceError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let (parent_end, child_end) = handover_pair()?;
    let supervisor = start_supervisor(parent_end)?;

    let program_filter = filter::tracing_filter(libc::SECCOMP_RET_USER_NOTIF, None);
    let child_raw = child_end.as_raw_fd();
    // SAFETY: the closure runs between fork and exec and only makes syscalls (setpgid,
    // prctl, seccomp, sendmsg, close) on memory prepared before the fork: async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            // Own process group, so the whole tree can be signalled together (a sandboxed
            // task already leads a session of its own).
            if libc::getpgrp() != libc::getpid() && libc::setpgid(0, 0) != 0 {
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
    let spawned = crate::timings::time("spawn: Command::spawn (fork to exec)", || {
        reaper::spawn(&mut command)
    });
    drop(child_end);
    let (child, status) = match spawned {
        Ok(spawned) => spawned,
        Err(e) => return Err(not_started(supervisor, program, e)),
    };
    Ok((child.id(), Running::Seccomp { status, supervisor }))
}

/// The Linux backends (seccomp user-notify, or ptrace) behind the portable tracer trait the
/// macOS and Windows fallbacks implement too.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxTracer;

impl access_log::Tracer for LinuxTracer {
    fn name(&self) -> &'static str {
        match choose_backend() {
            Ok(Backend::Ptrace) => "ptrace",
            _ => "seccomp",
        }
    }

    fn spawn(
        &self,
        command: Command,
    ) -> Result<Box<dyn access_log::Traced>, access_log::TracerError> {
        Ok(Box::new(spawn(command)?))
    }
}

impl access_log::Traced for TracedChild {
    fn id(&self) -> u32 {
        self.pid
    }

    fn wait(self: Box<Self>) -> Result<(ExitStatus, AccessLog), access_log::TracerError> {
        Ok(TracedChild::wait(*self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe started in the background, then asked for at once (a sandboxed task's
    /// start): the answer comes, and it is the one `spawn_launch` reads without waiting.
    /// (The probe once recorded its answer in the lock the asker held while joining it.)
    #[test]
    fn the_background_probe_answers_whoever_asks_first() {
        probe_seccomp_in_background();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(seccomp_notify_available());
        });
        let available = finished
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the probe answers (no deadlock between it and the asker)");
        assert_eq!(seccomp_known(), Some(available));
    }
}

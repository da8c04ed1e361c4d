//! Tracing and jailing of task process trees.
//!
//! - [`ahead`]: the threads that prepare what a sandbox will need.
//! - [`access`]: the normalized [`AccessLog`] every tracer backend produces and the cache reads.
//! - [`trace`]: watching a process tree (seccomp user-notify, with fanotify as a second
//!   source and ptrace as the fallback where user notification is unavailable).
//! - [`jail`]: the hermetic sandbox (`--sandbox`), composed with tracing.
//! - [`janitor`]: closing what is slow to close (a fanotify group) where nobody waits.
//! - [`reaper`]: waiting for whole process trees, including orphaned grandchildren.
//! - [`kernel`]: the oldest Linux vt serves, checked before anything is traced.
//! - [`timings`]: where a vt process's fixed cost goes, phase by phase (`VT_TIMINGS=1`).

pub mod access;
pub mod ahead;
pub mod jail;
pub mod janitor;
pub mod kernel;
pub mod reaper;
pub mod stamp;
pub mod timings;
pub mod trace;

pub use access::{Access, AccessKind, AccessLog, Gap};
pub use trace::LinuxTracer;

/// Starts a thread with every signal blocked, for a thread started ahead of vt's own
/// signal handling (its stop signals are blocked in every thread but the one that waits for
/// them: one started earlier would take a SIGTERM and end vt without stopping the task
/// tree). Its threads and children inherit the mask; a task resets it before its exec.
pub fn spawn_without_signals<T: Send + 'static>(
    name: &str,
    body: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    let all = nix::sys::signal::SigSet::all();
    let previous = all.thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)?;
    let spawned = std::thread::Builder::new().name(name.into()).spawn(body);
    let _ = previous.thread_set_mask();
    spawned
}

/// Locks `mutex`, whatever a thread that panicked while holding it left: vt's shared state
/// stays usable (each user checks what it needs of it).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The CPUs this process may use (`available_parallelism`), read once: std reads the cgroup
/// quota files on every call (three opens and reads, ~0.1 ms), and vt asks per task.
pub fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

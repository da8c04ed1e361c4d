//! Tracing and jailing of task process trees.
//!
//! - [`access`]: the normalized [`AccessLog`] every tracer backend produces and the cache reads.
//! - [`trace`]: watching a process tree (seccomp user-notify, with fanotify as a second
//!   source and ptrace as the fallback where user notification is unavailable).
//! - [`jail`]: the hermetic sandbox (`--sandbox`), composed with tracing.
//! - [`janitor`]: closing what is slow to close (a fanotify group) where nobody waits.
//! - [`reaper`]: waiting for whole process trees, including orphaned grandchildren.
//! - [`kernel`]: the oldest Linux vt serves, checked before anything is traced.
//! - [`timings`]: where a vt process's fixed cost goes, phase by phase (`VT_TIMINGS=1`).

pub mod access;
pub mod jail;
pub mod janitor;
pub mod kernel;
pub mod reaper;
pub mod timings;
pub mod trace;

pub use access::{Access, AccessKind, AccessLog, Gap};
pub use trace::LinuxTracer;

/// The CPUs this process may use (`available_parallelism`), read once: std reads the cgroup
/// quota files on every call (three opens and reads, ~0.1 ms), and vt asks per task.
pub fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

//! Tracing and jailing of task process trees.
//!
//! - [`access`]: the normalized [`AccessLog`] every tracer backend produces and the cache reads.
//! - [`trace`]: watching a process tree (seccomp user-notify, with fanotify as a second
//!   source and ptrace as the fallback where user notification is unavailable).
//! - [`jail`]: the hermetic sandbox (`--sandbox`), composed with tracing.
//! - [`reaper`]: waiting for whole process trees, including orphaned grandchildren.
//! - [`kernel`]: the oldest Linux vt serves, checked before anything is traced.

pub mod access;
pub mod jail;
pub mod kernel;
pub mod reaper;
pub mod trace;

pub use access::{Access, AccessKind, AccessLog, Gap};
pub use trace::LinuxTracer;

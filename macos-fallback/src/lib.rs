//! The macOS tracer: `DYLD_INSERT_LIBRARIES` interposition of the libc file APIs, reporting
//! to vt over a socket, behind the same [`access_log::Tracer`] trait as the Linux backends.
//!
//! Portable (compiled and tested on Linux, fed with recorded-format fixtures):
//! - [`event`]: what the injected library sends and the stream framing;
//! - [`paths`]: cwd tracking and macOS path normalization (`/tmp` → `/private/tmp`, the
//!   data-volume firmlinks);
//! - [`sip`]: which programs refuse injection;
//! - [`replay`]: events → [`access_log::AccessLog`], with gaps for what could not be seen.
//!
//! macOS only, **never compiled here** (this machine has only the Linux target):
//! `interpose` (the library's Rust half), `interpose/interpose.c` (the hooks, built by
//! `build.rs` on macOS), `tracer` (spawn, socket, process watcher). See README.md.

pub mod event;
pub mod paths;
pub mod replay;
pub mod sip;

#[cfg(target_os = "macos")]
mod interpose;
#[cfg(target_os = "macos")]
pub mod tracer;

/// The variable that tells the injected library which fd reaches vt.
pub const FD_ENV: &str = "VT_INTERPOSE_FD";

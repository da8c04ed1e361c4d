//! The Windows tracer: ETW kernel file and process events, filtered to the task's process
//! tree, behind the same [`access_log::Tracer`] trait as the Linux backends.
//!
//! Portable (compiled and tested on Linux, fed with fixtures in the event format):
//! - [`nt_paths`]: NT object paths → Win32 paths;
//! - [`events`]: the kernel events vt consumes, as plain data;
//! - [`tree`]: which processes belong to the task (parentage, pid reuse);
//! - [`replay`]: events → [`access_log::AccessLog`], gaps for lost events and unnamed
//!   devices.
//!
//! Windows only, **never compiled here** (this machine has only the Linux target):
//! `etw` (the ferrisetw session and event parsing) and `tracer` (job object, spawn, replay).
//! See README.md.

pub mod events;
pub mod nt_paths;
pub mod replay;
pub mod tree;

#[cfg(windows)]
mod etw;
#[cfg(windows)]
pub mod tracer;

//! The normalized access log (the portable `vt-access-log` crate, shared with the macOS
//! and Windows fallbacks), and what only the Linux backends add to it.

pub use access_log::*;

/// Counts one notification (or ptrace trap) of Linux syscall `nr` in `log`.
pub fn count_notification(log: &mut AccessLog, nr: i64) {
    let name = crate::trace::syscalls::lookup(nr).map_or("other", |s| s.name);
    log.count_notification(name);
}

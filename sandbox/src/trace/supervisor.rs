//! The seccomp user-notify supervisor loop: receive, decode, record, continue.

use std::io;

use nix::errno::Errno;

use crate::access::AccessLog;

use super::decode::{decode_syscall, record};
use super::notify::Listener;

/// Serves notifications until every process using the filter is gone.
///
/// If this returns early (an error), the listener is dropped by the caller and the kernel
/// fails the tracees' pending and future path syscalls with ENOSYS: they never hang.
pub fn supervise(listener: &Listener, log: &mut AccessLog) -> io::Result<()> {
    listener.request_sync_wake_up();
    // SAFETY: all-zero is a valid `seccomp_notif` (plain integers).
    let mut notification: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    while listener.wait()? {
        match listener.receive(&mut notification) {
            Ok(()) => {}
            // ENOENT: the tracee died or was interrupted before we got to it.
            Err(Errno::ENOENT) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let tid = notification.pid;
        let nr = i64::from(notification.data.nr);
        crate::access::count_notification(log, nr);
        let decoded = decode_syscall(tid, nr, notification.data.args);
        // Only trust what we read if the tracee is still stopped in *this* call; otherwise
        // the pid may have been reused and the memory belongs to someone else.
        if listener.is_pending(notification.id) {
            record(log, tid, decoded);
        }
        listener.continue_syscall(notification.id)?;
    }
    Ok(())
}

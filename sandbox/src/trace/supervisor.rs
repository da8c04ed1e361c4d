//! The seccomp user-notify supervisor loop: receive, decode, record, continue.

use std::io;

use nix::errno::Errno;

use crate::access::AccessLog;

use super::decode::{Call, NoAccess, decode};
use super::notify::Listener;
use super::syscalls;

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
        log.notifications += 1;
        let tid = notification.pid;
        let nr = i64::from(notification.data.nr);
        let decoded = match syscalls::lookup(nr) {
            Some(syscall) => {
                let call = Call {
                    tid,
                    syscall,
                    args: notification.data.args,
                };
                decode(&call).map_err(|e| (syscall.name, e))
            }
            None => Err((
                "unknown",
                NoAccess::Gap(format!(
                    "notified for syscall {nr}, which vt does not decode"
                )),
            )),
        };
        // Only trust what we read if the tracee is still stopped in *this* call; otherwise
        // the pid may have been reused and the memory belongs to someone else.
        if listener.is_pending(notification.id) {
            match decoded {
                Ok(accesses) => {
                    for (kind, path) in accesses {
                        log.push(kind, path, tid);
                    }
                }
                Err((_, NoAccess::Nothing)) => {}
                Err((name, NoAccess::Gap(reason))) => log.gap(tid, name, reason),
            }
        }
        listener.continue_syscall(notification.id)?;
    }
    Ok(())
}

//! The processes around the task: A relays the task's status to vt (re-raising its signal),
//! B is pid 1 of the new pid namespace and reaps until the task is gone, and every one of
//! them dies with its parent.

use std::os::fd::RawFd;

use libc::c_int;

/// SIGKILL when the parent dies, and die now if it already has (the race prctl leaves).
///
/// # Safety
/// Only in the forked child of [`super::Prepared::enter`] (single-threaded, before
/// exec): it makes async-signal-safe syscalls only.
pub(super) unsafe fn die_with_parent() {
    // SAFETY: prctl/getppid with integer arguments.
    unsafe {
        let parent = libc::getppid();
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != parent {
            libc::_exit(137);
        }
    }
}

/// A: wait for B, then leave exactly as the task did.
///
/// # Safety
/// Only in the forked child of [`super::Prepared::enter`] (single-threaded, before
/// exec): it makes async-signal-safe syscalls only. It never returns: the process exits.
pub(super) unsafe fn relay_status(status_pipe: RawFd, b: libc::pid_t) -> ! {
    // SAFETY: read/waitpid/signal/_exit only.
    unsafe {
        let mut raw = [0u8; 4];
        let mut got = 0usize;
        while got < 4 {
            let n = libc::read(status_pipe, raw[got..].as_mut_ptr().cast(), 4 - got);
            if n > 0 {
                got += n as usize;
            } else if n == 0 || *libc::__errno_location() != libc::EINTR {
                break;
            }
        }
        let mut b_status = 0;
        while libc::waitpid(b, &mut b_status, 0) < 0 && *libc::__errno_location() == libc::EINTR {}
        let status = if got == 4 {
            i32::from_le_bytes(raw)
        } else {
            b_status
        };
        exit_like(status)
    }
}

/// B as pid 1: reap everything until C is gone, hand C's status to A, exit (which kills
/// whatever is left in the namespace).
///
/// # Safety
/// Only in the forked child of [`super::Prepared::enter`] (single-threaded, before
/// exec): it makes async-signal-safe syscalls only. It never returns: the process exits.
pub(super) unsafe fn init_until(c: libc::pid_t, status_pipe: RawFd) -> ! {
    // SAFETY: waitpid/write/_exit only.
    unsafe {
        loop {
            let mut status = 0;
            let pid = libc::waitpid(-1, &mut status, 0);
            if pid == c {
                let raw = status.to_le_bytes();
                libc::write(status_pipe, raw.as_ptr().cast(), 4);
                libc::_exit(0);
            }
            if pid < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(1);
            }
        }
    }
}

///
/// # Safety
/// Only in the forked child of [`super::Prepared::enter`] (single-threaded, before
/// exec): it makes async-signal-safe syscalls only. It never returns: the process exits.
unsafe fn exit_like(status: c_int) -> ! {
    // SAFETY: signal/sigprocmask/raise/_exit with plain integers.
    unsafe {
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            libc::signal(signal, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(signal);
        }
        libc::_exit(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        })
    }
}

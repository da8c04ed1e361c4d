//! The terminal's foreground for a task that reads it (a persistent task run alone), as a
//! shell gives it to a foreground job: the task's process group can read keys (instead of
//! being stopped by SIGTTIN, as a background group is), and Ctrl-C reaches the task itself,
//! which stops the way it stops when run by hand. vt takes the foreground back after.

use std::os::fd::RawFd;

const TTY: RawFd = libc::STDIN_FILENO;

pub struct Foreground {
    vt_group: libc::pid_t,
}

impl Foreground {
    /// Gives the foreground to `group`, if stdin is a terminal whose foreground is vt's.
    pub fn give(group: u32) -> Option<Foreground> {
        let group = libc::pid_t::try_from(group).ok()?;
        // SAFETY: isatty, tcgetpgrp and getpgrp only read the descriptor and process state.
        let vt_group = unsafe {
            if libc::isatty(TTY) != 1 || libc::tcgetpgrp(TTY) != libc::getpgrp() {
                return None;
            }
            libc::getpgrp()
        };
        if !set_foreground(group) {
            return None;
        }
        // The task may have read before it had the terminal, and been stopped for it.
        // SAFETY: a signal to the task's own process group.
        unsafe { libc::killpg(group, libc::SIGCONT) };
        Some(Foreground { vt_group })
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        set_foreground(self.vt_group);
    }
}

/// `tcsetpgrp` with SIGTTOU blocked in this thread: vt may be in the background when it
/// takes the terminal back, and would otherwise be stopped for trying.
fn set_foreground(group: libc::pid_t) -> bool {
    // SAFETY: sigset manipulation on local values, then tcsetpgrp on stdin; the thread's
    // mask is restored before returning.
    unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGTTOU);
        libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
        let done = libc::tcsetpgrp(TTY, group) == 0;
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        done
    }
}

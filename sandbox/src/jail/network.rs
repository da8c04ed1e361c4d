//! The sandbox's network namespace, made ahead of the task.
//!
//! Creating a network namespace (`unshare(CLONE_NEWNET)` runs every network subsystem's
//! per-namespace setup) and bringing its loopback up was the largest single step of a
//! sandbox's setup: 0.53 + 0.08 ms of the ~3 ms between the fork of the sandbox's outer
//! process and the task's exec, on this project's 2-CPU machine. Where vt may (as root:
//! `CAP_SYS_ADMIN`), vt's worker thread for the next sandbox ([`crate::ahead`]) makes it,
//! loopback up, and goes back to its own namespace, while the task is still being prepared
//! ([`super::Jail::new`] to [`super::Jail::install`]: the layer, the IPC server, the
//! recorder's buffers, the jail's plan, fanotify), and the sandbox's outer process enters it
//! with `setns` before it creates the other namespaces.
//!
//! What the task sees is the same: a fresh namespace of its own with only `lo`, up. It is
//! owned by vt's user namespace instead of the sandbox's, so nothing inside the sandbox has
//! capabilities over it; the task has none anyway (every capability is dropped). Where the
//! thread cannot make one (not root), or the outer process cannot enter it (a seccomp
//! policy around vt refusing `setns`), the outer process creates it with the others, as
//! before. The first namespace is started from vt's command line (`--sandbox`), so it is
//! ready by the time the task's sandbox is set up; the next from each sandbox's
//! [`super::Jail::new`].

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a thread could not make a namespace (not permitted here): later sandboxes do
/// not try again.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Set for a run of several tasks: taking a namespace starts the next one at once
/// ([`keep_ahead`]).
static KEEP_AHEAD: AtomicBool = AtomicBool::new(false);

/// The namespace being made for the next sandbox, if any.
static AHEAD: Mutex<Option<crate::ahead::Pending<std::io::Result<OwnedFd>>>> = Mutex::new(None);

/// Starts making a fresh network namespace with its loopback up for the next sandbox,
/// unless one is being made already or this process was refused one before. Call it as
/// early as the next sandbox is known: vt's command line (`--sandbox`), else
/// [`super::Jail::new`].
pub fn make_ahead() {
    if REFUSED.load(Ordering::Relaxed) {
        return;
    }
    let mut ahead = AHEAD.lock().unwrap_or_else(|p| p.into_inner());
    if ahead.is_none() {
        *ahead = crate::ahead::later(make);
    }
}

/// From now on, taking a namespace starts making the next: for a run of several tasks, whose
/// next sandbox would otherwise start its namespace only when it is planned, a moment before
/// it needs it. Making one takes ~0.6 ms here (a run of 100 sandboxed tasks waited
/// 0.6 ms per task for it); a lone task does not ask, and no namespace is made for nothing.
pub fn keep_ahead() {
    KEEP_AHEAD.store(true, Ordering::Relaxed);
}

/// The namespace made ahead, as an fd to `setns` into; `None` if none was started or it
/// could not be made (the sandbox's outer process then makes its own).
pub fn take() -> Option<OwnedFd> {
    let ahead = AHEAD.lock().unwrap_or_else(|p| p.into_inner()).take()?;
    match ahead.wait() {
        Some(Ok(fd)) => {
            if KEEP_AHEAD.load(Ordering::Relaxed) {
                make_ahead();
            }
            Some(fd)
        }
        Some(Err(_)) => {
            REFUSED.store(true, Ordering::Relaxed);
            None
        }
        None => None,
    }
}

/// Runs on vt's worker thread ([`crate::ahead`]), which goes back to the namespace it was
/// in afterwards: the fd is then the new one's only reference.
fn make() -> std::io::Result<OwnedFd> {
    let own = std::fs::File::open("/proc/thread-self/ns/net")?;
    // SAFETY: moves this thread (only) into a new network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: socket/ioctl/close on a request we own, in this thread's new namespace.
    let up = unsafe { super::apply::loopback_up() } == 0;
    let error = (!up).then(std::io::Error::last_os_error);
    let made = std::fs::File::open("/proc/thread-self/ns/net").map(OwnedFd::from);
    // SAFETY: this thread back into the namespace it was in (its own fd, still open).
    if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    match error {
        Some(error) => Err(error),
        None => made,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;

    /// As root (CI), the namespace is made, it is not this process's, and its loopback is
    /// up; otherwise it may be refused, and the sandbox makes its own.
    #[test]
    fn a_namespace_made_ahead_is_fresh_with_its_loopback_up() {
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        make_ahead();
        let made = take();
        let Some(fd) = made else {
            assert!(!root, "as root, the network namespace must be made ahead");
            return;
        };
        let ours = std::fs::metadata("/proc/self/ns/net")
            .expect("own netns")
            .ino();
        let theirs = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .expect("made netns")
            .ino();
        assert_ne!(ours, theirs);
        let flags = std::thread::spawn(move || {
            // SAFETY: this test thread enters the namespace made, then asks lo's flags.
            unsafe {
                assert_eq!(libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET), 0);
                let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
                let mut request: libc::ifreq = std::mem::zeroed();
                for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
                    *slot = *byte as libc::c_char;
                }
                assert_eq!(libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request), 0);
                libc::close(socket);
                request.ifr_ifru.ifru_flags
            }
        })
        .join()
        .expect("thread");
        assert_ne!(flags & libc::IFF_UP as libc::c_short, 0, "lo is not up");
    }
}

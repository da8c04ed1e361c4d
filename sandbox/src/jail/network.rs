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
//!
//! **A namespace serves again.** Making one costs ~0.6 ms of a worker's CPU and letting it go
//! ~0.2 ms more of the kernel's (a loop of 200 here: 0.56–0.60 ms each, ~0.8 ms of CPU with
//! the teardown), per sandboxed task, and a run of many sandboxed tasks is short of CPU. So
//! once every process of a sandbox is gone, its namespace is given back
//! ([`give_back`]) and the next sandbox of this process takes it instead of a new one — if
//! nothing of the task is left in it. The task had no capabilities over it (see above), so
//! its configuration is as made; what a task can leave behind is sockets: one it passed to
//! a process outside, a closed TCP connection in `TIME_WAIT` (which would make the next
//! task's `bind` of that port fail without `SO_REUSEADDR`, as a fresh namespace would not),
//! a socket whose memory the kernel frees a moment later. [`in_use`] reads the namespace's
//! own counts (`/proc/net/sockstat`, `sockstat6`): any socket, connection in `TIME_WAIT` or
//! fragment queued, and it is let go and a fresh one made, as before. Left alike across
//! tasks, and not part of what a task does: the namespace's statistics (`/proc/net/snmp`,
//! the loopback's byte counts) and the kernel's per-destination TCP metrics (timing only).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::lock;

/// Set once a thread could not make a namespace (not permitted here): later sandboxes do
/// not try again.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Set for a run of several tasks: taking a namespace starts the next one at once
/// ([`keep_ahead`]).
static KEEP_AHEAD: AtomicBool = AtomicBool::new(false);

/// The namespace being made for the next sandbox, if any.
static AHEAD: Mutex<Option<crate::ahead::Pending<std::io::Result<OwnedFd>>>> = Mutex::new(None);

/// Namespaces given back and found unused, for the next sandboxes to take.
static RETURNED: Mutex<Vec<OwnedFd>> = Mutex::new(Vec::new());

/// At most this many wait in [`RETURNED`]: a run needs as many as it runs sandboxes at once;
/// more are let go.
const RETURNED_MAX: usize = 8;

/// Starts making a fresh network namespace with its loopback up for the next sandbox,
/// unless one is being made already or this process was refused one before. Call it as
/// early as the next sandbox is known: vt's command line (`--sandbox`), else
/// [`super::Jail::new`].
pub fn make_ahead() {
    if REFUSED.load(Ordering::Relaxed) || !lock(&RETURNED).is_empty() {
        return;
    }
    let mut ahead = lock(&AHEAD);
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
    // Popped in a statement of its own: `make_ahead` locks the list again.
    let returned = lock(&RETURNED).pop();
    if let Some(returned) = returned {
        if KEEP_AHEAD.load(Ordering::Relaxed) {
            make_ahead();
        }
        return Some(returned);
    }
    let ahead = lock(&AHEAD).take()?;
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

/// Gives back the namespace of a sandbox whose processes are all gone (its tracer has seen
/// the last one end), for the next sandbox of this process: kept if [`in_use`] finds
/// nothing of the task left in it, let go otherwise. The check runs on vt's worker for
/// later sandboxes, off the task's end.
pub fn give_back(namespace: OwnedFd) {
    let _ = crate::ahead::later(move || keep_if_unused(namespace));
}

/// Keeps `namespace` for the next sandbox if nothing is left in it; says whether it did.
fn keep_if_unused(namespace: OwnedFd) -> bool {
    if !matches!(in_use(&namespace), Ok(false)) {
        return false;
    }
    let mut returned = lock(&RETURNED);
    if returned.len() >= RETURNED_MAX {
        return false;
    }
    returned.push(namespace);
    true
}

/// Whether anything of a task is left in `namespace`: any socket, TCP connection in
/// `TIME_WAIT` or queued fragment, by the namespace's own counts, read from inside it (this
/// thread enters it and goes back; only vt's worker threads do, between their jobs).
fn in_use(namespace: &OwnedFd) -> std::io::Result<bool> {
    let counts = inside(namespace, || {
        let mut text = std::fs::read_to_string("/proc/thread-self/net/sockstat")?;
        // No IPv6 in this kernel: no IPv6 sockets, and `sockstat`'s `sockets: used` counts
        // every family anyway.
        match std::fs::read_to_string("/proc/thread-self/net/sockstat6") {
            Ok(six) => text.push_str(&six),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(text)
    })??;
    Ok(!nothing_counted(&counts))
}

/// Runs `work` with this thread in network namespace `namespace`, then takes the thread
/// back to the namespace it was in.
fn inside<T>(namespace: &OwnedFd, work: impl FnOnce() -> T) -> std::io::Result<T> {
    let own = std::fs::File::open("/proc/thread-self/ns/net")?;
    // SAFETY: moves this thread (only) into the namespace, an fd we hold.
    if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let done = work();
    // SAFETY: this thread back into the namespace it was in (its own fd, still open).
    if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(done)
}

/// Whether `sockstat` text (`sockstat` and `sockstat6`, one after the other) counts nothing
/// in its namespace: `sockets: used`, every protocol's `inuse`, `TIME_WAIT` connections
/// (`tw`, both IP versions) and fragment memory all zero. `orphan`, `alloc` and `mem` are
/// the whole system's, not the namespace's, and are not looked at. Text without a
/// `sockets: used` count is not understood, and counts as something.
fn nothing_counted(sockstat: &str) -> bool {
    let mut understood = false;
    for line in sockstat.lines() {
        let mut fields = line.split_whitespace().skip(1);
        while let (Some(key), Some(value)) = (fields.next(), fields.next()) {
            if !matches!(key, "used" | "inuse" | "tw" | "memory") {
                continue;
            }
            understood |= key == "used";
            if value != "0" {
                return false;
            }
        }
    }
    understood
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

    const FRESH: &str = "sockets: used 0\nTCP: inuse 0 orphan 3 tw 0 alloc 57 mem 12\n\
        UDP: inuse 0 mem 4\nUDPLITE: inuse 0\nRAW: inuse 0\nFRAG: inuse 0 memory 0\n\
        TCP6: inuse 0\nUDP6: inuse 0\nUDPLITE6: inuse 0\nRAW6: inuse 0\nFRAG6: inuse 0 memory 0\n";

    /// The system-wide counts (`orphan`, `alloc`, `mem`) do not matter; any of the
    /// namespace's own does, and text that is not understood counts as something.
    #[test]
    fn a_namespace_counts_as_unused_only_with_nothing_of_its_own_counted() {
        assert!(nothing_counted(FRESH));
        for (what, from, to) in [
            ("a socket", "sockets: used 0", "sockets: used 1"),
            ("a TIME_WAIT connection", " tw 0 ", " tw 1 "),
            ("a TCP socket", "TCP: inuse 0", "TCP: inuse 2"),
            ("an IPv6 UDP socket", "UDP6: inuse 0", "UDP6: inuse 1"),
            (
                "fragments",
                "FRAG: inuse 0 memory 0",
                "FRAG: inuse 0 memory 4096",
            ),
        ] {
            let counted = FRESH.replacen(from, to, 1);
            assert_ne!(counted, FRESH, "{what}: the sample changed");
            assert!(!nothing_counted(&counted), "{what} was not seen");
        }
        assert!(!nothing_counted(""));
        assert!(!nothing_counted(
            "TCP: inuse 0 orphan 0 tw 0 alloc 0 mem 0\n"
        ));
    }

    /// In a namespace as made nothing is counted; a socket a task left open, or a
    /// connection it closed first (`TIME_WAIT`: the port stays taken for a minute), is seen,
    /// and such a namespace is not kept.
    #[test]
    fn a_namespace_with_a_socket_or_a_time_wait_left_is_not_kept() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root, and this needs it"
            );
            eprintln!("skipped: vt makes network namespaces as root only");
            return;
        }
        let fresh = make().expect("a namespace");
        assert!(
            !in_use(&fresh).expect("counts"),
            "a fresh namespace counts something"
        );
        assert!(keep_if_unused(fresh), "a fresh namespace was not kept");

        let held = make().expect("a namespace");
        // On a thread of its own: the test's thread keeps its namespace whatever happens.
        let socket = std::thread::scope(|scope| {
            scope
                .spawn(|| inside(&held, || std::net::UdpSocket::bind("127.0.0.1:0")))
                .join()
                .expect("thread")
        })
        .expect("setns")
        .expect("udp");
        assert!(
            in_use(&held).expect("counts"),
            "an open socket was not seen"
        );
        assert!(!keep_if_unused(held), "a namespace with a socket was kept");
        drop(socket);

        let waited = make().expect("a namespace");
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    inside(&waited, || {
                        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
                        let client =
                            std::net::TcpStream::connect(listener.local_addr().expect("addr"))
                                .expect("connect");
                        let (server, _) = listener.accept().expect("accept");
                        // The server's side closes first: its port goes to TIME_WAIT.
                        drop(server);
                        let mut byte = [0u8; 1];
                        let _ = std::io::Read::read(&mut &client, &mut byte);
                    })
                })
                .join()
                .expect("thread")
                .expect("setns")
        });
        assert!(
            in_use(&waited).expect("counts"),
            "a TIME_WAIT connection was not seen"
        );
    }
}

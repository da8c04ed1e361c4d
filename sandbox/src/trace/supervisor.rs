//! The seccomp user-notify supervisor loop: receive, decode, record, continue.

use std::io;

use nix::errno::Errno;

use crate::access::AccessLog;

use super::decode::{decode_syscall, record};
use super::notify::Listener;

/// How many threads serve one listener: one per CPU, up to 4 (`VT_SUPERVISOR_THREADS`
/// overrides). With a single thread, a build that keeps every CPU busy waits for it: when
/// it is descheduled (its tracee, woken on its CPU, runs first) another CPU's tracee sits in
/// its notification for a whole time slice. Measured on 2 cores (`make -j2`, 14 000
/// notifications): 1 thread 1.45×, 2 threads 1.3×, 3 or 4 threads slower again (every
/// notification wakes every waiting thread).
pub fn threads() -> usize {
    if let Some(n) = std::env::var("VT_SUPERVISOR_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        return n.clamp(1, 64);
    }
    crate::cpus().clamp(1, 4)
}

/// Serves notifications on up to `threads` threads (this one included) until every process
/// using the filter is gone; what they record ends up in `log`, each thread's in its order.
///
/// The other threads start when a second thread of the task makes a traced call (a child
/// process, or one of node's worker threads): until then there is nobody for them to serve
/// in parallel with, and a task that is one process (`sh -c true`, a compiler) would pay
/// for starting and joining them (~0.1 ms each here, `VT_SUPERVISOR_THREADS=1` against
/// the default on a lone `vt exec -- true`) for nothing.
pub fn supervise_on(listener: &Listener, threads: usize, log: &mut AccessLog) -> io::Result<()> {
    listener.request_sync_wake_up();
    let helpers: Vec<io::Result<AccessLog>> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        let mut started = threads <= 1;
        let mut alone = Alone::default();
        let mine = supervise(
            listener,
            log,
            |tid| alone.with(tid),
            |alone| {
                if started || alone {
                    return;
                }
                started = true;
                handles.extend((1..threads).filter_map(|n| {
                    std::thread::Builder::new()
                        .name(format!("vt-supervisor-{n}"))
                        .spawn_scoped(scope, move || {
                            let mut log = AccessLog::default();
                            supervise(listener, &mut log, |_| false, |_| {}).map(|()| log)
                        })
                        .ok()
                }));
            },
        );
        let mut results: Vec<io::Result<AccessLog>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a supervisor thread panicked")))
            })
            .collect();
        results.push(mine.map(|()| AccessLog::default()));
        results
    });
    for helper in helpers {
        log.absorb(helper?);
    }
    Ok(())
}

/// Whether the first supervisor thread is alone with its tracee (`Listener::continue_syscall`'s
/// `alone`): until a second tracee thread stops there is one supervisor thread and one
/// tracee; from then on, never again (the other supervisor threads start then, and a thread
/// may serve a tracee from another CPU).
#[derive(Default)]
struct Alone {
    first: Option<u32>,
    shared: bool,
}

impl Alone {
    /// Told each notification's tracee thread `tid`, in order.
    fn with(&mut self, tid: u32) -> bool {
        self.shared |= *self.first.get_or_insert(tid) != tid;
        !self.shared
    }
}

/// Serves notifications until every process using the filter is gone.
///
/// If this returns early (an error), the listener is dropped by the caller and the kernel
/// fails the tracees' pending and future path syscalls with ENOSYS: they never hang.
/// `alone` says whether the tracee thread `tid` is the only one that has stopped and this
/// the only supervisor thread; `served` is told that answer again once the tracee is on its
/// way (the first `false` is the second tracee's first stop).
fn supervise(
    listener: &Listener,
    log: &mut AccessLog,
    mut alone: impl FnMut(u32) -> bool,
    mut served: impl FnMut(bool),
) -> io::Result<()> {
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
        let alone = alone(tid);
        let nr = i64::from(notification.data.nr);
        crate::access::count_notification(log, nr);
        // Everything is decided while the tracee is stopped, existence probes included:
        // probing after letting it go was measured (~1 % faster on a C build) and lost
        // fidelity: `as` read a temporary file that gcc deleted before the late probe,
        // which then said "missing" (the strace oracle caught it).
        let decoded = decode_syscall(tid, nr, notification.data.args);
        // Only trust what we read if the tracee was still stopped in *this* call when we let
        // it go; otherwise the pid may have been reused and the memory was someone else's.
        if listener.continue_syscall(notification.id, alone)? {
            record(log, tid, decoded);
        }
        served(alone);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Alone;

    #[test]
    fn the_first_tracee_is_alone_until_a_second_one_stops_and_never_again() {
        let mut alone = Alone::default();
        assert!(alone.with(7));
        assert!(alone.with(7));
        assert!(!alone.with(8));
        assert!(
            !alone.with(7),
            "the first tracee again, but another one exists now"
        );
        assert!(!alone.with(8));
    }
}

//! The concurrent-change guard: was anything a task observed changed while it ran?
//!
//! The cache values a task's observations after it ends (hashing a file while a compiler
//! reads it would cost the task time). That value is only what the task saw if nothing
//! changed the path between the task's start and the moment vt valued it. A change, by
//! anyone, moves the inode's **ctime** to the kernel's clock at that moment; userspace cannot
//! set ctime (unlike mtime, which `touch -d`, `tar` and `git` set back). So vt takes a
//! **boundary** from the clock the kernel stamps with just before the task starts, and at
//! store time a path whose ctime is at or after the boundary was changed while the task ran
//! (or after it): the run's result is used, nothing is stored.
//!
//! The boundary must separate what happened before the start from what happened after:
//! - The kernel stamps a change with the coarse clock (`CLOCK_REALTIME_COARSE`, one tick:
//!   4 ms at HZ=250), or since Linux 6.13 sometimes with the fine clock (multigrain
//!   timestamps). Either stamp of a change after the boundary is ≥ the coarse clock read at
//!   the boundary. So the boundary is a reading of the coarse clock.
//! - A change made *in the same tick before* the boundary would carry the same stamp and look
//!   like a change during the run: a dependency's outputs written 1 ms before the dependent
//!   starts, a file saved just before `vt` was launched. Such a run is not stored (a
//!   needless miss next time, never a wrong hit: the check errs on the side of "changed").
//!   So [`Window::open`] waits, when it must, until the coarse clock has passed the last
//!   moment vt knows changes the task may read were made: vt-wide ones ([`settled`]: vt's
//!   own start, the cache directory's creation, a worker's input root) and the ends of the
//!   task's own dependencies (passed in: they ran or were replayed just before). That wait
//!   is at most one tick and is only paid by a task started within one tick of such a
//!   moment. A task does not wait for unrelated tasks that just ended: reading their files
//!   would be an undeclared dependency on a sibling that may or may not have run yet, and
//!   the worst that waiting less can do is the needless miss above.
//!
//! Git's racy-clean rule is the same idea for its index; Bazel's
//! `--experimental_guard_against_concurrent_changes` compares an input's ctime before and
//! after an action, which needs the inputs known before the action — vt's are not.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// Nanoseconds since the epoch on `clock`.
fn clock_ns(clock: libc::clockid_t) -> i64 {
    // SAFETY: all-zero is a valid timespec, and clock_gettime only writes it.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and a pointer to a live timespec.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return 0;
    }
    now.tv_sec * 1_000_000_000 + now.tv_nsec
}

/// The coarse clock's tick: how far a kernel timestamp can lag the real time.
fn tick() -> Duration {
    // SAFETY: as in `clock_ns`.
    let mut res: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and a pointer to a live timespec.
    let ok = unsafe { libc::clock_getres(libc::CLOCK_REALTIME_COARSE, &mut res) } == 0;
    let ns = if ok {
        res.tv_sec * 1_000_000_000 + res.tv_nsec
    } else {
        10_000_000 // HZ=100, the coarsest common tick
    };
    Duration::from_nanos(ns.clamp(1, 1_000_000_000) as u64)
}

/// The latest moment (fine clock, ns) at which vt knows files every task may read were
/// changed: its own start, the cache directory's creation. 0: not yet known.
static SETTLED: AtomicI64 = AtomicI64::new(0);

/// Records that changes any task started from now on may read (files edited before vt was
/// started, directories vt created for everyone) were all made by now.
pub fn settled() {
    SETTLED.fetch_max(now_ns(), Ordering::SeqCst);
}

/// The fine clock now, as [`Window::open`] compares it: for "a task's dependency ended now".
pub fn now_ns() -> i64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// The time span of one task run, as the guard needs it.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Coarse-clock reading before the task started: a change stamped at or after it may
    /// have happened while the task ran.
    boundary_ns: i64,
    /// Fine clock and monotonic clock at the same moment, to notice the clock being set back.
    real_start_ns: i64,
    mono_start: Instant,
    /// Fine clock once the task's whole tree was gone ([`Window::end`]); `i64::MAX` before.
    ended_ns: i64,
}

impl Window {
    /// Opens the window just before a task starts, once the coarse clock has passed the
    /// vt-wide [`settled`] moment (see the module doc for the wait).
    pub fn open() -> Window {
        Window::open_after(0)
    }

    /// [`Window::open`], also past `changed_at` (fine clock, ns): when the changes the task
    /// is likely to read (its dependencies' outputs) were made.
    pub fn open_after(changed_at: i64) -> Window {
        let settled = match SETTLED.load(Ordering::SeqCst).max(changed_at) {
            0 => clock_ns(libc::CLOCK_REALTIME),
            at => at,
        };
        let tick = tick();
        loop {
            let coarse = clock_ns(libc::CLOCK_REALTIME_COARSE);
            if coarse > settled {
                return Window {
                    boundary_ns: coarse,
                    real_start_ns: clock_ns(libc::CLOCK_REALTIME),
                    mono_start: Instant::now(),
                    ended_ns: i64::MAX,
                };
            }
            // The tick holding `settled` has not ended yet: sleep to the next one. The
            // coarse clock moves at the tick, which is `tick` after its last value.
            let fine = clock_ns(libc::CLOCK_REALTIME);
            let next = coarse + tick.as_nanos() as i64;
            let wait = (next - fine).clamp(20_000, tick.as_nanos() as i64);
            std::thread::sleep(Duration::from_nanos(wait as u64));
        }
    }

    /// A window for a run whose result is never stored: no wait, and every path counts as
    /// changed, should it be checked anyway.
    pub fn unchecked() -> Window {
        Window {
            boundary_ns: i64::MIN,
            real_start_ns: clock_ns(libc::CLOCK_REALTIME),
            mono_start: Instant::now(),
            ended_ns: i64::MIN,
        }
    }

    /// Whether an inode with this ctime was changed at or after the task's start.
    pub fn changed_since_start(&self, ctime_sec: i64, ctime_nsec: i64) -> bool {
        let ctime = ctime_sec * 1_000_000_000 + ctime_nsec;
        // A file system that keeps whole seconds (ctime_nsec always 0) rounds a change
        // during the run down to the second: then the whole second counts.
        ctime >= self.boundary_ns
            || (ctime_nsec == 0 && ctime_sec >= self.boundary_ns.div_euclid(1_000_000_000))
    }

    /// Closes the window once the task's whole process tree is gone: it writes nothing after.
    pub fn end(&mut self) {
        self.ended_ns = clock_ns(libc::CLOCK_REALTIME);
    }

    /// Whether an output with this ctime was changed after the task ended (by someone else:
    /// the task's own writes all carry a stamp from before its end, coarse or fine). A change
    /// in the first tick after the end can carry an older coarse stamp and is not seen.
    pub fn changed_after_end(&self, ctime_sec: i64, ctime_nsec: i64) -> bool {
        ctime_sec * 1_000_000_000 + ctime_nsec > self.ended_ns
    }

    /// Whether the system clock was set back since the window opened: ctime comparisons
    /// against the boundary then prove nothing.
    pub fn clock_set_back(&self) -> bool {
        let real = clock_ns(libc::CLOCK_REALTIME) - self.real_start_ns;
        let mono = self.mono_start.elapsed().as_nanos() as i64;
        // Both clocks advance together unless someone steps the real one; allow NTP's
        // slewing (≤ 0.05 %) and a tick of reading skew.
        real < mono - mono / 2000 - tick().as_nanos() as i64
    }

    /// A window whose boundary is `boundary_ns`, for tests.
    #[cfg(test)]
    pub fn at(boundary_ns: i64) -> Window {
        Window {
            boundary_ns,
            real_start_ns: clock_ns(libc::CLOCK_REALTIME),
            mono_start: Instant::now(),
            ended_ns: i64::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_file_written_just_before_the_window_opens_is_not_changed_during_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dep-output");
        // Many rounds: the write must land in the same tick as the open for this to test
        // the wait, and it does in most rounds (the tick is milliseconds, a write is µs).
        written_before_is_not_changed_written_after_is(&path, || {
            settled();
            Window::open()
        });
    }

    /// 50 rounds: a write just before `open` is not a change during the window, a write
    /// after it is.
    fn written_before_is_not_changed_written_after_is(
        path: &std::path::Path,
        open: impl Fn() -> Window,
    ) {
        let changed = |window: &Window| {
            let meta = std::fs::metadata(path).expect("stat");
            window.changed_since_start(meta.ctime(), meta.ctime_nsec())
        };
        for _ in 0..50 {
            std::fs::write(path, "v1").expect("write");
            let window = open();
            assert!(!changed(&window));
            std::fs::write(path, "v2").expect("write");
            assert!(changed(&window));
        }
    }

    #[test]
    fn a_dependency_output_written_just_before_is_not_changed_during_the_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dep-output");
        written_before_is_not_changed_written_after_is(&path, || Window::open_after(now_ns()));
    }

    #[test]
    fn a_window_that_does_not_wait_still_sees_every_later_change() {
        // The control for the rule above: not waiting for an unrelated write can only make
        // a file look changed (a needless miss); a change after the start is always seen.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("unrelated");
        for _ in 0..50 {
            std::fs::write(&path, "v1").expect("write");
            let window = Window::open_after(0);
            std::fs::write(&path, "v2").expect("write");
            let meta = std::fs::metadata(&path).expect("stat");
            assert!(window.changed_since_start(meta.ctime(), meta.ctime_nsec()));
        }
    }

    #[test]
    fn whole_second_timestamps_count_the_whole_second() {
        let window = Window::at(5_500_000_000);
        assert!(window.changed_since_start(5, 0));
        assert!(!window.changed_since_start(5, 499_999_999));
        assert!(window.changed_since_start(5, 500_000_000));
        assert!(!window.changed_since_start(4, 0));
    }

    #[test]
    fn an_untouched_clock_is_not_set_back() {
        let window = Window::open();
        assert!(!window.clock_set_back());
    }
}

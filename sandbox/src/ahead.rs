//! Two threads of vt's that do, one job at a time each, what a sandbox will need a moment
//! later: one for the sandbox being started (its overlay: [`urgent`]), one for the next
//! (its network namespace, its layer: [`later`]).
//!
//! Why: each of those jobs had a thread of its own, started per sandbox (~0.03 ms of vt's
//! thread each, three per sandboxed task in a run). Why two: on one thread, the current
//! sandbox's overlay waited behind the next one's layer (queued a moment before it; ~0.3 ms
//! of directory work on this project's disk), and the sandbox's init waited for the overlay:
//! 100 sandboxed tasks took 0.637 s against 0.579 s with a thread per job.

use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver, Sender};

type Job = Box<dyn FnOnce() + Send>;

/// A worker: a thread taking jobs from a channel, started with its first job; `None` if it
/// could not be started.
fn start(name: &str) -> Option<Sender<Job>> {
    let (jobs, queue) = mpsc::channel::<Job>();
    crate::spawn_without_signals(name, move || {
        for job in queue {
            // A job that panics gives nothing (its sender is dropped: `Pending::wait` says
            // `None`) and the worker goes on with the next.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        }
    })
    .ok()
    .map(|_| jobs)
}

/// The worker for the sandbox being started (`urgent`) or for the next one.
fn worker(urgent: bool) -> Option<&'static Sender<Job>> {
    static NOW: OnceLock<Option<Sender<Job>>> = OnceLock::new();
    static NEXT: OnceLock<Option<Sender<Job>>> = OnceLock::new();
    let worker = if urgent { &NOW } else { &NEXT };
    worker
        .get_or_init(|| {
            start(if urgent {
                "vt-ahead-now"
            } else {
                "vt-ahead-next"
            })
        })
        .as_ref()
}

/// What a job will give: [`Pending::wait`] for it.
pub struct Pending<T> {
    given: Receiver<T>,
}

impl<T> Pending<T> {
    /// What the job gave, once it has; `None` if it gave nothing (it panicked).
    pub fn wait(self) -> Option<T> {
        self.given.recv().ok()
    }
}

fn queue<T: Send + 'static>(
    urgent: bool,
    job: impl FnOnce() -> T + Send + 'static,
) -> Option<Pending<T>> {
    let (give, given) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = give.send(job());
    });
    worker(urgent)?.send(job).ok()?;
    Some(Pending { given })
}

/// Queues `job` for the sandbox being started.
pub fn urgent<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Option<Pending<T>> {
    queue(true, job)
}

/// Queues `job` for a later sandbox.
pub fn later<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Option<Pending<T>> {
    queue(false, job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_give_their_values_and_an_urgent_one_does_not_wait_behind_later_ones() {
        // The later worker held on a job; an urgent one is done meanwhile.
        let (hold, held) = std::sync::mpsc::channel::<()>();
        let first = later(move || held.recv().is_ok()).expect("worker");
        let second = later(|| "later").expect("worker");
        assert_eq!(urgent(|| "urgent").expect("worker").wait(), Some("urgent"));
        hold.send(()).expect("release");
        assert_eq!(first.wait(), Some(true));
        assert_eq!(second.wait(), Some("later"));
    }

    #[test]
    fn a_job_that_panics_gives_nothing_and_the_worker_goes_on() {
        let panicked = later(|| -> u32 { panic!("a job's panic") }).expect("worker");
        assert_eq!(panicked.wait(), None);
        assert_eq!(later(|| 7).expect("worker").wait(), Some(7));
    }
}

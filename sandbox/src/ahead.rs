//! Two threads of vt's that do, one job at a time each, what a sandbox will need a moment
//! later: one for the sandbox being started (its overlay: [`urgent`]), one for the next
//! (its network namespace, its layer: [`later`]).
//!
//! Why: each of those jobs had a thread of its own, started per sandbox (~0.03 ms of vt's
//! thread each, three per sandboxed task in a run). Why two: on one thread, the current
//! sandbox's overlay waited behind the next one's layer (queued a moment before it; ~0.3 ms
//! of directory work on this project's disk), and the sandbox's init waited for the overlay:
//! 100 sandboxed tasks took 0.637 s against 0.579 s with a thread per job.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

struct Worker {
    queue: Mutex<VecDeque<Job>>,
    wake: Condvar,
}

/// A worker, its thread started; `None` if it could not be.
fn start(name: &str) -> Option<&'static Worker> {
    let worker: &'static Worker = Box::leak(Box::new(Worker {
        queue: Mutex::new(VecDeque::new()),
        wake: Condvar::new(),
    }));
    crate::spawn_without_signals(name, move || {
        loop {
            let job = {
                let mut queue = worker.queue.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if let Some(job) = queue.pop_front() {
                        break job;
                    }
                    queue = worker.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
                }
            };
            // A job that panics gives nothing (its `Give` is dropped) and the worker goes on
            // with the next.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        }
    })
    .ok()
    .map(|_| worker)
}

/// The worker for the sandbox being started (`urgent`) or for the next one, started with its
/// first job.
fn worker(urgent: bool) -> Option<&'static Worker> {
    static NOW: OnceLock<Option<&'static Worker>> = OnceLock::new();
    static NEXT: OnceLock<Option<&'static Worker>> = OnceLock::new();
    if urgent {
        *NOW.get_or_init(|| start("vt-ahead-now"))
    } else {
        *NEXT.get_or_init(|| start("vt-ahead-next"))
    }
}

/// What a job will give: [`Pending::wait`] for it.
pub struct Pending<T> {
    slot: Arc<Slot<T>>,
}

struct Slot<T> {
    /// `Some(None)`: the job was dropped without giving anything.
    value: Mutex<Option<Option<T>>>,
    ready: Condvar,
}

/// The job's side of a [`Pending`]: what it gives, or, dropped without giving (the job
/// panicked), nothing, so that a waiter never waits for good.
struct Give<T> {
    slot: Arc<Slot<T>>,
    given: bool,
}

impl<T> Give<T> {
    fn give(mut self, value: T) {
        self.put(Some(value));
        self.given = true;
    }

    fn put(&self, value: Option<T>) {
        *self.slot.value.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
        self.slot.ready.notify_all();
    }
}

impl<T> Drop for Give<T> {
    fn drop(&mut self) {
        if !self.given {
            self.put(None);
        }
    }
}

impl<T> Pending<T> {
    /// What the job gave, once it has; `None` if it gave nothing.
    pub fn wait(self) -> Option<T> {
        let mut value = self.slot.value.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(given) = value.take() {
                return given;
            }
            value = self
                .slot
                .ready
                .wait(value)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

fn queue<T: Send + 'static>(
    urgent: bool,
    job: impl FnOnce() -> T + Send + 'static,
) -> Option<Pending<T>> {
    let worker = worker(urgent)?;
    let slot = Arc::new(Slot {
        value: Mutex::new(None),
        ready: Condvar::new(),
    });
    let give = Give {
        slot: Arc::clone(&slot),
        given: false,
    };
    let job: Job = Box::new(move || give.give(job()));
    worker
        .queue
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push_back(job);
    worker.wake.notify_one();
    Some(Pending { slot })
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

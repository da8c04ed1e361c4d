//! One thread of vt's that does, one job at a time, what a sandbox will need a moment later:
//! the current sandbox's overlay first ([`urgent`]), then what the next one will need (its
//! network namespace, its layer: [`later`]).
//!
//! Why one thread: each of those jobs had a thread of its own, started per sandbox (~0.03 ms
//! of vt's thread each, three per sandboxed task in a run), and two or three of them were
//! running when vt cloned the sandbox's first process, which then waited for a CPU. In
//! order, the current task's job comes before the next one's.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Queues {
    urgent: VecDeque<Job>,
    later: VecDeque<Job>,
}

struct Worker {
    queues: Mutex<Queues>,
    wake: Condvar,
}

/// The worker, started with the first job; `None` if its thread could not be started.
fn worker() -> Option<&'static Worker> {
    static WORKER: OnceLock<Option<&'static Worker>> = OnceLock::new();
    *WORKER.get_or_init(|| {
        let worker: &'static Worker = Box::leak(Box::new(Worker {
            queues: Mutex::new(Queues::default()),
            wake: Condvar::new(),
        }));
        crate::spawn_without_signals("vt-ahead", move || {
            loop {
                let job = {
                    let mut queues = worker.queues.lock().unwrap_or_else(|p| p.into_inner());
                    loop {
                        if let Some(job) = queues
                            .urgent
                            .pop_front()
                            .or_else(|| queues.later.pop_front())
                        {
                            break job;
                        }
                        queues = worker.wake.wait(queues).unwrap_or_else(|p| p.into_inner());
                    }
                };
                // A job that panics gives nothing (its `Give` is dropped) and the worker
                // goes on with the next.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        })
        .ok()
        .map(|_| worker)
    })
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
    let worker = worker()?;
    let slot = Arc::new(Slot {
        value: Mutex::new(None),
        ready: Condvar::new(),
    });
    let give = Give {
        slot: Arc::clone(&slot),
        given: false,
    };
    let job: Job = Box::new(move || give.give(job()));
    {
        let mut queues = worker.queues.lock().unwrap_or_else(|p| p.into_inner());
        if urgent {
            queues.urgent.push_back(job);
        } else {
            queues.later.push_back(job);
        }
    }
    worker.wake.notify_one();
    Some(Pending { slot })
}

/// Queues `job` for the sandbox being started, before anything for a later one.
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
    fn jobs_give_their_values_and_urgent_ones_go_first() {
        // Hold the worker on a job until both others are queued.
        let (hold, held) = std::sync::mpsc::channel::<()>();
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = later(move || held.recv().is_ok()).expect("worker");
        let seen = Arc::clone(&order);
        let second = later(move || seen.lock().expect("lock").push("later")).expect("worker");
        let seen = Arc::clone(&order);
        let third = urgent(move || seen.lock().expect("lock").push("urgent")).expect("worker");
        hold.send(()).expect("release");
        assert_eq!(first.wait(), Some(true));
        second.wait();
        third.wait();
        assert_eq!(*order.lock().expect("lock"), ["urgent", "later"]);
    }

    #[test]
    fn a_job_that_panics_gives_nothing_and_the_worker_goes_on() {
        let panicked = later(|| -> u32 { panic!("a job's panic") }).expect("worker");
        assert_eq!(panicked.wait(), None);
        assert_eq!(later(|| 7).expect("worker").wait(), Some(7));
    }
}

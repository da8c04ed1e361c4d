//! The threads a run's tasks run on: up to `jobs`, each started by the first task that
//! needs it and then reused.
//!
//! A thread per task cost the run loop a thread start (~50–100 µs on this project's
//! 2-CPU machine, `clone3` in `perf record` of a fully cached 100-package run) before
//! every task, and the new thread often started on the loop's own CPU, ahead of it.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::Scope;

type Job<'scope> = Box<dyn FnOnce() + Send + 'scope>;

pub struct Workers<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    jobs: Sender<Job<'scope>>,
    queue: Arc<Mutex<Receiver<Job<'scope>>>>,
    started: usize,
    limit: usize,
}

impl<'scope, 'env> Workers<'scope, 'env> {
    /// At most `limit` threads, in `scope`; they leave when this is dropped and their
    /// queue is empty.
    pub fn new(scope: &'scope Scope<'scope, 'env>, limit: usize) -> Self {
        let (jobs, queue) = channel();
        Workers {
            scope,
            jobs,
            queue: Arc::new(Mutex::new(queue)),
            started: 0,
            limit: limit.max(1),
        }
    }

    /// Runs `job` on a thread of its own the first `limit` times, then on the first thread
    /// that is free. The caller starts no more jobs at once than `limit`, so one is free,
    /// or about to be.
    pub fn run(&mut self, job: impl FnOnce() + Send + 'scope) {
        if self.started < self.limit {
            self.started += 1;
            let queue = Arc::clone(&self.queue);
            self.scope.spawn(move || {
                job();
                serve(&queue);
            });
            return;
        }
        // Unsent only if every thread is gone, which takes a panic in a job: the scope
        // reports that panic when it ends.
        let _ = self.jobs.send(Box::new(job));
    }
}

fn serve(queue: &Mutex<Receiver<Job<'_>>>) {
    loop {
        // The lock is held while waiting: the other free threads wait for it instead.
        let next = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        match next {
            Ok(job) => job(),
            Err(_) => return, // the run is over
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every job runs, on no more threads than the limit, and the scope ends once the
    /// workers are dropped.
    #[test]
    fn every_job_runs_on_at_most_limit_threads() {
        let ran = AtomicUsize::new(0);
        let threads = Mutex::new(std::collections::HashSet::new());
        std::thread::scope(|scope| {
            let mut workers = Workers::new(scope, 2);
            for _ in 0..50 {
                workers.run(|| {
                    ran.fetch_add(1, Ordering::SeqCst);
                    threads
                        .lock()
                        .expect("lock")
                        .insert(std::thread::current().id());
                });
            }
        });
        assert_eq!(ran.load(Ordering::SeqCst), 50);
        let threads = threads.lock().expect("lock").len();
        assert!((1..=2).contains(&threads), "{threads} threads");
    }
}

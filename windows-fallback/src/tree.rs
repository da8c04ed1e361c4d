//! Which processes are the task's: the root and everything started below it, for as long
//! as each lives (ETW sees the whole machine; a pid reused by an unrelated process after one
//! of the task's exited must not count).
//!
//! The job object the tracer puts the task in is the enforcement (nothing escapes it, and
//! closing it kills the tree); this is the attribution of events to it.

use std::collections::BTreeSet;

#[derive(Debug, Clone, Default)]
pub struct ProcessTree {
    live: BTreeSet<u32>,
    /// Every process that ever belonged to the tree (for the summary).
    ever: BTreeSet<u32>,
}

impl ProcessTree {
    pub fn new(root: u32) -> ProcessTree {
        ProcessTree {
            live: BTreeSet::from([root]),
            ever: BTreeSet::from([root]),
        }
    }

    /// A process started: it is the task's if its parent currently is.
    pub fn started(&mut self, pid: u32, parent: u32) -> bool {
        if self.live.contains(&parent) {
            self.live.insert(pid);
            self.ever.insert(pid);
            true
        } else {
            false
        }
    }

    pub fn stopped(&mut self, pid: u32) {
        self.live.remove(&pid);
    }

    pub fn contains(&self, pid: u32) -> bool {
        self.live.contains(&pid)
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub fn processes(&self) -> usize {
        self.ever.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_join_and_reused_pids_do_not() {
        let mut tree = ProcessTree::new(100);
        assert!(tree.started(101, 100));
        assert!(tree.started(102, 101));
        assert!(!tree.started(500, 4), "an unrelated process");
        tree.stopped(102);
        assert!(!tree.contains(102));
        // pid 102 reused by a process outside the tree.
        assert!(!tree.started(102, 4));
        assert!(!tree.contains(102));
        // An orphan stays the task's: its parent was the task's when it started.
        tree.stopped(101);
        assert!(tree.started(103, 100));
        tree.stopped(100);
        tree.stopped(103);
        assert!(tree.is_empty());
        assert_eq!(tree.processes(), 4);
    }
}

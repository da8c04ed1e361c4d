//! The recorder's buffers read while the task runs, so that little is left to read after
//! it, where the user waits: on node's 2 000 modules, reading the buffers after the task
//! took 4 of the 9 ms between node's exit and vt's.
//!
//! A buffer is read while its process may still be writing it, in copies of the bytes past
//! what was read before. A record is added to the log from a copy only if the copy before
//! showed it done: a copy is not an ordered read, so one copy may show a record's state word
//! done with older bytes in the rest of it, while a copy made after that one ended shows all
//! the record holds. A record that was not done when first looked at (a call in flight; an
//! `execve` from a `vfork` child, whose record stays pending once the exec succeeded) is
//! stepped over and left for the end, as is every record no look added: after the task,
//! [`super::Injection::collect`] reads those with the rules it always had.
//!
//! Only buffers with enough unread records are copied, one that had nothing new is not
//! looked at again, and a task with many processes is left to the end altogether: the end
//! reads many small buffers on every CPU, while a look lists the directory and opens files
//! on one thread, at every look. A C build's 600 buffers cost its looks 60-80 ms of CPU
//! (mostly listing and opening them) to spare its end 2-8 ms; node's one buffer of 8 000
//! records spares its end 3 ms.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use preload_abi::{HEADER_LEN, RECORD_HEADER_LEN, STATE_DONE, STATE_MASK};

use super::{Seen, add_record};
use crate::access::AccessLog;
use crate::trace::paths::CleanPaths;

/// How many unread bytes make a buffer worth a copy while the task runs (~250 records).
const WORTH_A_COPY: usize = 16 * 1024;

/// With more buffers than this (processes, execs), the rest is read at the end.
const MOST_BUFFERS: usize = 64;

/// What has been read of one injection's buffers while its task ran.
pub(super) struct Early {
    state: Mutex<State>,
    /// [`WORTH_A_COPY`], or less in tests.
    worth_a_copy: usize,
}

impl Default for Early {
    fn default() -> Early {
        Early {
            state: Mutex::default(),
            worth_a_copy: WORTH_A_COPY,
        }
    }
}

#[derive(Default)]
struct State {
    /// Set by [`Early::finish`], or once there were more than [`MOST_BUFFERS`]: the
    /// buffers are read after the task from here on.
    finished: bool,
    buffers: HashMap<OsString, Progress>,
    log: AccessLog,
    paths: CleanPaths,
    seen: Seen,
    /// Reused for every copy.
    bytes: Vec<u8>,
}

/// How far one buffer has been read, and what is left of it for the end.
#[derive(Default)]
struct Progress {
    /// Every record before this offset was added to the log or is in `left`.
    added_to: usize,
    /// Where the records the last look could step over end: it showed each before this
    /// offset done, except those in `not_done_then`.
    looked_to: usize,
    /// The records before `looked_to` (and from `added_to`) that the last look did not
    /// show done.
    not_done_then: Vec<usize>,
    /// Records for the end: not done when looked at. In order.
    left: Vec<usize>,
    /// Where its records ended at the last look.
    end: usize,
    /// Set when a look found nothing new: the rest is read at the end.
    idle: bool,
}

/// What the end reads of one buffer: from `added_to` on, and the records at `left`.
pub(super) struct Unread {
    pub added_to: usize,
    pub left: Vec<usize>,
}

impl Unread {
    /// Where the end's copy of the buffer must begin.
    pub fn from(&self) -> usize {
        self.left
            .first()
            .map_or(self.added_to, |&first| first.min(self.added_to))
    }

    /// Whether the end adds the record at `offset`.
    pub fn wants(&self, offset: usize) -> bool {
        offset >= self.added_to || self.left.binary_search(&offset).is_ok()
    }
}

impl Early {
    /// Adds to the log the records of the buffers in `dir` that the look before showed
    /// done, and notes what this look shows for the next. Does nothing once the task's end
    /// has taken over ([`Early::finish`]).
    pub(super) fn read(&self, dir: &Path) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.finished {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let entries: Vec<_> = entries.flatten().take(MOST_BUFFERS + 1).collect();
        if entries.len() > MOST_BUFFERS {
            state.finished = true;
            return;
        }
        for entry in entries {
            let name = entry.file_name();
            if state.buffers.get(&name).is_some_and(|p| p.idle) {
                continue;
            }
            state.read_buffer(&entry.path(), name, self.worth_a_copy);
        }
    }

    /// Stops reading while the task runs, and gives what was added and, per buffer (by
    /// file name), what is left for the end to read.
    pub(super) fn finish(&self) -> (AccessLog, HashMap<OsString, Unread>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.finished = true;
        let unread = state
            .buffers
            .drain()
            .map(|(name, progress)| {
                let unread = Unread {
                    added_to: progress.added_to,
                    left: progress.left,
                };
                (name, unread)
            })
            .collect();
        (std::mem::take(&mut state.log), unread)
    }
}

impl State {
    fn read_buffer(&mut self, path: &Path, name: OsString, worth_a_copy: usize) {
        let State {
            buffers,
            log,
            paths,
            seen,
            bytes,
            ..
        } = self;
        let progress = buffers.entry(name).or_insert_with(|| Progress {
            added_to: HEADER_LEN,
            looked_to: HEADER_LEN,
            end: HEADER_LEN,
            ..Progress::default()
        });
        let Ok(file) = File::open(path) else {
            return;
        };
        let Ok(Some(end)) = records_end(&file) else {
            return;
        };
        let waiting = progress.looked_to > progress.added_to;
        progress.idle = end == progress.end && !waiting;
        progress.end = end;
        let from = progress.added_to;
        if !waiting && end.saturating_sub(from) < worth_a_copy.max(1) {
            return;
        }
        bytes.resize(end - from, 0);
        if file.read_exact_at(bytes, from as u64).is_err() {
            return;
        }
        let mut last_pid = None;
        let mut not_done_now = Vec::new();
        let mut at = from;
        // Step over every record whose length is stored; stop at one whose is not (its
        // writer has only just reserved it) or that cannot be read.
        while let Some(word) = bytes
            .get(at - from..at - from + 4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        {
            let len = (word >> 2) as usize;
            if len < RECORD_HEADER_LEN || !len.is_multiple_of(8) || at + len > end {
                break;
            }
            if at < progress.looked_to {
                // Looked at before: added if it was done then, else left for the end.
                if progress.not_done_then.binary_search(&at).is_ok() {
                    progress.left.push(at);
                } else if let Some(Ok(record)) =
                    preload_abi::records_in(&bytes[at - from..at - from + len]).next()
                {
                    add_record(&record, &mut last_pid, paths, seen, log);
                } else {
                    progress.left.push(at);
                }
                progress.added_to = at + len;
            } else if word & STATE_MASK != STATE_DONE {
                not_done_now.push(at);
            }
            at += len;
        }
        progress.looked_to = at.max(progress.added_to);
        progress.not_done_then = not_done_now;
    }
}

/// Where a buffer's reserved records end now, from its header; `None` if it is not a
/// buffer of this recorder.
pub(super) fn records_end(file: &File) -> std::io::Result<Option<usize>> {
    let mut header = [0u8; HEADER_LEN];
    file.read_exact_at(&mut header, 0)?;
    Ok(preload_abi::records_end(&header))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::AccessKind;
    use preload_abi::{
        MAGIC, OFFSET_CURSOR, OP_PROBE_FOLLOW, STATE_DONE, STATE_PENDING, VERSION, record_len,
    };

    /// A buffer's bytes holding lookups of `paths` in `states`.
    fn buffer(records: &[(u32, &str)]) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        for (state, path) in records {
            let len = record_len(path.len());
            let mut r = vec![0u8; len];
            r[0..4].copy_from_slice(&(((len as u32) << 2) | state).to_le_bytes());
            r[4] = OP_PROBE_FOLLOW;
            r[6..8].copy_from_slice(&(path.len() as u16).to_le_bytes());
            r[8..12].copy_from_slice(&7u32.to_le_bytes());
            r[24..32].copy_from_slice(&1u64.to_le_bytes());
            r[32..32 + path.len()].copy_from_slice(path.as_bytes());
            b.extend(r);
        }
        let cursor = (b.len() - HEADER_LEN) as u64;
        b[OFFSET_CURSOR..OFFSET_CURSOR + 8].copy_from_slice(&cursor.to_le_bytes());
        b
    }

    fn stats(log: &AccessLog) -> Vec<String> {
        let mut paths: Vec<String> = log
            .accesses
            .iter()
            .filter(|a| a.kind == AccessKind::Stat)
            .map(|a| a.path.display().to_string())
            .collect();
        paths.sort();
        paths
    }

    /// Copies every buffer with anything unread.
    fn eager() -> Early {
        Early {
            worth_a_copy: 0,
            ..Early::default()
        }
    }

    #[test]
    fn a_record_is_added_by_the_look_after_the_one_that_saw_it_done() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("7.0");
        let early = eager();
        let look = |records: &[(u32, &str)]| {
            std::fs::write(&file, buffer(records)).expect("write");
            early.read(dir.path());
            let state = early.state.lock().expect("lock");
            stats(&state.log)
        };
        let (done, pending) = (STATE_DONE, STATE_PENDING);
        // Seen done, not added yet: this copy may hold older bytes than its state words.
        assert!(look(&[(done, "/a"), (done, "/b"), (pending, "/c")]).is_empty());
        // Added by the next look; the record that was not done is stepped over.
        assert_eq!(
            look(&[(done, "/a"), (done, "/b"), (pending, "/c")]),
            ["/a", "/b"]
        );
        // Done by now, but this look is not the one after a look that saw it done: it is
        // left for the end, and the records after it are read on.
        let all = [
            (done, "/a"),
            (done, "/b"),
            (done, "/c"),
            (done, "/d"),
            (pending, "/e"),
        ];
        assert_eq!(look(&all), ["/a", "/b"]);
        assert_eq!(look(&all), ["/a", "/b", "/d"]);
        // A look with nothing new marks the buffer idle: not looked at again.
        assert_eq!(look(&all), ["/a", "/b", "/d"]);
        assert!(
            early
                .state
                .lock()
                .expect("lock")
                .buffers
                .values()
                .all(|p| p.idle)
        );
        // The end reads what was left (c and e), and what follows e.
        let (log, unread) = early.finish();
        assert_eq!(stats(&log), ["/a", "/b", "/d"]);
        let unread = &unread[std::ffi::OsStr::new("7.0")];
        let at = |n: usize| HEADER_LEN + record_len(2) * n;
        assert_eq!(
            (unread.added_to, unread.left.clone()),
            (at(5), vec![at(2), at(4)])
        );
        assert_eq!(unread.from(), at(2));
        let wanted: Vec<usize> = (0..6).filter(|&n| unread.wants(at(n))).collect();
        assert_eq!(wanted, [2, 4, 5]);
        // And nothing more is read while the task runs.
        early.read(dir.path());
        assert!(early.state.lock().expect("lock").log.accesses.is_empty());
    }

    #[test]
    fn a_task_of_many_processes_is_left_to_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let early = eager();
        let records = [(STATE_DONE, "/a")];
        std::fs::write(dir.path().join("1.0"), buffer(&records)).expect("write");
        early.read(dir.path());
        early.read(dir.path());
        assert_eq!(stats(&early.state.lock().expect("lock").log), ["/a"]);
        for pid in 2..=MOST_BUFFERS + 1 {
            std::fs::write(dir.path().join(format!("{pid}.0")), buffer(&records)).expect("write");
        }
        early.read(dir.path());
        early.read(dir.path());
        let (log, unread) = early.finish();
        // What was read stays read; the other buffers were never looked at.
        assert_eq!(stats(&log), ["/a"]);
        assert_eq!(unread.len(), 1);
    }

    #[test]
    fn what_was_read_early_and_what_is_read_at_the_end_are_the_whole_buffer() {
        use super::super::{Injection, Library};
        let (done, pending) = (STATE_DONE, STATE_PENDING);
        // The buffer as each look finds it, then as the end does.
        let looks: [&[(u32, &str)]; 3] = [
            &[(done, "/w/a"), (done, "/w/b"), (pending, "/w/c")],
            &[
                (done, "/w/a"),
                (done, "/w/b"),
                (done, "/w/c"),
                (done, "/w/d"),
                (pending, "/w/e"),
            ],
            &[
                (done, "/w/a"),
                (done, "/w/b"),
                (done, "/w/c"),
                (done, "/w/d"),
                (done, "/w/e"),
                (pending, "/w/f"),
            ],
        ];
        let whole = |read_early: bool| {
            let (mut injection, _) =
                Injection::prepare_env(None, &Library::Embedded).expect("inject");
            injection.early = std::sync::Arc::new(eager());
            let file = injection.buffers.path().join("7.0");
            let mut reader = injection.reader_while_running();
            for records in &looks[..2] {
                std::fs::write(&file, buffer(records)).expect("write");
                if read_early {
                    reader();
                    reader();
                }
            }
            if read_early {
                let state = injection.early.state.lock().expect("lock");
                assert_eq!(stats(&state.log), ["/w/a", "/w/b", "/w/d"]);
            }
            std::fs::write(&file, buffer(looks[2])).expect("write");
            let mut log = AccessLog::default();
            injection.collect(&mut log);
            let mut all: Vec<String> = log
                .accesses
                .iter()
                .map(|a| format!("{:?} {}", a.kind, a.path.display()))
                .collect();
            all.sort();
            (all, log.fast_path_records)
        };
        let (at_the_end, counted) = whole(false);
        assert_eq!(whole(true), (at_the_end.clone(), counted));
        assert_eq!(counted, 6);
        // The pending lookup of a path that is not there: decided by looking, at the end.
        assert!(
            at_the_end.iter().any(|a| a == "Missing /w/f"),
            "{at_the_end:?}"
        );
    }
}

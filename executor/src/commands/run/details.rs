//! What a run did, task by task: printed after the run with `-v`, kept in the cache
//! directory as `last-run.json`, and printed again by `vt run --last-details`.

use std::path::Path;
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

use crate::graph::Graph;
use crate::run::task::{Outcome, TaskResult};

const FILE: &str = "last-run.json";
/// The report before it, whose file the next report is written into ([`swap_into_place`]).
const PREVIOUS: &str = "last-run.previous.json";

#[derive(Debug, Serialize, Deserialize)]
pub struct Details {
    tasks: Vec<TaskDetail>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TaskDetail {
    task: String,
    command: String,
    /// What happened, in words: "cache hit", "ran and stored", …
    status: String,
    /// Why (the miss reason, why it was not stored, the failure).
    reason: String,
    duration_ms: u64,
}

impl Details {
    pub fn of(graph: &Graph, results: &[TaskResult]) -> Details {
        let commands: std::collections::HashMap<&str, &str> = graph
            .nodes
            .iter()
            .map(|n| (n.label.as_str(), n.command.as_str()))
            .collect();
        let tasks = results
            .iter()
            .map(|result| {
                let command = commands
                    .get(result.task.as_str())
                    .map_or_else(String::new, |c| (*c).to_owned());
                let (status, reason) = match &result.outcome {
                    Outcome::Hit { saved_ms, remote } => (
                        if *remote {
                            "cache hit (remote cache)"
                        } else {
                            "cache hit"
                        },
                        format!("replayed, {:.1} s saved", *saved_ms as f64 / 1000.0),
                    ),
                    Outcome::Stored { reason } => ("ran, stored", reason.clone()),
                    Outcome::NotCached { reason } => ("ran, not cached", reason.clone()),
                    Outcome::Failed { reason, .. } => ("failed", reason.clone()),
                    Outcome::Skipped { because } => {
                        ("skipped", format!("{because} did not succeed"))
                    }
                };
                TaskDetail {
                    task: result.task.clone(),
                    command,
                    status: status.to_owned(),
                    reason,
                    duration_ms: result.duration_ms,
                }
            })
            .collect();
        Details { tasks }
    }

    pub fn render(&self) -> String {
        let mut text = String::from("vt: details:\n");
        for (i, task) in self.tasks.iter().enumerate() {
            text.push_str(&format!(
                "  [{}] {}: $ {}\n      {}{}\n",
                i + 1,
                task.task,
                task.command,
                task.status,
                if task.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", task.reason)
                }
            ));
        }
        text
    }

    /// Best effort: a run's result does not depend on its report being kept.
    pub fn save(&self, cache_dir: &Path) {
        let Ok(json) = serde_json::to_vec_pretty(self) else {
            return;
        };
        if std::fs::create_dir_all(cache_dir).is_err() {
            return;
        }
        if swap_into_place(cache_dir, &json).is_err() {
            save_by_rename(cache_dir, &json);
        }
    }
}

/// Writes the report over the previous one's file ([`PREVIOUS`]) and swaps the two names
/// in one `renameat2(RENAME_EXCHANGE)`: `last-run.json` is always a whole report, and no
/// file is created or deleted.
///
/// Why: creating the report's file and deleting the old one were 0.2–0.3 ms at the end of
/// every vt on this project's machine (its ext4 has no journal, and then allocating an
/// inode skips the ones freed in the last minute, reading each one's deletion time; a
/// sandboxed task frees a few). Overwriting a file's blocks and swapping names is ~20 µs.
///
/// The file being written is locked (`flock`), and a reader locks what it reads
/// ([`print_last`]): a reader that opened `last-run.json` just before a swap holds what is
/// now the previous file, and the next writer waits for it. A writer that waited for
/// another one finds that file swapped into place under it, and opens the new one.
fn swap_into_place(dir: &Path, json: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let previous = dir.join(PREVIOUS);
    let current = dir.join(FILE);
    for _ in 0..8 {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&previous)?;
        let file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| std::io::Error::from(e))?;
        let held = file.metadata()?;
        let named = std::fs::symlink_metadata(&previous)?;
        if (held.dev(), held.ino()) != (named.dev(), named.ino()) {
            continue; // swapped into place by another vt while this one waited
        }
        file.write_all_at(json, 0)?;
        file.set_len(json.len() as u64)?;
        return match nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &previous,
            nix::fcntl::AT_FDCWD,
            &current,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        ) {
            Ok(()) => Ok(()),
            // The first report here: nothing to swap with.
            Err(nix::errno::Errno::ENOENT) => std::fs::rename(&previous, &current),
            Err(e) => Err(e.into()),
        };
    }
    Err(std::io::Error::other("the report kept being replaced"))
}

/// The report written to a file of its own and renamed into place: where the file system
/// cannot swap two names.
fn save_by_rename(dir: &Path, json: &[u8]) {
    let temp = dir.join(format!("{FILE}.{}", std::process::id()));
    let file = dir.join(FILE);
    if std::fs::write(&temp, json).is_err() {
        let _ = std::fs::remove_file(&temp);
        return;
    }
    // The old report is removed first: ext4 flushes a file renamed over another
    // (`auto_da_alloc`, its guard for editors that replace files this way), which cost
    // every vt ~0.25 ms at exit; a rename to a free name does not. A reader in between
    // finds no report, never half of one.
    let _ = std::fs::remove_file(&file);
    if std::fs::rename(&temp, &file).is_err() {
        let _ = std::fs::remove_file(&temp);
    }
}

/// `vt run --last-details`.
pub fn print_last(cache_dir: &Path) -> anyhow::Result<ExitCode> {
    let path = cache_dir.join(FILE);
    let text = match read_locked(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::say!(
                "vt: no run recorded yet in this workspace ({} is absent)",
                path.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    };
    let details: Details = serde_json::from_slice(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is damaged ({e})\n  hint: the next `vt run` writes it again",
            path.display()
        )
    })?;
    print!("{}", details.render());
    Ok(ExitCode::SUCCESS)
}

/// The file at `path`, read under a shared lock: a writer overwrites only a file it holds
/// locked, and a report swapped out of place while this read it is the next one written
/// into ([`swap_into_place`]).
fn read_locked(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockShared)
        .map_err(|(_, e)| std::io::Error::from(e))?;
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(task: &str) -> Details {
        Details {
            tasks: vec![TaskDetail {
                task: task.to_owned(),
                command: "true".to_owned(),
                status: "ran".to_owned(),
                reason: String::new(),
                duration_ms: 1,
            }],
        }
    }

    fn task_in(path: &Path) -> String {
        let text = read_locked(path).expect("read");
        let details: Details = serde_json::from_slice(&text).expect("a whole report");
        details.tasks[0].task.clone()
    }

    #[test]
    fn each_report_takes_the_place_of_the_one_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        for task in [
            "first",
            "second",
            "a third, longer than the two before it",
            "4th",
        ] {
            report(task).save(dir.path());
            assert_eq!(task_in(&dir.path().join(FILE)), task);
        }
        assert_eq!(
            task_in(&dir.path().join(PREVIOUS)),
            "a third, longer than the two before it"
        );
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [FILE, PREVIOUS], "no file left behind");
    }

    #[test]
    fn a_report_being_read_is_not_written_over() {
        use std::io::Read;
        let dir = tempfile::tempdir().expect("tempdir");
        let current = dir.path().join(FILE);
        report("read").save(dir.path());
        report("next").save(dir.path());
        // A reader opens the current report ("next") and holds its lock…
        let file = std::fs::File::open(&current).expect("open");
        let mut held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockShared)
            .map_err(|(_, e)| e)
            .expect("lock");
        // …while one report swaps it out of place (it is now the previous one) and the
        // next would be written into it.
        report("third").save(dir.path());
        let writer = {
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || report("fourth").save(&dir))
        };
        // The writer waits for the reader's lock (the kernel lists it as blocked).
        while !std::fs::read_to_string("/proc/locks")
            .expect("/proc/locks")
            .contains("->")
        {
            std::thread::yield_now();
        }
        let mut text = String::new();
        held.read_to_string(&mut text).expect("read");
        assert!(
            text.contains("\"next\""),
            "the reader's report is whole: {text}"
        );
        drop(held);
        writer.join().expect("writer");
        assert_eq!(task_in(&current), "fourth");
        assert_eq!(task_in(&dir.path().join(PREVIOUS)), "third");
    }
}

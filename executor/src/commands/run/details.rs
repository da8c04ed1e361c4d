//! What a run did, task by task: printed after the run with `-v`, kept in the cache
//! directory as `last-run.json`, and printed again by `vt run --last-details`.

use std::path::Path;
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

use crate::graph::Graph;
use crate::run::task::{Outcome, TaskResult};

const FILE: &str = "last-run.json";

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
        let temp = cache_dir.join(format!("{FILE}.{}", std::process::id()));
        let file = cache_dir.join(FILE);
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
}

/// `vt run --last-details`.
pub fn print_last(cache_dir: &Path) -> anyhow::Result<ExitCode> {
    let path = cache_dir.join(FILE);
    let text = match std::fs::read(&path) {
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

//! Running a graph: tasks in dependency order, up to `jobs` at a time, each through the
//! cache ([`task`]).

pub mod execute;
pub mod output;
pub mod plan;
pub mod progress;
pub mod task;

use std::ffi::OsString;
use std::sync::mpsc;

use crate::cache::Cache;
use crate::config::Workspace;
use crate::graph::Graph;
use output::LogMode;
use task::{Outcome, TaskResult, run_task};

pub struct Options {
    pub jobs: usize,
    pub log: LogMode,
    pub args: Vec<OsString>,
    /// `--remote-exec`: the engine tasks that miss the cache run on.
    pub remote_exec: Option<crate::remote_exec::RemoteExec>,
}

/// Runs every node; returns the results in graph order (skipped tasks included).
pub fn run(
    workspace: &Workspace,
    graph: &Graph,
    cache: Option<&Cache>,
    options: &Options,
) -> anyhow::Result<Vec<TaskResult>> {
    let n = graph.nodes.len();
    let mut results: Vec<Option<TaskResult>> = vec![None; n];
    let mut started = vec![false; n];
    let (sender, receiver) = mpsc::channel::<(usize, anyhow::Result<TaskResult>)>();
    let mut running = 0;
    let mut first_error = None;
    progress::start(n);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        loop {
            // Start what is ready.
            for index in 0..n {
                if started[index] || running >= options.jobs.max(1) || first_error.is_some() {
                    continue;
                }
                let node = &graph.nodes[index];
                let deps: Vec<&TaskResult> =
                    match node.deps.iter().map(|d| results[d.node].as_ref()).collect() {
                        Some(deps) => deps,
                        None => continue, // a dependency is still running
                    };
                started[index] = true;
                if let Some(failed) = deps
                    .iter()
                    .find(|d| matches!(d.outcome, Outcome::Failed { .. } | Outcome::Skipped { .. }))
                {
                    eprintln!(
                        "vt: {}: skipped: {} did not succeed",
                        node.label, failed.task
                    );
                    results[index] = Some(TaskResult {
                        task: node.label.clone(),
                        key: String::new(),
                        outcome: Outcome::Skipped {
                            because: failed.task.clone(),
                        },
                        duration_ms: 0,
                        worker: None,
                    });
                    continue;
                }
                let dep_keys: Vec<(String, String)> = deps
                    .iter()
                    .map(|d| (d.task.clone(), d.key.clone()))
                    .collect();
                let plan = plan::plan(workspace, node, &dep_keys, &options.args)?;
                let sender = sender.clone();
                let mode = options.log;
                let remote_exec = options.remote_exec.as_ref();
                running += 1;
                progress::running(&node.label);
                scope.spawn(move || {
                    let result = run_task(&plan, cache, mode, remote_exec);
                    let _ = sender.send((index, result));
                });
            }
            if running == 0 {
                // Nothing running and nothing could start: done (or stopped by an error).
                if results.iter().all(Option::is_some) || first_error.is_some() {
                    break;
                }
                // Everything left depends on something that will never finish.
                if !started.iter().any(|s| !s) {
                    break;
                }
                continue;
            }
            let Ok((index, result)) = receiver.recv() else {
                break;
            };
            running -= 1;
            progress::finished_one();
            match result {
                Ok(result) => {
                    if let Outcome::Failed { reason, .. } = &result.outcome {
                        let task = &result.task;
                        progress::print(|| eprintln!("vt: {task}: failed: {reason}"));
                    }
                    results[index] = Some(result);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Ok(())
    })?;
    progress::finish();
    if let Some(error) = first_error {
        return Err(error);
    }
    Ok(results.into_iter().flatten().collect())
}

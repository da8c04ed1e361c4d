//! Running a graph: tasks in dependency order, up to `jobs` at a time, each through the
//! cache ([`task`]).

pub mod execute;
pub mod linked;
pub mod offload;
pub mod output;
pub mod plan;
pub mod progress;
pub mod seen;
pub mod task;
pub mod terminal;
pub mod traced;
mod workers;

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
    pub remote_exec: Option<Box<dyn offload::Offload>>,
    /// `--continue`: after a failure, still start the tasks that do not depend on it.
    /// Without it vt starts nothing new (running tasks finish), as turbo and pnpm do.
    pub keep_going: bool,
    /// `--watch`: every task's run keeps what it saw ([`seen`]), for the watch to follow.
    pub watch: bool,
}

/// What a run did.
pub struct Ran {
    /// In graph order, skipped tasks included.
    pub results: Vec<TaskResult>,
    /// The first task to fail, in time: its exit status is vt's.
    pub first_failure: Option<(String, i32)>,
}

/// The result of a task that never started because `because` failed (or was skipped).
fn skipped(task: &str, because: &str) -> TaskResult {
    TaskResult {
        task: task.to_owned(),
        key: String::new(),
        outcome: Outcome::Skipped {
            because: because.to_owned(),
        },
        duration_ms: 0,
        worker: None,
        seen: None,
    }
}

/// Runs every node (or, after a failure without `--continue`, those already started).
pub fn run(
    workspace: &Workspace,
    graph: &Graph,
    cache: Option<&Cache>,
    options: &Options,
) -> anyhow::Result<Ran> {
    rerun(workspace, graph, cache, options, &[], &[])
}

/// Runs the nodes `again` marks (all of them when it is empty); the others keep their
/// result from `previous` (in graph order), which their dependents are planned with.
pub fn rerun(
    workspace: &Workspace,
    graph: &Graph,
    cache: Option<&Cache>,
    options: &Options,
    previous: &[TaskResult],
    again: &[bool],
) -> anyhow::Result<Ran> {
    let n = graph.nodes.len();
    if n > 1 {
        // Each task's start arms the next one's tracing filter (`sandbox::trace::armed`),
        // and each sandbox's start makes the next one's network namespace and layer.
        sandbox::trace::keep_armed();
        sandbox::jail::network::keep_ahead();
        sandbox::jail::layer::keep_ahead();
        sandbox::jail::etc_tree::keep_ahead();
    }
    let mut results: Vec<Option<TaskResult>> = vec![None; n];
    let mut started = vec![false; n];
    for index in 0..n {
        if again.get(index) == Some(&false)
            && let Some(result) = previous.get(index)
        {
            results[index] = Some(result.clone());
            started[index] = true;
        }
    }
    // When each task ended (ran, or was replayed), for its dependents' change guard.
    let mut ended_at = vec![0_i64; n];
    let (sender, receiver) = mpsc::channel::<(usize, anyhow::Result<TaskResult>, i64)>();
    let mut running = 0;
    // Running tasks that take one of the `jobs` slots: a persistent one does not (it never
    // ends, and would otherwise hold a slot for good).
    let mut busy = 0;
    let mut first_error = None;
    let mut first_failure: Option<(String, i32)> = None;
    progress::start(started.iter().filter(|s| !**s).count());
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut workers = workers::Workers::new(scope, options.jobs);
        loop {
            // Start what is ready.
            for index in 0..n {
                let stopping = first_failure.is_some() && !options.keep_going;
                let node = &graph.nodes[index];
                if started[index]
                    || (busy >= options.jobs.max(1) && !node.persistent)
                    || first_error.is_some()
                    || stopping
                {
                    continue;
                }
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
                    crate::say!(
                        "vt: {}: skipped: {} did not succeed",
                        node.label,
                        failed.task
                    );
                    results[index] = Some(skipped(&node.label, &failed.task));
                    continue;
                }
                let dep_keys: Vec<(String, String)> = deps
                    .iter()
                    .map(|d| (d.task.clone(), d.key.clone()))
                    .collect();
                let mut plan = sandbox::timings::time("plan", || {
                    plan::plan(workspace, node, &dep_keys, &options.args)
                })?;
                plan.stdin = node.persistent && n == 1;
                plan.watched = options.watch;
                plan.inputs_changed_at = node
                    .deps
                    .iter()
                    .map(|d| ended_at[d.node])
                    .max()
                    .unwrap_or(0);
                let sender = sender.clone();
                let mode = options.log;
                let remote_exec = options.remote_exec.as_deref();
                running += 1;
                if !node.persistent {
                    busy += 1;
                }
                progress::running(&node.label);
                let work = move || {
                    // A panic on a task's thread is the run's error, not a result that
                    // never comes (the loop would wait for it forever).
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        sandbox::timings::time("task", || run_task(&plan, cache, mode, remote_exec))
                    }))
                    .unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        Err(anyhow::anyhow!(
                            "{}: vt's thread running it stopped ({what})",
                            plan.label
                        ))
                    });
                    let ended = crate::cache::guard::now_ns();
                    let _ = sender.send((index, result, ended));
                };
                if n == 1 {
                    // A lone task (`vt exec`, `vt run` of one) has nothing to run beside
                    // it: this thread runs it, without a thread start and a hand-over.
                    work();
                } else if node.persistent {
                    // It never ends: a thread of its own, not one of the `jobs` workers.
                    scope.spawn(work);
                } else {
                    workers.run(work);
                }
            }
            if running == 0 {
                if let Some((failed, _)) = &first_failure
                    && !options.keep_going
                    && first_error.is_none()
                {
                    // Stopped after a failure: what never started is skipped because of it.
                    let left: Vec<usize> = (0..n).filter(|i| !started[*i]).collect();
                    if !left.is_empty() {
                        crate::say!(
                            "vt: {failed} failed: {} task(s) not started (--continue runs those that do not depend on it)",
                            left.len()
                        );
                    }
                    for index in left {
                        started[index] = true;
                        results[index] = Some(skipped(&graph.nodes[index].label, failed));
                    }
                }
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
            let Ok((index, result, ended)) = receiver.recv() else {
                break;
            };
            ended_at[index] = ended;
            running -= 1;
            if !graph.nodes[index].persistent {
                busy -= 1;
            }
            progress::finished_one();
            match result {
                Ok(result) => {
                    if let Outcome::Failed { reason, exit_code } = &result.outcome {
                        let task = &result.task;
                        progress::print(|| crate::say!("vt: {task}: failed: {reason}"));
                        first_failure.get_or_insert_with(|| (task.clone(), *exit_code));
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
    // A layer made ahead for a task that did not need one (a hit, or none left).
    sandbox::jail::layer::let_go_of_the_one_ahead();
    if let Some(error) = first_error {
        return Err(error);
    }
    Ok(Ran {
        results: results.into_iter().flatten().collect(),
        first_failure,
    })
}

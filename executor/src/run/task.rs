//! One task from lookup to result: hit → restore and replay; miss → execute, then store
//! what it did if it may be cached.

use std::collections::BTreeSet;

use anyhow::Context;

use super::execute::execute;
use super::offload::{Offload, Offloaded};
use super::output::{Console, LogMode};
use super::plan::{Plan, files_matching};
use super::traced::path_set;
use crate::cache::entry::Stored;
use crate::cache::key;
use crate::cache::observe;
use crate::cache::path_set::Observation;
use crate::cache::record::{Finished, Uncacheable};
use crate::cache::{Cache, Lookup};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Replayed from the cache (`remote`: found in the remote cache).
    Hit { saved_ms: u64, remote: bool },
    /// Ran and was stored.
    Stored { reason: String },
    /// Ran; not stored, for `reason`.
    NotCached { reason: String },
    /// Ran and failed.
    Failed { exit_code: i32, reason: String },
    /// Not run: a dependency failed.
    Skipped { because: String },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskResult {
    pub task: String,
    /// What dependents include in their keys: the run's result (`Entry::result_key`), or a
    /// unique value for a run that was not stored.
    pub key: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub duration_ms: u64,
    /// The remote worker that ran it (`--remote-exec`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Under `--watch`: what the run saw, for the watch to follow.
    #[serde(skip)]
    pub seen: Option<std::sync::Arc<super::seen::InputsSeen>>,
}

fn status_line(label: &str, message: &str) {
    super::progress::print(|| crate::say!("vt: {label}: {message}"));
}

/// Runs `plan` with the cache (if any).
pub fn run_task(
    plan: &Plan,
    cache: Option<&Cache>,
    mode: LogMode,
    remote_exec: Option<&dyn Offload>,
) -> anyhow::Result<TaskResult> {
    let mut console = Console::new(mode, &plan.label);
    if let Some(sandbox) = &plan.sandbox {
        // A sandboxed task finds its output directories in place (they are its writable
        // mount points); create them before the lookup, so the state a path set is
        // checked against is the state the task would start from.
        let mut created = false;
        for dir in &sandbox.writable {
            if !dir.is_dir() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("{}: cannot create {}", plan.label, dir.display()))?;
                created = true;
            }
        }
        if created {
            // Made before the task starts, not while it runs (see `cache::guard`).
            crate::cache::guard::settled();
        }
    }
    let lookup = match cache {
        Some(cache) if plan.cacheable => Some(sandbox::timings::time("lookup", || {
            cache.lookup(&plan.label, &plan.pre, &plan.observation_env())
        })),
        _ => None,
    };
    let looked_up = lookup.is_some();
    let miss_reason = match lookup {
        Some(Lookup::Hit { entry, remote, .. }) => {
            let cache = cache.expect("a lookup implies a cache");
            match replay(cache, &entry, remote, &mut console) {
                Ok(()) => {
                    return Ok(TaskResult {
                        task: plan.label.clone(),
                        key: entry.result_key().hex(),
                        outcome: Outcome::Hit {
                            saved_ms: entry.duration_ms,
                            remote,
                        },
                        duration_ms: 0,
                        worker: None,
                        seen: plan
                            .watched
                            .then(|| std::sync::Arc::new(super::seen::of_hit(cache, plan, &entry))),
                    });
                }
                Err(reason) => format!("the entry cannot be replayed: {reason}"),
            }
        }
        Some(Lookup::Miss { reason }) => reason,
        None if cache.is_none() => "--no-cache".to_owned(),
        None => plan.uncached_because.to_owned(),
    };
    if looked_up {
        status_line(&plan.label, &format!("cache miss: {miss_reason}"));
    } else {
        status_line(
            &plan.label,
            &format!("executing (not cached: {miss_reason})"),
        );
    }
    if let (Some(remote), Some(cache)) = (remote_exec, cache.filter(|_| plan.cacheable)) {
        match remote.refuses(plan) {
            Some(reason) => status_line(&plan.label, &format!("running locally: {reason}")),
            None => match remote.run(plan, cache) {
                Ok(done) => return Ok(finish_remote(plan, cache, done, &mut console, miss_reason)),
                Err(reason) => status_line(&plan.label, &format!("running locally: {reason}")),
            },
        }
    }
    let execution = execute(
        plan,
        &mut console,
        // A watched run's window is exact too: it tells the watch what changed meanwhile.
        (cache.is_some() && plan.cacheable) || plan.watched,
        cache.map(Cache::dir),
    )?;
    let seen = plan.watched.then(|| {
        let cache_dir =
            cache.map_or_else(|| Cache::default_dir(&plan.root), |c| c.dir().to_owned());
        std::sync::Arc::new(super::seen::of_execution(plan, &execution, &cache_dir))
    });
    let duration_ms = execution.duration.as_millis() as u64;
    let nonce = || uncached_key(&execution.output);
    if !execution.status.success() {
        let exit_code = execution.exit_code();
        return Ok(TaskResult {
            task: plan.label.clone(),
            key: nonce(),
            outcome: Outcome::Failed {
                exit_code,
                reason: format!("exited with {exit_code}"),
            },
            duration_ms,
            worker: None,
            seen,
        });
    }
    let Some(cache) = cache.filter(|_| plan.cacheable) else {
        return Ok(TaskResult {
            task: plan.label.clone(),
            key: nonce(),
            outcome: Outcome::NotCached {
                reason: miss_reason,
            },
            duration_ms,
            worker: None,
            seen,
        });
    };
    match sandbox::timings::time("store", || store(cache, plan, &execution)) {
        Ok(key) => Ok(TaskResult {
            task: plan.label.clone(),
            key,
            outcome: Outcome::Stored {
                reason: miss_reason,
            },
            duration_ms,
            worker: None,
            seen,
        }),
        Err(reason) => {
            status_line(&plan.label, &format!("not cached: {reason}"));
            Ok(TaskResult {
                task: plan.label.clone(),
                key: nonce(),
                outcome: Outcome::NotCached {
                    reason: reason.to_string(),
                },
                duration_ms,
                worker: None,
                seen,
            })
        }
    }
}

/// The key of a run that was not stored: unique, so dependents never hit on it.
fn uncached_key(output: &[u8]) -> String {
    format!(
        "uncached-{}-{}",
        std::process::id(),
        key::blob_key(output).hex()
    )
}

/// A task a worker ran: its output shown, and stored like a local run.
fn finish_remote(
    plan: &Plan,
    cache: &Cache,
    done: Offloaded,
    console: &mut Console,
    miss_reason: String,
) -> TaskResult {
    status_line(
        &plan.label,
        &format!(
            "ran on worker {}{}",
            done.worker,
            if done.attempts > 1 {
                format!(" ({} submissions)", done.attempts)
            } else {
                String::new()
            }
        ),
    );
    console.replay(&done.output);
    let duration_ms = done.duration.as_millis() as u64;
    let nonce = uncached_key(&done.output);
    let (key, outcome) = if done.exit_code != 0 {
        (
            nonce,
            Outcome::Failed {
                exit_code: done.exit_code,
                reason: format!("exited with {} on worker {}", done.exit_code, done.worker),
            },
        )
    } else {
        let stored = record(
            cache,
            plan,
            finished(
                plan,
                done.observations,
                done.values,
                done.outputs,
                &done.output,
                done.duration,
                None,
            ),
        );
        match stored {
            Ok(key) => (
                key,
                Outcome::Stored {
                    reason: miss_reason,
                },
            ),
            Err(reason) => {
                status_line(&plan.label, &format!("not cached: {reason}"));
                (
                    nonce,
                    Outcome::NotCached {
                        reason: reason.to_string(),
                    },
                )
            }
        }
    };
    TaskResult {
        task: plan.label.clone(),
        key,
        outcome,
        duration_ms,
        worker: Some(done.worker),
        // A worker's run is not watched here (its log stayed on the worker).
        seen: None,
    }
}

fn replay(
    cache: &Cache,
    entry: &Stored,
    remote: bool,
    console: &mut Console,
) -> Result<(), String> {
    let log = cache.replay(entry, || {
        status_line(
            &entry.task,
            if remote {
                "cache hit (remote cache), replaying"
            } else {
                "cache hit, replaying"
            },
        )
    })?;
    sandbox::timings::time("replay: console", || console.replay(&log));
    Ok(())
}

/// The declared input files as they are now must be the ones the key was made of, and
/// none changed while the task ran: they were hashed before it started, so a change
/// during the run would store its output under the old contents' key.
fn check_declared(plan: &Plan, root: &std::path::Path, run: &Finished) -> Result<(), String> {
    let Some(declared) = &plan.declared else {
        return Ok(());
    };
    let before: std::collections::BTreeMap<&std::path::Path, &str> = declared
        .found
        .iter()
        .map(|f| (f.rel.as_path(), f.hash.as_str()))
        .collect();
    let now = declared.files(root);
    for file in &now {
        let path = file.rel.display();
        if run.outputs.contains(&root.join(&file.rel)) {
            return Err(format!("{path} is a declared input and the task wrote it"));
        }
        let changed_during = match (run.window, file.ctime) {
            (Some(window), Some((sec, nsec))) => window.changed_since_start(sec, nsec),
            _ => false,
        };
        if changed_during || before.get(file.rel.as_path()) != Some(&file.hash.as_str()) {
            return Err(format!(
                "{path} (a declared input) changed while the task ran"
            ));
        }
    }
    if now.len() != before.len() {
        return Err(
            "a file matching the task's input globs appeared or was deleted while the task ran"
                .into(),
        );
    }
    Ok(())
}

/// Stores a successful run, or says why it cannot be cached.
fn store(
    cache: &Cache,
    plan: &Plan,
    execution: &super::execute::Execution,
) -> Result<String, Uncacheable> {
    let traced = path_set(execution, plan, cache.root(), cache.dir())?;
    let check = observe::RunCheck {
        window: &execution.window,
        own: &traced.own,
    };
    let values = cache.observe_run(&traced.observations, &plan.observation_env(), &check)?;
    record(
        cache,
        plan,
        finished(
            plan,
            traced.observations,
            values,
            traced.outputs,
            &execution.output,
            execution.duration,
            Some(&execution.window),
        ),
    )
}

/// A successful run of `plan`, as the cache records it.
fn finished<'a>(
    plan: &Plan,
    observations: Vec<Observation>,
    values: Vec<String>,
    outputs: BTreeSet<std::path::PathBuf>,
    output: &'a [u8],
    duration: std::time::Duration,
    window: Option<&'a crate::cache::guard::Window>,
) -> Finished<'a> {
    Finished {
        task: plan.label.clone(),
        pre_key: plan.pre.key(),
        pre_parts: plan.pre.parts.clone(),
        observations,
        values,
        outputs,
        output,
        duration,
        window,
    }
}

/// Checks the declared inputs, adds the files of the task's output globs, and records the
/// run: its result key.
fn record(cache: &Cache, plan: &Plan, mut run: Finished) -> Result<String, Uncacheable> {
    let root = cache.root();
    check_declared(plan, root, &run).map_err(Uncacheable::DeclaredInput)?;
    if !plan.output_include.is_empty() {
        let mut builder = globset::GlobSetBuilder::new();
        for pattern in &plan.output_include {
            if let Ok(glob) = globset::Glob::new(pattern) {
                builder.add(glob);
            }
        }
        if let Ok(set) = builder.build() {
            run.outputs.extend(files_matching(root, root, &set));
        }
    }
    cache.record(run).map(|key| key.hex())
}

//! One task from lookup to result: hit → restore and replay; miss → execute, then store
//! what it did if it may be cached.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;

use anyhow::Context;

use super::execute::execute;
use super::output::{Console, LogMode};
use super::plan::{Plan, files_matching};
use crate::cache::archive;
use crate::cache::entry::Entry;
use crate::cache::observe::{self, Observation, is_noise};
use crate::cache::store::{Batch, Family};
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
    /// The key dependents include in theirs.
    pub key: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub duration_ms: u64,
}

fn status_line(label: &str, message: &str) {
    super::progress::print(|| eprintln!("vt: {label}: {message}"));
}

/// Runs `plan` with the cache (if any).
pub fn run_task(plan: &Plan, cache: Option<&Cache>, mode: LogMode) -> anyhow::Result<TaskResult> {
    let mut console = Console::new(mode, &plan.label);
    if let Some(sandbox) = &plan.sandbox {
        // A sandboxed task finds its output directories in place (they are its writable
        // mount points); create them before the lookup, so the state a path set is
        // checked against is the state the task would start from.
        for dir in &sandbox.writable {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create {}", plan.label, dir.display()))?;
        }
    }
    let lookup = match cache {
        Some(cache) if plan.cacheable => {
            Some(cache.lookup(&plan.label, &plan.pre, &crate::ipc::process_env()))
        }
        _ => None,
    };
    let looked_up = lookup.is_some();
    let miss_reason = match lookup {
        Some(Lookup::Hit { key, entry, remote }) => {
            let cache = cache.expect("a lookup implies a cache");
            match replay(cache, &entry, remote, &mut console) {
                Ok(()) => {
                    return Ok(TaskResult {
                        task: plan.label.clone(),
                        key: key.hex(),
                        outcome: Outcome::Hit {
                            saved_ms: entry.duration_ms,
                            remote,
                        },
                        duration_ms: 0,
                    });
                }
                Err(reason) => format!("the entry cannot be replayed: {reason}"),
            }
        }
        Some(Lookup::Miss { reason }) => reason,
        None if cache.is_none() => "--no-cache".to_owned(),
        None => "cache: false in the task's config".to_owned(),
    };
    if looked_up {
        status_line(&plan.label, &format!("cache miss: {miss_reason}"));
    } else {
        status_line(
            &plan.label,
            &format!("executing (not cached: {miss_reason})"),
        );
    }
    let execution = execute(plan, &mut console)?;
    let duration_ms = execution.duration.as_millis() as u64;
    let nonce = || {
        format!(
            "uncached-{}-{}",
            std::process::id(),
            observe::blob_key(&execution.output).hex()
        )
    };
    if !execution.status.success() {
        let exit_code = execution
            .status
            .code()
            .unwrap_or_else(|| 128 + execution.status.signal().unwrap_or(0));
        return Ok(TaskResult {
            task: plan.label.clone(),
            key: nonce(),
            outcome: Outcome::Failed {
                exit_code,
                reason: format!("exited with {exit_code}"),
            },
            duration_ms,
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
        });
    };
    match store(cache, plan, &execution) {
        Ok(key) => Ok(TaskResult {
            task: plan.label.clone(),
            key,
            outcome: Outcome::Stored {
                reason: miss_reason,
            },
            duration_ms,
        }),
        Err(reason) => {
            status_line(&plan.label, &format!("not cached: {reason}"));
            Ok(TaskResult {
                task: plan.label.clone(),
                key: nonce(),
                outcome: Outcome::NotCached { reason },
                duration_ms,
            })
        }
    }
}

fn replay(cache: &Cache, entry: &Entry, remote: bool, console: &mut Console) -> Result<(), String> {
    let log = cache
        .store()
        .get(Family::Blobs, entry.log.0)
        .map_err(|e| e.to_string())?
        .ok_or("its log is missing")?;
    if archive::log_key(&log) != entry.log {
        return Err("its log is corrupt".into());
    }
    let blobs = archive::fetch(cache.store(), &entry.outputs).map_err(|e| e.to_string())?;
    status_line(
        &entry.task,
        if remote {
            "cache hit (remote cache), replaying"
        } else {
            "cache hit, replaying"
        },
    );
    archive::restore(cache.root(), &entry.outputs, blobs).map_err(|e| e.to_string())?;
    console.replay(&log);
    Ok(())
}

/// Stores a successful run, or says why it cannot be cached.
fn store(
    cache: &Cache,
    plan: &Plan,
    execution: &super::execute::Execution,
) -> Result<String, String> {
    let root = cache.root();
    let cache_dir = cache.store().path();
    let report = &execution.ipc;
    if let Some(who) = &report.disabled_by {
        return Err(format!("disabled by {who}"));
    }
    if let Some(error) = report.errors.first() {
        return Err(format!("the task's IPC server could not serve it: {error}"));
    }
    let ignored = observe::Ignored {
        inputs: report.ignored_inputs.clone(),
        outputs: report.ignored_outputs.clone(),
    };
    let digest = observe::digest(
        &execution.log,
        root,
        cache_dir,
        &plan.input_exclude,
        &plan.output_exclude,
        &ignored,
    )
    .map_err(|e| e.to_string())?;
    let mut outputs: BTreeSet<_> = digest.outputs;
    if !plan.output_include.is_empty() {
        let mut builder = globset::GlobSetBuilder::new();
        for pattern in &plan.output_include {
            if let Ok(glob) = globset::Glob::new(pattern) {
                builder.add(glob);
            }
        }
        if let Ok(set) = builder.build() {
            outputs.extend(files_matching(root, root, &set));
        }
    }
    outputs.retain(|p| !is_noise(p, cache_dir));
    let mut inputs = digest.inputs;
    // Tracked env read through IPC joins the path set like any other observation.
    for name in report.tracked_env.keys() {
        inputs.insert(Observation {
            kind: observe::ObsKind::Env,
            path: observe::CachePath(name.clone().into_bytes()),
            except: Vec::new(),
        });
    }
    for glob in &report.tracked_globs {
        inputs.insert(Observation {
            kind: observe::ObsKind::Env,
            path: observe::CachePath(crate::ipc::glob_observation_name(glob).into_bytes()),
            except: Vec::new(),
        });
    }
    let observations: Vec<Observation> = inputs.into_iter().collect();
    let values = cache.observe_all(&observations, &crate::ipc::process_env());
    let mut batch = Batch::default();
    let outputs = archive::archive(root, &outputs, &mut batch)
        .map_err(|e| format!("cannot archive the outputs: {e}"))?;
    let log_key = archive::log_key(&execution.output);
    batch.put(Family::Blobs, log_key.0.to_vec(), execution.output.clone());
    let entry = Entry {
        task: plan.label.clone(),
        pre_key: plan.pre.key(),
        pre_parts: plan.pre.parts.clone(),
        observations,
        values,
        outputs,
        log: log_key,
        exit_code: 0,
        duration_ms: execution.duration.as_millis() as u64,
    };
    cache
        .store_run(&entry, batch)
        .map(|key| key.hex())
        .map_err(|e| format!("cannot write the cache: {e}"))
}

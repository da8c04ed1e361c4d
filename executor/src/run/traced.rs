//! A finished run's log and its tools' IPC reports, read into what the cache keys: the path
//! set, the outputs, and what the task changed itself. Local runs (`task`) and workers
//! (`crate::remote_exec::worker`) read their executions the same way.

use std::collections::BTreeSet;

use super::execute::Execution;
use super::plan::Plan;
use crate::cache::path_set::{self, Observation};
use crate::cache::record::Uncacheable;

/// What a run observed and changed, read from its log and its tools' IPC reports.
pub struct Traced {
    /// The path set (paths relative to the workspace root), sorted.
    pub observations: Vec<Observation>,
    /// Absolute paths it changed under the root.
    pub outputs: BTreeSet<std::path::PathBuf>,
    /// What it did itself, for the store-time check.
    pub own: path_set::OwnChanges,
}

/// What a run observed and changed, or why it cannot be cached.
pub fn path_set(
    execution: &Execution,
    plan: &Plan,
    root: &std::path::Path,
    cache_dir: &std::path::Path,
) -> Result<Traced, Uncacheable> {
    let report = &execution.ipc;
    if let Some(who) = &report.disabled_by {
        return Err(Uncacheable::DisabledBy(who.clone()));
    }
    if let Some(error) = report.errors.first() {
        return Err(Uncacheable::Ipc(error.to_string()));
    }
    let digest = digest(execution, plan, root, cache_dir)?;
    let mut inputs = digest.inputs;
    inputs.extend(found_on_path(execution, plan, root, cache_dir, &digest.own));
    // Only what counts is keyed and guarded.
    inputs.retain(|o| plan.counts(o));
    // A tool may resolve a value's symlinks first (`realpath`): what it saw is then under
    // the resolved value, which names the same place.
    let located = plan.located_by();
    let resolved: Vec<(&str, std::path::PathBuf)> = located
        .iter()
        .filter_map(|&(name, value)| {
            let real = std::fs::canonicalize(value).ok()?;
            (real != value).then_some((name, real))
        })
        .collect();
    let mut places = located;
    places.extend(resolved.iter().map(|(name, real)| (*name, real.as_path())));
    let twins = path_set::variable_twins(&inputs, &places);
    inputs.extend(twins);
    // Tracked env read through IPC joins the path set like any other observation.
    for name in report.tracked_env.keys() {
        inputs.insert(Observation::new(
            path_set::ObsKind::Env,
            path_set::CachePath(name.clone().into_bytes()),
        ));
    }
    for glob in &report.tracked_globs {
        inputs.insert(Observation::new(
            path_set::ObsKind::Env,
            path_set::CachePath(crate::ipc::glob_observation_name(glob).into_bytes()),
        ));
    }
    Ok(Traced {
        observations: inputs.into_iter().collect(),
        outputs: digest.outputs,
        own: digest.own,
    })
}

/// A [`path_set::ObsKind::Which`] for each program the task executed from a directory on
/// its `PATH`, except programs it wrote itself (they are its outputs, and not there before
/// it runs again).
fn found_on_path(
    execution: &Execution,
    plan: &Plan,
    root: &std::path::Path,
    cache_dir: &std::path::Path,
    own: &path_set::OwnChanges,
) -> Vec<Observation> {
    let Some(path_var) = plan.env.get("PATH") else {
        return Vec::new();
    };
    let dirs: Vec<std::path::PathBuf> = std::env::split_paths(path_var)
        .filter(|dir| dir.is_absolute())
        .collect();
    let written: BTreeSet<&std::path::Path> = execution
        .log
        .accesses
        .iter()
        .filter(|a| !a.kind.is_input())
        .map(|a| a.path.as_path())
        .collect();
    // Distinct first: a build runs `cc` hundreds of times, and `own.changed` resolves a
    // directory's symlinks.
    let programs: BTreeSet<&std::path::Path> = execution
        .log
        .accesses
        .iter()
        .filter(|a| a.kind == sandbox::AccessKind::Exec)
        .map(|a| a.path.as_path())
        .collect();
    programs
        .into_iter()
        .filter(|program| {
            program
                .parent()
                .is_some_and(|dir| dirs.iter().any(|d| d == dir))
                && !written.contains(program)
                && !own.changed(program)
                && !path_set::is_noise(program, cache_dir)
        })
        .map(|program| {
            Observation::new(
                path_set::ObsKind::Which,
                path_set::CachePath::new(root, program),
            )
        })
        .collect()
}

/// The log read under the plan's exclusions and what the task's tools declared ignored.
pub fn digest(
    execution: &Execution,
    plan: &Plan,
    root: &std::path::Path,
    cache_dir: &std::path::Path,
) -> Result<path_set::Digest, Uncacheable> {
    let ignored = path_set::Ignored {
        inputs: execution.ipc.ignored_inputs.clone(),
        outputs: execution.ipc.ignored_outputs.clone(),
    };
    path_set::digest(
        &execution.log,
        root,
        cache_dir,
        &plan.input_exclude,
        &plan.output_exclude,
        &ignored,
    )
}

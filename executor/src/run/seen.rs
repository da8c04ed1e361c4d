//! What a run saw, kept for `--watch`: the observations of its access log (or of the cache
//! entry it hit) with the value each had for the task, and the paths it wrote.
//!
//! The watch reruns a task when one of these values is no longer what the task saw. That
//! is the cache's own notion of "changed", so a watched task reruns exactly when its next
//! lookup could not hit on the same entry; a save that leaves a file's bytes as they were
//! reruns nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sandbox::AccessLog;

use super::execute::Execution;
use super::plan::Plan;
use crate::cache::Cache;
use crate::cache::entry::Stored;
use crate::cache::observe::{self, RunCheck, StatMemo};
use crate::cache::path_set::{self, CachePath, Observation};

#[derive(Debug, Default)]
pub struct InputsSeen {
    /// What the task looked at (read, stat'ed, listed, found missing; tracked env names).
    pub observations: Vec<Observation>,
    /// The value of each observation for the task, in the same order.
    pub values: Vec<String>,
    /// The environment those values were observed against (vt's and the task's `PATH`:
    /// [`Plan::observation_env`]); the watch observes again against the same.
    pub env: BTreeMap<String, String>,
    /// Absolute paths the task changed (or a hit restored): their state after the round is
    /// vt's own doing, not an edit to react to.
    pub wrote: Vec<PathBuf>,
    /// Something the task saw changed while it ran (it may have read a half-saved file):
    /// the watch reruns it at once.
    pub moved: Option<String>,
}

/// What an executed run (finished or failed) saw. The whole log counts, also where the
/// task's `input` globs make only declared files its key: a watch that reruns too often
/// costs a cache hit, one that misses an edit leaves a stale build.
pub fn of_execution(plan: &Plan, execution: &Execution, cache_dir: &Path) -> InputsSeen {
    let root = &plan.root;
    let wrote = written(&execution.log);
    let env = plan.observation_env();
    let memo = StatMemo::maybe(None);
    match super::traced::digest(execution, plan, root, cache_dir) {
        Ok(digest) => {
            let observations: Vec<Observation> = digest.inputs.into_iter().collect();
            let check = RunCheck {
                window: &execution.window,
                own: &digest.own,
            };
            match observe::observe_run(&observations, root, &env, &memo, &check) {
                Ok(values) => InputsSeen {
                    observations,
                    values,
                    wrote,
                    moved: None,
                    env,
                },
                Err(moved) => InputsSeen {
                    values: now(&observations, root, &env, &memo),
                    observations,
                    wrote,
                    moved: Some(moved.to_string()),
                    env,
                },
            }
        }
        // Not cacheable (it read a file it then wrote, a tracing gap): still watched, by
        // everything it looked at that it did not change itself, valued as it is now.
        Err(_) => {
            let observations = looked_at(&execution.log, root, cache_dir);
            InputsSeen {
                values: now(&observations, root, &env, &memo),
                observations,
                wrote,
                moved: None,
                env,
            }
        }
    }
}

/// What a hit saw: the entry's path set, valued as the lookup found it (it hit, so the
/// values are the ones stored), and the outputs the replay restored.
pub fn of_hit(cache: &Cache, plan: &Plan, entry: &Stored) -> InputsSeen {
    let root = cache.root();
    let wrote = entry
        .outputs
        .iter()
        .map(|output| output.path().absolute(root))
        .collect();
    match cache.path_set_of(entry) {
        Ok(observations) => {
            let env = plan.observation_env();
            InputsSeen {
                values: now(&observations, root, &env, &StatMemo::maybe(None)),
                observations,
                wrote,
                moved: None,
                env,
            }
        }
        Err(e) => InputsSeen {
            wrote,
            moved: Some(format!("its cache entry's path set is {e}")),
            ..InputsSeen::default()
        },
    }
}

/// The values of `observations` now.
pub fn now(
    observations: &[Observation],
    root: &Path,
    env: &BTreeMap<String, String>,
    memo: &StatMemo<'_>,
) -> Vec<String> {
    observations
        .iter()
        .map(|o| observe::observe(o, root, env, memo))
        .collect()
}

/// Every path the log changed.
fn written(log: &AccessLog) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = log
        .accesses
        .iter()
        .filter(|a| !a.kind.is_input())
        .map(|a| a.path.clone())
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// The inputs of a log the cache could not digest: each path it looked at and never
/// changed, by the kind of its first look.
fn looked_at(log: &AccessLog, root: &Path, cache_dir: &Path) -> Vec<Observation> {
    use sandbox::AccessKind;
    let changed: std::collections::HashSet<&Path> = log
        .accesses
        .iter()
        .filter(|a| !a.kind.is_input())
        .map(|a| a.path.as_path())
        .collect();
    let mut observations = std::collections::BTreeSet::new();
    for access in log.accesses.iter().filter(|a| a.kind.is_input()) {
        let path = access.path.as_path();
        if changed.contains(path) || path_set::is_noise(path, cache_dir) {
            continue;
        }
        let kind = match access.kind {
            AccessKind::Read | AccessKind::Exec => path_set::ObsKind::Content,
            AccessKind::ReadDir => path_set::ObsKind::List,
            AccessKind::Missing => path_set::ObsKind::Absent,
            _ => path_set::ObsKind::Meta,
        };
        observations.insert(Observation::new(kind, CachePath::new(root, path)));
    }
    observations.into_iter().collect()
}

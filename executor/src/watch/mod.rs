//! `vt run --watch`: after each round, watch exactly what each task observed and rerun
//! the tasks whose observations changed, then their dependents.
//!
//! What is watched is the cache's own path set: the files a task read, the directories it
//! listed, the paths it looked for and did not find (a glob-based watcher cannot see a
//! missing-file probe or a new file in a listed directory). A task reruns when one of those
//! values is no longer what it saw, so a save that leaves the bytes as they were reruns
//! nothing, and a rerun is exactly a run whose lookup could not hit on the same entry.
//!
//! The loop: run a round ([`run::rerun`]); keep each rerun task's values as its baseline;
//! watch the directories the observations live in ([`targets`], [`inotify`]); check the
//! rerun tasks in full (an edit between a task's end and its watch is otherwise lost) and
//! every observation an event during the round touched (a task running when its input
//! changed is rerun after it ends); then sleep until a burst of events, debounced, changes
//! a value.
//!
//! Writes by vt's own tasks during a round do not retrigger: an observation whose path a
//! task of the round wrote is re-based on its new value. A task that reads another's output
//! without depending on it is not rerun for that write (vt says so once: declare the
//! dependency).

pub mod inotify;
pub mod targets;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cache::Cache;
use crate::cache::observe::{self, StatMemo};
use crate::cache::path_set::{self, ObsKind};
use crate::config::Workspace;
use crate::graph::Graph;
use crate::run::seen::InputsSeen;
use crate::run::task::{Outcome, TaskResult};
use crate::run::{self, Options, Ran};
use inotify::{Event, Watcher};
use targets::{Index, Ref};

/// A finished round: its results (in graph order) and which of them ran in it.
pub struct Round<'a> {
    pub ran: &'a Ran,
    pub rerun: &'a [bool],
    pub elapsed: Duration,
}

/// What a task's rerun is compared with: its observations and the values it saw.
struct Baseline {
    seen: Arc<InputsSeen>,
    values: Vec<String>,
}

/// The workspace's configuration changed: the graph must be built again.
#[derive(Debug)]
pub struct Reload {
    /// What changed (`packages/lib/package.json: content changed`).
    pub why: String,
}

/// Runs the graph, then reruns what changes, until vt is stopped (Ctrl-C ends the process
/// from the signal thread) or the configuration changes. `after_round` reports each round.
pub fn follow(
    workspace: &Workspace,
    graph: &Graph,
    cache: Option<&Cache>,
    options: &Options,
    debounce: Duration,
    mut after_round: impl FnMut(Round<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<Reload> {
    if let Some(node) = graph.nodes.iter().find(|n| n.persistent) {
        anyhow::bail!(
            "--watch cannot run the persistent task {}: it never ends, so there is no round to watch\n  hint: run it in its own terminal (`vt run {}`), and watch the others",
            node.label,
            node.label
        );
    }
    let root = workspace.root.as_path();
    let n = graph.nodes.len();
    let dependents = dependents(graph);
    let mut watcher = Watcher::new().context("--watch")?;
    // One baseline per task, and after them the configuration's (see `config_files`).
    let mut baselines: Vec<Option<Baseline>> = (0..n).map(|_| None).collect();
    let config = config_files(workspace);
    let env = crate::ipc::process_env();
    baselines.push(Some(Baseline {
        values: run::seen::now(&config, root, &env, &StatMemo::maybe(None)),
        seen: Arc::new(InputsSeen {
            observations: config,
            ..InputsSeen::default()
        }),
    }));
    let mut previous: Vec<TaskResult> = Vec::new();
    let mut again: Vec<bool> = vec![true; n];
    let mut said = Said::default();
    // A directory that never stops changing still gets looked at this often.
    let longest = (debounce * 10).max(Duration::from_secs(1));
    loop {
        let started = Instant::now();
        // The changes that started this round (a user's edits) were made by now: the
        // round's tasks start after them (`cache::guard`).
        crate::cache::guard::settled();
        let ran = run::rerun(workspace, graph, cache, options, &previous, &again)?;
        after_round(Round {
            ran: &ran,
            rerun: &again,
            elapsed: started.elapsed(),
        })?;
        if ran.results.len() != n {
            anyhow::bail!(
                "--watch: the round returned {} results for {n} tasks",
                ran.results.len()
            );
        }

        // What the round saw and wrote.
        let mut changed: BTreeMap<usize, String> = BTreeMap::new();
        let mut wrote = HashSet::new();
        for (task, result) in ran.results.iter().enumerate().filter(|(t, _)| again[*t]) {
            baselines[task] = result.seen.as_ref().map(|seen| Baseline {
                seen: Arc::clone(seen),
                values: seen.values.clone(),
            });
            match &result.seen {
                Some(seen) => {
                    wrote.extend(seen.wrote.iter().cloned());
                    if let Some(moved) = &seen.moved {
                        changed.insert(task, format!("{}: {moved}", result.task));
                    }
                }
                None => said.not_watched(result),
            }
        }
        said.env(&baselines, graph);
        let own = OwnWrites::of(wrote);

        // Watch first, then value: a change after the watch is an event, one before it
        // is found by the check.
        let mut index = index_of(&baselines, root);
        let added = watcher.watch_exactly(index.dirs());
        let mut refs: Vec<Ref> = Vec::new();
        for (task, baseline) in baselines.iter().enumerate() {
            // The configuration (past the tasks) is looked at after every round.
            if let Some(baseline) = baseline
                .as_ref()
                .filter(|_| again.get(task).copied().unwrap_or(true))
            {
                refs.extend(
                    (0..baseline.values.len()).map(|observation| Ref { task, observation }),
                );
            }
        }
        affected_by(&watcher.drain(), &index, &baselines, &mut refs);
        for dir in &added {
            index.affected(dir, None, &mut refs);
        }
        check(
            refs,
            &mut baselines,
            root,
            Some((&own, &again, graph, &mut said)),
            &mut changed,
        );

        while changed.is_empty() {
            if !said.idle {
                said.idle = true;
                crate::say!(
                    "vt: watching {} director{} for {} task{} (Ctrl-C stops)",
                    watcher.len(),
                    if watcher.len() == 1 { "y" } else { "ies" },
                    n,
                    if n == 1 { "" } else { "s" }
                );
            }
            let events = watcher.next_burst(debounce, longest);
            let mut refs = Vec::new();
            affected_by(&events, &index, &baselines, &mut refs);
            // A directory that appeared or went away moves the watch of what lies below
            // it (a failed lookup of `a/b/c.js` waits for `b`, then for `c.js`).
            if events.iter().any(moves_targets) {
                index = index_of(&baselines, root);
                for dir in watcher.watch_exactly(index.dirs()) {
                    index.affected(&dir, None, &mut refs);
                    // Say the new watch set (also how a test knows the watch moved).
                    said.idle = false;
                }
            }
            check(refs, &mut baselines, root, None, &mut changed);
        }

        if let Some(why) = changed.remove(&n) {
            return Ok(Reload { why });
        }
        again = with_dependents(&changed, &dependents, &ran.results);
        let first = changed.values().next().cloned().unwrap_or_default();
        let rerun: Vec<&str> = changed
            .keys()
            .map(|&t| graph.nodes[t].label.as_str())
            .collect();
        let more = again.iter().filter(|a| **a).count() - changed.len();
        crate::say!(
            "vt: watch: {first} → rerunning {}{}",
            rerun.join(", "),
            match more {
                0 => String::new(),
                1 => " and 1 dependent".to_owned(),
                more => format!(" and {more} dependents"),
            }
        );
        said.idle = false;
        previous = ran.results;
    }
}

/// Messages said once per watch, not once per round.
#[derive(Default)]
struct Said {
    env: bool,
    idle: bool,
    not_watched: BTreeSet<String>,
    undeclared: BTreeSet<(usize, usize)>,
}

impl Said {
    fn env(&mut self, baselines: &[Option<Baseline>], graph: &Graph) {
        if self.env {
            return;
        }
        let tasks: Vec<&str> = baselines
            .iter()
            .enumerate()
            .take(graph.nodes.len())
            .filter(|(_, b)| {
                b.as_ref()
                    .is_some_and(|b| b.seen.observations.iter().any(|o| o.kind == ObsKind::Env))
            })
            .map(|(t, _)| graph.nodes[t].label.as_str())
            .collect();
        if !tasks.is_empty() {
            self.env = true;
            crate::say!(
                "vt: watch: the environment variables {} read{} are not watched (vt's environment cannot change while it runs): restart vt after changing them",
                list(&tasks),
                if tasks.len() == 1 { "s" } else { "" }
            );
        }
    }

    fn not_watched(&mut self, result: &TaskResult) {
        let why = match (&result.outcome, &result.worker) {
            (Outcome::Skipped { .. }, _) => return,
            (_, Some(worker)) => {
                format!("it ran on the worker {worker}, which kept its access log")
            }
            _ => "vt has no record of what it read".to_owned(),
        };
        if self.not_watched.insert(result.task.clone()) {
            crate::say!(
                "vt: watch: {} is not watched ({why}); it reruns when a dependency does",
                result.task
            );
        }
    }
}

fn list(names: &[&str]) -> String {
    match names {
        [one] => (*one).to_owned(),
        [first @ .., last] => format!("{} and {last}", first.join(", ")),
        [] => String::new(),
    }
}

/// The paths vt's tasks changed in a round, and the directories they changed entries of.
struct OwnWrites {
    paths: HashSet<PathBuf>,
    dirs: HashSet<PathBuf>,
}

impl OwnWrites {
    fn of(paths: HashSet<PathBuf>) -> OwnWrites {
        let dirs = paths
            .iter()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        OwnWrites { paths, dirs }
    }

    fn touched(&self, path: &Path, kind: ObsKind) -> bool {
        self.paths.contains(path) || (kind == ObsKind::List && self.dirs.contains(path))
    }
}

fn index_of(baselines: &[Option<Baseline>], root: &Path) -> Index {
    Index::of(
        baselines
            .iter()
            .map(|b| b.as_ref().map(|b| b.seen.observations.as_slice())),
        root,
    )
}

/// The observations `events` may have changed (all of them after lost events).
fn affected_by(
    events: &[Event],
    index: &Index,
    baselines: &[Option<Baseline>],
    into: &mut Vec<Ref>,
) {
    for event in events {
        match event {
            Event::Entry { dir, name } => index.affected(dir, name.as_deref(), into),
            Event::Overflow => {
                for (task, baseline) in baselines.iter().enumerate() {
                    if let Some(baseline) = baseline {
                        into.extend(
                            (0..baseline.values.len()).map(|observation| Ref { task, observation }),
                        );
                    }
                }
            }
        }
    }
}

fn moves_targets(event: &Event) -> bool {
    match event {
        Event::Overflow | Event::Entry { name: None, .. } => true,
        Event::Entry {
            dir,
            name: Some(name),
        } => {
            // Appeared as a directory, or gone (then it may have been one).
            let path = dir.join(name);
            path.is_dir() || std::fs::symlink_metadata(&path).is_err()
        }
    }
}

/// Compares each of `refs` with its baseline; a task with a value that is not what it saw
/// goes into `changed`, with the first change explained. After a round (`round`), a value
/// vt's own tasks changed is re-based instead, and a task that did not run in the round is
/// told about once: it read another task's output without depending on it.
fn check(
    mut refs: Vec<Ref>,
    baselines: &mut [Option<Baseline>],
    root: &Path,
    mut round: Option<(&OwnWrites, &[bool], &Graph, &mut Said)>,
    changed: &mut BTreeMap<usize, String>,
) {
    refs.sort_unstable();
    refs.dedup();
    let memo = StatMemo::maybe(None);
    for Ref { task, observation } in refs {
        if changed.contains_key(&task) {
            continue;
        }
        let Some(baseline) = baselines.get_mut(task).and_then(Option::as_mut) else {
            continue;
        };
        let Some(o) = baseline.seen.observations.get(observation) else {
            continue;
        };
        if o.kind == ObsKind::Env {
            continue;
        }
        let now = observe::observe(o, root, &baseline.seen.env, &memo);
        if now == baseline.values[observation] {
            continue;
        }
        if let Some((own, ran, graph, said)) = round.as_mut()
            && o.resolve(root, &baseline.seen.env)
                .is_some_and(|path| own.touched(&path, o.kind))
        {
            if ran.get(task) == Some(&false) && said.undeclared.insert((task, observation)) {
                crate::say!(
                    "vt: watch: {} read {}, which a task of this round rewrote; it does not depend on that task, so it is not rerun (vt's own writes never retrigger)\n  hint: add the task that writes it to {}'s dependsOn",
                    graph.nodes[task].label,
                    o.describe(),
                    graph.nodes[task].label
                );
            }
            baseline.values[observation] = now;
            continue;
        }
        changed.insert(
            task,
            observe::explain_change(o, &baseline.values[observation], &now),
        );
    }
}

/// What the task graph is built from: every package's `package.json` and task files (also
/// where there is none yet), the root's `pnpm-workspace.yaml`, and the directories holding
/// the packages (a package added or removed). A change to one of them is a new graph, not
/// a rerun: the commands and dependencies themselves may have changed.
fn config_files(workspace: &Workspace) -> Vec<path_set::Observation> {
    use crate::cache::path_set::{CachePath, Observation};
    let root = workspace.root.as_path();
    let at = |kind, path: &Path| Observation::new(kind, CachePath::new(root, path));
    let mut files = BTreeSet::new();
    files.insert(at(ObsKind::Content, &root.join("pnpm-workspace.yaml")));
    for package in &workspace.packages {
        files.insert(at(ObsKind::Content, &package.dir.join("package.json")));
        for name in crate::config::tasks::FILE_NAMES {
            files.insert(at(ObsKind::Content, &package.dir.join(name)));
        }
        if let Some(parent) = package.dir.parent().filter(|_| package.dir != root) {
            files.insert(at(ObsKind::List, parent));
        }
    }
    files.into_iter().collect()
}

/// For each node, the nodes that depend on it directly.
fn dependents(graph: &Graph) -> Vec<Vec<usize>> {
    let mut dependents = vec![Vec::new(); graph.nodes.len()];
    for (node, n) in graph.nodes.iter().enumerate() {
        for dep in &n.deps {
            dependents[dep.node].push(node);
        }
    }
    dependents
}

/// The next round: the changed tasks and everything that depends on them, and tasks that
/// were skipped (a dependency failed) once they can run.
fn with_dependents(
    changed: &BTreeMap<usize, String>,
    dependents: &[Vec<usize>],
    results: &[TaskResult],
) -> Vec<bool> {
    let mut again = vec![false; dependents.len()];
    let mut stack: Vec<usize> = changed.keys().copied().collect();
    while let Some(node) = stack.pop() {
        if std::mem::replace(&mut again[node], true) {
            continue;
        }
        stack.extend(dependents[node].iter().copied());
    }
    // A task skipped because vt stopped after a failure (not a dependent of it) runs too.
    for (node, result) in results.iter().enumerate() {
        if matches!(result.outcome, Outcome::Skipped { .. }) && !again[node] {
            again[node] = true;
        }
    }
    again
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(task: &str, outcome: Outcome) -> TaskResult {
        TaskResult {
            task: task.into(),
            key: String::new(),
            outcome,
            duration_ms: 0,
            worker: None,
            seen: None,
        }
    }

    #[test]
    fn a_change_reruns_its_task_and_everything_downstream_and_what_was_skipped() {
        // 0 ← 1 ← 2, and 3 alone; 3 was skipped when vt stopped after a failure.
        let dependents = vec![vec![1], vec![2], vec![], vec![]];
        let ok = || Outcome::NotCached {
            reason: String::new(),
        };
        let results = vec![
            result("a", ok()),
            result("b", ok()),
            result("c", ok()),
            result(
                "d",
                Outcome::Skipped {
                    because: "a".into(),
                },
            ),
        ];
        let changed = BTreeMap::from([(1, "x changed".to_owned())]);
        assert_eq!(
            with_dependents(&changed, &dependents, &results),
            vec![false, true, true, true]
        );
    }

    #[test]
    fn a_write_by_the_round_rebases_the_file_and_the_listing_of_its_directory() {
        let own = OwnWrites::of(HashSet::from([PathBuf::from("/w/dist/a.js")]));
        assert!(own.touched(Path::new("/w/dist/a.js"), ObsKind::Content));
        assert!(own.touched(Path::new("/w/dist"), ObsKind::List));
        assert!(!own.touched(Path::new("/w/dist"), ObsKind::Meta));
        assert!(!own.touched(Path::new("/w/src/a.js"), ObsKind::Content));
    }
}

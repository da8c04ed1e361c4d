//! The task graph: which tasks run, and what each waits for (docs/architecture.md, "Graph").
//!
//! Edges come from three places, and `--dry-run` names which:
//! - `dependsOn` entries: `^build` = `build` in each workspace package this one depends on
//!   (skipped where that package has no `build`), `pkg#task` = that task (an error if it
//!   does not exist), `lint` = `lint` in the same package;
//! - package.json dependencies: requested tasks of the same name run in the packages'
//!   dependency order (`vt run build -r` builds `lib` before the `app` that depends on it,
//!   as pnpm and vite-task do), bridging packages that are not selected or lack the task;
//! - steps: a command split at `&&` ([`split`]) and `preX`/`postX` hooks run one after
//!   another, each cached on its own.

pub mod filter;
pub mod select;
pub mod show;
pub mod split;

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{TaskConfig, Workspace};

pub use select::{Query, Selected, select};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TaskId {
    pub package: usize,
    pub task: String,
}

/// Why a node waits for another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A `dependsOn` entry, as written.
    DependsOn(String),
    /// The package depends on the other's package (package.json).
    Package,
    /// The previous step of the same task (`&&`, a `pre` hook, the task before its `post`).
    Step,
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::DependsOn(entry) => write!(f, "dependsOn {entry:?}"),
            Via::Package => f.write_str("package.json dependency"),
            Via::Step => f.write_str("previous step"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    /// Index of the node waited for.
    pub node: usize,
    pub via: Via,
}

#[derive(Debug, Clone)]
pub struct Node {
    /// The task whose config and command this node runs.
    pub id: TaskId,
    /// The task it was planned for: itself, or the task a `pre`/`post` hook belongs to.
    pub origin: TaskId,
    /// `package#task`, with ` (i/n)` for one step of a split command, for people.
    pub label: String,
    /// The nodes this one waits for.
    pub deps: Vec<Dep>,
    /// The merged config (a script alone gives the default config).
    pub config: TaskConfig,
    /// The shell command (this step of config `command`, else of the package.json script).
    pub command: String,
    /// Whether the command line's extra arguments are appended (the last step of a
    /// requested task; never a hook or a dependency).
    pub extra_args: bool,
    /// Whether the cache is used (the task's `cache`, the root's `cache` settings).
    pub cache: bool,
    /// If not, why (said when it runs).
    pub uncached_because: &'static str,
    /// The task runs until stopped (`"persistent": true`; its last step only).
    pub persistent: bool,
}

#[derive(Debug, Clone)]
pub struct Graph {
    /// In dependency order: every node comes after the nodes it depends on.
    pub nodes: Vec<Node>,
}

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("no task named {task:?} in {scope}{hint}")]
    NoSuchTask {
        task: String,
        scope: String,
        hint: String,
    },
    #[error(
        "{from}: dependsOn {entry:?} names package {package:?}, which is not in this workspace"
    )]
    NoSuchPackage {
        from: String,
        entry: String,
        package: String,
    },
    #[error("{from}: dependsOn {entry:?}: {target} does not exist")]
    MissingDependency {
        from: String,
        entry: String,
        target: String,
    },
    #[error(
        "{label} has no command: add a \"{task}\" script to {package_json} or a \"command\" in its vt.json"
    )]
    NoCommand {
        label: String,
        task: String,
        package_json: String,
    },
    #[error(
        "{task} depends on {persistent} ({entry:?} in its dependsOn), but {persistent} is persistent: it runs until stopped, so {task} would never start\n  hint: run both (`vt run {persistent_task} {task_name}`); they run side by side"
    )]
    DependsOnPersistent {
        task: String,
        task_name: String,
        persistent: String,
        persistent_task: String,
        entry: String,
    },
    #[error("tasks depend on each other in a cycle: {0}")]
    Cycle(String),
    #[error("bad --filter {filter:?}: {message}")]
    BadFilter { filter: String, message: String },
    #[error(
        "no package selected: {0}\n  hint: `vt run` with no task lists every package and its tasks"
    )]
    NothingSelected(String),
}

/// How the graph is built.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildOptions {
    /// `--ignore-depends-on`: only the requested tasks (still in package order).
    pub ignore_depends_on: bool,
}

type Edges = BTreeMap<TaskId, Vec<(TaskId, Via)>>;

/// Builds the graph for `roots` (the requested tasks) and everything they depend on.
pub fn build(
    workspace: &Workspace,
    roots: &[TaskId],
    options: BuildOptions,
) -> Result<Graph, GraphError> {
    let label = |id: &TaskId| format!("{}#{}", workspace.packages[id.package].name, id.task);
    let mut edges = depends_on_closure(workspace, roots, options, &label)?;
    // A cycle of dependsOn entries is an error; packages that depend on each other
    // (devDependencies often do) are not: pnpm warns and runs them anyway, and so does vt.
    topological(&edges, &label)?;
    for (from, to) in package_order(workspace, roots) {
        if edges[&from].iter().any(|(d, _)| *d == to) {
            continue;
        }
        if reaches(&edges, &to, &from) {
            crate::say!(
                "vt: warning: {} and {} depend on each other (package.json); {} does not wait for {}",
                workspace.packages[from.package].name,
                workspace.packages[to.package].name,
                label(&from),
                label(&to)
            );
            continue;
        }
        if let Some(deps) = edges.get_mut(&from) {
            deps.push((to, Via::Package));
        }
    }
    let order = topological(&edges, &label)?;
    expand(workspace, roots, &edges, &order, &label)
}

/// Every task `roots` need through `dependsOn`, with each task's direct dependencies.
fn depends_on_closure(
    workspace: &Workspace,
    roots: &[TaskId],
    options: BuildOptions,
    label: &dyn Fn(&TaskId) -> String,
) -> Result<Edges, GraphError> {
    let mut edges: Edges = BTreeMap::new();
    let mut pending: Vec<TaskId> = roots.to_vec();
    while let Some(id) = pending.pop() {
        if edges.contains_key(&id) {
            continue;
        }
        let package = &workspace.packages[id.package];
        let config = package.tasks.get(&id.task).cloned().unwrap_or_default();
        let mut deps: Vec<(TaskId, Via)> = Vec::new();
        let entries = if options.ignore_depends_on {
            &[][..]
        } else {
            &config.depends_on[..]
        };
        for entry in entries {
            let via = Via::DependsOn(entry.clone());
            if let Some(task) = entry.strip_prefix('^') {
                for dep in &package.dependencies {
                    if let Some(index) = workspace.package_named(dep)
                        && index != id.package
                        && workspace.packages[index].has_task(task)
                    {
                        let dep = TaskId {
                            package: index,
                            task: task.to_owned(),
                        };
                        deps.push((dep, via.clone()));
                    }
                }
            } else if let Some((name, task)) = entry.split_once('#') {
                let index =
                    workspace
                        .package_named(name)
                        .ok_or_else(|| GraphError::NoSuchPackage {
                            from: label(&id),
                            entry: entry.clone(),
                            package: name.to_owned(),
                        })?;
                let dep = TaskId {
                    package: index,
                    task: task.to_owned(),
                };
                if !workspace.packages[index].has_task(task) {
                    return Err(GraphError::MissingDependency {
                        from: label(&id),
                        entry: entry.clone(),
                        target: label(&dep),
                    });
                }
                deps.push((dep, via));
            } else {
                let dep = TaskId {
                    package: id.package,
                    task: entry.clone(),
                };
                if !package.has_task(entry) {
                    return Err(GraphError::MissingDependency {
                        from: label(&id),
                        entry: entry.clone(),
                        target: label(&dep),
                    });
                }
                deps.push((dep, via));
            }
        }
        deps.sort_by(|a, b| a.0.cmp(&b.0));
        deps.dedup_by(|a, b| a.0 == b.0);
        pending.extend(deps.iter().map(|(d, _)| d.clone()));
        edges.insert(id, deps);
    }
    Ok(edges)
}

/// Whether `from` waits, directly or not, for `to`.
fn reaches(edges: &Edges, from: &TaskId, to: &TaskId) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from];
    while let Some(id) = stack.pop() {
        if id == to {
            return true;
        }
        if seen.insert(id) {
            stack.extend(edges.get(id).into_iter().flatten().map(|(d, _)| d));
        }
    }
    false
}

/// `(from, to)`: requested task `from` waits for requested task `to` of the same name
/// because `from`'s package depends on `to`'s, directly or through packages that are not
/// requested to run it (vite-task's "skip-intermediate" rule).
fn package_order(workspace: &Workspace, roots: &[TaskId]) -> Vec<(TaskId, TaskId)> {
    let requested: BTreeSet<&TaskId> = roots.iter().collect();
    let mut pairs = Vec::new();
    for root in roots {
        let mut seen: BTreeSet<usize> = BTreeSet::from([root.package]);
        let mut frontier = vec![root.package];
        while let Some(package) = frontier.pop() {
            for name in &workspace.packages[package].dependencies {
                let Some(dep) = workspace.package_named(name) else {
                    continue; // not a workspace package
                };
                if !seen.insert(dep) {
                    continue;
                }
                let target = TaskId {
                    package: dep,
                    task: root.task.clone(),
                };
                if requested.contains(&target) {
                    pairs.push((root.clone(), target));
                } else {
                    frontier.push(dep);
                }
            }
        }
    }
    pairs
}

/// One node per step: `preX`, the parts of X's command, `postX`.
fn expand(
    workspace: &Workspace,
    roots: &[TaskId],
    edges: &Edges,
    order: &[&TaskId],
    label: &dyn Fn(&TaskId) -> String,
) -> Result<Graph, GraphError> {
    let settings = workspace.settings;
    let mut nodes: Vec<Node> = Vec::new();
    // The last node of each task: what its dependents wait for.
    let mut last: BTreeMap<&TaskId, usize> = BTreeMap::new();
    for id in order {
        let package = &workspace.packages[id.package];
        let hooks = settings.pre_post_scripts && package.scripts.contains_key(&id.task);
        let hook = |prefix: &str| {
            let name = format!("{prefix}{}", id.task);
            (hooks && package.scripts.contains_key(&name)).then_some(TaskId {
                package: id.package,
                task: name,
            })
        };
        let mut tasks: Vec<TaskId> = Vec::new();
        tasks.extend(hook("pre"));
        tasks.push((*id).clone());
        tasks.extend(hook("post"));
        let mut previous: Option<usize> = None;
        for task in &tasks {
            let config = package.tasks.get(&task.task).cloned().unwrap_or_default();
            let command = match (&config.command, package.scripts.get(&task.task)) {
                (Some(command), _) | (None, Some(command)) => command.clone(),
                (None, None) => {
                    return Err(GraphError::NoCommand {
                        label: label(task),
                        task: task.task.clone(),
                        package_json: package.dir.join("package.json").display().to_string(),
                    });
                }
            };
            let script = package.is_plain_script(&task.task);
            let persistent = task == *id && config.persistent == Some(true);
            let uncached_because = if persistent {
                "a persistent task (it runs until stopped) is never cached"
            } else if config.cache == Some(false) {
                "cache: false in the task's config"
            } else if script && !settings.cache_scripts {
                "package.json scripts are not cached here (vite-task's default; the root's \"cache\": true or --cache turns it on)"
            } else if !script && !settings.cache_tasks {
                "the root's cache.tasks is false"
            } else {
                ""
            };
            let cache = uncached_because.is_empty();
            let steps = split::and_list(&command).unwrap_or_else(|| vec![command.clone()]);
            let count = steps.len();
            for (i, step) in steps.into_iter().enumerate() {
                let deps = match previous {
                    Some(node) => vec![Dep {
                        node,
                        via: Via::Step,
                    }],
                    None => {
                        let mut deps = Vec::new();
                        for (dep, via) in &edges[*id] {
                            let node = last[dep];
                            if nodes[node].persistent {
                                match via {
                                    // Package order only orders: a dev server of a package's
                                    // dependency runs beside it.
                                    Via::Package | Via::Step => continue,
                                    Via::DependsOn(entry) => {
                                        return Err(GraphError::DependsOnPersistent {
                                            task: label(id),
                                            task_name: id.task.clone(),
                                            persistent: label(dep),
                                            persistent_task: dep.task.clone(),
                                            entry: entry.clone(),
                                        });
                                    }
                                }
                            }
                            deps.push(Dep {
                                node,
                                via: via.clone(),
                            });
                        }
                        deps
                    }
                };
                nodes.push(Node {
                    id: task.clone(),
                    origin: (*id).clone(),
                    label: if count == 1 {
                        label(task)
                    } else {
                        format!("{} ({}/{count})", label(task), i + 1)
                    },
                    deps,
                    config: config.clone(),
                    command: step,
                    extra_args: task == *id && i + 1 == count && roots.contains(id),
                    cache,
                    uncached_because,
                    persistent: persistent && i + 1 == count,
                });
                previous = Some(nodes.len() - 1);
            }
        }
        if let Some(node) = previous {
            last.insert(id, node);
        }
    }
    Ok(Graph { nodes })
}

/// Depth-first topological order; a cycle is reported as the path that closes it.
fn topological<'a>(
    edges: &'a Edges,
    label: &dyn Fn(&TaskId) -> String,
) -> Result<Vec<&'a TaskId>, GraphError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit<'a>(
        id: &'a TaskId,
        edges: &'a Edges,
        marks: &mut BTreeMap<&'a TaskId, Mark>,
        stack: &mut Vec<&'a TaskId>,
        order: &mut Vec<&'a TaskId>,
        label: &dyn Fn(&TaskId) -> String,
    ) -> Result<(), GraphError> {
        match marks.get(id) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Visiting) => {
                let start = stack.iter().position(|s| *s == id).unwrap_or(0);
                let mut cycle: Vec<String> = stack[start..].iter().map(|s| label(s)).collect();
                cycle.push(label(id));
                return Err(GraphError::Cycle(cycle.join(" → ")));
            }
            None => {}
        }
        marks.insert(id, Mark::Visiting);
        stack.push(id);
        for (dep, _) in &edges[id] {
            let (key, _) = edges
                .get_key_value(dep)
                .expect("every dependency was discovered");
            visit(key, edges, marks, stack, order, label)?;
        }
        stack.pop();
        marks.insert(id, Mark::Done);
        order.push(id);
        Ok(())
    }
    let mut marks = BTreeMap::new();
    let mut order = Vec::new();
    for id in edges.keys() {
        visit(id, edges, &mut marks, &mut Vec::new(), &mut order, label)?;
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Workspace;
    use std::path::Path;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    fn workspace(files: &[(&str, &str)]) -> (tempfile::TempDir, Workspace) {
        let temp = tempfile::tempdir().expect("tempdir");
        write(
            &temp.path().join("package.json"),
            r#"{"name":"root","workspaces":["p/*"]}"#,
        );
        for (path, text) in files {
            write(&temp.path().join(path), text);
        }
        let ws = Workspace::find(temp.path()).expect("workspace");
        (temp, ws)
    }

    fn in_package(ws: &Workspace, task: &str, current: usize) -> Vec<TaskId> {
        let tasks = [task.to_owned()];
        let query = Query {
            tasks: &tasks,
            current,
            ..Query::default()
        };
        select(ws, query).expect("select").roots
    }

    fn recursive(ws: &Workspace, task: &str) -> Vec<TaskId> {
        let tasks = [task.to_owned()];
        let query = Query {
            tasks: &tasks,
            recursive: true,
            ..Query::default()
        };
        select(ws, query).expect("select").roots
    }

    fn order(graph: &Graph) -> Vec<(&str, Vec<String>)> {
        graph
            .nodes
            .iter()
            .map(|n| {
                let deps = n
                    .deps
                    .iter()
                    .map(|d| format!("{} via {}", graph.nodes[d.node].label, d.via))
                    .collect();
                (n.label.as_str(), deps)
            })
            .collect()
    }

    #[test]
    fn recursive_leaves_the_workspace_root_out_unless_asked() {
        // The root's `build` is the aggregate (`npm run build -ws`): with -r it would run
        // every package's build a second time, beside them (issue 26).
        let (_t, ws) = workspace(&[
            (
                "package.json",
                r#"{"name":"root","workspaces":["p/*"],"scripts":{"build":"npm run build -ws"}}"#,
            ),
            (
                "p/lib/package.json",
                r#"{"name":"lib","scripts":{"build":"b"}}"#,
            ),
        ]);
        let labels = |roots: Vec<TaskId>| -> Vec<String> {
            roots
                .iter()
                .map(|t| format!("{}#{}", ws.packages[t.package].name, t.task))
                .collect()
        };
        assert_eq!(labels(recursive(&ws, "build")), ["lib#build"]);
        let tasks = ["build".to_owned()];
        let with_root = Query {
            tasks: &tasks,
            recursive: true,
            workspace_root: true,
            ..Query::default()
        };
        let roots = select(&ws, with_root).expect("select").roots;
        assert_eq!(labels(roots), ["root#build", "lib#build"]);
        // Without -r, at the root, the root's task is the one asked for.
        assert_eq!(labels(in_package(&ws, "build", 0)), ["root#build"]);
        // A filter naming the root still selects it.
        let filters = ["root".to_owned()];
        let by_name = Query {
            tasks: &tasks,
            filters: &filters,
            ..Query::default()
        };
        let roots = select(&ws, by_name).expect("select").roots;
        assert_eq!(labels(roots), ["root#build"]);
    }

    #[test]
    fn recursive_in_a_lone_package_runs_it() {
        let temp = tempfile::tempdir().expect("tempdir");
        write(
            &temp.path().join("package.json"),
            r#"{"name":"solo","scripts":{"build":"b"}}"#,
        );
        let ws = Workspace::find(temp.path()).expect("workspace");
        assert_eq!(recursive(&ws, "build").len(), 1);
    }

    #[test]
    fn recursive_runs_follow_package_dependencies_without_config() {
        // app → mid (no build) → lib: app#build waits for lib#build across mid.
        let (_t, ws) = workspace(&[
            (
                "p/app/package.json",
                r#"{"name":"app","scripts":{"build":"b"},"dependencies":{"mid":"*"}}"#,
            ),
            (
                "p/mid/package.json",
                r#"{"name":"mid","dependencies":{"lib":"*"}}"#,
            ),
            (
                "p/lib/package.json",
                r#"{"name":"lib","scripts":{"build":"b"}}"#,
            ),
            (
                "p/solo/package.json",
                r#"{"name":"solo","scripts":{"build":"b"}}"#,
            ),
        ]);
        let graph = build(&ws, &recursive(&ws, "build"), BuildOptions::default()).expect("graph");
        let order = order(&graph);
        let app = order
            .iter()
            .position(|(l, _)| *l == "app#build")
            .expect("app");
        let lib = order
            .iter()
            .position(|(l, _)| *l == "lib#build")
            .expect("lib");
        assert!(lib < app, "{order:?}");
        assert_eq!(order[app].1, ["lib#build via package.json dependency"]);
        let solo = order
            .iter()
            .find(|(l, _)| *l == "solo#build")
            .expect("solo");
        assert!(solo.1.is_empty(), "{order:?}");
        // A lone `vt run build` in app runs only app's build (no new tasks from packages).
        let app_index = ws.package_named("app").expect("app");
        let graph = build(
            &ws,
            &in_package(&ws, "build", app_index),
            BuildOptions::default(),
        )
        .expect("graph");
        assert_eq!(graph.nodes.len(), 1);
    }

    #[test]
    fn packages_that_depend_on_each_other_still_run() {
        let (_t, ws) = workspace(&[
            (
                "p/a/package.json",
                r#"{"name":"a","scripts":{"build":"x"},"devDependencies":{"b":"*"}}"#,
            ),
            (
                "p/b/package.json",
                r#"{"name":"b","scripts":{"build":"x"},"devDependencies":{"a":"*"}}"#,
            ),
        ]);
        let graph = build(&ws, &recursive(&ws, "build"), BuildOptions::default()).expect("graph");
        assert_eq!(graph.nodes.len(), 2);
    }

    #[test]
    fn and_lists_and_hooks_become_steps() {
        let (_t, ws) = workspace(&[
            (
                "p/a/package.json",
                r#"{"name":"a","scripts":{"prebuild":"gen","build":"tsc && vite build","postbuild":"echo done"}}"#,
            ),
            ("p/a/vite-task.json", r#"{"tasks":{}}"#),
        ]);
        let a = ws.package_named("a").expect("a");
        let graph =
            build(&ws, &in_package(&ws, "build", a), BuildOptions::default()).expect("graph");
        let labels: Vec<_> = graph.nodes.iter().map(|n| n.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "a#prebuild",
                "a#build (1/2)",
                "a#build (2/2)",
                "a#postbuild"
            ]
        );
        let args: Vec<_> = graph.nodes.iter().map(|n| n.extra_args).collect();
        assert_eq!(args, [false, false, true, false]);
        // vite-task's defaults (a vite-task.json, no `cache` key): scripts are not cached.
        assert!(graph.nodes.iter().all(|n| !n.cache));
    }

    #[test]
    fn caret_dependencies_follow_package_dependencies() {
        let (_t, ws) = workspace(&[
            (
                "p/app/package.json",
                r#"{"name":"app","scripts":{"build":"b"},"dependencies":{"lib":"*"}}"#,
            ),
            (
                "p/app/vt.json",
                r#"{"tasks":{"build":{"dependsOn":["^build","lint"]},"lint":{"command":"l"}}}"#,
            ),
            (
                "p/lib/package.json",
                r#"{"name":"lib","scripts":{"build":"b"}}"#,
            ),
        ]);
        let app = ws.package_named("app").expect("app");
        let roots = in_package(&ws, "build", app);
        let graph = build(&ws, &roots, BuildOptions::default()).expect("graph");
        let labels: Vec<_> = graph.nodes.iter().map(|n| n.label.as_str()).collect();
        assert_eq!(labels, ["app#lint", "lib#build", "app#build"]);
        let deps: Vec<usize> = graph.nodes[2].deps.iter().map(|d| d.node).collect();
        assert_eq!(deps, [0, 1]);
    }

    #[test]
    fn cycles_are_spelled_out() {
        let (_t, ws) = workspace(&[
            (
                "p/a/package.json",
                r#"{"name":"a","scripts":{"build":"x"}}"#,
            ),
            (
                "p/a/vt.json",
                r#"{"tasks":{"build":{"dependsOn":["b#build"]}}}"#,
            ),
            (
                "p/b/package.json",
                r#"{"name":"b","scripts":{"build":"x"}}"#,
            ),
            (
                "p/b/vt.json",
                r#"{"tasks":{"build":{"dependsOn":["a#build"]}}}"#,
            ),
        ]);
        let roots = recursive(&ws, "build");
        let err = build(&ws, &roots, BuildOptions::default())
            .expect_err("cycle")
            .to_string();
        assert!(err.contains("a#build → b#build → a#build"), "{err}");
    }

    #[test]
    fn unknown_tasks_list_what_exists() {
        let (_t, ws) = workspace(&[(
            "p/a/package.json",
            r#"{"name":"a","scripts":{"build":"x","test":"y"}}"#,
        )]);
        let a = ws.package_named("a").expect("a");
        let tasks = ["biuld".to_owned()];
        let query = Query {
            tasks: &tasks,
            current: a,
            ..Query::default()
        };
        let err = select(&ws, query).expect_err("no task").to_string();
        assert!(err.contains("its tasks: build, test"), "{err}");
    }
}

//! The task graph: which tasks run, and what each waits for (DESIGN.md §2 "graph").
//!
//! `dependsOn` entries: `^build` = `build` in each workspace package this one depends on
//! (skipped where that package has no `build`), `pkg#task` = that task (an error if it
//! does not exist), `lint` = `lint` in the same package.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{TaskConfig, Workspace};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TaskId {
    pub package: usize,
    pub task: String,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub id: TaskId,
    /// `package#task`, for people.
    pub label: String,
    /// Indices of the nodes this one waits for.
    pub deps: Vec<usize>,
    /// The merged config (a script alone gives the default config).
    pub config: TaskConfig,
    /// The shell command (config `command`, else the package.json script).
    pub command: String,
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
    #[error("tasks depend on each other in a cycle: {0}")]
    Cycle(String),
}

/// Builds the graph for `roots` (the requested tasks) and everything they depend on.
pub fn build(workspace: &Workspace, roots: &[TaskId]) -> Result<Graph, GraphError> {
    let label = |id: &TaskId| format!("{}#{}", workspace.packages[id.package].name, id.task);
    // Discover the closure, remembering each task's direct dependencies.
    let mut edges: BTreeMap<TaskId, Vec<TaskId>> = BTreeMap::new();
    let mut pending: Vec<TaskId> = roots.to_vec();
    while let Some(id) = pending.pop() {
        if edges.contains_key(&id) {
            continue;
        }
        let package = &workspace.packages[id.package];
        let config = package.tasks.get(&id.task).cloned().unwrap_or_default();
        let mut deps = Vec::new();
        for entry in &config.depends_on {
            if let Some(task) = entry.strip_prefix('^') {
                for dep in &package.dependencies {
                    if let Some(index) = workspace.package_named(dep)
                        && index != id.package
                        && workspace.packages[index].has_task(task)
                    {
                        deps.push(TaskId {
                            package: index,
                            task: task.to_owned(),
                        });
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
                deps.push(dep);
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
                deps.push(dep);
            }
        }
        deps.sort();
        deps.dedup();
        pending.extend(deps.iter().cloned());
        edges.insert(id, deps);
    }
    let order = topological(&edges, &label)?;
    let index: BTreeMap<&TaskId, usize> =
        order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut nodes = Vec::with_capacity(order.len());
    for id in &order {
        let package = &workspace.packages[id.package];
        let config = package.tasks.get(&id.task).cloned().unwrap_or_default();
        let command = match (&config.command, package.scripts.get(&id.task)) {
            (Some(command), _) | (None, Some(command)) => command.clone(),
            (None, None) => {
                return Err(GraphError::NoCommand {
                    label: label(id),
                    task: id.task.clone(),
                    package_json: package.dir.join("package.json").display().to_string(),
                });
            }
        };
        nodes.push(Node {
            id: (*id).clone(),
            label: label(id),
            deps: edges[*id].iter().map(|d| index[d]).collect(),
            config,
            command,
        });
    }
    Ok(Graph { nodes })
}

/// Depth-first topological order; a cycle is reported as the path that closes it.
fn topological<'a>(
    edges: &'a BTreeMap<TaskId, Vec<TaskId>>,
    label: &dyn Fn(&TaskId) -> String,
) -> Result<Vec<&'a TaskId>, GraphError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit<'a>(
        id: &'a TaskId,
        edges: &'a BTreeMap<TaskId, Vec<TaskId>>,
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
        for dep in &edges[id] {
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

/// The requested tasks: `task` in the cwd's package, or with `recursive`/`filters` in every
/// selected package that has it.
pub fn select(
    workspace: &Workspace,
    tasks: &[String],
    current: usize,
    recursive: bool,
    filters: &[String],
) -> Result<Vec<TaskId>, GraphError> {
    let mut selected: BTreeSet<TaskId> = BTreeSet::new();
    for task in tasks {
        // `pkg#task` names a task anywhere.
        if let Some((name, task)) = task.split_once('#') {
            let package = workspace
                .package_named(name)
                .ok_or_else(|| GraphError::NoSuchTask {
                    task: task.to_owned(),
                    scope: format!("package {name:?}"),
                    hint: " (no such package)".into(),
                })?;
            if !workspace.packages[package].has_task(task) {
                return Err(no_such_task(workspace, task, package));
            }
            selected.insert(TaskId {
                package,
                task: task.to_owned(),
            });
            continue;
        }
        if recursive || !filters.is_empty() {
            let mut any = false;
            for (index, package) in workspace.packages.iter().enumerate() {
                let in_filter = filters.is_empty() || filters.iter().any(|f| matches(f, package));
                if in_filter && package.has_task(task) {
                    any = true;
                    selected.insert(TaskId {
                        package: index,
                        task: task.clone(),
                    });
                }
            }
            if !any {
                return Err(GraphError::NoSuchTask {
                    task: task.clone(),
                    scope: "any selected package".into(),
                    hint: String::new(),
                });
            }
        } else {
            if !workspace.packages[current].has_task(task) {
                return Err(no_such_task(workspace, task, current));
            }
            selected.insert(TaskId {
                package: current,
                task: task.clone(),
            });
        }
    }
    Ok(selected.into_iter().collect())
}

fn no_such_task(workspace: &Workspace, task: &str, package: usize) -> GraphError {
    let p = &workspace.packages[package];
    let known: Vec<&str> = p.task_names().into_iter().collect();
    GraphError::NoSuchTask {
        task: task.to_owned(),
        scope: format!("package {:?} ({})", p.name, p.dir.display()),
        hint: if known.is_empty() {
            "; it defines no tasks".into()
        } else {
            format!("; its tasks: {}", known.join(", "))
        },
    }
}

/// A `--filter` pattern: a package-name glob, or a directory (`./packages/*`).
fn matches(filter: &str, package: &crate::config::Package) -> bool {
    let (pattern, subject) = match filter.strip_prefix("./") {
        Some(dir) => (dir, package.rel.to_string_lossy().into_owned()),
        None => (filter, package.name.clone()),
    };
    globset::Glob::new(pattern)
        .map(|g| g.compile_matcher().is_match(&subject))
        .unwrap_or(false)
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
        let roots = select(&ws, &["build".into()], app, false, &[]).expect("select");
        let graph = build(&ws, &roots).expect("graph");
        let labels: Vec<_> = graph.nodes.iter().map(|n| n.label.as_str()).collect();
        assert_eq!(labels, ["app#lint", "lib#build", "app#build"]);
        assert_eq!(graph.nodes[2].deps, [0, 1]);
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
        let roots = select(&ws, &["build".into()], 0, true, &[]).expect("select");
        let err = build(&ws, &roots).expect_err("cycle").to_string();
        assert!(err.contains("a#build → b#build → a#build"), "{err}");
    }

    #[test]
    fn unknown_tasks_list_what_exists() {
        let (_t, ws) = workspace(&[(
            "p/a/package.json",
            r#"{"name":"a","scripts":{"build":"x","test":"y"}}"#,
        )]);
        let a = ws.package_named("a").expect("a");
        let err = select(&ws, &["biuld".into()], a, false, &[])
            .expect_err("no task")
            .to_string();
        assert!(err.contains("its tasks: build, test"), "{err}");
    }
}

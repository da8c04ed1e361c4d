//! Which tasks a command line asks for: `task` in the cwd's package, or in every package
//! chosen by `-r`, `-t`, `-w` and `--filter`; `pkg#task` anywhere.

use std::collections::BTreeSet;

use super::{GraphError, TaskId};
use crate::config::Workspace;

/// A command line's selection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<'a> {
    pub tasks: &'a [String],
    /// The package the cwd is in.
    pub current: usize,
    /// `-r`: every package but the workspace root (pnpm's rule: the root's script is
    /// usually the aggregate, `npm run build -ws`, and would run the packages' tasks a
    /// second time), unless the root is the only package.
    pub recursive: bool,
    /// `-t`: the current package and the workspace packages it depends on, transitively.
    pub transitive: bool,
    /// `-w` / `--include-workspace-root`: the workspace root package (beside `-r` or a
    /// filter: as well).
    pub workspace_root: bool,
    /// `--filter` patterns ([`super::filter`]); one argument may hold several, separated
    /// by spaces.
    pub filters: &'a [String],
    /// `--affected`: the packages changed since the default branch, and their dependents.
    pub affected: bool,
    /// Where `./dir` filters start from (the workspace root if not given).
    pub cwd: Option<&'a std::path::Path>,
}

#[derive(Debug, Clone, Default)]
pub struct Selected {
    pub roots: Vec<TaskId>,
    /// Said on stderr before anything runs (an inclusion filter that matched no package).
    pub warnings: Vec<String>,
}

pub fn select(workspace: &Workspace, query: Query) -> Result<Selected, GraphError> {
    let mut warnings = Vec::new();
    let packages = packages(workspace, query, &mut warnings)?;
    let mut selected: BTreeSet<TaskId> = BTreeSet::new();
    for task in query.tasks {
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
        match &packages {
            Scope::One(package) => {
                if !workspace.packages[*package].has_task(task) {
                    return Err(no_such_task(workspace, task, *package));
                }
                selected.insert(TaskId {
                    package: *package,
                    task: task.clone(),
                });
            }
            Scope::Many(packages) => {
                let with_task: Vec<usize> = packages
                    .iter()
                    .copied()
                    .filter(|p| workspace.packages[*p].has_task(task))
                    .collect();
                if with_task.is_empty() {
                    return Err(GraphError::NoSuchTask {
                        task: task.clone(),
                        scope: "any selected package".into(),
                        hint: String::new(),
                    });
                }
                selected.extend(with_task.into_iter().map(|package| TaskId {
                    package,
                    task: task.clone(),
                }));
            }
        }
    }
    Ok(Selected {
        roots: selected.into_iter().collect(),
        warnings,
    })
}

/// One package (the task must exist there) or several (those that have it run it).
enum Scope {
    One(usize),
    Many(BTreeSet<usize>),
}

fn packages(
    workspace: &Workspace,
    query: Query,
    warnings: &mut Vec<String>,
) -> Result<Scope, GraphError> {
    let all = || (0..workspace.packages.len()).collect::<BTreeSet<usize>>();
    let mut chosen: BTreeSet<usize> = BTreeSet::new();
    let mut many = false;
    if query.recursive {
        chosen.extend(all());
        if workspace.packages.len() > 1 {
            chosen.remove(&0);
        }
        many = true;
    }
    if query.transitive {
        chosen.extend(dependencies(workspace, query.current));
        many = true;
    }
    let mut tokens: Vec<String> = query
        .filters
        .iter()
        .flat_map(|f| f.split_whitespace())
        .map(str::to_owned)
        .collect();
    if query.affected {
        tokens.push(format!("...[{}]", super::filter::affected_base(workspace)?));
    }
    if !tokens.is_empty() {
        let context = super::filter::Context {
            workspace,
            cwd: query.cwd.unwrap_or(&workspace.root),
        };
        let (matched, unmatched) = super::filter::resolve(&context, &tokens)?;
        warnings.extend(unmatched);
        // Filters choose the packages; `-r` beside them adds nothing (pnpm's rule).
        if query.recursive {
            chosen.clear();
        }
        chosen.extend(matched);
        many = true;
    }
    if query.workspace_root {
        if !many {
            return Ok(Scope::One(0));
        }
        chosen.insert(0);
    }
    Ok(if many {
        Scope::Many(chosen)
    } else {
        Scope::One(query.current)
    })
}

/// `package` and every workspace package it depends on, transitively.
fn dependencies(workspace: &Workspace, package: usize) -> BTreeSet<usize> {
    let mut all = super::filter::dependencies_of(workspace, package);
    all.insert(package);
    all
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

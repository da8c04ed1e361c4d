//! `vt run TASK…` and `vt exec`: select, plan, run through the cache, summarize.

use std::process::ExitCode;

use anyhow::Context;

use crate::cache::Cache;
use crate::cache::store::OpenOutcome;
use crate::cli::{ExecArgs, RunArgs};
use crate::config::Workspace;
use crate::graph::{self, Graph, Node, TaskId};
use crate::run::task::{Outcome, TaskResult};
use crate::run::{self, Options};
use crate::signals;

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let workspace = Workspace::find(&cwd)?;
    let current = workspace.package_at(&cwd).unwrap_or(0);
    let roots = graph::select(
        &workspace,
        &args.tasks,
        current,
        args.recursive,
        &args.filter,
    )?;
    let graph = graph::build(&workspace, &roots)?;
    if args.dry_run {
        for node in &graph.nodes {
            let deps: Vec<&str> = node
                .deps
                .iter()
                .map(|d| graph.nodes[*d].label.as_str())
                .collect();
            println!(
                "{}: {}{}",
                node.label,
                node.command,
                if deps.is_empty() {
                    String::new()
                } else {
                    format!("  (after {})", deps.join(", "))
                }
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    execute_graph(&workspace, &graph, &args.common)
}

pub fn exec(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let workspace = Workspace::find(&cwd)?;
    let current = workspace.package_at(&cwd).unwrap_or(0);
    let mut common = args.common;
    let graph = match &args.task {
        Some(task) => {
            let roots = graph::select(&workspace, std::slice::from_ref(task), current, false, &[])?;
            let mut graph = graph::build(&workspace, &roots)?;
            // `exec` runs the one task, not what it depends on.
            graph.nodes.retain(|n| roots.contains(&n.id));
            for node in &mut graph.nodes {
                node.deps.clear();
            }
            graph
        }
        None if !common.args.is_empty() => {
            let command: Vec<String> = std::mem::take(&mut common.args)
                .iter()
                .map(|a| crate::run::plan::quote(&a.to_string_lossy()))
                .collect();
            let command = command.join(" ");
            let mut config = crate::config::TaskConfig::default();
            // Ad-hoc commands run where vt was started.
            if let Ok(rel) = cwd.strip_prefix(&workspace.packages[current].dir) {
                config.cwd = Some(rel.to_string_lossy().into_owned()).filter(|c| !c.is_empty());
            }
            Graph {
                nodes: vec![Node {
                    id: TaskId {
                        package: current,
                        task: format!("exec {command}"),
                    },
                    label: format!("exec: {command}"),
                    deps: vec![],
                    config,
                    command,
                }],
            }
        }
        None => anyhow::bail!("give a task name, or an ad-hoc command after `--`"),
    };
    execute_graph(&workspace, &graph, &common)
}

fn execute_graph(
    workspace: &Workspace,
    graph: &Graph,
    common: &crate::cli::CommonRunArgs,
) -> anyhow::Result<ExitCode> {
    let mut graph = graph.clone();
    for node in &mut graph.nodes {
        if common.sandbox {
            node.config.sandbox = Some(true);
        }
        if common.network {
            node.config.network = Some(true);
        }
    }
    let graph = &graph;
    if graph.nodes.iter().any(|n| n.config.sandbox == Some(true)) {
        if graph.nodes.len() > 1 {
            // Before anything runs: a host that cannot build the sandbox fails every
            // sandboxed task the same way. (A lone task needs no probe: its sandbox fails
            // before exec.)
            sandbox::jail::probe().context("--sandbox cannot work on this host")?;
        }
        eprintln!("vt: sandbox: {}", sandbox::jail::describe_host());
    }
    signals::install()?;
    let cache = if common.no_cache {
        None
    } else {
        let dir = Cache::default_dir(&workspace.root);
        let mut cache = Cache::open(&dir, &workspace.root)?;
        if let Some(remote) = crate::cache::remote::RemoteCache::from_env(common.remote_cache)? {
            eprintln!("vt: remote cache: {}", remote.describe());
            cache.set_remote(remote);
        }
        if let OpenOutcome::Wiped { found } = &cache.opened {
            eprintln!(
                "vt: the cache at {} was written by another vt (schema {}); it was emptied",
                dir.display(),
                found.as_deref().unwrap_or("unreadable")
            );
        }
        Some(cache)
    };
    let options = Options {
        jobs: common
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        log: common.log,
        args: common.args.clone(),
        remote_exec: match (common.remote_exec, &cache) {
            (false, _) => None,
            (true, None) => anyhow::bail!(
                "--remote-exec needs the cache (what workers ran is stored in it): drop --no-cache"
            ),
            (true, Some(_)) => {
                let remote = crate::remote_exec::RemoteExec::from_env()?;
                eprintln!("vt: remote execution: {}", remote.describe());
                Some(remote)
            }
        },
    };
    let started = std::time::Instant::now();
    let results = run::run(workspace, graph, cache.as_ref(), &options)?;
    summarize(&results, started.elapsed(), common.json)?;
    let failed = results.iter().find_map(|r| match r.outcome {
        Outcome::Failed { exit_code, .. } => Some(exit_code),
        _ => None,
    });
    Ok(match failed {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1).max(1)),
        None => ExitCode::SUCCESS,
    })
}

fn summarize(
    results: &[TaskResult],
    elapsed: std::time::Duration,
    json: bool,
) -> anyhow::Result<()> {
    let hits = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Hit { .. }))
        .count();
    let failed = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed { .. }))
        .count();
    let skipped = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Skipped { .. }))
        .count();
    let remote = results.iter().filter(|r| r.worker.is_some()).count();
    let saved_ms: u64 = results
        .iter()
        .map(|r| match r.outcome {
            Outcome::Hit { saved_ms, .. } => saved_ms,
            _ => 0,
        })
        .sum();
    let mut line = format!(
        "vt: {} task{}, {} cached, {:.1} s saved",
        results.len(),
        if results.len() == 1 { "" } else { "s" },
        hits,
        saved_ms as f64 / 1000.0
    );
    if remote > 0 {
        line.push_str(&format!(", {remote} ran on workers"));
    }
    if failed > 0 {
        line.push_str(&format!(", {failed} failed"));
    }
    if skipped > 0 {
        line.push_str(&format!(", {skipped} skipped"));
    }
    line.push_str(&format!(" ({:.1} s)", elapsed.as_secs_f64()));
    eprintln!("{line}");
    if json {
        let value = serde_json::json!({
            "tasks": results,
            "summary": {
                "tasks": results.len(),
                "cached": hits,
                "failed": failed,
                "skipped": skipped,
                "remote": remote,
                "saved_ms": saved_ms,
                "duration_ms": elapsed.as_millis() as u64,
            }
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    }
    Ok(())
}

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

mod details;

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let opens_the_cache = super::run_opens_the_cache(&args);
    let workspace = sandbox::timings::time("workspace", || {
        Workspace::find_scoped_then(&cwd, crate::config::Scope::All, |root| {
            if opens_the_cache {
                crate::cache::early::start(Cache::default_dir(root), root);
            }
        })
    })?;
    if args.last_details {
        return details::print_last(&Cache::default_dir(&workspace.root));
    }
    let current = workspace.package_at(&cwd).unwrap_or(0);
    let Some(first) = args.task.clone() else {
        list_tasks(&workspace, current);
        return Ok(ExitCode::SUCCESS);
    };
    let (tasks, mut extra) = tasks_and_arguments(&workspace, first, &args.rest);
    let selected = graph::select(
        &workspace,
        graph::Query {
            tasks: &tasks,
            current,
            recursive: args.recursive,
            transitive: args.transitive,
            workspace_root: args.workspace_root,
            filters: &args.filter,
            affected: args.affected,
            cwd: Some(&cwd),
        },
    )?;
    for warning in &selected.warnings {
        crate::say!("vt: warning: {warning}");
    }
    let mut graph = graph::build(
        &workspace,
        &selected.roots,
        graph::BuildOptions {
            ignore_depends_on: args.ignore_depends_on,
        },
    )?;
    let mut common = args.common;
    if !extra.is_empty() {
        extra.extend(std::mem::take(&mut common.args));
        common.args = extra;
    }
    apply_flags(&mut graph, &common);
    if let Some(format) = args.graph {
        print!("{}", graph::show::render(&graph, format));
        return Ok(ExitCode::SUCCESS);
    }
    if args.dry_run {
        print_plan(&graph, &common)?;
        return Ok(ExitCode::SUCCESS);
    }
    execute_graph(&workspace, &graph, &common)
}

/// `vt run build test` runs two tasks; `vt run say hello` (vite-task's form) passes `hello`
/// to `say`. The words after the first are tasks only if every one of them names a task.
fn tasks_and_arguments(
    workspace: &Workspace,
    first: String,
    rest: &[String],
) -> (Vec<String>, Vec<std::ffi::OsString>) {
    let (words, after_dashes) = match rest.iter().position(|w| w == "--") {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let names_a_task = |word: &String| match word.split_once('#') {
        Some((package, task)) => workspace
            .package_named(package)
            .is_some_and(|p| workspace.packages[p].has_task(task)),
        None => workspace.packages.iter().any(|p| p.has_task(word)),
    };
    let mut tasks = vec![first];
    let mut extra: Vec<std::ffi::OsString> = Vec::new();
    if words.iter().all(|w| !w.starts_with('-') && names_a_task(w)) {
        tasks.extend(words.iter().cloned());
    } else {
        extra.extend(words.iter().map(Into::into));
    }
    extra.extend(after_dashes.iter().map(Into::into));
    (tasks, extra)
}

/// `vt run` without a task: what there is to run.
fn list_tasks(workspace: &Workspace, current: usize) {
    let mut order: Vec<usize> = (0..workspace.packages.len()).collect();
    order.sort_by_key(|p| *p != current);
    let mut any = false;
    for index in order {
        let package = &workspace.packages[index];
        let names = package.task_names();
        if names.is_empty() {
            continue;
        }
        any = true;
        let here = if index == current { " (here)" } else { "" };
        println!("{}{here}:", package.name);
        for name in names {
            let command = package
                .tasks
                .get(name)
                .and_then(|t| t.command.as_deref())
                .or_else(|| package.scripts.get(name).map(String::as_str))
                .unwrap_or("");
            println!("  {name}: {command}");
        }
    }
    if any {
        crate::say!(
            "vt: give a task to run: `vt run TASK` (here), `vt run -r TASK` (every package)"
        );
    } else {
        crate::say!(
            "vt: no tasks in {}: add scripts to a package.json",
            workspace.root.display()
        );
    }
}

/// `--dry-run`: the nodes in order, with what each waits for and why.
fn print_plan(graph: &Graph, common: &crate::cli::CommonRunArgs) -> anyhow::Result<()> {
    let args: Vec<String> = common
        .args
        .iter()
        .map(|a| crate::run::plan::quote(&a.to_string_lossy()))
        .collect();
    let command = |node: &Node| {
        if node.extra_args && !args.is_empty() {
            format!("{} {}", node.command, args.join(" "))
        } else {
            node.command.clone()
        }
    };
    let cached = |node: &Node| !common.no_cache && node.cache;
    if common.json {
        let nodes: Vec<serde_json::Value> = graph
            .nodes
            .iter()
            .map(|node| {
                serde_json::json!({
                    "task": node.label,
                    "command": command(node),
                    "cache": cached(node),
                    "after": node.deps.iter().map(|d| serde_json::json!({
                        "task": graph.nodes[d.node].label,
                        "via": d.via.to_string(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "tasks": nodes }))?
        );
        return Ok(());
    }
    for node in &graph.nodes {
        let deps: Vec<String> = node
            .deps
            .iter()
            .map(|d| format!("{} ({})", graph.nodes[d.node].label, d.via))
            .collect();
        println!(
            "{}: {}{}{}",
            node.label,
            command(node),
            if cached(node) { "" } else { "  [not cached]" },
            if deps.is_empty() {
                String::new()
            } else {
                format!("  after {}", deps.join(", "))
            }
        );
    }
    Ok(())
}

pub fn exec(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let config = sandbox::timings::phase("workspace and graph");
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut common = args.common;
    // An ad-hoc command names no other package: only those holding the cwd are read. A
    // watch reads them all (it follows every package's config).
    let scope = if args.task.is_none() && !common.watch {
        crate::config::Scope::Holding(&cwd)
    } else {
        crate::config::Scope::All
    };
    let opens_the_cache = !common.no_cache;
    let workspace = Workspace::find_scoped_then(&cwd, scope, |root| {
        if opens_the_cache {
            crate::cache::early::start(Cache::default_dir(root), root);
        }
    })?;
    let current = workspace.package_at(&cwd).unwrap_or(0);
    let mut graph = match &args.task {
        Some(task) => {
            let query = graph::Query {
                tasks: std::slice::from_ref(task),
                current,
                ..graph::Query::default()
            };
            let roots = graph::select(&workspace, query)?.roots;
            // `exec` runs the one task (its steps and hooks), not what it depends on.
            let options = graph::BuildOptions {
                ignore_depends_on: true,
            };
            graph::build(&workspace, &roots, options)?
        }
        None if !common.args.is_empty() => {
            let command: Vec<String> = std::mem::take(&mut common.args)
                .iter()
                .map(|a| crate::run::plan::quote(&a.to_string_lossy()))
                .collect();
            let command = command.join(" ");
            let id = TaskId {
                package: current,
                task: format!("exec {command}"),
            };
            let mut config = crate::config::TaskConfig::default();
            // Ad-hoc commands run where vt was started.
            if let Ok(rel) = cwd.strip_prefix(&workspace.packages[current].dir) {
                config.cwd = Some(rel.to_string_lossy().into_owned()).filter(|c| !c.is_empty());
            }
            Graph {
                nodes: vec![Node {
                    id: id.clone(),
                    origin: id,
                    label: format!("exec: {command}"),
                    deps: vec![],
                    config,
                    command,
                    extra_args: false,
                    cache: true,
                    uncached_because: "",
                    persistent: false,
                }],
            }
        }
        None => anyhow::bail!("give a task name, or an ad-hoc command after `--`"),
    };
    apply_flags(&mut graph, &common);
    config.end();
    execute_graph(&workspace, &graph, &common)
}

/// What `--cache`, `--sandbox` and `--network` say for every task, over its config.
fn apply_flags(graph: &mut Graph, common: &crate::cli::CommonRunArgs) {
    for node in &mut graph.nodes {
        // `--cache` caches what its config does not, but never a task that does not end.
        if common.cache && !node.persistent {
            node.cache = true;
        }
        if common.sandbox {
            node.config.sandbox = Some(true);
        }
        if common.network {
            node.config.network = Some(true);
        }
    }
}

/// After a run: a cache over its size limit is pruned (least recently used first).
fn keep_within_limit(workspace: &Workspace, cache: &Cache) {
    use crate::cache::limit;
    let max = match limit::size_limit(workspace.settings.cache_max_size, cache.dir()) {
        Ok(limit) => limit.bytes,
        Err(e) => {
            crate::say!("vt: warning: {e}; the cache is not pruned");
            return;
        }
    };
    match cache.prune_if_over(max) {
        None => {}
        Some(Ok(pruned)) => crate::say!(
            "vt: the cache was over its limit of {}: removed {} least recently used of {} entries ({} → {})",
            limit::human(max.unwrap_or_default()),
            pruned.removed_entries,
            pruned.entries,
            limit::human(pruned.size_before),
            limit::human(pruned.size_after)
        ),
        Some(Err(e)) => crate::say!("vt: warning: cannot prune the cache: {e}"),
    }
}

fn execute_graph(
    workspace: &Workspace,
    graph: &Graph,
    common: &crate::cli::CommonRunArgs,
) -> anyhow::Result<ExitCode> {
    if graph.nodes.iter().any(|n| n.config.sandbox == Some(true)) {
        if graph.nodes.len() > 1 {
            // Before anything runs: a host that cannot build the sandbox fails every
            // sandboxed task the same way. (A lone task needs no probe: its sandbox fails
            // before exec.)
            sandbox::jail::probe().context("--sandbox cannot work on this host")?;
        }
        crate::say!("vt: sandbox: {}", sandbox::jail::describe_host());
    }
    sandbox::timings::time("signal thread", signals::install)?;
    let dir = Cache::default_dir(&workspace.root);
    let cache = if common.no_cache {
        None
    } else {
        let opened = sandbox::timings::time("cache open", || {
            crate::cache::early::take(&dir).map_or_else(|| Cache::open(&dir, &workspace.root), Ok)
        });
        match opened {
            Ok(cache) => Some(cache),
            Err(e) => {
                // The cache is an optimisation: a build it cannot serve still runs.
                crate::say!(
                    "vt: warning: {e:#}\n  running every task without the cache\n  hint: point VT_CACHE_DIR at a directory vt can write, or pass --no-cache"
                );
                None
            }
        }
    };
    let cache = match cache {
        None => None,
        Some(mut cache) => {
            if let Some(remote) = crate::cache::remote::RemoteCache::from_env(common.remote_cache)?
            {
                crate::say!("vt: remote cache: {}", remote.describe());
                cache.set_remote(remote);
            }
            if let OpenOutcome::Wiped { found } = &cache.opened {
                crate::say!(
                    "vt: the cache at {} was written by another vt (schema {}); it was emptied",
                    dir.display(),
                    found.as_deref().unwrap_or("unreadable")
                );
            }
            Some(cache)
        }
    };
    let options = Options {
        jobs: common.jobs.unwrap_or_else(sandbox::cpus),
        log: common.log,
        args: common.args.clone(),
        keep_going: common.keep_going,
        watch: common.watch,
        remote_exec: match (common.remote_exec, &cache) {
            (false, _) => None,
            (true, None) => anyhow::bail!(
                "--remote-exec needs the cache (what workers ran is stored in it): drop --no-cache"
            ),
            (true, Some(_)) => {
                let remote = crate::remote_exec::RemoteExec::from_env()?;
                crate::say!("vt: remote execution: {}", remote.describe());
                Some(Box::new(remote) as Box<dyn crate::run::offload::Offload>)
            }
        },
    };
    if common.watch {
        let debounce = std::time::Duration::from_millis(common.debounce);
        let reload = crate::watch::follow(
            workspace,
            graph,
            cache.as_ref(),
            &options,
            debounce,
            |round| {
                let this_round: Vec<TaskResult> = round
                    .ran
                    .results
                    .iter()
                    .zip(round.rerun)
                    .filter(|(_, rerun)| **rerun)
                    .map(|(result, _)| result.clone())
                    .collect();
                summarize(&this_round, round.elapsed, common.json)?;
                let details = details::Details::of(graph, &round.ran.results);
                if common.verbose {
                    crate::say_raw!("{}", details.render());
                }
                details.save(&dir);
                if let Some(cache) = &cache {
                    keep_within_limit(workspace, cache);
                }
                Ok(())
            },
        )?;
        // The configuration changed: start again as a new vt, with the same arguments, so
        // the workspace, the graph and every flag are read exactly as at the start.
        crate::say!("vt: watch: {} → reloading the task graph", reload.why);
        drop(cache);
        return Err(restart().context("--watch cannot reload the task graph"));
    }
    let started = std::time::Instant::now();
    let ran = sandbox::timings::time("run", || {
        run::run(workspace, graph, cache.as_ref(), &options)
    })?;
    let results = ran.results;
    let after = sandbox::timings::phase("summary and details");
    summarize(&results, started.elapsed(), common.json)?;
    let details = details::Details::of(graph, &results);
    if common.verbose {
        crate::say_raw!("{}", details.render());
    }
    details.save(&dir);
    after.end();
    if let Some(cache) = &cache {
        sandbox::timings::time("size limit", || keep_within_limit(workspace, cache));
    }
    sandbox::timings::time("cache close", || drop(cache));
    Ok(match ran.first_failure {
        Some((_, code)) => ExitCode::from(u8::try_from(code).unwrap_or(1).max(1)),
        None => ExitCode::SUCCESS,
    })
}

/// Replaces this vt with a fresh one, same binary and arguments; returns only on failure.
fn restart() -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return anyhow::Error::new(e).context("cannot find vt's own binary"),
    };
    let error = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .exec();
    anyhow::Error::new(error).context(format!("cannot run {}", exe.display()))
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
    crate::say!("{line}");
    // The ones to look at, named (a long run's failure scrolled away long ago; a single
    // task's is the line above).
    for result in results.iter().filter(|_| results.len() > 1) {
        match &result.outcome {
            Outcome::Failed { exit_code, .. } => {
                crate::say!("vt:   failed:  {} (exit {exit_code})", result.task)
            }
            Outcome::Skipped { because } => {
                crate::say!("vt:   skipped: {} ({because} failed)", result.task)
            }
            _ => {}
        }
    }
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

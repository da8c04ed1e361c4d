//! `vt cache stats|prune|clean|verify|explain`.

use std::process::ExitCode;

use anyhow::Context;

use crate::cache::entry::{self, Output, PathSetRecord, Stored};
use crate::cache::key::{Key, content};
use crate::cache::limit::{self, SizeLimit};
use crate::cache::prune::{self, Limits};
use crate::cache::store::{Family, Store};
use crate::cache::{Cache, lease};
use crate::cli::CacheCommand;
use crate::config::Workspace;
use crate::graph;

pub fn run(command: CacheCommand) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let workspace = Workspace::find(&cwd)?;
    let dir = Cache::default_dir(&workspace.root);
    let size_limit =
        || limit::size_limit(workspace.settings.cache_max_size, &dir).map_err(anyhow::Error::msg);
    match command {
        CacheCommand::Clean => {
            // Under the lock: never delete a cache another vt is writing. The lock files
            // stay, so a vt waiting on them keeps a valid lock.
            let lock = lease::DirLock::acquire(&dir)?;
            let entries = std::fs::read_dir(&dir)
                .with_context(|| format!("cannot read {}", dir.display()))?;
            for entry in entries {
                let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
                let name = entry.file_name();
                if name == lease::LOCK_FILE || name == lease::WANT_FILE {
                    continue;
                }
                let path = entry.path();
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.with_context(|| format!("cannot remove {}", path.display()))?;
            }
            drop(lock);
            crate::say!("vt: emptied {}", dir.display());
            for copy in crate::cache::damaged_copies(&dir) {
                std::fs::remove_dir_all(&copy)
                    .with_context(|| format!("cannot remove {}", copy.display()))?;
                crate::say!("vt: removed the damaged copy {}", copy.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Stats => {
            let limit = size_limit()?;
            let cache = Cache::open(&dir, &workspace.root)?;
            // Read-write: the opening folds in the deferred times of use it reports.
            let store = cache.store_to_write()?;
            stats(&store, &limit)?;
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Prune { max_size, max_age } => {
            let max_size = match max_size {
                Some(text) => Some(limit::parse_size(&text).map_err(anyhow::Error::msg)?),
                None => size_limit()?.bytes,
            };
            let max_age = max_age
                .map(|text| limit::parse_age(&text).map_err(anyhow::Error::msg))
                .transpose()?;
            let cache = Cache::open(&dir, &workspace.root)?;
            let pruned = cache.prune(Limits { max_size, max_age })?;
            crate::say!(
                "vt: pruned {} of {} entries ({} blobs, {} path sets): {} → {}",
                pruned.removed_entries,
                pruned.entries,
                pruned.removed_blobs,
                pruned.removed_path_sets,
                limit::human(pruned.size_before),
                limit::human(pruned.size_after)
            );
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Verify => {
            let cache = Cache::open(&dir, &workspace.root)?;
            let problems = verify(&*cache.store()?)?;
            for problem in &problems {
                println!("{problem}");
            }
            // Not problems of this cache (vt never reads them), but what a damage left.
            for copy in crate::cache::damaged_copies(&dir) {
                println!(
                    "set aside: {} (a damaged cache vt moved away; it is not used: inspect it, \
                     then remove it or run `vt cache clean`)",
                    copy.display()
                );
            }
            if problems.is_empty() {
                crate::say!(
                    "vt: cache verified: every entry decodes and every blob matches its hash"
                );
                Ok(ExitCode::SUCCESS)
            } else {
                crate::say!(
                    "vt: {} problem(s) found; `vt cache clean` starts over",
                    problems.len()
                );
                Ok(ExitCode::FAILURE)
            }
        }
        CacheCommand::Explain { task } => {
            let cache = Cache::open(&dir, &workspace.root)?;
            let current = workspace.package_at(&cwd).unwrap_or(0);
            let query = graph::Query {
                tasks: std::slice::from_ref(&task),
                current,
                ..graph::Query::default()
            };
            let roots = graph::select(&workspace, query)?.roots;
            let graph = graph::build(&workspace, &roots, graph::BuildOptions::default())?;
            let node = graph
                .nodes
                .iter()
                .find(|n| roots.contains(&n.id))
                .context("task not in graph")?;
            // Dependencies as they were last stored.
            let dep_keys: Vec<(String, String)> = node
                .deps
                .iter()
                .map(|d| {
                    let label = graph.nodes[d.node].label.clone();
                    let key = match cache.last_run(&label) {
                        Ok(Some((stored, _))) => stored.result_key().hex(),
                        _ => String::new(),
                    };
                    (label, key)
                })
                .collect();
            let plan = crate::run::plan::plan(&workspace, node, &dep_keys, &[])?;
            match cache.lookup(&plan.label, &plan.pre, &plan.observation_env()) {
                crate::cache::Lookup::Hit { key, .. } => {
                    println!("{}: cache hit ({key})", plan.label)
                }
                crate::cache::Lookup::Miss { reason } => {
                    println!("{}: cache miss: {reason}", plan.label)
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn stats(store: &Store, limit: &SizeLimit) -> anyhow::Result<()> {
    let usage = prune::usage(store)?;
    let ago = |secs: Option<u64>| match secs {
        None => "-".to_owned(),
        Some(secs) => {
            let age = crate::cache::now_secs().saturating_sub(secs);
            format!(
                "{} ago",
                humantime::format_duration(std::time::Duration::from_secs(age))
            )
        }
    };
    println!("cache:       {}", store.path().display());
    println!("size:        {}", limit::human(store.disk_usage()));
    println!("limit:       {}", limit.describe());
    println!("entries:     {}", usage.entries);
    println!("oldest use:  {}", ago(usage.oldest_use));
    println!("newest use:  {}", ago(usage.newest_use));
    for copy in crate::cache::damaged_copies(store.path()) {
        println!("set aside:   {} (damaged, not used)", copy.display());
    }
    Ok(())
}

/// Every entry decodes, its path set is there, every blob it names exists and matches its
/// hash, every path set decodes.
pub fn verify(store: &Store) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let name = |key: &[u8]| -> String { key.iter().take(8).map(|b| format!("{b:02x}")).collect() };
    for (key, value) in store.scan_prefix(Family::Entries, b"")? {
        let name = name(&key);
        let entry: Stored = match entry::decode(&value) {
            Ok(entry) => entry,
            Err(e) => {
                problems.push(format!("entry {name}: {e}"));
                continue;
            }
        };
        if store.get(Family::Sets, entry.path_set.0)?.is_none() {
            problems.push(format!(
                "entry {name} ({}): its path set is missing",
                entry.task
            ));
        }
        let mut blobs: Vec<(Key, String)> = vec![(entry.log, "log".to_owned())];
        for output in &entry.outputs {
            if let Output::File { blob, path, .. } = output {
                blobs.push((*blob, path.display()));
            }
        }
        for (blob, what) in blobs {
            match store.get(Family::Blobs, blob.0)? {
                None => problems.push(format!(
                    "entry {name} ({}): blob for {what} is missing",
                    entry.task
                )),
                Some(bytes) if content(&bytes) != blob => problems.push(format!(
                    "entry {name} ({}): blob for {what} is corrupt",
                    entry.task
                )),
                Some(_) => {}
            }
        }
    }
    for (key, value) in store.scan_prefix(Family::Sets, b"")? {
        if let Err(e) = entry::decode::<PathSetRecord>(&value) {
            problems.push(format!("path set {}: {e}", name(&key)));
        }
    }
    Ok(problems)
}

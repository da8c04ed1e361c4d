//! `vt cache stats|clean|verify|explain`.

use std::process::ExitCode;

use anyhow::Context;

use crate::cache::Cache;
use crate::cache::entry::{self, Entry, Output, PathSetRecord};
use crate::cache::key::content;
use crate::cache::store::Family;
use crate::cli::CacheCommand;
use crate::config::Workspace;
use crate::graph;

pub fn run(command: CacheCommand) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let workspace = Workspace::find(&cwd)?;
    let dir = Cache::default_dir(&workspace.root);
    match command {
        CacheCommand::Clean => {
            // Take the lock first: never delete a cache another vt is writing.
            let cache = Cache::open(&dir, &workspace.root)?;
            drop(cache);
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
            eprintln!("vt: removed {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Stats => {
            let cache = Cache::open(&dir, &workspace.root)?;
            let count = |family| {
                cache.store().scan_prefix(family, b"").map(|rows| {
                    (
                        rows.len(),
                        rows.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>(),
                    )
                })
            };
            println!("cache: {}", dir.display());
            for (name, family) in [
                ("entries", Family::Entries),
                ("path sets", Family::PathSets),
                ("blobs", Family::Blobs),
                ("stat memo", Family::StatMemo),
            ] {
                let (rows, bytes) = count(family)?;
                println!(
                    "  {name:<10} {rows:>8}  {:>10.1} KiB",
                    bytes as f64 / 1024.0
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Verify => {
            let cache = Cache::open(&dir, &workspace.root)?;
            let problems = verify(&cache)?;
            for problem in &problems {
                println!("{problem}");
            }
            if problems.is_empty() {
                eprintln!(
                    "vt: cache verified: every entry decodes and every blob matches its hash"
                );
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
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
                    let key = cache
                        .store()
                        .get(
                            Family::Meta,
                            [b"last/".as_slice(), label.as_bytes()].concat(),
                        )
                        .ok()
                        .flatten()
                        .map(|k| k.iter().map(|b| format!("{b:02x}")).collect())
                        .unwrap_or_default();
                    (label, key)
                })
                .collect();
            let plan = crate::run::plan::plan(&workspace, node, &dep_keys, &[])?;
            match cache.lookup(&plan.label, &plan.pre, &crate::ipc::process_env()) {
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

/// Every entry decodes, every blob it names exists and matches its hash, every path set
/// decodes.
pub fn verify(cache: &Cache) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let store = cache.store();
    for (key, value) in store.scan_prefix(Family::Entries, b"")? {
        let name: String = key.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let entry: Entry = match entry::decode(&value) {
            Ok(entry) => entry,
            Err(e) => {
                problems.push(format!("entry {name}: {e}"));
                continue;
            }
        };
        let mut blobs = vec![(entry.log, "log".to_owned())];
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
    for (key, value) in store.scan_prefix(Family::PathSets, b"")? {
        if let Err(e) = entry::decode::<PathSetRecord>(&value) {
            let name: String = key.iter().take(8).map(|b| format!("{b:02x}")).collect();
            problems.push(format!("path set {name}: {e}"));
        }
    }
    Ok(problems)
}

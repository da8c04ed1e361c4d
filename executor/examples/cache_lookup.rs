//! Benchmark: cache lookup time per task, and database size, at 1k / 10k / 100k entries.
//!
//! `cargo run --release -p vt-executor --example cache_lookup` (bench/run runs it). For each
//! size it fills a fresh cache (100 tasks × N/100 variants, 20 observed files each) and times
//! lookups that hit and lookups that miss, as `vt run` makes them.

use std::collections::BTreeMap;
use std::time::Instant;

use executor::cache::entry::Entry;
use executor::cache::key::Key;
use executor::cache::path_set::{CachePath, ObsKind, Observation};
use executor::cache::store::Batch;
use executor::cache::{Cache, Lookup, PreRun};

fn main() -> anyhow::Result<()> {
    println!(
        "| entries | fill (s) | lookup that hits (µs) | lookup that misses, with its explanation (µs) | database size (MiB) | per entry (KB) | open + close (ms) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for entries in [1_000, 10_000, 100_000] {
        measure(entries)?;
    }
    Ok(())
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn measure(entries: usize) -> anyhow::Result<()> {
    let variants = entries / 100;
    let temp = tempfile::tempdir()?;
    let root = temp.path().join("ws");
    std::fs::create_dir_all(root.join("src"))?;
    for i in 0..200 {
        std::fs::write(
            root.join(format!("src/f{i}.js")),
            format!("export const v{i} = {i};\n"),
        )?;
    }
    let cache = Cache::open(&temp.path().join("cache"), &root)?;
    let env = BTreeMap::new();
    let pre = |task: usize, variant: usize| {
        let mut pre = PreRun::default();
        pre.add("task", format!("t{task}"));
        pre.add("command", format!("build --variant {variant}"));
        pre
    };
    let observations = |task: usize| -> Vec<Observation> {
        (0..20)
            .map(|j| {
                Observation::new(
                    ObsKind::Content,
                    CachePath(format!("src/f{}.js", (task + j) % 200).into_bytes()),
                )
            })
            .collect()
    };
    let started = Instant::now();
    for task in 0..100 {
        let observed = observations(task);
        let values = cache.observe_all(&observed, &env);
        for variant in 0..variants {
            let pre = pre(task, variant);
            let entry = Entry {
                task: format!("t{task}"),
                pre_key: pre.key(),
                pre_parts: pre.parts.clone(),
                observations: observed.clone(),
                values: values.clone(),
                outputs: vec![],
                log: Key([0; 32]),
                exit_code: 0,
                duration_ms: 1,
            };
            cache.put(&entry, Batch::default())?;
        }
    }
    let fill = started.elapsed().as_secs_f64();

    let rounds = 5;
    let mut hit_times = Vec::new();
    let mut miss_times = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        for task in 0..100 {
            match cache.lookup(&format!("t{task}"), &pre(task, variants / 2), &env) {
                Lookup::Hit { .. } => {}
                Lookup::Miss { reason } => anyhow::bail!("expected a hit: {reason}"),
            }
        }
        hit_times.push(started.elapsed().as_secs_f64() / 100.0);
        let started = Instant::now();
        for task in 0..100 {
            if let Lookup::Hit { .. } =
                cache.lookup(&format!("t{task}"), &pre(task, variants), &env)
            {
                anyhow::bail!("expected a miss");
            }
        }
        miss_times.push(started.elapsed().as_secs_f64() / 100.0);
    }
    hit_times.sort_by(f64::total_cmp);
    miss_times.sort_by(f64::total_cmp);
    if std::env::var_os("VT_BENCH_FAMILIES").is_some() {
        let store = cache.store()?;
        for family in executor::cache::store::Family::ALL {
            let rows = store.scan_prefix(family, b"")?;
            let bytes: usize = rows.iter().map(|(k, v)| k.len() + v.len()).sum();
            eprintln!(
                "{entries}: {}: {} rows, {bytes} bytes",
                family.name(),
                rows.len()
            );
        }
    }
    // The size at rest: what is in memory and the write-ahead log written to table files.
    cache.store()?.compact()?;
    drop(cache);
    let bytes = dir_size(&temp.path().join("cache"));
    // What a vt pays each time it takes the database back from another (see `cache::lease`).
    let mut reopen_times = Vec::new();
    for _ in 0..rounds * 4 {
        let started = Instant::now();
        let store = executor::cache::store::Store::reopen(&temp.path().join("cache"))?;
        drop(store);
        reopen_times.push(started.elapsed().as_secs_f64());
    }
    reopen_times.sort_by(f64::total_cmp);
    let size = bytes as f64 / (1024.0 * 1024.0);
    println!(
        "| {entries} | {fill:.2} | {:.0} | {:.0} | {size:.1} | {:.2} | {:.1} |",
        hit_times[rounds / 2] * 1e6,
        miss_times[rounds / 2] * 1e6,
        bytes as f64 / entries as f64 / 1000.0,
        reopen_times[reopen_times.len() / 2] * 1e3
    );
    Ok(())
}

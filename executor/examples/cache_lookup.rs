//! Benchmark: cache lookup time per task with 10 000 entries in the store.
//!
//! `cargo run --release -p vt-executor --example cache_lookup` (bench/run runs it). It fills
//! a fresh cache with 10 000 entries (100 tasks × 100 variants, 20 observed files each) and
//! times lookups that hit and lookups that miss, as `vt run` makes them.

use std::collections::BTreeMap;
use std::time::Instant;

use executor::cache::entry::Entry;
use executor::cache::key::Key;
use executor::cache::observe::{CachePath, ObsKind, Observation};
use executor::cache::store::Batch;
use executor::cache::{Cache, Lookup, PreRun};

fn main() -> anyhow::Result<()> {
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
            .map(|j| Observation {
                kind: ObsKind::Content,
                path: CachePath(format!("src/f{}.js", (task + j) % 200).into_bytes()),
            })
            .collect()
    };
    let started = Instant::now();
    for task in 0..100 {
        let observed = observations(task);
        let values = cache.observe_all(&observed, &env);
        for variant in 0..100 {
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
    println!(
        "filled 10000 entries in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    let rounds = 5;
    let mut hit_times = Vec::new();
    let mut miss_times = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        for task in 0..100 {
            match cache.lookup(&format!("t{task}"), &pre(task, 42), &env) {
                Lookup::Hit { .. } => {}
                Lookup::Miss { reason } => anyhow::bail!("expected a hit: {reason}"),
            }
        }
        hit_times.push(started.elapsed().as_secs_f64() / 100.0);
        let started = Instant::now();
        for task in 0..100 {
            if let Lookup::Hit { .. } = cache.lookup(&format!("t{task}"), &pre(task, 1000), &env) {
                anyhow::bail!("expected a miss");
            }
        }
        miss_times.push(started.elapsed().as_secs_f64() / 100.0);
    }
    hit_times.sort_by(f64::total_cmp);
    miss_times.sort_by(f64::total_cmp);
    println!(
        "| entries | lookup that hits (µs, median of {rounds}) | lookup that misses, with its explanation (µs) |"
    );
    println!("|---|---|---|");
    println!(
        "| 10000 | {:.0} | {:.0} |",
        hit_times[rounds / 2] * 1e6,
        miss_times[rounds / 2] * 1e6
    );
    Ok(())
}

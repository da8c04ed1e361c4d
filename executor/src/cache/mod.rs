//! The cache (DESIGN.md §4): two-phase lookup, entries, output archives, explanations.
//!
//! 1. The **pre-run key** hashes what is known before running: task identity, command,
//!    cwd, declared env values, declared input files, dependency keys, platform.
//! 2. Under it live the **path sets** earlier runs observed. Each is observed *now*; the
//!    observations give the **post-run key**, and an entry under it is a hit. Several path
//!    sets per pre-run key let a task whose inputs depend on the branch hit on both.

pub mod archive;
pub mod entry;
pub mod guard;
pub mod key;
pub mod lock;
pub mod observe;
pub mod remote;
pub mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use entry::{Entry, PathSetRecord, PreParts};
use key::{Key, KeyHasher};
use observe::{Moved, Observation, RunCheck, StatMemo, observe, path_set_id, post_key};
use store::{Batch, Family, OpenOutcome, Store, StoreError};

/// Everything the pre-run key is made of, by name (names show up in miss reasons).
#[derive(Debug, Clone, Default)]
pub struct PreRun {
    pub parts: PreParts,
}

impl PreRun {
    pub fn add(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.parts.push((name.into(), value.into()));
    }

    pub fn key(&self) -> Key {
        let mut hasher = KeyHasher::new("pre-run");
        hasher.field(store::SCHEMA_VERSION.to_string().as_bytes());
        for (name, value) in &self.parts {
            hasher.field(name.as_bytes()).field(value.as_bytes());
        }
        hasher.finish()
    }
}

pub enum Lookup {
    /// `remote`: found in the remote cache (and now written to the local one).
    Hit {
        key: Key,
        entry: Box<Entry>,
        remote: bool,
    },
    Miss {
        reason: String,
    },
}

pub struct Cache {
    store: Store,
    root: PathBuf,
    _lock: lock::CacheLock,
    pub opened: OpenOutcome,
    /// The second level, if configured (`VT_REMOTE_CACHE`).
    remote: Option<remote::RemoteCache>,
}

fn meta_last(task: &str) -> Vec<u8> {
    [b"last/".as_slice(), task.as_bytes()].concat()
}

/// Moves the database files in `dir` to a sibling `NAME.damaged-SECONDS`, leaving the lock
/// file (held by this process; other vt processes wait on it) where it is.
fn set_aside(dir: &Path) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cache".into());
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = dir.with_file_name(format!("{name}.damaged-{seconds}-{}", std::process::id()));
    std::fs::create_dir_all(&aside)
        .with_context(|| format!("cannot set the damaged cache aside in {}", aside.display()))?;
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the cache directory {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        if entry.file_name() == lock::LOCK_FILE {
            continue;
        }
        std::fs::rename(entry.path(), aside.join(entry.file_name())).with_context(|| {
            format!(
                "cannot move {} to {}",
                entry.path().display(),
                aside.display()
            )
        })?;
    }
    Ok(aside)
}

impl Cache {
    /// `<workspace>/node_modules/.cache/vt`, or `$VT_CACHE_DIR`.
    pub fn default_dir(root: &Path) -> PathBuf {
        match std::env::var_os("VT_CACHE_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => root.join("node_modules/.cache/vt"),
        }
    }

    pub fn open(dir: &Path, root: &Path) -> anyhow::Result<Cache> {
        let lock = lock::CacheLock::acquire(dir)?;
        let (store, opened) = match Store::open(dir) {
            Err(error) if error.is_damage() => {
                // The cache is an optimisation: a damaged one is kept for inspection and the
                // run goes on with a fresh one (nothing from the damaged copy is trusted).
                let aside = set_aside(dir)?;
                eprintln!(
                    "vt: warning: the cache at {} is damaged ({}); it was moved to {} (inspect or delete it) and this run starts a fresh cache",
                    dir.display(),
                    error.detail().trim(),
                    aside.display()
                );
                Store::open(dir)?
            }
            other => other?,
        };
        if opened != OpenOutcome::Reused {
            // Creating the cache directory changed its parents (`node_modules/.cache`),
            // which a task may list: that was before any task this vt starts.
            guard::settled();
        }
        Ok(Cache {
            store,
            root: root.to_path_buf(),
            _lock: lock,
            opened,
            remote: None,
        })
    }

    /// Adds the remote cache as a second level behind this one.
    pub fn set_remote(&mut self, remote: remote::RemoteCache) {
        self.remote = Some(remote);
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Observes every path set stored under `pre`; the first whose observations lead to an
    /// entry is a hit.
    pub fn lookup(&self, task: &str, pre: &PreRun, env: &BTreeMap<String, String>) -> Lookup {
        let pre_key = pre.key();
        let memo = StatMemo::new(&self.store);
        let sets = match self.store.scan_prefix(Family::PathSets, &pre_key.0) {
            Ok(sets) => sets,
            Err(e) => {
                return Lookup::Miss {
                    reason: format!("cannot read the cache: {e}"),
                };
            }
        };
        let mut corrupt = None;
        for (key, value) in &sets {
            let record: PathSetRecord = match entry::decode(value) {
                Ok(record) => record,
                Err(e) => {
                    corrupt = Some(format!("a path set under this key is corrupt: {e}"));
                    continue;
                }
            };
            let set_key = Key(key[32..].try_into().unwrap_or([0; 32]));
            let values: Vec<String> = record
                .observations
                .iter()
                .map(|o| observe(o, &self.root, env, &memo))
                .collect();
            let post = post_key(&pre_key, &set_key, &values);
            match self.store.get(Family::Entries, post.0) {
                Ok(Some(bytes)) => match entry::decode::<Entry>(&bytes) {
                    Ok(entry) => {
                        memo.flush();
                        return Lookup::Hit {
                            key: post,
                            entry: Box::new(entry),
                            remote: false,
                        };
                    }
                    Err(e) => corrupt = Some(format!("the entry {post} is corrupt: {e}")),
                },
                Ok(None) => {}
                Err(e) => corrupt = Some(format!("cannot read entry {post}: {e}")),
            }
        }
        memo.flush();
        let mut remote_reason = None;
        if let Some(remote) = &self.remote {
            match remote.lookup(self, pre, env) {
                remote::RemoteLookup::Hit { post, entry } => {
                    return Lookup::Hit {
                        key: post,
                        entry,
                        remote: true,
                    };
                }
                remote::RemoteLookup::Miss(reason) => remote_reason = reason,
            }
        }
        let mut reason = corrupt.unwrap_or_else(|| self.explain(task, pre, env));
        if let Some(remote) = remote_reason {
            reason.push_str(&format!(" (remote cache: {remote})"));
        }
        Lookup::Miss { reason }
    }

    /// Why `task` would not hit: what differs from its last stored run.
    pub fn explain(&self, task: &str, pre: &PreRun, env: &BTreeMap<String, String>) -> String {
        let last = match self.last_entry(task) {
            Ok(Some(entry)) => entry,
            Ok(None) => return "no previous run".into(),
            Err(e) => return format!("the last entry is unreadable: {e}"),
        };
        let mut changes = Vec::new();
        if last.pre_key != pre.key() {
            let before: BTreeMap<_, _> = last.pre_parts.iter().cloned().collect();
            let now: BTreeMap<_, _> = pre.parts.iter().cloned().collect();
            for (name, value) in &now {
                match before.get(name) {
                    Some(old) if old == value => {}
                    Some(old) => changes.push(describe_part(name, Some(old), Some(value))),
                    None => changes.push(describe_part(name, None, Some(value))),
                }
            }
            for (name, old) in &before {
                if !now.contains_key(name) {
                    changes.push(describe_part(name, Some(old), None));
                }
            }
            if changes.is_empty() {
                changes.push("the cache key changed (vt version or platform)".into());
            }
        } else {
            let memo = StatMemo::new(&self.store);
            // One reason per path: a file read and stat'ed changes both observations, and
            // "content changed" says it (Content sorts before Meta).
            let mut explained = std::collections::BTreeSet::new();
            for (observation, before) in last.observations.iter().zip(&last.values) {
                let now = observe(observation, &self.root, env, &memo);
                if &now != before
                    && explained
                        .insert((observation.kind == observe::ObsKind::Env, &observation.path))
                {
                    changes.push(observe::explain_change(observation, before, &now));
                }
            }
            memo.flush();
            if changes.is_empty() {
                changes.push("the last run's entry is gone (cleaned or replaced)".into());
            }
        }
        let shown = changes.len().min(5);
        let mut reason = changes[..shown].join(", ");
        if changes.len() > shown {
            reason.push_str(&format!(" (and {} more)", changes.len() - shown));
        }
        reason
    }

    /// The entry stored under `key`, if any (and readable).
    pub fn entry(&self, key: &Key) -> Option<Entry> {
        let bytes = self.store.get(Family::Entries, key.0).ok()??;
        entry::decode(&bytes).ok()
    }

    pub fn last_entry(&self, task: &str) -> Result<Option<Entry>, String> {
        let Some(key) = self
            .store
            .get(Family::Meta, meta_last(task))
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let Some(bytes) = self
            .store
            .get(Family::Entries, &key)
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        entry::decode(&bytes).map(Some)
    }

    /// Stores a run locally and, in read-write mode, in the remote cache.
    pub fn store_run(&self, entry: &Entry, batch: Batch) -> Result<Key, StoreError> {
        let Some(remote) = self.remote.as_ref().filter(|r| r.writes()) else {
            return self.put(entry, batch);
        };
        let blobs: Vec<(Key, Vec<u8>)> = batch
            .blobs()
            .filter_map(|(key, bytes)| Some((Key(key.try_into().ok()?), bytes.to_vec())))
            .collect();
        let post = self.put(entry, batch)?;
        remote.store(entry, &post, blobs);
        Ok(post)
    }

    /// Stores a run: blobs, path set, entry and the task's "last" pointer in one batch.
    pub fn put(&self, entry: &Entry, mut batch: Batch) -> Result<Key, StoreError> {
        let set_key = path_set_id(&entry.observations);
        let post = post_key(&entry.pre_key, &set_key, &entry.values);
        let record = PathSetRecord {
            observations: entry.observations.clone(),
        };
        let mut set_row = entry.pre_key.0.to_vec();
        set_row.extend_from_slice(&set_key.0);
        batch.put(Family::PathSets, set_row, entry::encode(&record));
        batch.put(Family::Entries, post.0.to_vec(), entry::encode(entry));
        batch.put(Family::Meta, meta_last(&entry.task), post.0.to_vec());
        self.store.write(batch)?;
        Ok(post)
    }

    /// The values a finished run saw of `observations`, or the first that changed while it
    /// ran (see [`guard`]): then the run must not be stored.
    pub fn observe_run(
        &self,
        observations: &[Observation],
        env: &BTreeMap<String, String>,
        run: &RunCheck<'_>,
    ) -> Result<Vec<String>, Moved> {
        let memo = StatMemo::new(&self.store);
        let values = observe::observe_run(observations, &self.root, env, &memo, run);
        memo.flush();
        values
    }

    /// Observes `observations` now, as a run starting now would see them.
    pub fn observe_all(
        &self,
        observations: &[Observation],
        env: &BTreeMap<String, String>,
    ) -> Vec<String> {
        let memo = StatMemo::new(&self.store);
        let values = observations
            .iter()
            .map(|o| observe(o, &self.root, env, &memo))
            .collect();
        memo.flush();
        values
    }
}

fn describe_part(name: &str, before: Option<&str>, now: Option<&str>) -> String {
    let show = |v: Option<&str>| v.map_or("(none)".to_owned(), |v| format!("{v:?}"));
    if let Some(env) = name.strip_prefix("env ") {
        let show_env = |v: Option<&str>| v.map_or("(unset)".to_owned(), str::to_owned);
        return format!("env {env}: {} → {}", show_env(before), show_env(now));
    }
    if let Some(dep) = name.strip_prefix("dependency ") {
        return format!("dependency {dep} changed");
    }
    if let Some(file) = name.strip_prefix("input ") {
        return match (before, now) {
            (None, _) => format!("{file}: new declared input"),
            (_, None) => format!("{file}: declared input gone"),
            _ => format!("{file}: content changed"),
        };
    }
    format!("{name} changed: {} → {}", show(before), show(now))
}

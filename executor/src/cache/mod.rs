//! The cache (docs/architecture.md, "Store"): two-phase lookup, entries, output archives, explanations.
//!
//! 1. The **pre-run key** hashes what is known before running: task identity, command,
//!    cwd, declared env values, declared input files, dependency keys, platform.
//! 2. Under it live the **path sets** earlier runs observed. Each is observed *now*; the
//!    observations give the **post-run key**, and an entry under it is a hit. Several path
//!    sets per pre-run key let a task whose inputs depend on the branch hit on both.

pub mod archive;
pub mod deferred;
pub mod early;
pub mod entry;
pub mod guard;
pub mod key;
pub mod lease;
pub mod limit;
pub mod observe;
pub mod path_set;
pub mod prune;
pub mod record;
pub mod remote;
pub mod rocksdb_init;
pub mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use entry::{Entry, PathSetRecord, PreParts, Seen, Stored};
use key::{Key, KeyHasher, path_set_id, post_key};
use observe::{Moved, RunCheck, StatMemo, observe};
use path_set::Observation;
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
        entry: Box<Stored>,
        remote: bool,
    },
    Miss {
        reason: String,
    },
}

pub struct Cache {
    leases: lease::Leases,
    root: PathBuf,
    pub opened: OpenOutcome,
    /// The second level, if configured (`VT_REMOTE_CACHE`).
    remote: Option<remote::RemoteCache>,
    /// Hits whose time of use is not yet written: written together with the next store,
    /// before a prune, and when the cache closes, so a hit costs no write of its own (a
    /// fully cached run of 100 tasks writes once, not 100 times). A crash loses them:
    /// those entries then look older to a prune than they are, nothing worse.
    uses: std::sync::Mutex<Vec<Key>>,
}

fn meta_last(task: &str) -> Vec<u8> {
    [b"last/".as_slice(), task.as_bytes()].concat()
}

/// The last entry stored under a pre-run key: what a miss under the same key (the same
/// command, config, env and dependencies) is explained against, rather than the task's
/// last run, which may have been under another config (`--sandbox` one run, not the next).
fn meta_last_under(pre_key: &Key) -> Vec<u8> {
    [b"last-pre/".as_slice(), pre_key.0.as_slice()].concat()
}

/// Moves the database files in `dir` to a sibling `NAME.damaged-SECONDS-PID`, leaving the
/// lock files (held by this process; other vt processes wait on them) where they are.
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
        if entry.file_name() == lease::LOCK_FILE || entry.file_name() == lease::WANT_FILE {
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

impl Drop for Cache {
    fn drop(&mut self) {
        let mut uses = Batch::default();
        self.take_uses(&mut uses);
        if !uses.is_empty() {
            // Times of use only order a prune: failing to write them loses nothing else. They
            // wait for the next read-write open if the database is open read-only.
            if let Ok(store) = self.store() {
                let _ = store.write_later(uses);
            }
        }
    }
}

/// The damaged copies [`set_aside`] left next to `dir`, oldest first: vt never reads them;
/// `vt cache verify` and `vt cache stats` name them, `vt cache clean` removes them.
pub fn damaged_copies(dir: &Path) -> Vec<PathBuf> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.damaged-", name.to_string_lossy());
    let mut copies: Vec<PathBuf> = std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .map(|entry| entry.path())
        .collect();
    copies.sort();
    copies
}

impl Cache {
    /// `<workspace>/node_modules/.cache/vt`, or `$VT_CACHE_DIR`.
    pub fn default_dir(root: &Path) -> PathBuf {
        match std::env::var_os("VT_CACHE_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => root.join("node_modules/.cache/vt"),
        }
    }

    /// Opens the cache (repairing or wiping it if it must), to be used for a run. The
    /// database is held only while this process uses it (see [`lease`]).
    pub fn open(dir: &Path, root: &Path) -> anyhow::Result<Cache> {
        let first = |dir: &Path| -> Result<_, StoreError> {
            // A run that only hits never needs more (see `deferred`).
            if let Some(store) = Store::open_read_only(dir) {
                return Ok((store, OpenOutcome::Reused));
            }
            match Store::open(dir) {
                Err(error) if error.is_damage() => {
                    // The cache is an optimisation: a damaged one is kept for inspection and
                    // the run goes on with a fresh one (nothing from the damaged copy is
                    // trusted).
                    let aside = set_aside(dir).map_err(|e| StoreError::Lock {
                        path: dir.to_owned(),
                        what: "set aside the damaged cache",
                        source: std::io::Error::other(format!("{e:#}")),
                    })?;
                    crate::say!(
                        "vt: warning: the cache at {} is damaged ({}); it was moved to {} (inspect or delete it) and this run starts a fresh cache",
                        dir.display(),
                        error.detail().trim(),
                        aside.display()
                    );
                    Store::open(dir)
                }
                other => other,
            }
        };
        let (leases, opened) = lease::Leases::new(dir, first, lease::reopen_for)?;
        if opened != OpenOutcome::Reused {
            // Creating the cache directory changed its parents (`node_modules/.cache`),
            // which a task may list: that was before any task this vt starts.
            guard::settled();
        }
        Ok(Cache::over(leases, root, opened))
    }

    /// Opens the cache read-only if it exists and can be opened so, changing nothing on
    /// disk (`None` otherwise): what [`early`] opens while the workspace is read.
    pub fn open_existing_read_only(dir: &Path, root: &Path) -> Option<Cache> {
        if !dir.join("CURRENT").is_file() {
            return None;
        }
        let first = |dir: &Path| -> Result<_, StoreError> {
            Store::open_read_only(dir)
                .map(|store| (store, OpenOutcome::Reused))
                .ok_or_else(|| StoreError::ReadOnly {
                    path: dir.to_owned(),
                })
        };
        let (leases, opened) = lease::Leases::new(dir, first, lease::reopen_for).ok()?;
        Some(Cache::over(leases, root, opened))
    }

    /// A cache over its opened `leases`, for the workspace at `root`.
    fn over(leases: lease::Leases, root: &Path, opened: OpenOutcome) -> Cache {
        Cache {
            leases,
            root: root.to_path_buf(),
            opened,
            remote: None,
            uses: std::sync::Mutex::default(),
        }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        self.leases.dir()
    }

    /// Adds the remote cache as a second level behind this one.
    pub fn set_remote(&mut self, remote: remote::RemoteCache) {
        self.remote = Some(remote);
    }

    /// The database to read (and to write what may wait: [`Store::write_later`]), for as
    /// long as the returned lease lives: keep it short, other vt processes wait for it.
    pub fn store(&self) -> Result<lease::Lease<'_>, StoreError> {
        self.leases.lease()
    }

    /// The database to write, opened read-write (see [`lease::Access`]); not from a thread
    /// that holds a lease already.
    pub fn store_to_write(&self) -> Result<lease::Lease<'_>, StoreError> {
        self.leases.lease_to_write()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Observes every path set stored under `pre`; the first whose observations lead to an
    /// entry is a hit.
    pub fn lookup(&self, task: &str, pre: &PreRun, env: &BTreeMap<String, String>) -> Lookup {
        let local = match self.store() {
            Ok(store) => self.lookup_local(&store, pre, env),
            Err(e) => Err(Some(format!("cannot read the cache: {e}"))),
        };
        let corrupt = match local {
            Ok((key, entry)) => {
                return Lookup::Hit {
                    key,
                    entry: Box::new(entry),
                    remote: false,
                };
            }
            Err(corrupt) => corrupt,
        };
        // Not holding the database while the remote cache answers.
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
        // The task runs next and is stored after: open for that meanwhile.
        self.leases.prepare_to_write();
        Lookup::Miss { reason }
    }

    /// A local hit, or what made the lookup fail (`None`: nothing matched).
    fn lookup_local(
        &self,
        store: &Store,
        pre: &PreRun,
        env: &BTreeMap<String, String>,
    ) -> Result<(Key, Stored), Option<String>> {
        let pre_key = pre.key();
        let memo = StatMemo::new(store);
        let sets = store
            .scan_prefix(Family::PathSets, &pre_key.0)
            .map_err(|e| Some(format!("cannot read the cache: {e}")))?;
        let mut corrupt = None;
        for (key, _) in &sets {
            let set_key = Key(key[32..].try_into().unwrap_or([0; 32]));
            let record = match path_set(store, &set_key) {
                Ok(record) => record,
                Err(e) => {
                    corrupt = Some(format!("a path set under this key is {e}"));
                    continue;
                }
            };
            let values: Vec<String> = record
                .observations
                .iter()
                .map(|o| observe(o, &self.root, env, &memo))
                .collect();
            let post = post_key(&pre_key, &set_key, &values);
            match store.get(Family::Entries, post.0) {
                Ok(Some(bytes)) => match entry::decode::<Stored>(&bytes) {
                    Ok(entry) => {
                        memo.flush();
                        self.pending_uses().push(post);
                        return Ok((post, entry));
                    }
                    Err(e) => corrupt = Some(format!("the entry {post} is corrupt: {e}")),
                },
                Ok(None) => {}
                Err(e) => corrupt = Some(format!("cannot read entry {post}: {e}")),
            }
        }
        memo.flush();
        Err(corrupt)
    }

    /// Why `task` would not hit: what differs from its last stored run.
    pub fn explain(&self, task: &str, pre: &PreRun, env: &BTreeMap<String, String>) -> String {
        let store = match self.store() {
            Ok(store) => store,
            Err(e) => return format!("cannot read the cache: {e}"),
        };
        // A run under the same key, if one is stored: then what changed is something the
        // task saw, and naming an older config difference would send the user the wrong way.
        let same_key = stored_at(&store, &meta_last_under(&pre.key()))
            .ok()
            .flatten();
        let (last, observations) =
            match same_key.map_or_else(|| last_run(&store, task), |r| Ok(Some(r))) {
                Ok(Some(last)) => last,
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
            let memo = StatMemo::new(&store);
            // One reason per path: a file read and stat'ed changes both observations, and
            // "content changed" says it (Content sorts before Meta).
            let mut explained = std::collections::BTreeSet::new();
            for (observation, before) in observations.iter().zip(&last.seen) {
                let now = Seen::of(&observe(observation, &self.root, env, &memo));
                if &now != before
                    && explained.insert((
                        observation.kind == path_set::ObsKind::Env,
                        &observation.path,
                    ))
                {
                    changes.push(observe::explain_change(
                        observation,
                        &before.describe(),
                        &now.describe(),
                    ));
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

    /// The observations a stored entry was keyed by (its path set).
    pub fn path_set_of(&self, entry: &Stored) -> Result<Vec<Observation>, String> {
        let store = self.store().map_err(|e| e.to_string())?;
        path_set(&store, &entry.path_set).map(|record| record.observations)
    }

    /// The last stored run of `task` and its path set's observations, if any (and readable).
    pub fn last_run(&self, task: &str) -> Result<Option<(Stored, Vec<Observation>)>, String> {
        let store = self.store().map_err(|e| e.to_string())?;
        last_run(&store, task)
    }

    /// Removes what `limits` do not keep (see [`prune`]), holding the database meanwhile.
    pub fn prune(&self, limits: prune::Limits) -> Result<prune::Pruned, StoreError> {
        let store = self.store_to_write()?;
        let mut uses = Batch::default();
        self.take_uses(&mut uses);
        if !uses.is_empty() {
            store.write(uses)?;
        }
        prune::prune(&store, limits, now_secs())
    }

    fn pending_uses(&self) -> std::sync::MutexGuard<'_, Vec<Key>> {
        self.uses.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves the pending times of use into `batch`.
    fn take_uses(&self, batch: &mut Batch) {
        let now = now_secs().to_le_bytes();
        for post in self.pending_uses().drain(..) {
            batch.put(Family::Used, post.0.to_vec(), now);
        }
    }

    /// Prunes if the cache is over `max_size` (a look at its files' sizes otherwise).
    pub fn prune_if_over(
        &self,
        max_size: Option<u64>,
    ) -> Option<Result<prune::Pruned, StoreError>> {
        let max = max_size?;
        if store::disk_usage(self.dir()) <= max {
            return None;
        }
        Some(self.prune(prune::Limits {
            max_size: Some(max),
            max_age: None,
        }))
    }

    /// Stores a run locally and, in read-write mode, in the remote cache.
    pub fn store_run(&self, entry: &Entry, batch: Batch) -> Result<Key, StoreError> {
        let Some(remote) = self.remote.as_ref().filter(|r| r.writes()) else {
            return self.put(entry, batch).map(|(post, _)| post);
        };
        let blobs: Vec<(Key, Vec<u8>)> = batch
            .blobs()
            .filter_map(|(key, bytes)| Some((Key(key.try_into().ok()?), bytes.to_vec())))
            .collect();
        let (post, _) = self.put(entry, batch)?;
        remote.store(entry, &post, blobs);
        Ok(post)
    }

    /// Stores a run: its blobs, path set, entry, time of use and the task's "last" pointer
    /// in one batch (all or nothing). `batch` holds every blob the entry names, so an entry
    /// is never written without them, whatever a concurrent prune removed.
    pub fn put(&self, entry: &Entry, mut batch: Batch) -> Result<(Key, Stored), StoreError> {
        let set_key = path_set_id(&entry.observations);
        let post = post_key(&entry.pre_key, &set_key, &entry.values);
        let log_size = batch
            .blobs()
            .find(|(key, _)| *key == entry.log.0.as_slice())
            .map_or(0, |(_, bytes)| bytes.len() as u64);
        let record = PathSetRecord {
            observations: entry.observations.clone(),
        };
        let mut set_row = entry.pre_key.0.to_vec();
        set_row.extend_from_slice(&set_key.0);
        batch.put(Family::Sets, set_key.0.to_vec(), entry::encode(&record));
        batch.put(Family::PathSets, set_row, Vec::new());
        let stored = Stored::of(entry, set_key, log_size);
        batch.put(Family::Entries, post.0.to_vec(), entry::encode(&stored));
        // Every vt stores the same bytes for the same run (the key covers what it saw, the
        // entry what it made, blobs by content): two storing it at once leave one entry.
        batch.put(Family::Used, post.0.to_vec(), now_secs().to_le_bytes());
        batch.put(Family::Meta, meta_last(&entry.task), post.0.to_vec());
        batch.put(
            Family::Meta,
            meta_last_under(&entry.pre_key),
            post.0.to_vec(),
        );
        self.take_uses(&mut batch);
        self.store_to_write()?.write(batch)?;
        Ok((post, stored))
    }

    /// The values a finished run saw of `observations`, or the first that changed while it
    /// ran (see [`guard`]): then the run must not be stored.
    pub fn observe_run(
        &self,
        observations: &[Observation],
        env: &BTreeMap<String, String>,
        run: &RunCheck<'_>,
    ) -> Result<Vec<String>, Moved> {
        let store = self.store().ok();
        let memo = StatMemo::maybe(store.as_deref());
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
        let store = self.store().ok();
        let memo = StatMemo::maybe(store.as_deref());
        let values = observations
            .iter()
            .map(|o| observe(o, &self.root, env, &memo))
            .collect();
        memo.flush();
        values
    }
}

/// Seconds since the epoch (0 if the clock is before it).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The path set `id` names.
fn path_set(store: &Store, id: &Key) -> Result<PathSetRecord, String> {
    let bytes = store
        .get(Family::Sets, id.0)
        .map_err(|e| format!("unreadable ({e})"))?
        .ok_or("missing")?;
    entry::decode(&bytes).map_err(|e| format!("corrupt: {e}"))
}

fn last_run(store: &Store, task: &str) -> Result<Option<(Stored, Vec<Observation>)>, String> {
    stored_at(store, &meta_last(task))
}

/// The entry a `meta` pointer names, with its path set's observations.
fn stored_at(store: &Store, pointer: &[u8]) -> Result<Option<(Stored, Vec<Observation>)>, String> {
    let Some(key) = store
        .get(Family::Meta, pointer)
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let Some(bytes) = store
        .get(Family::Entries, &key)
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let stored: Stored = entry::decode(&bytes)?;
    let observations = path_set(store, &stored.path_set)
        .map_err(|e| format!("its path set is {e}"))?
        .observations;
    Ok(Some((stored, observations)))
}

fn describe_part(name: &str, before: Option<&str>, now: Option<&str>) -> String {
    let show = |v: Option<&str>| v.map_or("(none)".to_owned(), |v| format!("{v:?}"));
    if let Some(env) = name.strip_prefix("env ") {
        // A part that is absent is a name the config did not track (a tracked name that
        // is unset has the value "(unset)"): say which, not "(unset) → (unset)".
        return match (before, now) {
            (None, Some(now)) => format!("env {env} is now part of the key (value: {now})"),
            (Some(before), None) => {
                format!("env {env} is no longer part of the key (was: {before})")
            }
            (before, now) => format!(
                "env {env}: {} → {}",
                before.unwrap_or("(unset)"),
                now.unwrap_or("(unset)")
            ),
        };
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

#[cfg(test)]
mod tests {
    use super::describe_part;

    #[test]
    fn an_env_part_tells_untracked_from_unset() {
        assert_eq!(
            describe_part("env MODE", None, Some("(unset)")),
            "env MODE is now part of the key (value: (unset))"
        );
        assert_eq!(
            describe_part("env MODE", Some("x"), None),
            "env MODE is no longer part of the key (was: x)"
        );
        assert_eq!(
            describe_part("env MODE", Some("(unset)"), Some("x")),
            "env MODE: (unset) → x"
        );
    }
}

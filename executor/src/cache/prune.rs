//! Keeping the cache within its limits: least recently used entries go first, then the
//! blobs, path sets and pointers nothing left refers to.
//!
//! An entry's time of use is written when it is stored and each time it hits (the `used`
//! family). Pruning runs inside one lease, so no other vt reads or writes meanwhile, and
//! removes everything in one batch: a kill leaves the cache as it was before or after.
//! A store after a prune carries every blob its entry needs (see `Cache::put`), so a
//! blob removed here is never missing from an entry written later.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::entry::{self, Stored};
use super::key::Key;
use super::store::{self, Batch, Family, Store, StoreError};

/// A prune over the size limit goes down to this share of it, so the next runs do not
/// each prune a little.
const PRUNE_TO: f64 = 0.8;
/// The stat memo is an optimisation keyed by inode: beyond this many records (files
/// renamed over and over by editors and builds leave old inodes behind) it is dropped.
const MEMO_MAX: usize = 200_000;

/// What to keep.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Bytes on disk.
    pub max_size: Option<u64>,
    /// Entries not used for longer go.
    pub max_age: Option<Duration>,
}

/// What a prune did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub entries: usize,
    pub removed_entries: usize,
    pub removed_blobs: usize,
    pub removed_path_sets: usize,
    pub size_before: u64,
    pub size_after: u64,
}

struct Candidate {
    key: Vec<u8>,
    used: u64,
    bytes: u64,
    /// `None`: the entry does not decode (removed whatever the limits).
    stored: Option<Stored>,
}

/// Removes entries (oldest use first) until the cache is within `limits`, then whatever
/// nothing refers to. `now`: seconds since the epoch.
pub fn prune(store: &Store, limits: Limits, now: u64) -> Result<Pruned, StoreError> {
    let mut total = prune_once(store, limits, now)?;
    // The size on disk after compacting is known only then: blob files that still hold a
    // live blob stay. Another pass, measured afresh, gets under the limit.
    for _ in 0..3 {
        if limits.max_size.is_none_or(|max| total.size_after <= max) {
            break;
        }
        let pass = prune_once(store, limits, now)?;
        total.removed_entries += pass.removed_entries;
        total.removed_blobs += pass.removed_blobs;
        total.removed_path_sets += pass.removed_path_sets;
        total.size_after = pass.size_after;
        if pass.removed_entries == 0 {
            break;
        }
    }
    Ok(total)
}

fn prune_once(store: &Store, limits: Limits, now: u64) -> Result<Pruned, StoreError> {
    let size_before = store.disk_usage();
    let used: HashMap<Vec<u8>, u64> = store
        .scan_prefix(Family::Used, b"")?
        .into_iter()
        .map(|(key, value)| {
            let secs = value
                .get(..8)
                .and_then(|v| v.try_into().ok())
                .map_or(0, u64::from_le_bytes);
            (key, secs)
        })
        .collect();
    let mut candidates: Vec<Candidate> = store
        .scan_prefix(Family::Entries, b"")?
        .into_iter()
        .map(|(key, value)| Candidate {
            used: used.get(&key).copied().unwrap_or(0),
            bytes: (key.len() + value.len()) as u64,
            stored: entry::decode::<Stored>(&value).ok(),
            key,
        })
        .collect();
    // Oldest use first; ties in key order, so the choice is the same every time.
    candidates.sort_by(|a, b| a.used.cmp(&b.used).then_with(|| a.key.cmp(&b.key)));

    // Blob references of every decodable entry, with the blob's size.
    let mut references: HashMap<Key, (usize, u64)> = HashMap::new();
    for stored in candidates.iter().filter_map(|c| c.stored.as_ref()) {
        for (blob, size) in stored.blobs() {
            references.entry(blob).or_insert((0, size)).0 += 1;
        }
    }
    let mut logical: u64 = candidates.iter().map(|c| c.bytes).sum::<u64>()
        + references.values().map(|(_, size)| size).sum::<u64>();
    // The disk holds more than the records (LSM levels, blob file garbage) or less
    // (compression): scale the limit to the records' bytes by what the data files show now,
    // after setting aside the files that do not grow with entries.
    let (data_before, fixed) = store::disk_usage_split(store.path());
    let target = limits.max_size.map(|max| {
        let ratio = if logical == 0 {
            1.0
        } else {
            data_before as f64 / logical as f64
        };
        (max.saturating_sub(fixed) as f64 * PRUNE_TO / ratio.max(0.1)) as u64
    });
    let over_size = limits.max_size.is_some_and(|max| size_before > max);
    let too_old = |used: u64| {
        limits
            .max_age
            .is_some_and(|age| now.saturating_sub(used) > age.as_secs())
    };

    let mut batch = Batch::default();
    let mut removed = HashSet::new();
    for candidate in &candidates {
        let remove = candidate.stored.is_none()
            || too_old(candidate.used)
            || (over_size && target.is_some_and(|t| logical > t));
        if !remove {
            continue;
        }
        logical = logical.saturating_sub(candidate.bytes);
        if let Some(stored) = &candidate.stored {
            for (blob, _) in stored.blobs() {
                if let Some((count, size)) = references.get_mut(&blob) {
                    *count -= 1;
                    if *count == 0 {
                        logical = logical.saturating_sub(*size);
                    }
                }
            }
        }
        batch.delete(Family::Entries, candidate.key.clone());
        removed.insert(candidate.key.clone());
    }
    let kept: Vec<&Stored> = candidates
        .iter()
        .filter(|c| !removed.contains(&c.key))
        .filter_map(|c| c.stored.as_ref())
        .collect();

    // Times of use, "last run" pointers: only for entries that are left.
    let entry_keys: HashSet<&[u8]> = candidates.iter().map(|c| c.key.as_slice()).collect();
    for key in used
        .keys()
        .filter(|k| removed.contains(*k) || !entry_keys.contains(k.as_slice()))
    {
        batch.delete(Family::Used, key.clone());
    }
    for prefix in [b"last/".as_slice(), b"last-pre/"] {
        for (key, value) in store.scan_prefix(Family::Meta, prefix)? {
            if removed.contains(&value) || !entry_keys.contains(value.as_slice()) {
                batch.delete(Family::Meta, key);
            }
        }
    }
    // Blobs no remaining entry names (those of removed entries, and any left by a store
    // that never finished).
    let live_blobs: HashSet<Key> = kept
        .iter()
        .flat_map(|s| s.blobs())
        .map(|(b, _)| b)
        .collect();
    let mut removed_blobs = 0;
    for key in store.keys(Family::Blobs)? {
        if !key
            .as_slice()
            .try_into()
            .is_ok_and(|k| live_blobs.contains(&Key(k)))
        {
            batch.delete(Family::Blobs, key);
            removed_blobs += 1;
        }
    }
    // Path sets: a pre-run key's row stays while an entry was stored under it with that
    // set; a set stays while a row names it.
    let live_rows: HashSet<Vec<u8>> = kept
        .iter()
        .map(|s| [s.pre_key.0.as_slice(), s.path_set.0.as_slice()].concat())
        .collect();
    let mut live_sets = HashSet::new();
    let mut removed_path_sets = 0;
    for key in store.keys(Family::PathSets)? {
        if live_rows.contains(&key) {
            live_sets.insert(key[32..].to_vec());
        } else {
            batch.delete(Family::PathSets, key);
            removed_path_sets += 1;
        }
    }
    for key in store.keys(Family::Sets)? {
        if !live_sets.contains(&key) {
            batch.delete(Family::Sets, key);
        }
    }
    let memo = store.keys(Family::StatMemo)?;
    if memo.len() > MEMO_MAX {
        for key in memo {
            batch.delete(Family::StatMemo, key);
        }
    }
    let changed = !batch.is_empty();
    store.write(batch)?;
    if changed {
        store.compact()?;
    }
    Ok(Pruned {
        entries: candidates.len(),
        removed_entries: removed.len(),
        removed_blobs,
        removed_path_sets,
        size_before,
        size_after: store.disk_usage(),
    })
}

/// What `vt cache stats` shows of the entries.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub entries: usize,
    /// Seconds since the epoch of the least recently used entry.
    pub oldest_use: Option<u64>,
    pub newest_use: Option<u64>,
}

pub fn usage(store: &Store) -> Result<Usage, StoreError> {
    let entries = store.keys(Family::Entries)?.len();
    let uses: Vec<u64> = store
        .scan_prefix(Family::Used, b"")?
        .into_iter()
        .filter_map(|(_, v)| v.get(..8)?.try_into().ok().map(u64::from_le_bytes))
        .collect();
    Ok(Usage {
        entries,
        oldest_use: uses.iter().min().copied(),
        newest_use: uses.iter().max().copied(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::{Entry, Output};
    use crate::cache::key::content;
    use crate::cache::path_set::{CachePath, ObsKind, Observation};
    use crate::cache::{Cache, PreRun};

    /// A run of task `t{task}` whose single output holds `bytes`.
    fn store_run(cache: &Cache, task: u32, bytes: Vec<u8>) -> Key {
        let mut pre = PreRun::default();
        pre.add("task", format!("t{task}"));
        let blob = content(&bytes);
        let log = b"log".to_vec();
        let mut batch = Batch::default();
        batch.put(Family::Blobs, blob.0.to_vec(), bytes.clone());
        batch.put(Family::Blobs, content(&log).0.to_vec(), log.clone());
        let entry = Entry {
            task: format!("t{task}"),
            pre_key: pre.key(),
            pre_parts: pre.parts.clone(),
            observations: vec![Observation::new(ObsKind::Env, CachePath(b"X".to_vec()))],
            values: vec!["unset".into()],
            outputs: vec![Output::File {
                path: CachePath(b"out".to_vec()),
                mode: 0o644,
                blob,
                size: bytes.len() as u64,
                mtime_ns: 0,
            }],
            log: content(&log),
            exit_code: 0,
            duration_ms: 1,
        };
        cache.put(&entry, batch).expect("put").0
    }

    fn set_used(cache: &Cache, key: &Key, secs: u64) {
        let mut batch = Batch::default();
        batch.put(Family::Used, key.0.to_vec(), secs.to_le_bytes());
        cache
            .store_to_write()
            .expect("lease")
            .write(batch)
            .expect("write");
    }

    #[test]
    fn by_age_only_entries_unused_for_longer_go_and_their_blobs_with_them() {
        let temp = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(&temp.path().join("cache"), temp.path()).expect("open");
        let now = 1_000_000;
        let old = store_run(&cache, 1, vec![1; 10_000]);
        let recent = store_run(&cache, 2, vec![2; 10_000]);
        set_used(&cache, &old, now - 8 * 86_400);
        set_used(&cache, &recent, now - 86_400);
        let store = cache.store().expect("lease");
        let limits = Limits {
            max_size: None,
            max_age: Some(Duration::from_secs(7 * 86_400)),
        };
        let pruned = prune(&store, limits, now).expect("prune");
        assert_eq!((pruned.entries, pruned.removed_entries), (2, 1));
        assert_eq!(
            pruned.removed_blobs, 1,
            "the old output; the shared log stays"
        );
        assert!(store.get(Family::Entries, old.0).expect("get").is_none());
        assert!(store.get(Family::Entries, recent.0).expect("get").is_some());
        assert!(
            store
                .get(Family::Blobs, content(&[2u8; 10_000]).0)
                .expect("get")
                .is_some()
        );
        assert!(
            store
                .get(Family::Blobs, content(&[1u8; 10_000]).0)
                .expect("get")
                .is_none()
        );
        // Nothing is left that nothing refers to, and what is left is whole.
        assert!(store.get(Family::Used, old.0).expect("get").is_none());
        assert_eq!(store.keys(Family::Sets).expect("sets").len(), 1);
        // The control: a second prune with the same limits removes nothing.
        let again = prune(&store, limits, now).expect("prune");
        assert_eq!((again.removed_entries, again.removed_blobs), (0, 0));
    }

    #[test]
    fn by_size_the_least_recently_used_go_first() {
        let temp = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(&temp.path().join("cache"), temp.path()).expect("open");
        let keys: Vec<Key> = (0..20)
            .map(|i| {
                let bytes = (0..100_000u32)
                    .map(|j| (j * 7 + i) as u8 ^ (j >> 8) as u8)
                    .collect();
                store_run(&cache, i, bytes)
            })
            .collect();
        // Used in reverse order of storing: the first stored is the most recent.
        for (i, key) in keys.iter().enumerate() {
            set_used(&cache, key, 1_000 - i as u64);
        }
        let store = cache.store().expect("lease");
        let limits = Limits {
            max_size: Some(store.disk_usage() / 2),
            max_age: None,
        };
        let pruned = prune(&store, limits, 2_000).expect("prune");
        assert!(
            pruned.removed_entries > 0 && pruned.removed_entries < 20,
            "{pruned:?}"
        );
        let kept: Vec<bool> = keys
            .iter()
            .map(|k| store.get(Family::Entries, k.0).expect("get").is_some())
            .collect();
        // A prefix of the most recently used is kept, the rest removed.
        let boundary = kept.iter().position(|k| !k).expect("something removed");
        assert!(kept[..boundary].iter().all(|k| *k), "{kept:?}");
        assert!(kept[boundary..].iter().all(|k| !k), "{kept:?}");
    }
}

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
use super::store::{Batch, Family, Store, StoreError};

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
    // (compression): scale the limit to the records' bytes by what the disk shows now.
    let target = limits.max_size.map(|max| {
        let ratio = if logical == 0 {
            1.0
        } else {
            size_before as f64 / logical as f64
        };
        (max as f64 * PRUNE_TO / ratio.max(0.1)) as u64
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
    for (key, value) in store.scan_prefix(Family::Meta, b"last/")? {
        if removed.contains(&value) {
            batch.delete(Family::Meta, key);
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

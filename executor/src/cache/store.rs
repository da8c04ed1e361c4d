//! The RocksDB store behind the cache.
//!
//! One database per workspace (`node_modules/.cache/vt` or `VT_CACHE_DIR`), with a column
//! family per kind of record so each can be tuned and scanned on its own. The schema version
//! lives in `meta`; a database written by another schema is wiped and rebuilt (a cache can
//! always be recomputed, a wrong read cannot be undone), and [`Store::open`] says so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteBatch};

/// Bumped whenever the meaning of any stored byte changes. 5: a path set also names what
/// the programs a task ran find on its `PATH` (`ObsKind::Which`) and what shaped a
/// sandboxed task's jail; entries stored without them could hit where the task would now
/// run another program, so they are not kept. 6: what a task saw under a passed variable
/// that names a path (`HOME`, `TMPDIR`, `SHELL`, …) is observed under the looking run's
/// value too (`path_set::Base::Var`); entries without it could hit a run whose `HOME`
/// holds other files.
pub const SCHEMA_VERSION: u32 = 6;

const SCHEMA_KEY: &[u8] = b"schema_version";

/// The column families, by what they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// post-run key → cache entry (outputs manifest, logs, exit status).
    Entries,
    /// pre-run key ++ path set id → nothing: the path sets observed under a pre-run key.
    PathSets,
    /// path set id → the path set (its observations), shared by every pre-run key and
    /// entry observed under it.
    Sets,
    /// post-run key → when the entry was last used (stored or hit), seconds since the
    /// epoch: what pruning goes by.
    Used,
    /// content hash → bytes (output files, logs). Large values go to BlobDB files.
    Blobs,
    /// (dev, inode, size, mtime, ctime) → content hash, re-verified on use.
    StatMemo,
    /// schema version and other bookkeeping.
    Meta,
}

impl Family {
    pub const ALL: [Family; 7] = [
        Family::Entries,
        Family::PathSets,
        Family::Sets,
        Family::Used,
        Family::Blobs,
        Family::StatMemo,
        Family::Meta,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Entries => "entries",
            Family::PathSets => "path_sets",
            Family::Sets => "sets",
            Family::Used => "used",
            Family::Blobs => "blobs",
            Family::StatMemo => "stat_memo",
            Family::Meta => "meta",
        }
    }

    fn options(self) -> Options {
        let mut options = Options::default();
        // A lookup is point reads (an entry, a path set, stat memos) that mostly find
        // their key in one file of many: bloom filters skip the others.
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        options.set_block_based_table_factory(&table);
        if self == Family::Blobs {
            // Output archives are large and written once: keep them out of the LSM tree.
            options.set_enable_blob_files(true);
            options.set_min_blob_size(4096);
            // Collected only by `compact` (after a prune), where it is asked for: in the
            // background it would rewrite blob files at every write and still leave the
            // newest ones full of deleted blobs (the soak went to 1.16x its limit).
            options.set_enable_blob_gc(false);
        }
        options
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the cache directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot open the cache at {path}: {error}\n  hint: if no other vt is running, delete {path} to start with an empty cache"
    )]
    // `error`, not `source`: the message already says it, and a source would print it twice.
    Open {
        path: PathBuf,
        error: rocksdb::Error,
    },
    #[error("cache at {path}: {operation} failed: {error}")]
    Io {
        path: PathBuf,
        operation: &'static str,
        error: rocksdb::Error,
    },
    #[error("cache at {path} has column family {family:?} missing")]
    MissingFamily { path: PathBuf, family: &'static str },
    #[error("cannot {what} {path}: {source}")]
    Lock {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(
        "the cache at {path} was written by a newer vt ({found}; this vt knows schema {SCHEMA_VERSION})\n  hint: upgrade this vt, or give it a cache of its own with VT_CACHE_DIR"
    )]
    Newer { path: PathBuf, found: String },
    #[error(
        "vt tried to write to the cache at {path} while it had it open read-only (a bug in vt)\n  hint: please report it; the run's results stand, this one is not stored"
    )]
    ReadOnly { path: PathBuf },
    #[error(
        "the cache at {path} was rewritten by another vt version (schema {found:?}) while this vt used it"
    )]
    Changed {
        path: PathBuf,
        found: Option<String>,
    },
}

/// What opening found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenOutcome {
    Fresh,
    Reused,
    /// The database had another (or an unreadable) schema version and was emptied.
    Wiped {
        found: Option<String>,
    },
}

pub struct Store {
    db: DB,
    path: PathBuf,
    /// Open read-only (see [`deferred`]): writes that may wait go to [`Store::later`],
    /// any other write is refused.
    ///
    /// [`deferred`]: super::deferred
    read_only: bool,
    /// What [`Store::write_later`] kept while read-only, appended to the deferred file when
    /// the database closes (the cache's lock is still held then: see `lease::Held`).
    later: Mutex<Batch>,
    /// Read-only: the stat memos of the deferred file, newer than the database's.
    memos: HashMap<Vec<u8>, Vec<u8>>,
}

impl Drop for Store {
    fn drop(&mut self) {
        let later = std::mem::take(self.later.get_mut().unwrap_or_else(|p| p.into_inner()));
        let bytes = super::deferred::encode(
            later
                .puts
                .iter()
                .map(|(family, key, value)| (*family, key.as_slice(), value.as_slice())),
        );
        // Optimisations only (see `deferred`): failing to keep them costs a rehash.
        let _ = super::deferred::append(&self.path, &bytes);
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A stored `(key, value)` pair.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Writes applied together or not at all (one RocksDB `WriteBatch`).
#[derive(Default)]
pub struct Batch {
    puts: Vec<(Family, Vec<u8>, Vec<u8>)>,
    deletes: Vec<(Family, Vec<u8>)>,
}

impl Batch {
    pub fn put(
        &mut self,
        family: Family,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.puts.push((family, key.into(), value.into()));
        self
    }

    /// The blobs this batch writes (content key, bytes).
    pub fn blobs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.puts
            .iter()
            .filter(|(family, _, _)| *family == Family::Blobs)
            .map(|(_, key, value)| (key.as_slice(), value.as_slice()))
    }

    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }

    pub fn delete(&mut self, family: Family, key: impl Into<Vec<u8>>) -> &mut Self {
        self.deletes.push((family, key.into()));
        self
    }
}

impl StoreError {
    /// RocksDB's own words, without vt's hint.
    pub fn detail(&self) -> String {
        match self {
            StoreError::Open { error, .. } | StoreError::Io { error, .. } => error.to_string(),
            other => other.to_string(),
        }
    }

    /// The write failed for lack of space on the cache's file system.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Open { error, .. } | StoreError::Io { error, .. } => {
                error.to_string().contains("No space left on device")
            }
            StoreError::CreateDir { source, .. } | StoreError::Lock { source, .. } => {
                source.raw_os_error() == Some(libc::ENOSPC)
            }
            _ => false,
        }
    }

    /// The database's own files are damaged (checksums, a missing or truncated MANIFEST):
    /// nothing in it can be trusted, and opening it again will not help.
    pub fn is_damage(&self) -> bool {
        let error = match self {
            StoreError::Open { error, .. } | StoreError::Io { error, .. } => error,
            _ => return false,
        };
        match error.kind() {
            rocksdb::ErrorKind::Corruption => true,
            // A MANIFEST or table file that CURRENT names is gone.
            rocksdb::ErrorKind::IOError | rocksdb::ErrorKind::InvalidArgument => {
                let text = error.to_string();
                text.contains("No such file") && !text.contains("LOCK")
            }
            _ => false,
        }
    }
}

impl Store {
    /// Opens (or creates) the database; one of another, older schema is wiped.
    pub fn open(path: impl AsRef<Path>) -> Result<(Store, OpenOutcome), StoreError> {
        Self::open_with(path.as_ref(), true)
    }

    /// Opens the database again, as this process did before: one whose schema changed in
    /// the meantime (another vt's) is an error, not wiped.
    pub fn reopen(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, false).map(|(store, _)| store)
    }

    fn open_with(path: &Path, wipe_other: bool) -> Result<(Store, OpenOutcome), StoreError> {
        super::rocksdb_init::ensure();
        let path = path.to_owned();
        std::fs::create_dir_all(&path).map_err(|source| StoreError::CreateDir {
            path: path.clone(),
            source,
        })?;
        let existed = path.join("CURRENT").exists();
        let mut options = Self::db_options();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = Family::ALL.map(|f| ColumnFamilyDescriptor::new(f.name(), f.options()));
        let db = DB::open_cf_descriptors(&options, &path, families).map_err(|error| {
            if error.to_string().contains("Column families not opened") {
                // Column families this vt does not know: a later schema's.
                StoreError::Newer {
                    path: path.clone(),
                    found: error.to_string(),
                }
            } else {
                StoreError::Open {
                    path: path.clone(),
                    error,
                }
            }
        })?;
        let mut store = Store {
            db,
            path,
            read_only: false,
            later: Mutex::default(),
            memos: HashMap::new(),
        };
        let outcome = store.check_schema(existed, wipe_other)?;
        store.fold_deferred(&outcome);
        Ok((store, outcome))
    }

    /// Opens the database read-only, if it exists with this vt's schema and its deferred
    /// file is small; `None` otherwise (then a read-write open creates, wipes, repairs or
    /// reports, and folds the deferred file in). Nothing is written to the database
    /// meanwhile: [`Store::write`] is refused, [`Store::write_later`] kept for the file.
    pub fn open_read_only(path: &Path) -> Option<Store> {
        if !path.join("CURRENT").exists() || unflushed_bytes(path) > REPLAY_AT {
            return None;
        }
        super::rocksdb_init::ensure();
        let (records, size) =
            sandbox::timings::time("cache open: deferred file", || super::deferred::read(path));
        if size > super::deferred::FOLD_AT {
            return None;
        }
        // A read-only open leaves column families it is not given alone: one this vt does not
        // know is a later schema's, which the read-write open reports.
        let known =
            |name: &String| name == "default" || Family::ALL.iter().any(|f| f.name() == name);
        if !DB::list_cf(&Options::default(), path)
            .ok()?
            .iter()
            .all(known)
        {
            return None;
        }
        let families = Family::ALL.map(|f| ColumnFamilyDescriptor::new(f.name(), f.options()));
        let db = sandbox::timings::time("cache open: rocksdb, read-only", || {
            DB::open_cf_descriptors_read_only(&Self::db_options(), path, families, false)
        })
        .ok()?;
        let memos = records
            .into_iter()
            .filter(|r| r.family == Family::StatMemo)
            .map(|r| (r.key, r.value))
            .collect();
        let store = Store {
            db,
            path: path.to_owned(),
            read_only: true,
            later: Mutex::default(),
            memos,
        };
        let schema = store.get(Family::Meta, SCHEMA_KEY).ok()??;
        (schema == SCHEMA_VERSION.to_string().as_bytes()).then_some(store)
    }

    /// Whether writes go to the database now (else it is open read-only).
    pub fn writable(&self) -> bool {
        !self.read_only
    }

    /// Options for opening the database, read-write or read-only.
    fn db_options() -> Options {
        let mut options = Options::default();
        // vt opens the database each time it starts using it (see `lease`): keep opening
        // cheap, and keep its info logs from piling up (one per open).
        options.set_skip_stats_update_on_db_open(true);
        // RocksDB opens each column family's table files on up to 16 new threads per
        // family, even when there are none: 128 thread starts per open (~several ms). A
        // cache's few files open fine on the calling thread.
        options.set_max_file_opening_threads(1);
        // The files an open makes obsolete (the previous MANIFEST, WAL and OPTIONS) are
        // deleted by a background thread instead of inside the open: ~3 ms of unlinks that
        // now overlap the lookup and the task (a close still waits for them).
        options.set_avoid_unnecessary_blocking_io(true);
        options.set_keep_log_file_num(2);
        // Its info log would repeat every option at each open (~130 KB).
        options.set_log_level(rocksdb::LogLevel::Warn);
        options
    }

    /// Folds the deferred file's records into the database and removes it (see
    /// [`deferred`](super::deferred)); a fresh or emptied database only drops it. A time of
    /// use is kept only for an entry that still exists and only if it is later than the
    /// stored one (an entry pruned since must not come back as a bare time).
    fn fold_deferred(&self, outcome: &OpenOutcome) {
        if *outcome != OpenOutcome::Reused {
            let _ = super::deferred::clear(&self.path);
            return;
        }
        let (records, size) = super::deferred::read(&self.path);
        if size == 0 {
            return;
        }
        let secs =
            |value: &[u8]| -> Option<u64> { Some(u64::from_le_bytes(value.try_into().ok()?)) };
        let mut batch = Batch::default();
        for record in records {
            let keep = match record.family {
                Family::Used => {
                    let exists = matches!(self.get(Family::Entries, &record.key), Ok(Some(_)));
                    let stored = self.get(Family::Used, &record.key).ok().flatten();
                    exists
                        && secs(&record.value).is_some()
                        && stored.as_deref().and_then(secs) < secs(&record.value)
                }
                _ => true,
            };
            if keep {
                batch.put(record.family, record.key, record.value);
            }
        }
        // Kept until written: a failed write tries again at the next open.
        if batch.is_empty() || self.write(batch).is_ok() {
            let _ = super::deferred::clear(&self.path);
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the database takes on disk (every file in its directory).
    pub fn disk_usage(&self) -> u64 {
        disk_usage(&self.path)
    }

    fn check_schema(&mut self, existed: bool, wipe: bool) -> Result<OpenOutcome, StoreError> {
        let current = SCHEMA_VERSION.to_string();
        let found = self.get(Family::Meta, SCHEMA_KEY)?;
        let newer = found
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u32>().ok())
            .filter(|&v| v > SCHEMA_VERSION);
        let outcome = match found {
            Some(v) if v == current.as_bytes() => return Ok(OpenOutcome::Reused),
            // Another vt, newer, uses this cache: wiping it would make the two wipe each
            // other's work on every run.
            Some(_) if newer.is_some() => {
                return Err(StoreError::Newer {
                    path: self.path.clone(),
                    found: format!("schema {}", newer.unwrap_or_default()),
                });
            }
            None if !existed => OpenOutcome::Fresh,
            other if !wipe => {
                return Err(StoreError::Changed {
                    path: self.path.clone(),
                    found: other.map(|v| String::from_utf8_lossy(&v).into_owned()),
                });
            }
            other => {
                self.wipe()?;
                OpenOutcome::Wiped {
                    found: other.map(|v| String::from_utf8_lossy(&v).into_owned()),
                }
            }
        };
        let mut batch = Batch::default();
        batch.put(Family::Meta, SCHEMA_KEY, current);
        self.write(batch)?;
        Ok(outcome)
    }

    /// Empties every column family (drop and recreate, so no stale key can survive).
    fn wipe(&mut self) -> Result<(), StoreError> {
        for family in Family::ALL {
            self.db
                .drop_cf(family.name())
                .map_err(|source| self.io("drop column family", source))?;
            self.db
                .create_cf(family.name(), &family.options())
                .map_err(|source| self.io("create column family", source))?;
        }
        Ok(())
    }

    fn cf(&self, family: Family) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db
            .cf_handle(family.name())
            .ok_or_else(|| StoreError::MissingFamily {
                path: self.path.clone(),
                family: family.name(),
            })
    }

    fn io(&self, operation: &'static str, error: rocksdb::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            operation,
            error,
        }
    }

    pub fn get(
        &self,
        family: Family,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if family == Family::StatMemo
            && let Some(memo) = self.memos.get(key.as_ref())
        {
            return Ok(Some(memo.clone()));
        }
        self.db
            .get_cf(self.cf(family)?, key)
            .map_err(|source| self.io("read", source))
    }

    pub fn write(&self, batch: Batch) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly {
                path: self.path.clone(),
            });
        }
        let mut write = WriteBatch::default();
        for (family, key, value) in &batch.puts {
            write.put_cf(self.cf(*family)?, key, value);
        }
        for (family, key) in &batch.deletes {
            write.delete_cf(self.cf(*family)?, key);
        }
        self.db
            .write(write)
            .map_err(|source| self.io("write", source))
    }

    /// Writes `batch` now, or, while the database is open read-only, when it closes (to the
    /// deferred file). Only for records that may wait (stat memos, times of use); others
    /// in `batch` are dropped while read-only.
    pub fn write_later(&self, batch: Batch) -> Result<(), StoreError> {
        if !self.read_only {
            return self.write(batch);
        }
        let mut later = self.later.lock().unwrap_or_else(|p| p.into_inner());
        later.puts.extend(
            batch
                .puts
                .into_iter()
                .filter(|(family, _, _)| matches!(family, Family::StatMemo | Family::Used)),
        );
        Ok(())
    }

    /// Every key of a family, without reading the values (blobs stay on disk).
    pub fn keys(&self, family: Family) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut iter = self.db.raw_iterator_cf(self.cf(family)?);
        iter.seek_to_first();
        let mut keys = Vec::new();
        while let Some(key) = iter.key() {
            keys.push(key.to_vec());
            iter.next();
        }
        iter.status().map_err(|source| self.io("scan", source))?;
        Ok(keys)
    }

    /// Writes what is in memory to table files and compacts every family, so deleted
    /// records leave the disk (blob files whose blobs are all deleted go with them; blob
    /// files in the older half are rewritten without their deleted blobs).
    pub fn compact(&self) -> Result<(), StoreError> {
        for family in Family::ALL {
            let cf = self.cf(family)?;
            let collect_blobs = family == Family::Blobs;
            if collect_blobs {
                self.db
                    .set_options_cf(
                        cf,
                        &[
                            ("enable_blob_garbage_collection", "true"),
                            ("blob_garbage_collection_age_cutoff", "0.5"),
                        ],
                    )
                    .map_err(|source| self.io("configure blob collection", source))?;
            }
            self.db
                .flush_cf(cf)
                .map_err(|source| self.io("flush", source))?;
            let mut options = rocksdb::CompactOptions::default();
            options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
            self.db
                .compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &options);
            if collect_blobs {
                // Back to no background collection (see `Family::options`).
                self.db
                    .set_options_cf(cf, &[("enable_blob_garbage_collection", "false")])
                    .map_err(|source| self.io("configure blob collection", source))?;
            }
        }
        Ok(())
    }

    /// Every `(key, value)` of a family whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, family: Family, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        let mut read = rocksdb::ReadOptions::default();
        // The iterator stops at the prefix's end instead of reading the next key's block.
        if let Some(end) = prefix_end(prefix) {
            read.set_iterate_upper_bound(end);
        }
        let iter = self.db.iterator_cf_opt(
            self.cf(family)?,
            read,
            rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(|source| self.io("scan", source))?;
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.into_vec(), value.into_vec()));
        }
        Ok(out)
    }
}

/// A read-only open replays the write-ahead log into memory at every open, where a
/// read-write one flushes it to a table once (~20 ms: a table, a MANIFEST, an OPTIONS file,
/// each synced). Replaying 300 KB (the stores of a 100-package run) costs ~1 ms; beyond
/// this many bytes of log (large outputs stored and not flushed yet) the flush is the
/// cheaper over a few runs.
const REPLAY_AT: u64 = 1 << 20;

/// Bytes in the database's write-ahead logs: what the processes that opened it read-write
/// wrote since the last flush.
fn unflushed_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
        .filter_map(|entry| entry.metadata().ok())
        .map(|meta| meta.len())
        .sum()
}

/// The first key after every key that starts with `prefix` (`None`: no such key, as for
/// an empty prefix or one of 0xff bytes).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// For tests elsewhere: what another vt's schema leaves in a database.
#[doc(hidden)]
pub mod testing {
    use std::path::Path;

    /// Adds a column family, as a later schema would.
    pub fn add_column_family(path: &Path, name: &str) {
        let (mut store, _) = super::Store::open(path).expect("open the cache");
        store
            .db
            .create_cf(name, &rocksdb::Options::default())
            .expect("create a column family");
    }

    pub fn has_column_family(path: &Path, name: &str) -> bool {
        super::super::rocksdb_init::ensure();
        rocksdb::DB::list_cf(&rocksdb::Options::default(), path)
            .is_ok_and(|families| families.iter().any(|f| f == name))
    }
}

/// Bytes of the files directly in `dir` (a RocksDB directory is flat). Their lengths, not
/// their blocks: RocksDB preallocates a write-ahead log far beyond what it holds, and the
/// limit is about what the cache keeps.
pub fn disk_usage(dir: &Path) -> u64 {
    let (data, other) = disk_usage_split(dir);
    data + other
}

/// [`disk_usage`] as (the records' files: tables, blob files, write-ahead logs; everything
/// else: the manifest, options, info logs, vt's own files), which do not grow with entries.
pub fn disk_usage_split(dir: &Path) -> (u64, u64) {
    let mut sizes = (0, 0);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if [".sst", ".blob", ".log"]
            .iter()
            .any(|ext| name.ends_with(ext))
        {
            sizes.0 += meta.len();
        } else {
            sizes.1 += meta.len();
        }
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &Store, family: Family, key: &str, value: impl Into<Vec<u8>>) {
        let mut batch = Batch::default();
        batch.put(family, key, value);
        store.write(batch).expect("write");
    }

    fn got(store: &Store, family: Family, key: &str) -> Option<Vec<u8>> {
        store.get(family, key).expect("get")
    }

    fn secs(n: u64) -> [u8; 8] {
        n.to_le_bytes()
    }

    #[test]
    fn a_read_only_store_refuses_writes_and_defers_memos_and_times_of_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cache");
        let (store, _) = Store::open(&path).expect("open");
        put(&store, Family::Entries, "e", "entry");
        put(&store, Family::Entries, "f", "entry");
        put(&store, Family::Used, "e", secs(5));
        put(&store, Family::Used, "f", secs(9));
        drop(store);

        let store = Store::open_read_only(&path).expect("read-only");
        assert!(!store.writable());
        let mut batch = Batch::default();
        batch.put(Family::Entries, "x", "entry");
        assert!(matches!(
            store.write(batch),
            Err(StoreError::ReadOnly { .. })
        ));
        let mut later = Batch::default();
        later
            .put(Family::StatMemo, "inode", "stamp+hash")
            .put(Family::Used, "e", secs(7)) // later than stored: kept
            .put(Family::Used, "f", secs(3)) // earlier than stored: not kept
            .put(Family::Used, "gone", secs(7)) // no such entry: not kept
            .put(Family::Entries, "x", "entry"); // not deferrable: dropped
        store.write_later(later).expect("deferred");
        assert_eq!(got(&store, Family::Used, "e"), Some(secs(5).to_vec()));
        drop(store);
        assert!(path.join(super::super::deferred::FILE).exists());

        // A read-only open sees the deferred memo, not the dropped entry.
        let store = Store::open_read_only(&path).expect("read-only");
        assert_eq!(
            got(&store, Family::StatMemo, "inode").as_deref(),
            Some(&b"stamp+hash"[..])
        );
        assert_eq!(got(&store, Family::Entries, "x"), None);
        drop(store);

        // The read-write open folds the file in and removes it.
        let (store, outcome) = Store::open(&path).expect("read-write");
        assert_eq!(outcome, OpenOutcome::Reused);
        assert!(!path.join(super::super::deferred::FILE).exists());
        assert_eq!(got(&store, Family::Used, "e"), Some(secs(7).to_vec()));
        assert_eq!(got(&store, Family::Used, "f"), Some(secs(9).to_vec()));
        assert_eq!(got(&store, Family::Used, "gone"), None);
        assert_eq!(got(&store, Family::Entries, "x"), None);
        assert_eq!(
            got(&store, Family::StatMemo, "inode").as_deref(),
            Some(&b"stamp+hash"[..])
        );
        // Read-write, a deferrable write is written at once.
        let mut later = Batch::default();
        later.put(Family::Used, "e", secs(8));
        store.write_later(later).expect("write");
        assert_eq!(got(&store, Family::Used, "e"), Some(secs(8).to_vec()));
        drop(store);
        assert!(!path.join(super::super::deferred::FILE).exists());
    }

    #[test]
    fn a_read_only_open_is_declined_where_a_read_write_one_must_decide() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cache");
        // Nothing there yet: the read-write open creates it.
        assert!(Store::open_read_only(&path).is_none());
        let (store, _) = Store::open(&path).expect("open");
        drop(store);
        // A small log is replayed; a large one is flushed by a read-write open first.
        assert!(Store::open_read_only(&path).is_some(), "the control");
        let (store, _) = Store::open(&path).expect("open");
        put(
            &store,
            Family::Blobs,
            "big",
            vec![7u8; REPLAY_AT as usize + 1],
        );
        drop(store);
        assert!(unflushed_bytes(&path) > REPLAY_AT);
        assert!(Store::open_read_only(&path).is_none());
        drop(Store::open(&path).expect("flush"));
        assert!(unflushed_bytes(&path) <= REPLAY_AT);
        assert!(Store::open_read_only(&path).is_some(), "flushed");
        // Another schema: the read-write open wipes it or says it is newer.
        let (store, _) = Store::open(&path).expect("open");
        put(&store, Family::Meta, "schema_version", "999");
        drop(store);
        assert!(matches!(Store::open(&path), Err(StoreError::Newer { .. })));
        assert!(Store::open_read_only(&path).is_none());

        // A column family this vt does not know (a later schema's).
        let path = dir.path().join("future");
        drop(Store::open(&path).expect("open"));
        testing::add_column_family(&path, "from_the_future");
        assert!(Store::open_read_only(&path).is_none());

        // A deferred file grown past its limit: the read-write open folds it (here: drops
        // what does not read back) and the next read-only open goes ahead.
        let path = dir.path().join("grown");
        drop(Store::open(&path).expect("open"));
        drop(Store::open(&path).expect("flush"));
        let file = path.join(super::super::deferred::FILE);
        std::fs::write(
            &file,
            vec![0u8; super::super::deferred::FOLD_AT as usize + 1],
        )
        .expect("write");
        assert!(Store::open_read_only(&path).is_none());
        drop(Store::open(&path).expect("open"));
        assert!(!file.exists());
        assert!(Store::open_read_only(&path).is_some());
    }

    #[test]
    fn open_write_reopen_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cache");
        let (store, outcome) = Store::open(&path).expect("open fresh");
        assert_eq!(outcome, OpenOutcome::Fresh);
        let mut batch = Batch::default();
        batch
            .put(Family::Entries, "k1", "entry")
            .put(Family::Blobs, "b1", vec![7u8; 10_000])
            .put(Family::PathSets, "p/1", "a")
            .put(Family::PathSets, "p/2", "b")
            .put(Family::PathSets, "q/1", "c");
        store.write(batch).expect("write");
        drop(store);

        let (store, outcome) = Store::open(&path).expect("reopen");
        assert_eq!(outcome, OpenOutcome::Reused);
        assert_eq!(
            store.get(Family::Entries, "k1").expect("get").as_deref(),
            Some(&b"entry"[..])
        );
        assert_eq!(
            store.get(Family::Blobs, "b1").expect("get"),
            Some(vec![7u8; 10_000])
        );
        assert_eq!(store.get(Family::Entries, "missing").expect("get"), None);
        let scanned = store.scan_prefix(Family::PathSets, b"p/").expect("scan");
        assert_eq!(scanned.len(), 2);
    }

    #[test]
    fn another_schema_is_wiped_and_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = Store::open(dir.path()).expect("open");
        let mut batch = Batch::default();
        batch
            .put(Family::Meta, SCHEMA_KEY, "0")
            .put(Family::Entries, "stale", "x");
        store.write(batch).expect("write");
        drop(store);
        let (store, outcome) = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            outcome,
            OpenOutcome::Wiped {
                found: Some("0".into())
            }
        );
        assert_eq!(
            store.get(Family::Entries, "stale").expect("get"),
            None,
            "no stale entry survives"
        );
        assert_eq!(
            store.get(Family::Meta, SCHEMA_KEY).expect("get").as_deref(),
            Some(SCHEMA_VERSION.to_string().as_bytes())
        );
    }

    #[test]
    fn a_second_open_of_the_same_cache_fails_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_first, _) = Store::open(dir.path()).expect("open");
        let err = Store::open(dir.path()).expect_err("RocksDB holds a lock");
        assert!(err.to_string().contains("cannot open the cache"), "{err}");
    }
}

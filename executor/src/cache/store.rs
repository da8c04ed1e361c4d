//! The RocksDB store behind the cache.
//!
//! One database per workspace (`node_modules/.cache/vt` or `VT_CACHE_DIR`), with a column
//! family per kind of record so each can be tuned and scanned on its own. The schema version
//! lives in `meta`; a database written by another schema is wiped and rebuilt (a cache can
//! always be recomputed, a wrong read cannot be undone), and [`Store::open`] says so.

use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteBatch};

/// Bumped whenever the meaning of any stored byte changes.
pub const SCHEMA_VERSION: u32 = 3;

const SCHEMA_KEY: &[u8] = b"schema_version";

/// The column families, by what they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// post-run key → cache entry (outputs manifest, logs, exit status).
    Entries,
    /// pre-run key → the distinct path sets observed under it.
    PathSets,
    /// content hash → bytes (output files, logs). Large values go to BlobDB files.
    Blobs,
    /// (dev, inode, size, mtime, ctime) → content hash, re-verified on use.
    StatMemo,
    /// schema version and other bookkeeping.
    Meta,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Entries,
        Family::PathSets,
        Family::Blobs,
        Family::StatMemo,
        Family::Meta,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Entries => "entries",
            Family::PathSets => "path_sets",
            Family::Blobs => "blobs",
            Family::StatMemo => "stat_memo",
            Family::Meta => "meta",
        }
    }

    fn options(self) -> Options {
        let mut options = Options::default();
        if self == Family::Blobs {
            // Output archives are large and written once: keep them out of the LSM tree.
            options.set_enable_blob_files(true);
            options.set_min_blob_size(4096);
            options.set_enable_blob_gc(true);
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
    pub fn open(path: impl AsRef<Path>) -> Result<(Store, OpenOutcome), StoreError> {
        let path = path.as_ref().to_owned();
        std::fs::create_dir_all(&path).map_err(|source| StoreError::CreateDir {
            path: path.clone(),
            source,
        })?;
        let existed = path.join("CURRENT").exists();
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = Family::ALL.map(|f| ColumnFamilyDescriptor::new(f.name(), f.options()));
        let db = DB::open_cf_descriptors(&options, &path, families).map_err(|error| {
            StoreError::Open {
                path: path.clone(),
                error,
            }
        })?;
        let mut store = Store { db, path };
        let outcome = store.check_schema(existed)?;
        Ok((store, outcome))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_schema(&mut self, existed: bool) -> Result<OpenOutcome, StoreError> {
        let current = SCHEMA_VERSION.to_string();
        let found = self.get(Family::Meta, SCHEMA_KEY)?;
        let outcome = match found {
            Some(v) if v == current.as_bytes() => return Ok(OpenOutcome::Reused),
            None if !existed => OpenOutcome::Fresh,
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
        self.db
            .get_cf(self.cf(family)?, key)
            .map_err(|source| self.io("read", source))
    }

    pub fn write(&self, batch: Batch) -> Result<(), StoreError> {
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

    /// Every `(key, value)` of a family whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, family: Family, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(family)?,
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

#[cfg(test)]
mod tests {
    use super::*;

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

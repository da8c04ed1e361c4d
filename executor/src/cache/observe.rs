//! Inputs: turning an access log into a path set, and observing a path set now.
//!
//! A path set is what a task looked at: `(kind, path)` pairs plus tracked environment
//! names. Observing it means hashing each file, describing each stat, listing each directory
//! and checking each absence *now*; equal observations mean the task would see the same world.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use globset::GlobSet;
use sandbox::{AccessKind, AccessLog};
use serde::{Deserialize, Serialize};

use super::key::{self, Key, KeyHasher};
use super::store::{Batch, Family, Store};

/// A path as the cache stores it: relative to the workspace inside it (caches move with the
/// checkout), absolute outside it. Raw bytes: non-UTF-8 names are kept exactly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CachePath(#[serde(with = "serde_bytes_compat")] pub Vec<u8>);

mod serde_bytes_compat {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(V)
    }
}

impl CachePath {
    pub fn new(root: &Path, path: &Path) -> CachePath {
        match path.strip_prefix(root) {
            Ok(rel) if rel.as_os_str().is_empty() => CachePath(b".".to_vec()),
            Ok(rel) => CachePath(rel.as_os_str().as_bytes().to_vec()),
            Err(_) => CachePath(path.as_os_str().as_bytes().to_vec()),
        }
    }

    pub fn inside_workspace(&self) -> bool {
        !self.0.starts_with(b"/")
    }

    pub fn absolute(&self, root: &Path) -> PathBuf {
        let raw = Path::new(OsStr::from_bytes(&self.0));
        if self.0 == b"." {
            root.to_path_buf()
        } else {
            root.join(raw)
        }
    }

    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

/// What was observed about a path (or an env var).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ObsKind {
    /// Read or executed: the content matters.
    Content,
    /// stat/access/readlink: type, size, link target.
    Meta,
    /// getdents: the sorted names.
    List,
    /// Looked up and not found: must still be absent.
    Absent,
    /// An environment variable passed to the task.
    Env,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Observation {
    pub kind: ObsKind,
    pub path: CachePath,
    /// For a listing of a directory the task wrote into: the names it created, changed or
    /// removed there. They are its outputs, so the listing is keyed by the other names
    /// (what the task found that was not its own doing), not by its own results.
    pub except: Vec<Vec<u8>>,
}

impl Observation {
    pub fn describe(&self) -> String {
        match self.kind {
            ObsKind::Env => {
                let name = self.path.display();
                match name.strip_prefix("=glob ") {
                    Some(glob) => format!("env {glob}"),
                    None => format!("env {name}"),
                }
            }
            _ => self.path.display(),
        }
    }
}

/// Why a run cannot be cached, found while reading its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uncacheable {
    ReadThenWritten(String),
    WroteOutsideWorkspace(String),
    Gap(String),
}

impl std::fmt::Display for Uncacheable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Uncacheable::ReadThenWritten(p) => {
                write!(
                    f,
                    "{p} was read and then written by the task (both input and output)"
                )
            }
            Uncacheable::WroteOutsideWorkspace(p) => {
                write!(f, "it wrote {p}, outside the workspace")
            }
            Uncacheable::Gap(reason) => write!(f, "tracing gap: {reason}"),
        }
    }
}

/// What the cache keeps of a finished run's log.
#[derive(Debug, Default)]
pub struct Digest {
    pub inputs: BTreeSet<Observation>,
    /// Absolute paths the task changed inside the workspace (final state is the output).
    pub outputs: BTreeSet<PathBuf>,
}

/// Paths never treated as inputs or outputs: pseudo file systems and vt's own files.
pub fn is_noise(path: &Path, cache_dir: &Path) -> bool {
    ["/proc", "/sys", "/dev"]
        .iter()
        .any(|p| path.starts_with(p))
        || path.starts_with(cache_dir)
}

/// Reads a log into inputs and outputs, in the order the calls were made.
/// What, besides config globs, is left out of a run's inputs and outputs: paths tools
/// declared with `ignoreInput` / `ignoreOutput` (whole subtrees).
#[derive(Debug, Default, Clone)]
pub struct Ignored {
    pub inputs: Vec<PathBuf>,
    pub outputs: Vec<PathBuf>,
}

pub fn digest(
    log: &AccessLog,
    root: &Path,
    cache_dir: &Path,
    input_exclude: &GlobSet,
    output_exclude: &GlobSet,
    ignored: &Ignored,
) -> Result<Digest, Uncacheable> {
    if let Some(gap) = log.gaps.first() {
        return Err(Uncacheable::Gap(format!("{}: {}", gap.syscall, gap.reason)));
    }
    let mut accesses: Vec<_> = log.accesses.iter().collect();
    accesses.sort_by_key(|a| a.at_ns); // stable: ties keep the tracer's order
    #[derive(Default)]
    struct State {
        written: bool,
        created_by_task: bool,
        read_before_written: bool,
    }
    // First pass: which paths the task changed at all. A probe of such a path (does
    // `dist/` exist? is `out.o` there?) is the task checking its own output, not an input:
    // it would otherwise make every second run miss because the output now exists.
    let changed: std::collections::HashSet<&Path> = accesses
        .iter()
        .filter(|a| !a.kind.is_input())
        .map(|a| a.path.as_path())
        .collect();
    let mut states: HashMap<&Path, State> = HashMap::new();
    let mut digest = Digest::default();
    for access in accesses {
        let path = access.path.as_path();
        if is_noise(path, cache_dir) {
            continue;
        }
        let state = states.entry(path).or_default();
        let relative = path.strip_prefix(root).ok();
        if access.kind.is_input() {
            if state.written {
                continue; // reading what the task itself wrote is not an input
            }
            let reads_content = matches!(access.kind, AccessKind::Read | AccessKind::Exec);
            if changed.contains(path) {
                if reads_content {
                    state.read_before_written = true;
                }
                continue;
            }
            if relative.is_some_and(|rel| input_exclude.is_match(rel))
                || crate::ipc::is_under(path, &ignored.inputs)
            {
                continue;
            }
            let kind = match access.kind {
                AccessKind::Read | AccessKind::Exec => ObsKind::Content,
                AccessKind::ReadDir => ObsKind::List,
                AccessKind::Missing => ObsKind::Absent,
                _ => ObsKind::Meta,
            };
            digest.inputs.insert(Observation {
                kind,
                path: CachePath::new(root, path),
                except: Vec::new(),
            });
        } else {
            if !state.written {
                state.created_by_task = access.kind == AccessKind::Create;
            }
            state.written = true;
            let output_ignored = relative.is_some_and(|rel| output_exclude.is_match(rel))
                || crate::ipc::is_under(path, &ignored.outputs);
            if state.read_before_written
                && relative.is_some()
                && !output_ignored
                && !crate::ipc::is_under(path, &ignored.inputs)
            {
                return Err(Uncacheable::ReadThenWritten(
                    CachePath::new(root, path).display(),
                ));
            }
            if relative.is_some() && !output_ignored {
                digest.outputs.insert(path.to_path_buf());
            }
        }
    }
    // A directory the task writes into (`mkdir -p dist`, then `dist/bundle.js`) is its own
    // output area: whether it existed beforehand is not an input (restoring the outputs
    // recreates it), or deleting `dist/` would turn the next run into a miss.
    let output_dirs: BTreeSet<CachePath> = digest
        .outputs
        .iter()
        .flat_map(|p| {
            p.ancestors()
                .skip(1)
                .take_while(|a| a.starts_with(root))
                .map(|a| CachePath::new(root, a))
        })
        .collect();
    digest.inputs.retain(|o| {
        // Opening the directory (`ls`, `readdir`) reads no content; its listing is below.
        !(matches!(o.kind, ObsKind::Meta | ObsKind::Absent | ObsKind::Content)
            && output_dirs.contains(&o.path))
    });
    let listed_output_dirs: Vec<Observation> = digest
        .inputs
        .iter()
        .filter(|o| o.kind == ObsKind::List && output_dirs.contains(&o.path))
        .cloned()
        .collect();
    for mut listing in listed_output_dirs {
        digest.inputs.remove(&listing);
        let dir = listing.path.absolute(root);
        let mut own: Vec<Vec<u8>> = digest
            .outputs
            .iter()
            .filter_map(|p| p.strip_prefix(&dir).ok())
            .filter_map(|rel| rel.components().next())
            .map(|c| c.as_os_str().as_bytes().to_vec())
            .collect();
        own.sort();
        own.dedup();
        listing.except = own;
        digest.inputs.insert(listing);
    }
    // Outside the workspace a change cannot be replayed: only a temporary file the task
    // created and removed again is harmless.
    for (path, state) in &states {
        if state.written && !path.starts_with(root) && !crate::ipc::is_under(path, &ignored.outputs)
        {
            let gone = std::fs::symlink_metadata(path).is_err();
            if !(gone && state.created_by_task) {
                return Err(Uncacheable::WroteOutsideWorkspace(
                    path.display().to_string(),
                ));
            }
        }
    }
    // A file read, then written: decided above; a path only stat'ed or found missing and
    // then created is an ordinary output.
    Ok(digest)
}

/// Content hashes remembered by (dev, inode) with the size, mtime and ctime they were
/// computed for; any change to the file changes its ctime, so a match is trustworthy.
pub struct StatMemo<'a> {
    store: &'a Store,
    pending: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl<'a> StatMemo<'a> {
    pub fn new(store: &'a Store) -> StatMemo<'a> {
        StatMemo {
            store,
            pending: Mutex::new(Vec::new()),
        }
    }

    fn key(meta: &std::fs::Metadata) -> Vec<u8> {
        let mut key = meta.dev().to_le_bytes().to_vec();
        key.extend_from_slice(&meta.ino().to_le_bytes());
        key
    }

    fn stamp(meta: &std::fs::Metadata) -> [u8; 32] {
        let mut stamp = [0u8; 32];
        stamp[..8].copy_from_slice(&meta.size().to_le_bytes());
        stamp[8..16].copy_from_slice(&meta.mtime().to_le_bytes());
        stamp[16..24].copy_from_slice(&meta.mtime_nsec().to_le_bytes());
        stamp[24..32]
            .copy_from_slice(&(meta.ctime() * 1_000_000_000 + meta.ctime_nsec()).to_le_bytes());
        stamp
    }

    /// The content hash of the regular file at `path` (whose metadata is `meta`).
    pub fn hash(&self, path: &Path, meta: &std::fs::Metadata) -> std::io::Result<Key> {
        let key = Self::key(meta);
        let stamp = Self::stamp(meta);
        if let Ok(Some(value)) = self.store.get(Family::StatMemo, &key)
            && value.len() == 64
            && value[..32] == stamp
        {
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&value[32..]);
            return Ok(Key(hash));
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(std::fs::File::open(path)?)?;
        let hash = Key(*hasher.finalize().as_bytes());
        // Only remember files that have not changed for a moment: a file written within
        // the same clock tick could change again without its timestamps moving.
        let settled = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .is_ok_and(|now| now.as_secs() as i64 > meta.ctime() + 1);
        if settled {
            let mut value = stamp.to_vec();
            value.extend_from_slice(&hash.0);
            if let Ok(mut pending) = self.pending.lock() {
                pending.push((key, value));
            }
        }
        Ok(hash)
    }

    pub fn flush(&self) {
        let pending = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return,
        };
        if pending.is_empty() {
            return;
        }
        let mut batch = Batch::default();
        for (key, value) in pending {
            batch.put(Family::StatMemo, key, value);
        }
        // A memo is an optimization: failing to write it only costs a rehash next time.
        let _ = self.store.write(batch);
    }
}

/// The value of one observation now.
pub fn observe(
    observation: &Observation,
    root: &Path,
    env: &BTreeMap<String, String>,
    memo: &StatMemo<'_>,
) -> String {
    if observation.kind == ObsKind::Env {
        let name = observation.path.display();
        if let Some(glob) = name.strip_prefix("=glob ") {
            return crate::ipc::glob_value(glob, env);
        }
        return match env.get(&name) {
            Some(value) => format!("set:{value}"),
            None => "unset".into(),
        };
    }
    let path = observation.path.absolute(root);
    let lstat = std::fs::symlink_metadata(&path);
    let describe_missing = |e: &std::io::Error| match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => "missing".to_owned(),
        _ => format!("unreadable:{}", e.raw_os_error().unwrap_or(0)),
    };
    match observation.kind {
        ObsKind::Absent => match &lstat {
            Ok(meta) => format!("present:{}", file_type(meta)),
            Err(e) => describe_missing(e),
        },
        ObsKind::Meta => match &lstat {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&path)
                    .map(|t| t.as_os_str().as_bytes().to_vec())
                    .unwrap_or_default();
                let followed = match std::fs::metadata(&path) {
                    Ok(m) => file_type(&m).to_owned(),
                    Err(e) => describe_missing(&e),
                };
                format!("symlink:{}:{followed}", String::from_utf8_lossy(&target))
            }
            Ok(meta) if meta.is_file() => format!("file:{}", meta.len()),
            Ok(meta) => file_type(meta).to_owned(),
            Err(e) => describe_missing(e),
        },
        ObsKind::Content => match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => match memo.hash(&path, &meta) {
                Ok(hash) => format!("file:{}", hash.hex()),
                Err(e) => format!("unreadable:{}", e.raw_os_error().unwrap_or(0)),
            },
            Ok(meta) => file_type(&meta).to_owned(),
            Err(e) => describe_missing(&e),
        },
        ObsKind::List => match std::fs::read_dir(&path) {
            // An output directory that is gone lists as empty: whether it exists is not an
            // input (restoring the outputs recreates it), only foreign entries in it are.
            Err(e) if !observation.except.is_empty() && describe_missing(&e) == "missing" => {
                listing_value(Vec::new())
            }
            Ok(entries) => {
                let names: Vec<Vec<u8>> = entries
                    .flatten()
                    .map(|e| e.file_name().as_bytes().to_vec())
                    .filter(|name| observation.except.binary_search(name).is_err())
                    .collect();
                listing_value(names)
            }
            Err(e) => describe_missing(&e),
        },
        ObsKind::Env => unreachable!("handled above"),
    }
}

/// A directory's sorted names as one value.
fn listing_value(mut names: Vec<Vec<u8>>) -> String {
    names.sort();
    let mut hasher = KeyHasher::new("listing");
    for name in &names {
        hasher.field(name);
    }
    format!("list:{}:{}", names.len(), hasher.finish().hex())
}

fn file_type(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "dir"
    } else if t.is_file() {
        "file"
    } else if t.is_symlink() {
        "symlink"
    } else {
        "special"
    }
}

/// The id of a path set (its observations, sorted).
pub fn path_set_id(observations: &[Observation]) -> Key {
    let mut hasher = KeyHasher::new("path-set");
    for o in observations {
        hasher.field(&[o.kind as u8]).field(&o.path.0);
    }
    hasher.finish()
}

/// The post-run key: pre-run key + path set + what was observed.
pub fn post_key(pre: &Key, path_set: &Key, values: &[String]) -> Key {
    let mut hasher = KeyHasher::new("post-run");
    hasher.field(&pre.0).field(&path_set.0);
    for value in values {
        hasher.field(value.as_bytes());
    }
    hasher.finish()
}

/// A human sentence for one changed observation.
pub fn explain_change(observation: &Observation, before: &str, now: &str) -> String {
    let what = observation.describe();
    match observation.kind {
        ObsKind::Env if observation.path.0.starts_with(b"=glob ") => {
            format!("{what}: the matching variables changed")
        }
        ObsKind::Env => {
            let show = |v: &str| {
                v.strip_prefix("set:")
                    .map_or("(unset)".to_owned(), str::to_owned)
            };
            format!("{what}: {} → {}", show(before), show(now))
        }
        ObsKind::Absent if now.starts_with("present") => {
            format!("{what} now exists (was missing when looked up)")
        }
        _ if now == "missing" => format!("{what}: deleted"),
        _ if before == "missing" => format!("{what}: now exists"),
        ObsKind::Content => format!("{what}: content changed"),
        ObsKind::List => format!("{what}: directory entries changed"),
        ObsKind::Meta if before.starts_with("symlink") || now.starts_with("symlink") => {
            format!("{what}: symlink changed ({before} → {now})")
        }
        _ => format!("{what}: changed ({before} → {now})"),
    }
}

/// The content hash used for blobs.
pub fn blob_key(bytes: &[u8]) -> Key {
    key::content(bytes)
}

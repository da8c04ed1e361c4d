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

use super::guard::Window;
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
    /// A path the task looked at and then changed itself: whether it existed *before* the
    /// task changed it (`[ -e gen.txt ] || …; touch gen.txt`). Its value at store time is
    /// what the task's first look found, taken from the log, not the state after the run.
    Prior,
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
    /// What the task itself did, which the store-time check must not take for the world
    /// moving: see [`OwnChanges`].
    pub own: OwnChanges,
}

/// What a run did itself, as the store-time check needs it.
#[derive(Debug, Default, Clone)]
pub struct OwnChanges {
    /// For each [`ObsKind::Prior`] path: whether it existed when the task first looked.
    pub prior: BTreeMap<CachePath, bool>,
    /// Directories the task created, changed or removed entries of (ignored paths
    /// included; by their resolved path), with those entries' names: their own ctime moves
    /// with the task's work.
    pub entries: HashMap<PathBuf, BTreeSet<Vec<u8>>>,
}

impl OwnChanges {
    /// Whether `path` is, its directory's symlinks resolved, one the task changed itself: a
    /// tool may write a file under one name and read it under another (vite writes its
    /// bundled config beside `node_modules/vite` through the workspace's symlink and
    /// imports it by its real path), and its own temporary file is not the world moving.
    pub fn changed(&self, path: &Path) -> bool {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return false;
        };
        !self.entries.is_empty()
            && self
                .entries
                .get(&canonical(dir))
                .is_some_and(|names| names.contains(name.as_bytes()))
    }
}

/// `path` with the symlinks of its longest existing ancestor resolved (the rest, which does
/// not exist, cannot hold any).
fn canonical(path: &Path) -> PathBuf {
    for ancestor in path.ancestors() {
        if let Ok(real) = std::fs::canonicalize(ancestor) {
            return match path.strip_prefix(ancestor) {
                Ok(rest) if !rest.as_os_str().is_empty() => real.join(rest),
                _ => real,
            };
        }
    }
    path.to_path_buf()
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
        /// The task's first look at a path it changed later found it (true) or not.
        first_look: Option<bool>,
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
    // The directories the task changed entries of, by their resolved path (see
    // `OwnChanges::changed`), resolved once per directory, not per path: a build changes
    // thousands of files in a few directories.
    let mut by_dir: HashMap<&Path, BTreeSet<Vec<u8>>> = HashMap::new();
    for path in &changed {
        if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
            by_dir
                .entry(dir)
                .or_default()
                .insert(name.as_bytes().to_vec());
        }
    }
    for (dir, names) in by_dir {
        digest
            .own
            .entries
            .entry(canonical(dir))
            .or_default()
            .extend(names);
    }
    for access in accesses {
        let path = access.path.as_path();
        if is_noise(path, cache_dir) {
            continue;
        }
        let first = !states.contains_key(path);
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
                } else if first {
                    // What it found before changing it can decide what the task does.
                    state.first_look = Some(access.kind != AccessKind::Missing);
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
    // The state a path was in before the task changed it is part of what the task saw.
    // Not for directories: `mkdir -p` and a tool emptying its output directory look at one
    // before writing into it, and restoring outputs recreates it either way. Not for a path
    // the task removed: emptying `dist/` looks at each old file before deleting it, and
    // keying those would make the run after every rebuild a miss (README, known limits).
    // Not for paths tools declared their own (a tool cache is probed every run).
    for (path, state) in &states {
        let Some(existed) = state.first_look else {
            continue;
        };
        let Ok(relative) = path.strip_prefix(root) else {
            continue; // a write outside the workspace is refused below
        };
        let cache_path = CachePath::new(root, path);
        if output_dirs.contains(&cache_path)
            || output_exclude.is_match(relative)
            || input_exclude.is_match(relative)
            || crate::ipc::is_under(path, &ignored.outputs)
            || crate::ipc::is_under(path, &ignored.inputs)
            || !std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir())
        {
            continue;
        }
        digest.own.prior.insert(cache_path.clone(), existed);
        digest.inputs.insert(Observation {
            kind: ObsKind::Prior,
            path: cache_path,
            except: Vec::new(),
        });
    }
    // A file whose content is an input needs no stat of its own: its content says more
    // than its size, and its mtime would only add misses (`touch`, a checkout back and
    // forth). Not a symlink's: reading follows it, a stat may look at the link.
    let read: BTreeSet<CachePath> = digest
        .inputs
        .iter()
        .filter(|o| o.kind == ObsKind::Content)
        .map(|o| o.path.clone())
        .collect();
    digest.inputs.retain(|o| {
        !(o.kind == ObsKind::Meta
            && read.contains(&o.path)
            && std::fs::symlink_metadata(o.path.absolute(root)).is_ok_and(|m| m.is_file()))
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
    // created and removed again is harmless, or anything inside a directory it created and
    // removed again (vitest's `/tmp/XXXX/ssr/…`, written by rename: a path under a
    // directory that did not exist before the task cannot have existed either).
    let created: std::collections::HashSet<&Path> = states
        .iter()
        .filter(|(_, s)| s.created_by_task)
        .map(|(p, _)| *p)
        .collect();
    for (path, state) in &states {
        if state.written && !path.starts_with(root) && !crate::ipc::is_under(path, &ignored.outputs)
        {
            let gone = std::fs::symlink_metadata(path).is_err();
            let in_scratch = path
                .ancestors()
                .skip(1)
                .any(|a| created.contains(a) && std::fs::symlink_metadata(a).is_err());
            if !(gone && (state.created_by_task || in_scratch)) {
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
    /// `None`: no database to remember in (every file is hashed).
    store: Option<&'a Store>,
    pending: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl<'a> StatMemo<'a> {
    pub fn new(store: &'a Store) -> StatMemo<'a> {
        Self::maybe(Some(store))
    }

    pub fn maybe(store: Option<&'a Store>) -> StatMemo<'a> {
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
        if let Some(Ok(Some(value))) = self.store.map(|s| s.get(Family::StatMemo, &key))
            && value.len() == 64
            && value[..32] == stamp
        {
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&value[32..]);
            return Ok(Key(hash));
        }
        let mut hasher = blake3::Hasher::new();
        // Non-blocking: a file replaced by a fifo since its stat must not hang vt (the
        // inode check below then reports the change).
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)?
        };
        hasher.update_reader(&mut file)?;
        let hash = Key(*hasher.finalize().as_bytes());
        // The bytes hashed belong to `meta` only if the file opened is that inode and it did
        // not change while it was read (a write moves ctime, a replacement the inode).
        let read = file.metadata()?;
        if Self::key(&read) != key || Self::stamp(&read) != stamp {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                format!("{} changed while it was hashed", path.display()),
            ));
        }
        if may_remember(meta.ctime(), std::time::SystemTime::now()) {
            let mut value = stamp.to_vec();
            value.extend_from_slice(&hash.0);
            if let Ok(mut pending) = self.pending.lock() {
                pending.push((key, value));
            }
        }
        Ok(hash)
    }

    pub fn flush(&self) {
        self.flush_with(|_| {});
    }

    /// Writes the hashes to remember, with whatever `more` adds, in one batch.
    pub fn flush_with(&self, more: impl FnOnce(&mut Batch)) {
        let Some(store) = self.store else { return };
        let pending = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => Vec::new(),
        };
        let mut batch = Batch::default();
        for (key, value) in pending {
            batch.put(Family::StatMemo, key, value);
        }
        more(&mut batch);
        if batch.is_empty() {
            return;
        }
        // A memo (or a time of use) is an optimization: failing to write it only costs a
        // rehash next time.
        let _ = store.write(batch);
    }
}

/// Whether a hash computed at `now` may be remembered for a file whose ctime is `ctime_sec`
/// (git's racy-clean rule). A file changed in the same timestamp tick as the hash could be
/// changed again within that tick with no timestamp moving (coarse timestamps, or a file
/// system that keeps whole seconds), and a memo entry for it would then vouch for old
/// content. So only a change at least one whole second older than the hash is trusted.
fn may_remember(ctime_sec: i64, now: std::time::SystemTime) -> bool {
    now.duration_since(std::time::UNIX_EPOCH)
        .is_ok_and(|now| now.as_secs() as i64 > ctime_sec + 1)
}

/// The value of one observation now (a lookup: what a run would see if it started now).
pub fn observe(
    observation: &Observation,
    root: &Path,
    env: &BTreeMap<String, String>,
    memo: &StatMemo<'_>,
) -> String {
    match observe_checked(observation, root, env, memo, None) {
        Ok(value) => value,
        Err(moved) => unreachable!("no run to compare with, yet {moved}"),
    }
}

/// The values a finished run saw of `observations`, or the first that changed while it
/// ran (see `super::guard`): then the run must not be stored. Locally and on a worker.
pub fn observe_run(
    observations: &[Observation],
    root: &Path,
    env: &BTreeMap<String, String>,
    memo: &StatMemo<'_>,
    run: &RunCheck<'_>,
) -> Result<Vec<String>, Moved> {
    if run.window.clock_set_back() {
        return Err(Moved {
            path: "the system clock".into(),
            how: "was set back",
        });
    }
    observations
        .iter()
        .map(|o| observe_checked(o, root, env, memo, Some(run)))
        .collect()
}

/// What the store-time check compares a finished run's observations with.
pub struct RunCheck<'a> {
    pub window: &'a Window,
    pub own: &'a OwnChanges,
}

/// An observation whose value now is not what the task saw: the world moved while it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub path: String,
    pub how: &'static str,
}

impl std::fmt::Display for Moved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} while the task ran", self.path, self.how)
    }
}

/// The value of one observation now; with `run`, the value the task saw, or [`Moved`] where
/// the path changed since the task started (so the value now may not be what it saw).
pub fn observe_checked(
    observation: &Observation,
    root: &Path,
    env: &BTreeMap<String, String>,
    memo: &StatMemo<'_>,
    run: Option<&RunCheck<'_>>,
) -> Result<String, Moved> {
    match (observe_or_move(observation, root, env, memo, run), run) {
        // Changed by the task itself under another name: its own output, valued as it is
        // now, as any read of its own output always was.
        (Err(_), Some(run)) if run.own.changed(&observation.path.absolute(root)) => {
            observe_or_move(observation, root, env, memo, None)
        }
        (value, _) => value,
    }
}

fn observe_or_move(
    observation: &Observation,
    root: &Path,
    env: &BTreeMap<String, String>,
    memo: &StatMemo<'_>,
    run: Option<&RunCheck<'_>>,
) -> Result<String, Moved> {
    if observation.kind == ObsKind::Env {
        let name = observation.path.display();
        if let Some(glob) = name.strip_prefix("=glob ") {
            return Ok(crate::ipc::glob_value(glob, env));
        }
        return Ok(match env.get(&name) {
            Some(value) => format!("set:{value}"),
            None => "unset".into(),
        });
    }
    let moved = |how| Moved {
        path: observation.path.display(),
        how,
    };
    // Changed at or after the task's start (by someone else: paths the task changed are not
    // observations, see `digest`).
    let since_start = |meta: &std::fs::Metadata| {
        run.is_some_and(|run| {
            run.window
                .changed_since_start(meta.ctime(), meta.ctime_nsec())
        })
    };
    let path = observation.path.absolute(root);
    let lstat = std::fs::symlink_metadata(&path);
    let describe_missing = |e: &std::io::Error| match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => "missing".to_owned(),
        _ => format!("unreadable:{}", e.raw_os_error().unwrap_or(0)),
    };
    // A path the task found (read, stat'ed, listed) that is gone now went away while it ran.
    let gone = |e: &std::io::Error| run.is_some() && describe_missing(e) == "missing";
    Ok(match observation.kind {
        ObsKind::Prior => match (run, &lstat) {
            (Some(run), _) => match run.own.prior.get(&observation.path) {
                Some(true) => "present".to_owned(),
                Some(false) => "missing".to_owned(),
                None => return Err(moved("has no recorded first look")),
            },
            (None, Ok(_)) => "present".to_owned(),
            (None, Err(e)) => describe_missing(e),
        },
        ObsKind::Absent => match &lstat {
            // The tracer saw the lookup fail: present now means it appeared afterwards.
            Ok(_) if run.is_some() => return Err(moved("appeared")),
            Ok(meta) => format!("present:{}", file_type(meta)),
            Err(e) => describe_missing(e),
        },
        ObsKind::Meta => match &lstat {
            // A directory's own ctime moves with every entry made in it; its value is its
            // type only, which a change of entries does not touch.
            Ok(meta) if !meta.is_dir() && since_start(meta) => return Err(moved("changed")),
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
            // The mtime too: a tool that only stats a file decides on it (make, ninja).
            Ok(meta) if meta.is_file() => {
                format!(
                    "file:{}:{}.{:09}",
                    meta.len(),
                    meta.mtime(),
                    meta.mtime_nsec()
                )
            }
            Ok(meta) => file_type(meta).to_owned(),
            Err(e) if gone(e) => return Err(moved("was deleted")),
            Err(e) => describe_missing(e),
        },
        ObsKind::Content => {
            // Through a symlink both the link and its target are what was read.
            if let Ok(meta) = &lstat
                && meta.file_type().is_symlink()
                && since_start(meta)
            {
                return Err(moved("changed"));
            }
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() && since_start(&meta) => return Err(moved("changed")),
                Ok(meta) if meta.is_file() => match memo.hash(&path, &meta) {
                    Ok(hash) => format!("file:{}", hash.hex()),
                    Err(e) if run.is_some() && e.kind() == std::io::ErrorKind::Interrupted => {
                        return Err(moved("changed"));
                    }
                    Err(e) => format!("unreadable:{}", e.raw_os_error().unwrap_or(0)),
                },
                Ok(meta) => file_type(&meta).to_owned(),
                Err(e) if gone(&e) => return Err(moved("was deleted")),
                Err(e) => describe_missing(&e),
            }
        }
        ObsKind::List => {
            let own = run
                .filter(|run| !run.own.entries.is_empty())
                .and_then(|run| run.own.entries.get(&canonical(&path)));
            // Entries made or removed by the task move the directory's ctime too: then each
            // other entry is checked on its own instead (an entry removed by someone else
            // beside the task's own work is not seen: README, known limits).
            if own.is_none()
                && let Ok(meta) = &lstat
                && since_start(meta)
            {
                return Err(moved("had entries added or removed"));
            }
            match std::fs::read_dir(&path) {
                // An output directory that is gone lists as empty: whether it exists is not
                // an input (restoring the outputs recreates it), only foreign entries in it.
                Err(e) if !observation.except.is_empty() && describe_missing(&e) == "missing" => {
                    listing_value(Vec::new())
                }
                Ok(entries) => {
                    let mut names = Vec::new();
                    for entry in entries.flatten() {
                        let name = entry.file_name().as_bytes().to_vec();
                        if observation.except.binary_search(&name).is_ok() {
                            continue;
                        }
                        if let Some(own) = own
                            && !own.contains(&name)
                            && entry.metadata().is_ok_and(|m| since_start(&m))
                        {
                            return Err(moved("had entries added or changed"));
                        }
                        names.push(name);
                    }
                    // Listed while it changed: the names read may be half old, half new.
                    if own.is_none()
                        && std::fs::symlink_metadata(&path).is_ok_and(|m| since_start(&m))
                    {
                        return Err(moved("had entries added or removed"));
                    }
                    listing_value(names)
                }
                Err(e) if gone(&e) => return Err(moved("was deleted")),
                Err(e) => describe_missing(&e),
            }
        }
        ObsKind::Env => unreachable!("handled above"),
    })
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
        ObsKind::Prior if now == "missing" => {
            format!("{what} is missing (it existed before the cached run changed it)")
        }
        ObsKind::Prior => format!("{what} exists (it was missing before the cached run made it)"),
        ObsKind::Absent if now.starts_with("present") => {
            format!("{what} now exists (was missing when looked up)")
        }
        _ if now == "missing" => format!("{what}: deleted"),
        _ if before == "missing" => format!("{what}: now exists"),
        ObsKind::Content => format!("{what}: content changed"),
        ObsKind::List => format!("{what}: directory entries changed"),
        ObsKind::Meta
            if before.starts_with("file:")
                && now.starts_with("file:")
                && before.split(':').nth(1) == now.split(':').nth(1) =>
        {
            format!("{what}: modification time changed")
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn log(accesses: &[(AccessKind, &Path)]) -> AccessLog {
        let mut log = AccessLog::default();
        for (at, (kind, path)) in accesses.iter().enumerate() {
            log.push_at(*kind, path.to_path_buf(), 1, at as u64 + 1);
        }
        log
    }

    fn digest_of(root: &Path, accesses: &[(AccessKind, &Path)]) -> Digest {
        let none = GlobSet::empty();
        digest(
            &log(accesses),
            root,
            &root.join(".cache"),
            &none,
            &none,
            &Ignored::default(),
        )
        .expect("cacheable")
    }

    #[test]
    fn a_hash_is_remembered_only_for_a_change_a_whole_second_older() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(100_300);
        assert!(!may_remember(100, now), "the same second");
        assert!(
            !may_remember(99, now),
            "0.3 to 1.3 s older: may share a whole-second stamp"
        );
        assert!(may_remember(98, now));
        assert!(!may_remember(101, now), "a ctime ahead of the clock");
    }

    #[test]
    fn a_file_rewritten_right_after_it_was_hashed_is_hashed_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = Store::open(dir.path().join("cache")).expect("store");
        let memo = StatMemo::new(&store);
        let file = dir.path().join("racy.txt");
        std::fs::write(&file, "v1").expect("write");
        let meta = std::fs::metadata(&file).expect("stat");
        let first = memo.hash(&file, &meta).expect("hash");
        memo.flush();
        // Same size, mtime put back: only content (and ctime) tell.
        std::fs::write(&file, "v2").expect("rewrite");
        std::fs::File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(meta.modified().expect("mtime")))
            .expect("touch -d");
        let meta = std::fs::metadata(&file).expect("stat");
        let second = memo.hash(&file, &meta).expect("hash");
        assert_ne!(first, second);
        assert_eq!(second, key::content(b"v2"));
    }

    #[test]
    fn the_state_found_before_the_task_changed_a_file_is_an_input() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("out")).expect("mkdir");
        let gen_file = root.join("gen.txt");
        let out = root.join("out");
        // The run's end state: it made gen.txt and out/a.txt, and removed stale.txt.
        std::fs::write(&gen_file, "").expect("write");
        std::fs::write(out.join("a.txt"), "").expect("write");
        let stale = root.join("stale.txt");
        let digest = digest_of(
            root,
            &[
                (AccessKind::Missing, &gen_file),
                (AccessKind::Stat, &out),
                (AccessKind::Create, &gen_file),
                (AccessKind::Create, &out.join("a.txt")),
                (AccessKind::Stat, &stale),
                (AccessKind::Delete, &stale),
            ],
        );
        let prior: Vec<_> = digest
            .inputs
            .iter()
            .filter(|o| o.kind == ObsKind::Prior)
            .map(|o| o.path.display())
            .collect();
        // Not the output directory `out` (`mkdir -p` looks at it before writing into it),
        // nor stale.txt, which the task removed (emptying an output directory).
        assert_eq!(prior, ["gen.txt"]);
        assert_eq!(
            digest.own.prior.get(&CachePath(b"gen.txt".to_vec())),
            Some(&false)
        );
        let real = std::fs::canonicalize(root).expect("canonical");
        assert!(digest.own.entries[&real].contains(b"gen.txt".as_slice()));
    }

    #[test]
    fn a_path_first_changed_then_probed_has_no_prior_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let file = root.join("made.txt");
        let digest = digest_of(
            root,
            &[(AccessKind::Create, &file), (AccessKind::Stat, &file)],
        );
        assert!(digest.inputs.is_empty(), "{:?}", digest.inputs);
    }

    #[test]
    fn the_store_time_check_tells_a_change_since_the_start_from_an_older_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let (store, _) = Store::open(root.join(".cache")).expect("store");
        let memo = StatMemo::new(&store);
        std::fs::write(root.join("old.txt"), "old").expect("write");
        std::fs::create_dir(root.join("src")).expect("mkdir");
        super::super::guard::settled();
        let window = Window::open();
        std::fs::write(root.join("new.txt"), "new").expect("write");
        std::fs::write(root.join("src/x"), "x").expect("write");
        let own = OwnChanges::default();
        let run = RunCheck {
            window: &window,
            own: &own,
        };
        let check = |kind, path: &str| {
            let o = Observation {
                kind,
                path: CachePath(path.as_bytes().to_vec()),
                except: Vec::new(),
            };
            observe_checked(&o, root, &BTreeMap::new(), &memo, Some(&run))
        };
        assert!(check(ObsKind::Content, "old.txt").is_ok());
        assert!(check(ObsKind::Meta, "old.txt").is_ok());
        let moved = check(ObsKind::Content, "new.txt").expect_err("changed");
        assert_eq!(moved.to_string(), "new.txt changed while the task ran");
        assert_eq!(
            check(ObsKind::Absent, "new.txt").expect_err("appeared").how,
            "appeared"
        );
        assert_eq!(check(ObsKind::Absent, "none").as_deref(), Ok("missing"));
        assert_eq!(
            check(ObsKind::Content, "gone.txt").expect_err("gone").how,
            "was deleted"
        );
        assert!(check(ObsKind::List, "src").is_err());
        // A directory's own metadata is its type: entries made in it do not change that.
        assert!(check(ObsKind::Meta, "src").is_ok());
        // Entries the task made itself in a listed directory are not the world moving; one
        // that someone else made is.
        let mut own = OwnChanges::default();
        own.entries.insert(
            std::fs::canonicalize(root.join("src")).expect("canonical"),
            [b"x".to_vec()].into_iter().collect(),
        );
        let mine = RunCheck {
            window: &window,
            own: &own,
        };
        let listing = Observation {
            kind: ObsKind::List,
            path: CachePath(b"src".to_vec()),
            except: vec![b"x".to_vec()],
        };
        assert!(observe_checked(&listing, root, &BTreeMap::new(), &memo, Some(&mine)).is_ok());
        std::fs::write(root.join("src/y"), "y").expect("write");
        assert!(observe_checked(&listing, root, &BTreeMap::new(), &memo, Some(&mine)).is_err());
    }
}

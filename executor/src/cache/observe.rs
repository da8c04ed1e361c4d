//! Observing a path set now: hashing each file, describing each stat, listing each
//! directory and checking each absence, with a stat memo so an unchanged file is not hashed
//! again. Equal observations mean the task would see the same world.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use super::guard::Window;
use super::key::{Key, KeyHasher};
use super::path_set::{CachePath, ObsKind, Observation, OwnChanges, TASK_PATH, canonical};
use super::store::{Batch, Family, Store};

/// Content hashes remembered by (dev, inode) with the size, mtime and ctime they were
/// computed for; any change to the file changes its ctime, so a match is trustworthy.
pub struct StatMemo<'a> {
    /// `None`: no database to remember in (every file is hashed).
    store: Option<&'a Store>,
    pending: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
    /// What `lstat` said of each path during this observing (its metadata, or the errno).
    /// One observing is one moment: a path is looked at once, however many observations
    /// name it. A path set names the same file more than once: a file under `HOME` is
    /// observed at its absolute path and relative to `$HOME` (`path_set::Base::Var`), a
    /// program run from `PATH` is read (`Content`) and found (`Which`), and a `PATH` search
    /// (`which`) skips the candidates already found absent (the shell's misses in every
    /// `PATH` directory are recorded one by one); together a fifth of a cached node task's
    /// `statx`. A file that changes while it is read is forgotten and looked at again
    /// ([`observe`]'s retries).
    lstats: Mutex<std::collections::HashMap<Vec<u8>, Result<std::fs::Metadata, i32>>>,
    /// Runs once between a file's stat and its read: the tests replace the file there.
    #[cfg(test)]
    between_stat_and_read: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl<'a> StatMemo<'a> {
    pub fn new(store: &'a Store) -> StatMemo<'a> {
        Self::maybe(Some(store))
    }

    pub fn maybe(store: Option<&'a Store>) -> StatMemo<'a> {
        StatMemo {
            store,
            pending: Mutex::new(Vec::new()),
            lstats: Mutex::new(std::collections::HashMap::new()),
            #[cfg(test)]
            between_stat_and_read: Mutex::new(None),
        }
    }

    /// `lstat(path)`, once per observing ([`StatMemo::lstats`]).
    fn lstat(&self, path: &Path) -> std::io::Result<std::fs::Metadata> {
        let key = path.as_os_str().as_bytes();
        let lstats = || {
            self.lstats
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(known) = lstats().get(key) {
            return known.clone().map_err(std::io::Error::from_raw_os_error);
        }
        let found = std::fs::symlink_metadata(path);
        let remembered = match &found {
            Ok(meta) => Some(Ok(meta.clone())),
            Err(e) => e.raw_os_error().map(Err),
        };
        if let Some(remembered) = remembered {
            lstats().insert(key.to_vec(), remembered);
        }
        found
    }

    /// Looks at `path` afresh next time: it changed while it was read.
    fn forget(&self, path: &Path) {
        self.lstats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(path.as_os_str().as_bytes());
    }

    /// Whether this observing found nothing at `path` (ENOENT or ENOTDIR).
    fn known_absent(&self, path: &Path) -> bool {
        matches!(
            self.lstats
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(path.as_os_str().as_bytes()),
            Some(Err(libc::ENOENT | libc::ENOTDIR))
        )
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
        #[cfg(test)]
        if let Some(replace) = self
            .between_stat_and_read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            replace();
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
        // rehash next time. Read-only, it waits for the next read-write open.
        let _ = store.write_later(batch);
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

/// How many times a lookup looks at a file that keeps changing under it before it calls it
/// unreadable (a miss).
const LOOKS: usize = 3;

/// The value of one observation now (a lookup: what a run would see if it started now).
///
/// A file replaced or written between its stat and its read is looked at again: another
/// task of the run may be replaying outputs (renamed into place) over what this task reads,
/// and the value wanted is the file as it is, not "unreadable", which would miss.
pub fn observe(
    observation: &Observation,
    root: &Path,
    env: &BTreeMap<String, String>,
    memo: &StatMemo<'_>,
) -> String {
    for _ in 0..LOOKS {
        if let Ok(value) = observe_checked(observation, root, env, memo, None) {
            return value;
        }
    }
    // Never a stored value: a run's check fails where this did (`observe_run`).
    "unreadable:changing".into()
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
        (Err(_), Some(run))
            if observation
                .resolve(root, env)
                .is_some_and(|path| run.own.changed(&path)) =>
        {
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
        path: observation.display_path(),
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
    if observation.kind == ObsKind::Which {
        let program = observation.path.absolute(root);
        let Some(name) = program.file_name() else {
            return Ok("none".into());
        };
        let Some(path_var) = env.get(TASK_PATH) else {
            return Ok("no PATH".into());
        };
        return Ok(match which(name, path_var, memo) {
            // Put there while the task ran: it may have run the one before.
            Some((_, meta)) if since_start(&meta) => {
                return Err(moved("appeared on PATH while the task ran"));
            }
            Some((found, _)) => format!("found:{}", CachePath::new(root, &found).display()),
            None => "none".into(),
        });
    }
    // Relative to a variable the looking run does not have (as an absolute path).
    let Some(path) = observation.resolve(root, env) else {
        return Ok("no such variable".into());
    };
    let lstat = memo.lstat(&path);
    let describe_missing = |e: &std::io::Error| {
        if is_absent(e) {
            "missing".to_owned()
        } else {
            format!("unreadable:{}", e.raw_os_error().unwrap_or(0))
        }
    };
    // A path the task found (read, stat'ed, listed) that is gone now went away while it ran.
    let gone = |e: &std::io::Error| run.is_some() && is_absent(e);
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
            // Not a symlink: what `stat` would say is what `lstat` said.
            let followed = match &lstat {
                Ok(meta) if !meta.file_type().is_symlink() => Ok(meta.clone()),
                _ => std::fs::metadata(&path),
            };
            match followed {
                Ok(meta) if meta.is_file() && since_start(&meta) => return Err(moved("changed")),
                Ok(meta) if meta.is_file() => match memo.hash(&path, &meta) {
                    Ok(hash) => format!("file:{}", hash.hex()),
                    // Replaced or written between the stat and the read: looked at
                    // afresh if the lookup tries again.
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                        memo.forget(&path);
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
                Err(e) if !observation.except.is_empty() && is_absent(&e) => {
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
        ObsKind::Env | ObsKind::Which => unreachable!("handled above"),
    })
}

/// No entry at the path: ENOENT, or ENOTDIR for one under something that is not a
/// directory (what an observation values "missing").
fn is_absent(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
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

/// The first executable file named `name` in the absolute directories of `path_var`, as
/// `execvp` searches (relative entries depend on the caller's working directory and are
/// skipped, at store time and at lookup alike), with its own metadata (not its target's,
/// so a link put there is seen as new). Not `sandbox::trace::program::find`, which vt's own
/// lookup of the shell uses: that one gives up on anything unusual (a relative entry, a
/// directory by the name) and leaves the search to the child, where this must answer.
fn which(
    name: &std::ffi::OsStr,
    path_var: &str,
    memo: &StatMemo<'_>,
) -> Option<(std::path::PathBuf, std::fs::Metadata)> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path_var)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .filter(|candidate| !memo.known_absent(candidate))
        .find_map(|candidate| {
            let target = std::fs::metadata(&candidate).ok()?;
            (target.is_file() && target.permissions().mode() & 0o111 != 0)
                .then(|| memo.lstat(&candidate).ok())
                .flatten()
                .map(|own| (candidate, own))
        })
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
        ObsKind::Which => {
            let show = |v: &str| {
                v.strip_prefix("found:")
                    .map_or_else(|| "nothing".to_owned(), str::to_owned)
            };
            format!("{what} finds {} now (was {})", show(now), show(before))
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key;
    use crate::cache::path_set::{Base, CachePath};
    use std::time::{Duration, SystemTime};

    /// A `PATH` search skips the candidates the same observing found absent (the shell's
    /// recorded misses), and finds the same program as a search that looks at each.
    #[test]
    fn a_path_search_skips_what_the_same_observing_found_absent() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir(&a).expect("mkdir");
        std::fs::create_dir(&b).expect("mkdir");
        let tool = b.join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path_var = format!("{}:{}", a.display(), b.display());
        let memo = StatMemo::maybe(None);
        let missing =
            Observation::new(ObsKind::Absent, CachePath::new(dir.path(), &a.join("tool")));
        assert_eq!(
            observe(&missing, dir.path(), &BTreeMap::new(), &memo),
            "missing"
        );
        assert!(memo.known_absent(&a.join("tool")));
        let found = which(std::ffi::OsStr::new("tool"), &path_var, &memo).map(|(p, _)| p);
        assert_eq!(found, Some(tool.clone()));
        assert_eq!(search("tool", &path_var), Some(tool));
    }

    /// One observing looks at a path once, however many observations name it (a file under
    /// `HOME` and its `$HOME` twin): what it values is one moment. The control: the next
    /// observing (a new memo) sees the change.
    #[test]
    fn one_observing_looks_at_a_path_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        std::fs::create_dir(&home).expect("mkdir");
        std::fs::write(home.join(".npmrc"), "a").expect("write");
        let absolute = Observation::new(
            ObsKind::Meta,
            CachePath::new(dir.path(), &home.join(".npmrc")),
        );
        let mut twin = Observation::new(ObsKind::Meta, CachePath(b".npmrc".to_vec()));
        twin.base = Base::Var("HOME".into());
        let env = BTreeMap::from([(
            crate::cache::path_set::task_var("HOME"),
            home.display().to_string(),
        )]);
        let memo = StatMemo::maybe(None);
        let first = observe(&absolute, dir.path(), &env, &memo);
        assert!(first.starts_with("file:1:"), "{first}");
        std::fs::write(home.join(".npmrc"), "ab").expect("write");
        assert_eq!(
            observe(&twin, dir.path(), &env, &memo),
            first,
            "the same moment"
        );
        let next = StatMemo::maybe(None);
        assert!(observe(&twin, dir.path(), &env, &next).starts_with("file:2:"));
        assert!(observe(&absolute, dir.path(), &env, &next).starts_with("file:2:"));
    }

    /// `name` on `path_var`, looking at every candidate.
    fn search(name: &str, path_var: &str) -> Option<std::path::PathBuf> {
        which(std::ffi::OsStr::new(name), path_var, &StatMemo::maybe(None)).map(|(p, _)| p)
    }

    #[test]
    fn which_finds_the_first_executable_file_on_absolute_path_entries() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        for d in [&a, &b, &c] {
            std::fs::create_dir(d).expect("mkdir");
        }
        let tool = |d: &Path, mode: u32| {
            let path = d.join("tool");
            std::fs::write(&path, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        tool(&a, 0o644); // not executable: skipped, as execvp skips it
        std::fs::create_dir(b.join("tool")).expect("a directory: skipped");
        tool(&c, 0o755);
        let path_var = format!("relative:{}:{}:{}", a.display(), b.display(), c.display());
        assert_eq!(search("tool", &path_var), Some(c.join("tool")));
        assert!(search("absent", &path_var).is_none());
        // A relative entry is never searched (it depends on the caller's cwd).
        let here = std::env::current_dir().expect("cwd");
        let relative = c.strip_prefix(&here).map(|r| r.display().to_string());
        if let Ok(relative) = relative {
            assert!(search("tool", &relative).is_none());
        }
    }

    /// A file replaced between a lookup's stat and its read (another task's replay renaming
    /// its output into place) is the file as it is now, not "unreadable" (a spurious miss);
    /// a finished run's check still calls it changed (the task may have read either).
    #[test]
    fn a_file_replaced_between_stat_and_read_is_looked_at_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_owned();
        std::fs::write(root.join("shared.txt"), "v1").expect("write");
        let read = Observation::new(ObsKind::Content, CachePath(b"shared.txt".to_vec()));
        let replace_with = |text: &'static str| {
            let root = root.clone();
            Box::new(move || {
                std::fs::write(root.join(".shared.txt.tmp"), text).expect("write");
                std::fs::rename(root.join(".shared.txt.tmp"), root.join("shared.txt"))
                    .expect("rename");
            })
        };
        for text in ["v1", "v2"] {
            let memo = StatMemo::maybe(None);
            *memo.between_stat_and_read.lock().expect("hook") = Some(replace_with(text));
            assert_eq!(
                observe(&read, &root, &BTreeMap::new(), &memo),
                format!("file:{}", key::content(text.as_bytes()).hex())
            );
        }
        let memo = StatMemo::maybe(None);
        *memo.between_stat_and_read.lock().expect("hook") = Some(replace_with("v3"));
        let window = Window::open();
        let own = OwnChanges::default();
        let run = RunCheck {
            window: &window,
            own: &own,
        };
        let moved = observe_checked(&read, &root, &BTreeMap::new(), &memo, Some(&run));
        assert_eq!(moved.expect_err("replaced").how, "changed");
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
            let o = Observation::new(kind, CachePath(path.as_bytes().to_vec()));
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
            except: vec![b"x".to_vec()],
            ..Observation::new(ObsKind::List, CachePath(b"src".to_vec()))
        };
        assert!(observe_checked(&listing, root, &BTreeMap::new(), &memo, Some(&mine)).is_ok());
        std::fs::write(root.join("src/y"), "y").expect("write");
        assert!(observe_checked(&listing, root, &BTreeMap::new(), &memo, Some(&mine)).is_err());
    }
}

//! The path set: what a finished run's access log says the task looked at and changed.
//!
//! A path set is `(kind, path)` pairs plus tracked environment names, read from the log in
//! the order the calls were made ([`digest`]); its values are observed by
//! [`super::observe`], and its id and the post-run key are in [`super::key`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use globset::GlobSet;
use sandbox::{AccessKind, AccessLog};
use serde::{Deserialize, Serialize};

use super::record::Uncacheable;

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
    /// A program the task executed from a directory on its `PATH` (the path is that
    /// program): which file its name finds on the task's `PATH` now. `PATH` is passed, not
    /// keyed (it differs from machine to machine), but a directory put in front of the one
    /// the program came from, holding a program of the same name, changes what the task
    /// runs: its own lookups there never happened, so no other observation would notice.
    Which,
}

/// The name under which [`ObsKind::Which`] finds the task's `PATH` in the environment
/// the cache observes with (`=` cannot be part of a variable's name).
pub const TASK_PATH: &str = "=PATH";

/// The name under which the environment the cache observes with holds the value the task
/// got for `variable`, for the observations relative to it ([`Base::Var`]).
pub fn task_var(variable: &str) -> String {
    format!("=VAR {variable}")
}

/// What an observation's path is relative to.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Base {
    /// The workspace root inside it, absolute outside it ([`CachePath`]).
    #[default]
    Root,
    /// The directory (or file) an environment variable the task got names: `HOME`,
    /// `TMPDIR`, `SHELL`, a variable passed with `untrackedEnv`. Such a variable is passed,
    /// not keyed (it differs between users and machines), and a tool finds files through it
    /// (`~/.npmrc`, `~/.gitconfig`, Python's user site-packages, the program `$SHELL`
    /// names): a path the task saw at or under its value is also observed at or under the
    /// value the run that looks it up has, as the twin of the absolute observation
    /// ([`variable_twins`]).
    Var(String),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Observation {
    pub kind: ObsKind,
    pub path: CachePath,
    pub base: Base,
    /// For a listing of a directory the task wrote into: the names it created, changed or
    /// removed there. They are its outputs, so the listing is keyed by the other names
    /// (what the task found that was not its own doing), not by its own results.
    pub except: Vec<Vec<u8>>,
}

impl Observation {
    /// An observation of `path` (relative to the workspace root, or absolute).
    pub fn new(kind: ObsKind, path: CachePath) -> Observation {
        Observation {
            kind,
            path,
            base: Base::Root,
            except: Vec::new(),
        }
    }

    /// Whether its path is one inside the workspace (relative to its root).
    pub fn inside_workspace(&self) -> bool {
        self.base == Base::Root && self.path.inside_workspace()
    }

    /// The file system path it observes: `None` for one relative to a variable that the
    /// environment `env` (see [`task_var`]) does not hold as an absolute path.
    pub fn resolve(&self, root: &Path, env: &BTreeMap<String, String>) -> Option<PathBuf> {
        match &self.base {
            Base::Root => Some(self.path.absolute(root)),
            Base::Var(name) => env
                .get(&task_var(name))
                .map(Path::new)
                .filter(|value| value.is_absolute())
                .map(|value| self.path.absolute(value)),
        }
    }

    /// Its path as the user reads it: `~/.npmrc` for one relative to `HOME`, `$TMPDIR/x`
    /// for one relative to `TMPDIR`.
    pub fn display_path(&self) -> String {
        let var = match &self.base {
            Base::Root => return self.path.display(),
            Base::Var(name) if name == "HOME" => "~".to_owned(),
            Base::Var(name) => format!("${name}"),
        };
        match self.path.0.as_slice() {
            b"." => var,
            _ => format!("{var}/{}", self.path.display()),
        }
    }

    pub fn describe(&self) -> String {
        match self.kind {
            ObsKind::Env => {
                let name = self.path.display();
                match name.strip_prefix("=glob ") {
                    Some(glob) => format!("env {glob}"),
                    None => format!("env {name}"),
                }
            }
            ObsKind::Which => {
                let path = self.path.display();
                let name = path.rsplit('/').next().unwrap_or(&path).to_owned();
                format!("`{name}` on PATH")
            }
            _ => self.display_path(),
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
pub(super) fn canonical(path: &Path) -> PathBuf {
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
    // vt's own cache directory changes while the task runs (the store opens it read-write
    // after a read-only lookup): in a directory whose entries the task changed too, each of
    // which the store-time check then looks at on its own (`observe`), that is not the
    // world moving. Only where the task changed entries: elsewhere the directory's own
    // ctime is checked, and the cache's inner changes do not move it.
    if let (Some(dir), Some(name)) = (cache_dir.parent(), cache_dir.file_name())
        && let Some(names) = digest.own.entries.get_mut(&canonical(dir))
    {
        names.insert(name.as_bytes().to_vec());
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
            digest
                .inputs
                .insert(Observation::new(kind, CachePath::new(root, path)));
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
        digest
            .inputs
            .insert(Observation::new(ObsKind::Prior, cache_path));
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

/// For each observation of a path outside the workspace at or under the value of one of
/// `variables` (name, value: the task's environment), its twin relative to that variable
/// ([`Base::Var`]). The absolute observation stays: a tool may have reached the path another
/// way (its passwd entry's home directory, a literal path), and then that is the file it
/// reads whatever the variable says. A run whose variable names another place hits only
/// where what it finds there is what this run found.
pub fn variable_twins<'a>(
    observations: impl IntoIterator<Item = &'a Observation>,
    variables: &[(&str, &Path)],
) -> Vec<Observation> {
    // A relative value is no place of its own: paths through it resolve from the task's
    // directory, and were observed as such.
    let places: Vec<(&str, &Path)> = variables
        .iter()
        .copied()
        .filter(|(_, value)| value.is_absolute())
        .collect();
    let mut twins = Vec::new();
    if places.is_empty() {
        return twins;
    }
    for o in observations {
        if o.base != Base::Root
            || !matches!(
                o.kind,
                ObsKind::Content | ObsKind::Meta | ObsKind::List | ObsKind::Absent
            )
            || o.path.inside_workspace()
        {
            continue;
        }
        let absolute = Path::new(OsStr::from_bytes(&o.path.0));
        for (name, value) in &places {
            if absolute.starts_with(value) {
                twins.push(Observation {
                    kind: o.kind,
                    path: CachePath::new(value, absolute),
                    base: Base::Var((*name).to_owned()),
                    except: o.except.clone(),
                });
            }
        }
    }
    twins
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_path_seen_under_a_variables_value_gets_a_twin_relative_to_it() {
        let at = |kind, path: &str| Observation::new(kind, CachePath(path.as_bytes().to_vec()));
        let seen = [
            at(ObsKind::Content, "/home/me/.npmrc"),
            at(
                ObsKind::Absent,
                "/home/me/.local/lib/python3.11/site-packages",
            ),
            at(ObsKind::Meta, "/home/me"),
            at(ObsKind::Content, "/bin/bash"),
            // Not under one, inside the workspace, or not a path: no twin.
            at(ObsKind::Content, "/home/meta/x"),
            at(ObsKind::Content, "/usr/lib/libc.so.6"),
            at(ObsKind::Content, "src/a.js"),
            at(ObsKind::Env, "/home/me/odd-but-a-name"),
            at(ObsKind::Which, "/home/me/.cargo/bin/cargo"),
        ];
        let variables = [
            ("HOME", Path::new("/home/me")),
            ("SHELL", Path::new("/bin/bash")),
            ("RELATIVE", Path::new("me")),
        ];
        let twins = variable_twins(&seen, &variables);
        let shown: Vec<_> = twins.iter().map(|o| (o.kind, o.display_path())).collect();
        assert_eq!(
            shown,
            [
                (ObsKind::Content, "~/.npmrc".to_owned()),
                (
                    ObsKind::Absent,
                    "~/.local/lib/python3.11/site-packages".to_owned()
                ),
                (ObsKind::Meta, "~".to_owned()),
                (ObsKind::Content, "$SHELL".to_owned()),
            ]
        );
        assert!(twins.iter().all(|o| !o.inside_workspace()));
        // Resolved against the values of the run that looks: another user's files.
        let env = BTreeMap::from([
            (task_var("HOME"), "/home/you".to_owned()),
            (task_var("SHELL"), "/bin/zsh".to_owned()),
        ]);
        let root = Path::new("/work");
        assert_eq!(
            twins[0].resolve(root, &env),
            Some(PathBuf::from("/home/you/.npmrc"))
        );
        assert_eq!(
            twins[2].resolve(root, &env),
            Some(PathBuf::from("/home/you"))
        );
        assert_eq!(
            twins[3].resolve(root, &env),
            Some(PathBuf::from("/bin/zsh"))
        );
        assert_eq!(twins[0].resolve(root, &BTreeMap::new()), None);
        // A relative value is no place of its own.
        assert!(variable_twins(&seen, &[("RELATIVE", Path::new("me"))]).is_empty());
    }
}

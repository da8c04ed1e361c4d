//! Where a change to an observation shows: the directory entries whose events can change
//! its value, and an index from those entries back to the observations.
//!
//! Directories are watched, not files: an editor that saves by writing a new file and
//! renaming it over the old one replaces the inode a file watch would follow, and a path
//! that does not exist (a failed lookup) can only be seen appearing from its directory.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::cache::path_set::{Base, ObsKind, Observation};

/// A directory entry to watch: `name` in `dir`, or every entry of `dir` (`None`: a listing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub dir: PathBuf,
    pub name: Option<OsString>,
}

/// Where changes to `observation` show. Nothing for an environment variable: a running
/// vt's environment cannot change, so there is nothing to watch. Nothing for a path
/// relative to a variable either: it is the twin of the same path's absolute observation
/// (`path_set::variable_twins`), which is watched.
pub fn targets(observation: &Observation, root: &Path) -> Vec<Target> {
    if observation.kind == ObsKind::Env || observation.base != Base::Root {
        return Vec::new();
    }
    let path = observation.path.absolute(root);
    let mut targets = Vec::new();
    if observation.kind == ObsKind::List {
        targets.push(Target {
            dir: path.clone(),
            name: None,
        });
    }
    targets.push(entry(&path));
    // Read through a symlink: the file it points to changes in its own directory.
    if matches!(observation.kind, ObsKind::Content | ObsKind::Meta)
        && let Ok(real) = std::fs::canonicalize(&path)
        && real != path
    {
        targets.push(entry(&real));
    }
    targets
}

/// `path` as an entry of the nearest directory that exists: its parent, or, below a
/// directory that does not exist, the first missing component in the deepest ancestor that
/// does (a lookup of `a/b/c.js` with no `a/b` is watched as `b` appearing in `a`; once it
/// exists the watch moves down).
fn entry(path: &Path) -> Target {
    let mut child = path;
    for ancestor in path.ancestors().skip(1) {
        if ancestor.is_dir() {
            return Target {
                dir: ancestor.to_path_buf(),
                name: child.file_name().map(OsStr::to_os_string),
            };
        }
        child = ancestor;
    }
    Target {
        dir: PathBuf::from("/"),
        name: None,
    }
}

/// One observation of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ref {
    pub task: usize,
    pub observation: usize,
}

#[derive(Debug, Default)]
struct Entries {
    /// Observations that any entry of the directory can change (listings).
    any: Vec<Ref>,
    names: HashMap<OsString, Vec<Ref>>,
}

/// From a directory entry's event back to the observations it may have changed.
#[derive(Debug, Default)]
pub struct Index {
    dirs: HashMap<PathBuf, Entries>,
}

impl Index {
    /// The index of every task's observations (`None`: a task with nothing to watch).
    pub fn of<'a>(
        tasks: impl IntoIterator<Item = Option<&'a [Observation]>>,
        root: &Path,
    ) -> Index {
        let mut index = Index::default();
        for (task, observations) in tasks.into_iter().enumerate() {
            for (observation, o) in observations.unwrap_or_default().iter().enumerate() {
                let at = Ref { task, observation };
                for target in targets(o, root) {
                    let entries = index.dirs.entry(target.dir).or_default();
                    match target.name {
                        None => entries.any.push(at),
                        Some(name) => entries.names.entry(name).or_default().push(at),
                    }
                }
            }
        }
        index
    }

    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.keys().map(PathBuf::as_path)
    }

    /// The observations an event on `name` in `dir` may have changed (`None`: the
    /// directory itself went away or the kernel lost events for it: all of them).
    pub fn affected(&self, dir: &Path, name: Option<&OsStr>, into: &mut Vec<Ref>) {
        let Some(entries) = self.dirs.get(dir) else {
            return;
        };
        into.extend_from_slice(&entries.any);
        match name {
            Some(name) => {
                if let Some(refs) = entries.names.get(name) {
                    into.extend_from_slice(refs);
                }
            }
            None => into.extend(entries.names.values().flatten().copied()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::path_set::CachePath;

    fn obs(kind: ObsKind, path: &str) -> Observation {
        Observation::new(kind, CachePath(path.as_bytes().to_vec()))
    }

    fn target(dir: &Path, name: Option<&str>) -> Target {
        Target {
            dir: dir.to_path_buf(),
            name: name.map(OsString::from),
        }
    }

    #[test]
    fn each_kind_of_observation_is_watched_where_its_value_can_change() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("src")).expect("test fixture");
        std::fs::write(root.join("src/a.js"), "a").expect("test fixture");
        let src = root.join("src");
        assert_eq!(
            targets(&obs(ObsKind::Content, "src/a.js"), root),
            vec![target(&src, Some("a.js"))]
        );
        // A listing: every entry of the directory, and the directory as an entry of its
        // parent (deleted, replaced).
        assert_eq!(
            targets(&obs(ObsKind::List, "src"), root),
            vec![target(&src, None), target(root, Some("src"))]
        );
        // A failed lookup below a missing directory: the first missing name, where it
        // would appear.
        assert_eq!(
            targets(&obs(ObsKind::Absent, "src/lib/b.js"), root),
            vec![target(&src, Some("lib"))]
        );
        assert!(targets(&obs(ObsKind::Env, "HOME"), root).is_empty());
    }

    #[test]
    fn a_file_read_through_a_symlink_is_watched_in_both_directories() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().canonicalize().expect("canonical temp dir");
        std::fs::create_dir_all(root.join("real")).expect("test fixture");
        std::fs::write(root.join("real/x"), "x").expect("test fixture");
        std::os::unix::fs::symlink(root.join("real/x"), root.join("link")).expect("test fixture");
        assert_eq!(
            targets(&obs(ObsKind::Content, "link"), &root),
            vec![
                target(&root, Some("link")),
                target(&root.join("real"), Some("x"))
            ]
        );
    }

    #[test]
    fn an_event_finds_the_observations_of_its_entry_and_the_listings_of_its_directory() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("src")).expect("test fixture");
        let first = [obs(ObsKind::Content, "src/a.js")];
        let second = [obs(ObsKind::Meta, "README"), obs(ObsKind::List, "src")];
        let index = Index::of([Some(&first[..]), None, Some(&second[..])], root);
        let at = |task, observation| Ref { task, observation };
        let affected = |dir: &Path, name: Option<&str>| {
            let mut refs = Vec::new();
            index.affected(dir, name.map(OsStr::new), &mut refs);
            refs.sort();
            refs
        };
        let src = root.join("src");
        assert_eq!(affected(&src, Some("a.js")), vec![at(0, 0), at(2, 1)]);
        assert_eq!(affected(&src, Some("new.js")), vec![at(2, 1)]);
        assert_eq!(affected(root, Some("README")), vec![at(2, 0)]);
        assert_eq!(affected(root, Some("NOTES")), Vec::<Ref>::new());
        assert_eq!(affected(&src, None), vec![at(0, 0), at(2, 1)]);
    }
}

//! Turning what a process passed to a call into the path the cache keys on.
//!
//! - Relative paths resolve against the process's cwd, which the resolver follows through
//!   `Hello` (initial cwd), `Chdir` and `Forked` (children inherit it), or against the
//!   directory of an `openat` dirfd the library already named.
//! - `.`/`..`/`//` are removed lexically.
//! - macOS's top-level aliases are folded into their real location: `/tmp`, `/var` and `/etc`
//!   are symlinks into `/private`, and `/System/Volumes/Data/...` is the firmlinked data
//!   volume behind `/Users`, `/Applications`, `/usr/local`, … — one file, one name.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// Top-level symlinks into `/private` on every macOS since 10.0.
const PRIVATE_ALIASES: &[&str] = &["/tmp", "/var", "/etc"];
/// The data volume's mount point; paths under it are also reachable without the prefix.
const DATA_VOLUME: &str = "/System/Volumes/Data";

/// The name a file is cached under.
pub fn normalize(path: &Path) -> PathBuf {
    let clean = clean(path);
    let clean = match clean.strip_prefix(DATA_VOLUME) {
        Ok(rest) if !rest.as_os_str().is_empty() => Path::new("/").join(rest),
        _ => clean,
    };
    for alias in PRIVATE_ALIASES {
        if let Ok(rest) = clean.strip_prefix(alias) {
            let mut real = PathBuf::from("/private");
            real.push(alias.trim_start_matches('/'));
            real.push(rest);
            return clean_trailing(real);
        }
    }
    clean
}

fn clean_trailing(path: PathBuf) -> PathBuf {
    path.components().collect()
}

/// `a/./b/../c` → `a/c`, `//x` → `/x` (lexically: the library reports the path as passed).
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push("/");
    }
    out
}

/// Per-process working directories.
#[derive(Debug, Default)]
pub struct Resolver {
    cwd: HashMap<u32, PathBuf>,
}

impl Resolver {
    pub fn hello(&mut self, pid: u32, cwd: &Path) {
        self.cwd.insert(pid, normalize(cwd));
    }

    /// A child starts where its parent is.
    pub fn forked(&mut self, parent: u32, child: u32) {
        if let Some(cwd) = self.cwd.get(&parent).cloned() {
            self.cwd.entry(child).or_insert(cwd);
        }
    }

    pub fn chdir(&mut self, pid: u32, path: &Path) {
        let target = self.resolve(pid, None, path);
        if let Some(target) = target {
            self.cwd.insert(pid, target);
        }
    }

    /// The absolute, normalized path of `path` as `pid` passed it (`dir`: the directory of
    /// an `openat` dirfd). `None` when a relative path cannot be placed (no known cwd): the
    /// caller records a gap.
    pub fn resolve(&self, pid: u32, dir: Option<&Path>, path: &Path) -> Option<PathBuf> {
        if path.is_absolute() {
            return Some(normalize(path));
        }
        let base = match dir {
            Some(dir) if dir.is_absolute() => dir.to_path_buf(),
            _ => self.cwd.get(&pid)?.clone(),
        };
        Some(normalize(&base.join(path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_fold_into_one_name() {
        assert_eq!(normalize(Path::new("/tmp/x")), Path::new("/private/tmp/x"));
        assert_eq!(
            normalize(Path::new("/private/tmp/x")),
            Path::new("/private/tmp/x")
        );
        assert_eq!(
            normalize(Path::new("/var/folders/ab/T/vt")),
            Path::new("/private/var/folders/ab/T/vt")
        );
        assert_eq!(
            normalize(Path::new("/System/Volumes/Data/Users/me/app/src/a.js")),
            Path::new("/Users/me/app/src/a.js")
        );
        assert_eq!(normalize(Path::new("/etc")), Path::new("/private/etc"));
        // Not an alias: a name that merely starts the same.
        assert_eq!(normalize(Path::new("/tmpfoo/x")), Path::new("/tmpfoo/x"));
        assert_eq!(
            normalize(Path::new("/Users/me/./app//src/../lib.js")),
            Path::new("/Users/me/app/lib.js")
        );
    }

    #[test]
    fn relative_paths_follow_cwd_through_chdir_and_fork() {
        let mut resolver = Resolver::default();
        resolver.hello(10, Path::new("/Users/me/app"));
        assert_eq!(
            resolver.resolve(10, None, Path::new("src/a.js")),
            Some(PathBuf::from("/Users/me/app/src/a.js"))
        );
        resolver.forked(10, 11);
        resolver.chdir(11, Path::new("packages/lib"));
        assert_eq!(
            resolver.resolve(11, None, Path::new("../b.js")),
            Some(PathBuf::from("/Users/me/app/packages/b.js"))
        );
        // The parent did not move.
        assert_eq!(
            resolver.resolve(10, None, Path::new("x")),
            Some(PathBuf::from("/Users/me/app/x"))
        );
        // openat relative to a directory fd.
        assert_eq!(
            resolver.resolve(10, Some(Path::new("/tmp/out")), Path::new("f")),
            Some(PathBuf::from("/private/tmp/out/f"))
        );
        // An unknown process's relative path cannot be placed.
        assert_eq!(resolver.resolve(99, None, Path::new("x")), None);
    }
}

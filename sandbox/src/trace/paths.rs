//! Turning what a syscall named into the absolute, clean path the log records.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Joins `raw` onto `base` (if relative) and cleans it: `.` and repeated `/` go; `..` is
/// resolved the way the kernel does, i.e. against the *physical* parent. A lexical `a/..`
/// is only equal to the physical one when `a` is not a symlink, so the prefix before a `..`
/// is canonicalized when it exists (and cleaned lexically when it does not: the lookup then
/// fails at that prefix anyway, and the recorded path names what was looked up).
pub fn absolute_clean(base: Option<&Path>, raw: &[u8]) -> PathBuf {
    let raw = Path::new(OsStr::from_bytes(raw));
    let joined = match base {
        Some(base) if raw.is_relative() => base.join(raw),
        _ => raw.to_path_buf(),
    };
    let mut out = PathBuf::from("/");
    for component in joined.components() {
        match component {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if let Ok(physical) = std::fs::canonicalize(&out) {
                    out = physical;
                }
                out.pop();
            }
            Component::Normal(name) => out.push(name),
        }
    }
    out
}

/// [`absolute_clean`] of absolute paths, remembered: the recorder's buffers repeat the same
/// paths thousands of times (gcc's `realpath` of every include directory), and cleaning a
/// path with `..` in it costs a `canonicalize` per `..`.
#[derive(Default)]
pub struct CleanPaths {
    memo: rustc_hash::FxHashMap<Vec<u8>, PathBuf>,
}

impl CleanPaths {
    pub fn absolute(&mut self, raw: &[u8]) -> PathBuf {
        // Most paths a process names are clean already (node and the loader name files by
        // their resolved absolute paths): those are the answer as they are, without a
        // memo entry (two copies and a hash insert, most of the cost of a record that
        // names a path once).
        if is_clean_absolute(raw) {
            return PathBuf::from(OsStr::from_bytes(raw));
        }
        if let Some(clean) = self.memo.get(raw) {
            return clean.clone();
        }
        let clean = absolute_clean(None, raw);
        self.memo.insert(raw.to_vec(), clean.clone());
        clean
    }
}

/// `canonicalize` for many paths in few directories: each directory is resolved once, and
/// a path in it costs one `lstat` of its name instead of a `readlink` per component (a
/// log's thousands of files, a `node_modules` of a link per package).
///
/// No directory is kept open: a build's log names thousands of directories, and holding a
/// descriptor for each while reconciling would take other threads' (another task's
/// supervisor, the cache) under a usual limit of 1 024.
#[derive(Default)]
pub struct CanonicalDirs {
    dirs: std::collections::HashMap<PathBuf, Option<PathBuf>>,
}

/// What [`CanonicalDirs::resolve`] found at a path.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    /// Something that is not a symlink: its canonical path, what `canonicalize` gives.
    Found(PathBuf),
    /// Nothing (or nothing `lstat` may see): where it would be, its directory resolved.
    Missing(PathBuf),
    /// A symlink, a path not ending in a name, or one whose directory does not resolve:
    /// only `canonicalize` of the whole path answers.
    Whole,
}

impl CanonicalDirs {
    pub fn resolve(&mut self, path: &Path) -> Resolved {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Resolved::Whole;
        };
        let Some(parent) = self
            .dirs
            .entry(parent.to_path_buf())
            .or_insert_with(|| std::fs::canonicalize(parent).ok())
            .as_ref()
        else {
            return Resolved::Whole;
        };
        let resolved = parent.join(name);
        match std::fs::symlink_metadata(&resolved) {
            Ok(meta) if meta.file_type().is_symlink() => Resolved::Whole,
            Ok(_) => Resolved::Found(resolved),
            Err(_) => Resolved::Missing(resolved),
        }
    }
}

/// Whether `raw` is what [`absolute_clean`] makes of it: absolute, no empty, `.` or `..`
/// component, no trailing `/` (except the root itself).
fn is_clean_absolute(raw: &[u8]) -> bool {
    let Some(rest) = raw.strip_prefix(b"/") else {
        return false;
    };
    rest.is_empty()
        || rest
            .split(|&b| b == b'/')
            .all(|name| !name.is_empty() && name != b"." && name != b"..")
}

/// Whether the clean absolute `path` is `dir` or below it. Compares bytes: on the hundreds
/// of thousands of paths a build's log holds, `Path::starts_with` (component by component)
/// was a visible part of the time vt takes after the task has finished.
pub fn is_under(path: &Path, dir: &Path) -> bool {
    let (path, dir) = (path.as_os_str().as_bytes(), dir.as_os_str().as_bytes());
    let dir = dir.strip_suffix(b"/").unwrap_or(dir);
    path.starts_with(dir) && (path.len() == dir.len() || path[dir.len()] == b'/')
}

/// `/proc/self` in a tracee's path means the tracee (`pid`: its thread or process id), not
/// vt, which probes the path later.
pub fn without_self_links(path: PathBuf, pid: u32) -> PathBuf {
    if !path.as_os_str().as_bytes().starts_with(b"/proc/") {
        return path;
    }
    for alias in ["/proc/self", "/proc/thread-self"] {
        if let Ok(rest) = path.strip_prefix(alias) {
            return Path::new("/proc").join(pid.to_string()).join(rest);
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_taken_as_clean_is_what_cleaning_it_gives() {
        for raw in [
            &b"/"[..],
            b"/a",
            b"/a/b.js",
            b"/a/.b/..c/...",
            b"//a",
            b"/a//b",
            b"/a/",
            b"/a/.",
            b"/a/./b",
            b"/a/..",
            b"/a/../b",
            b"a/b",
            b"",
        ] {
            let cleaned = absolute_clean(None, raw);
            assert_eq!(
                is_clean_absolute(raw),
                cleaned.as_os_str().as_bytes() == raw,
                "{}",
                String::from_utf8_lossy(raw)
            );
            assert_eq!(CleanPaths::default().absolute(raw), cleaned);
        }
    }

    #[test]
    fn relative_and_absolute_paths_are_cleaned() {
        let base = Path::new("/work/pkg");
        assert_eq!(
            absolute_clean(Some(base), b"src/./a.ts"),
            PathBuf::from("/work/pkg/src/a.ts")
        );
        assert_eq!(
            absolute_clean(Some(base), b"/etc//hosts"),
            PathBuf::from("/etc/hosts")
        );
        assert_eq!(absolute_clean(None, b"/../../etc"), PathBuf::from("/etc"));
        assert_eq!(absolute_clean(Some(base), b"."), PathBuf::from("/work/pkg"));
    }

    #[test]
    fn dot_dot_goes_through_symlinks_like_the_kernel() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        std::fs::create_dir_all(root.join("real/deep")).expect("mkdir");
        std::os::unix::fs::symlink(root.join("real/deep"), root.join("link")).expect("symlink");
        // link/.. is real/, not root/
        let got = absolute_clean(Some(&root), b"link/../x");
        assert_eq!(got, root.join("real/x"));
        // a missing prefix is cleaned lexically
        let got = absolute_clean(Some(&root), b"nope/../y");
        assert_eq!(got, root.join("y"));
    }

    #[test]
    fn under_means_the_directory_or_below_it() {
        let under = |p: &str, d: &str| is_under(Path::new(p), Path::new(d));
        assert!(under("/a/b", "/a") && under("/a", "/a") && under("/a/b", "/a/"));
        assert!(!under("/ab", "/a") && !under("/", "/a") && !under("/a", "/a/b"));
        assert!(under("/x", "/"));
    }

    #[test]
    fn self_links_name_the_tracee() {
        assert_eq!(
            without_self_links("/proc/self/fd/3".into(), 42),
            PathBuf::from("/proc/42/fd/3")
        );
        assert_eq!(
            without_self_links("/proc/selfish".into(), 42),
            PathBuf::from("/proc/selfish")
        );
        assert_eq!(
            without_self_links("/etc/x".into(), 42),
            PathBuf::from("/etc/x")
        );
    }

    #[test]
    fn non_utf8_survives() {
        let got = absolute_clean(Some(Path::new("/t")), b"caf\xe9");
        assert_eq!(got.as_os_str().as_bytes(), b"/t/caf\xe9");
    }
}

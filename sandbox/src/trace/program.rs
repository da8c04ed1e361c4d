//! Finding a task's program on its `PATH` in vt instead of in the traced child.
//!
//! `Command::spawn` of a bare name (`sh`) searches `PATH` the way `execvp` does: one
//! `execve` per directory until one succeeds. In a traced child each attempt is a notified
//! syscall (it runs before any preload can record it), so a `PATH` of ten directories cost
//! ten stops before the task's first instruction. vt does the same search with `stat` before
//! the fork and spawns the absolute path; the directories where the name was missing are
//! given to the log as the task's own lookups ([`Found::missing`]), exactly as the tracer
//! would have recorded the failed `execve`s: a program that later appears earlier on `PATH`
//! still changes the task's inputs.
//!
//! Anything but the plain case (a name with a slash, no `PATH`, an empty or relative entry,
//! a candidate that exists but cannot be run) returns `None`, and the search is left to the
//! child as before.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where a program was found, and where it was looked for first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    /// `dir/name` for each `PATH` directory before `path`'s, in order: absent there.
    pub missing: Vec<PathBuf>,
}

/// Searches `path_var` (a `PATH` value) for `name` as `execvp` would.
pub fn find(name: &OsStr, path_var: Option<&OsStr>) -> Option<Found> {
    if name.is_empty() || name.as_bytes().contains(&b'/') {
        return None;
    }
    let mut missing = Vec::new();
    for dir in path_var?.as_bytes().split(|&b| b == b':') {
        let dir = Path::new(OsStr::from_bytes(dir));
        if !dir.is_absolute() {
            // The child's working directory would decide: leave it to the child.
            return None;
        }
        let candidate = dir.join(name);
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
                return Some(Found {
                    path: candidate,
                    missing,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(candidate),
            // A directory, a file without x bits, EACCES, ENOTDIR...: execvp's exact answer
            // (skip, or fail with EACCES at the end) is the child's to give.
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn executable(path: &Path) {
        std::fs::write(path, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    #[test]
    fn the_first_executable_on_path_wins_and_the_misses_before_it_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        for d in [&a, &b, &c] {
            std::fs::create_dir(d).expect("mkdir");
        }
        executable(&b.join("tool"));
        executable(&c.join("tool"));
        let path = std::env::join_paths([&a, &b, &c]).expect("join");
        let found = find(OsStr::new("tool"), Some(&path)).expect("found");
        assert_eq!(found.path, b.join("tool"));
        assert_eq!(found.missing, vec![a.join("tool")]);
    }

    #[test]
    fn anything_but_the_plain_case_is_left_to_the_child() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        std::fs::write(bin.join("plain"), "not executable").expect("write");
        std::fs::create_dir(bin.join("dir")).expect("mkdir");
        executable(&bin.join("tool"));
        let path = bin.as_os_str();
        assert_eq!(find(OsStr::new("plain"), Some(path)), None);
        assert_eq!(find(OsStr::new("dir"), Some(path)), None);
        assert_eq!(find(OsStr::new("sub/tool"), Some(path)), None);
        assert_eq!(find(OsStr::new("tool"), None), None);
        assert_eq!(find(OsStr::new("nowhere"), Some(path)), None);
        let relative = format!("relative:{}", bin.display());
        assert_eq!(find(OsStr::new("tool"), Some(OsStr::new(&relative))), None);
        let empty_entry = format!(":{}", bin.display());
        assert_eq!(
            find(OsStr::new("tool"), Some(OsStr::new(&empty_entry))),
            None
        );
        assert!(find(OsStr::new("tool"), Some(path)).is_some());
    }
}

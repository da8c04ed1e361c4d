//! Where the embedded recorder is written for the loader to map: once per content, then
//! reused by every later run.
//!
//! A fresh temporary directory per run cost each run a 48 KiB write and, at its end, a
//! `rmdir` that on a file system mounted with `discard` waits for the device (measured on
//! this project's CI machine: 3 ms of the 15 ms between a C build's end and vt's). A
//! library that stays also stays in the page cache, so every process maps the same pages.
//!
//! The file lives in a directory only this user can write (`$XDG_RUNTIME_DIR/vt`, else
//! `$TMPDIR/vt-UID`, created 0700 and checked: ours, a real directory, no access for
//! others, not on a noexec mount), under a name that carries a digest of its content. It
//! is written to a temporary name and renamed into place, and compared with the embedded
//! bytes before each use, so a torn or altered copy is rewritten, never loaded. Anything
//! unexpected (someone else's directory, a symlink, an unwritable place) makes the caller
//! fall back to a private temporary directory, as before.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `DIR/preload-DIGEST/NAME` holding exactly `content`, written if needed; the directory
/// `DIR/preload-DIGEST` is returned with it. None when no safe shared place is available.
pub fn shared_copy(content: &[u8], digest: &str, name: &str) -> Option<(PathBuf, PathBuf)> {
    let home = user_dir()?;
    let dir = home.join(format!("preload-{digest}"));
    if !private_dir(&dir) {
        return None;
    }
    let path = dir.join(name);
    if !holds(&path, content) {
        write_atomically(&dir, &path, content)?;
    }
    Some((dir, path))
}

/// This user's directory for vt's reusable files: the first of `$XDG_RUNTIME_DIR/vt` and
/// `$TMPDIR/vt-UID` that is private and allows mapping code (the loader cannot map a
/// library from a noexec mount, and some systems mount the runtime directory so).
fn user_dir() -> Option<PathBuf> {
    let maps_code = |dir: &PathBuf| on_noexec_mount(dir) == Some(false);
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute() && d.is_dir())
        .map(|d| d.join("vt"))
        .filter(|dir| private_dir(dir) && maps_code(dir))
        .or_else(|| temp_user_dir("vt").filter(maps_code))
}

/// A private directory `name` in [`user_dir`], for what vt keeps between its runs (made
/// if missing; None where there is no safe place).
pub fn user_subdir(name: &str) -> Option<PathBuf> {
    let dir = user_dir()?.join(name);
    private_dir(&dir).then_some(dir)
}

/// `$TMPDIR/PREFIX-UID`, this user's private directory in the temp directory (made 0700 if
/// missing); None where it is not one (someone else's, a symlink, open to others).
pub fn temp_user_dir(prefix: &str) -> Option<PathBuf> {
    // SAFETY: geteuid cannot fail.
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", unsafe { libc::geteuid() }));
    private_dir(&dir).then_some(dir)
}

/// Whether `path` is on a `noexec` mount, where the loader cannot map a library; None when
/// that cannot be told.
pub fn on_noexec_mount(path: &Path) -> Option<bool> {
    nix::sys::statvfs::statvfs(path)
        .ok()
        .map(|fs| fs.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC))
}

/// Creates `dir` (0700) if missing; true if it is a real directory owned by this user that
/// no one else can write into or read.
fn private_dir(dir: &Path) -> bool {
    let _ = fs::DirBuilder::new().mode(0o700).create(dir);
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return false;
    };
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    meta.file_type().is_dir() && meta.uid() == me && meta.permissions().mode() & 0o077 == 0
}

/// Whether `path` is a regular file (not a symlink) with exactly `content`.
fn holds(path: &Path, content: &[u8]) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.file_type().is_file() || meta.len() != content.len() as u64 {
        return false;
    }
    let mut bytes = Vec::with_capacity(content.len());
    fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .is_ok_and(|_| bytes == content)
}

/// Writes `content` to a fresh temporary name in `dir`, then renames it to `path`: a
/// reader sees the old file or the whole new one, and concurrent runs never share a
/// temporary file.
fn write_atomically(dir: &Path, path: &Path, content: &[u8]) -> Option<()> {
    let mut temp = tempfile::Builder::new()
        .prefix(".preload-")
        .permissions(fs::Permissions::from_mode(0o755))
        .tempfile_in(dir)
        .ok()?;
    temp.write_all(content).ok()?;
    temp.persist(path).ok()?;
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_then_reuses_and_repairs() {
        let home = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(home.path(), fs::Permissions::from_mode(0o700)).expect("chmod");
        let dir = home.path().join("preload-x");
        assert!(private_dir(&dir));
        let path = dir.join("lib.so");
        assert!(!holds(&path, b"abc"));
        write_atomically(&dir, &path, b"abc").expect("written");
        assert!(holds(&path, b"abc"));
        // A torn or altered copy is not taken for the library.
        fs::write(&path, b"abd").expect("damage");
        assert!(!holds(&path, b"abc"));
        fs::write(&path, b"ab").expect("truncate");
        assert!(!holds(&path, b"abc"));
        // No temporary names are left behind.
        write_atomically(&dir, &path, b"abc").expect("rewritten");
        let names: Vec<_> = fs::read_dir(&dir).expect("list").flatten().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn refuses_a_directory_others_can_write_or_a_symlink() {
        let home = tempfile::tempdir().expect("tempdir");
        let open = home.path().join("open");
        fs::create_dir(&open).expect("mkdir");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(!private_dir(&open));
        let link = home.path().join("link");
        let target = home.path().join("target");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&target)
            .expect("mkdir");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(!private_dir(&link));
        assert!(private_dir(&target));
    }
}

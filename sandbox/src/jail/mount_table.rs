//! The mount points of vt's mount namespace, for what a sandbox's copy-on-write layer
//! cannot show.
//!
//! An overlayfs's lower layer is one file system's directory: a file system mounted
//! somewhere below the package (a `node_modules` volume in a container, a tmpfs for
//! `dist/`) is not part of it, and the overlay shows the directory beneath the mount
//! instead, usually empty. A task would then run without what its package holds there.
//! [`mount_point_below`] says whether a directory holds such a mount point, so that vt
//! gives that package no layer (its binds of the workspace are recursive and keep the
//! mounts).
//!
//! The table is read from `/proc/thread-self/mountinfo` (the calling thread's namespace,
//! which all of vt's threads share) once and kept until the namespace changes: the file,
//! kept open, polls `POLLPRI` after a mount or an unmount (mounts(5)), and the table is
//! then read again.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The mount points read, and the open file that says when they changed.
struct Table {
    watch: File,
    points: Vec<PathBuf>,
}

impl Table {
    fn read() -> std::io::Result<Table> {
        // Opened before it is read: a mount made in between is in the text or polls.
        let mut watch = File::open("/proc/thread-self/mountinfo")?;
        // In large reads: the kernel makes the text again for each read at an offset, and
        // `read_to_end` starts with a probe of 32 bytes (the file's size says 0), then
        // doubles: eight reads of this machine's 21 mounts, 0.4 ms.
        let mut text = vec![0u8; 64 * 1024];
        let mut len = 0;
        loop {
            if len == text.len() {
                text.resize(text.len() * 2, 0);
            }
            match watch.read(&mut text[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        text.truncate(len);
        Ok(Table {
            watch,
            points: mount_points(&text),
        })
    }

    /// Whether a mount or unmount happened in vt's mount namespace since it was read.
    fn changed(&self) -> bool {
        changed_since(&self.watch)
    }
}

/// Whether a mount or an unmount happened in the mount namespace `watch` was opened in
/// (`/proc/…/mounts` or `mountinfo`, kept open) since it was opened or last asked. An
/// error is taken as a change: whatever was read from the namespace is then read again.
pub(crate) fn changed_since(watch: &File) -> bool {
    let mut poll = libc::pollfd {
        fd: watch.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: poll on one pollfd we own, without waiting.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready < 0 || poll.revents & (libc::POLLPRI | libc::POLLERR) != 0
}

/// A mount point strictly below `dir` (an absolute, normalized path), if there is one.
/// Where the table cannot be read, `/` (below every directory but the root) stands for
/// one: the caller then gives the directory no layer, which is always correct.
pub fn mount_point_below(dir: &Path) -> Option<PathBuf> {
    static TABLE: Mutex<Option<Table>> = Mutex::new(None);
    let mut table = crate::lock(&TABLE);
    if table.as_ref().is_none_or(Table::changed) {
        *table = Table::read().ok();
    }
    match table.as_ref() {
        Some(table) => below(&table.points, dir).cloned(),
        None => (dir != Path::new("/")).then(|| PathBuf::from("/")),
    }
}

/// The first of `points` strictly below `dir`.
fn below<'a>(points: &'a [PathBuf], dir: &Path) -> Option<&'a PathBuf> {
    points
        .iter()
        .find(|p| p.starts_with(dir) && p.as_path() != dir)
}

/// The mount points of a `/proc/PID/mountinfo` text: each line's fifth field, with the
/// kernel's octal escapes (`\040` for a space, `\011`, `\012`, `\134`) undone.
fn mount_points(text: &[u8]) -> Vec<PathBuf> {
    text.split(|b| *b == b'\n')
        .filter_map(|line| line.split(|b| *b == b' ').nth(4))
        .map(|field| PathBuf::from(OsString::from_vec(unescape(field))))
        .collect()
}

fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|digits| field[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_the_fifth_field_unescaped() {
        let text = b"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
            41 22 0:35 / /work/my\\040app/node_modules rw shared:20 - tmpfs tmpfs rw\n\
            42 22 0:36 / /back\\134slash\\011tab rw - tmpfs tmpfs rw\n";
        assert_eq!(
            mount_points(text),
            [
                PathBuf::from("/"),
                PathBuf::from("/work/my app/node_modules"),
                PathBuf::from("/back\\slash\ttab"),
            ]
        );
    }

    #[test]
    fn only_a_mount_point_strictly_below_counts() {
        let points: Vec<PathBuf> = ["/", "/work", "/work/app/node_modules", "/work/apple"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let below_of = |dir: &str| below(&points, Path::new(dir)).cloned();
        assert_eq!(
            below_of("/work/app"),
            Some(PathBuf::from("/work/app/node_modules"))
        );
        // The directory itself mounted is its own file system: the layer shows it whole.
        assert_eq!(below_of("/work/apple"), None);
        assert_eq!(below_of("/work/app/node_modules"), None);
        assert_eq!(below_of("/srv"), None);
    }

    #[test]
    fn the_table_is_read_again_after_a_mount() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root, and this test mounts"
            );
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let dir = std::fs::canonicalize(dir.path()).expect("canonical");
        let inner = dir.join("inner");
        std::fs::create_dir(&inner).expect("mkdir");
        assert_eq!(mount_point_below(&dir), None);
        // A mount namespace of this thread's own, so that the host's does not change; the
        // process's table belongs to the namespace it was read in, so the test reads its
        // own tables here.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare");
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("private");
        let table = Table::read().expect("mountinfo");
        assert_eq!(below(&table.points, &dir), None);
        nix::mount::mount(
            Some("tmpfs"),
            &inner,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount tmpfs");
        assert!(table.changed(), "the mount was not noticed");
        let again = Table::read().expect("mountinfo");
        assert_eq!(below(&again.points, &dir), Some(&inner));
        nix::mount::umount(&inner).expect("umount");
    }
}

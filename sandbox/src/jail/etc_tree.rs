//! The `/etc` every sandbox shows, made once per vt process as a detached mount tree that
//! each sandbox copies with one call.
//!
//! Why: 20-odd of the ~40 mounts of a sandbox's root are the parts of `/etc` programs need
//! ([`super::plan::ETC_ESSENTIALS`]), each an `open_tree`, a `mount_setattr`, a mount point
//! and a `move_mount` in the sandbox's init process: about half of its root's 1.1–1.3 ms, on
//! every sandboxed task. Here a thread of vt's makes them once, read-only, on a tmpfs of
//! their own that no mount namespace holds; the sandbox's outer process copies that tree
//! (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`, ~0.03 ms) before it leaves vt's mount
//! namespace, and its init attaches the copy at `/etc` (one `move_mount`). Only in a run of
//! several tasks ([`keep_ahead`]): a lone sandbox would pay as much to make the tree as to
//! mount its `/etc` itself. The run's first sandbox may go without it (the tree is still
//! being made); the ones after wait for it.
//!
//! What the task sees is the host's files, live (binds), read-only, at the same paths, with
//! the same symlinks; `/etc` itself is a read-only tmpfs of its own instead of a directory of
//! the root's.
//!
//! A bind shows what was at its path when it was made: a file replaced since (renamed over,
//! as package managers and editors do) or a mount made or removed would not show. So a tree
//! is used only while
//! - [`super::system::fixed_paths`] returns the look it was made from: a new look follows
//!   any change of the directories holding those paths (an entry added, removed, renamed
//!   over), and
//! - no mount or unmount happened in vt's mount namespace since it was made:
//!   `/proc/self/mounts`, opened before the tree is made, says so (`POLLPRI`, mounts(5)).
//!
//! [`super::Jail`] asks after the task's change guard has opened: a change after that is
//! newer than the task's start, as with a mount made by the sandbox itself. A stale tree is
//! dropped, that sandbox builds `/etc` mount by mount, and a new tree is made for the next.
//!
//! The kernel allows attaching mounts to a detached tree, and copying a detached tree from
//! the mount namespace it was made in, from Linux 6.15 (before, `EINVAL`); making the tmpfs
//! needs `CAP_SYS_ADMIN` in vt's mount namespace (root). Where either is refused, every
//! sandbox builds its `/etc` mount by mount, as before. `VT_ETC_TREE=0` asks for that too
//! (the tests compare both ways).

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::plan::{HostPath, Mount};

/// A detached tmpfs with the host's parts of `/etc` mounted on it, read-only.
pub struct Tree {
    /// The tmpfs's mount, root of the detached tree.
    root: OwnedFd,
    /// The look at the host's fixed paths the mounts were chosen from.
    made_from: Arc<HashMap<PathBuf, HostPath>>,
    /// What is below `/etc`, by path (as [`super::plan::etc_part`] gives a plan's).
    mounts: Vec<Mount>,
    /// `/proc/self/mounts`, opened before the first bind: `POLLPRI` once vt's mount
    /// namespace changed.
    watch: File,
}

impl Tree {
    /// The tree's root mount, for the sandbox's outer process to copy.
    pub(crate) fn root(&self) -> RawFd {
        self.root.as_raw_fd()
    }

    /// Whether a mount or unmount happened in vt's mount namespace since the tree was made.
    fn mounts_changed(&self) -> bool {
        // A change (or an error) and the tree is not trusted.
        super::mount_table::changed_since(&self.watch)
    }
}

#[cfg(test)]
impl Tree {
    /// A tree that stands for nothing, for tests of the sandbox's steps.
    pub(crate) fn stand_in() -> Tree {
        Tree {
            root: File::open("/dev/null").expect("/dev/null").into(),
            made_from: Arc::new(HashMap::new()),
            mounts: Vec::new(),
            watch: File::open("/proc/self/mounts").expect("/proc/self/mounts"),
        }
    }
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree")
            .field("root", &self.root)
            .field("mounts", &self.mounts.len())
            .finish()
    }
}

enum Kept {
    None,
    /// Being made; `passed`: a sandbox has already gone without it.
    Making {
        thread: JoinHandle<io::Result<Tree>>,
        passed: bool,
    },
    Made(Arc<Tree>),
}

static KEPT: Mutex<Kept> = Mutex::new(Kept::None);

/// Set once this process could not make a tree (not root, a kernel before 6.15, or
/// `VT_ETC_TREE=0`): it does not try again.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Set for a run of several tasks ([`keep_ahead`]): only then is a tree made.
static KEEP_AHEAD: AtomicBool = AtomicBool::new(false);

/// From now on, sandboxes use a tree: for a run of several tasks. A lone sandbox builds its
/// `/etc` mount by mount: a tree would cost it as much to make, on a thread that competes
/// with its start.
pub fn keep_ahead() {
    KEEP_AHEAD.store(true, Ordering::Relaxed);
}

/// Whether a tree may stand for a sandbox of this process: a run of several tasks
/// ([`keep_ahead`]) where one could be made. Otherwise a sandbox need not ask [`take`] (nor
/// look at the host's paths again for it).
pub fn in_use() -> bool {
    KEEP_AHEAD.load(Ordering::Relaxed) && !REFUSED.load(Ordering::Relaxed)
}

/// Starts making the tree on a thread, in a run of several tasks ([`keep_ahead`]), unless
/// one is made or being made, or this process cannot. Call it as early as a sandbox is
/// known to come ([`super::Jail::new`]).
pub fn make_ahead() {
    if REFUSED.load(Ordering::Relaxed) || !KEEP_AHEAD.load(Ordering::Relaxed) {
        return;
    }
    if std::env::var_os("VT_ETC_TREE").is_some_and(|v| v == "0") {
        REFUSED.store(true, Ordering::Relaxed);
        return;
    }
    let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
    if matches!(*kept, Kept::None)
        && let Ok(thread) = crate::spawn_without_signals("vt-etc", make)
    {
        *kept = Kept::Making {
            thread,
            passed: false,
        };
    }
}

/// The tree, if it stands for `wanted` (a plan's [`super::plan::etc_part`]) and is still
/// what the host has now (`fixed`: [`super::system::fixed_paths`], asked just now). The
/// first sandbox to ask while the tree is being made goes without it (it builds its `/etc`
/// itself, as fast as waiting would be); a later one waits (the thread is then long done).
/// A stale tree is dropped and a new one started for the next sandbox.
pub fn take(fixed: &Arc<HashMap<PathBuf, HostPath>>, wanted: &[&Mount]) -> Option<Arc<Tree>> {
    let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
    if let Kept::Making { thread, passed } = &mut *kept
        && !thread.is_finished()
        && !*passed
    {
        *passed = true;
        return None;
    }
    if let Kept::Making { .. } = &*kept
        && let Kept::Making { thread, .. } = std::mem::replace(&mut *kept, Kept::None)
    {
        match thread.join() {
            Ok(Ok(tree)) => *kept = Kept::Made(Arc::new(tree)),
            Ok(Err(_)) | Err(_) => REFUSED.store(true, Ordering::Relaxed),
        }
    }
    let Kept::Made(tree) = &*kept else {
        return None;
    };
    if !Arc::ptr_eq(&tree.made_from, fixed) || tree.mounts_changed() {
        *kept = Kept::None;
        drop(kept);
        make_ahead();
        return None;
    }
    tree.mounts
        .iter()
        .eq(wanted.iter().copied())
        .then(|| Arc::clone(tree))
}

/// Makes the tree for the host as [`super::system::fixed_paths`] finds it now.
fn make() -> io::Result<Tree> {
    // First: a change of the mount table from here on shows on it.
    let watch = File::open("/proc/self/mounts")?;
    let made_from = super::system::fixed_paths();
    let mounts = super::plan::etc_mounts(|path| {
        made_from
            .get(path)
            .cloned()
            .unwrap_or_else(|| HostPath::probe(path))
    });
    let root = build(&mounts)?;
    Ok(Tree {
        root,
        made_from,
        mounts,
        watch,
    })
}

/// The detached tree of `mounts` (read-only binds and symlinks below `/etc`).
fn build(mounts: &[Mount]) -> io::Result<OwnedFd> {
    let root = sys::tmpfs()?;
    let etc = Path::new("/etc");
    for mount in mounts {
        let relative = mount
            .path()
            .strip_prefix(etc)
            .map_err(|_| io::Error::other("a mount outside /etc"))?;
        for parent in relative
            .ancestors()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            if parent != Path::new("") {
                sys::mkdir_at(&root, parent)?;
            }
        }
        match mount {
            Mount::Bind {
                path,
                writable: false,
            } => {
                let bind = sys::read_only_copy(path)?;
                if path.is_dir() {
                    sys::mkdir_at(&root, relative)?;
                } else {
                    sys::file_at(&root, relative)?;
                }
                sys::attach(&bind, &root, relative)?;
            }
            Mount::Symlink { target, .. } => sys::symlink_at(target, &root, relative)?,
            _ => return Err(io::Error::other("only read-only binds and symlinks")),
        }
    }
    sys::read_only(&root)?;
    Ok(root)
}

/// The system calls that make the tree (vt's thread, not a forked child: it may allocate).
mod sys {
    use super::*;

    fn c(path: &Path) -> io::Result<CString> {
        CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
    }

    fn fd(result: libc::c_long) -> io::Result<OwnedFd> {
        if result < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor the kernel just returned, owned by no one else.
        Ok(unsafe { OwnedFd::from_raw_fd(result as RawFd) })
    }

    fn ok(result: libc::c_long) -> io::Result<()> {
        if result < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// A detached tmpfs (mode 0755, as the root's directories), nosuid and nodev.
    pub(super) fn tmpfs() -> io::Result<OwnedFd> {
        // SAFETY: fsopen/fsconfig/fsmount with NUL-terminated strings and the fd they return.
        unsafe {
            let context = fd(libc::syscall(
                libc::SYS_fsopen,
                c"tmpfs".as_ptr(),
                libc::FSOPEN_CLOEXEC,
            ))?;
            ok(libc::syscall(
                libc::SYS_fsconfig,
                context.as_raw_fd(),
                libc::FSCONFIG_SET_STRING,
                c"mode".as_ptr(),
                c"0755".as_ptr(),
                0,
            ))?;
            ok(libc::syscall(
                libc::SYS_fsconfig,
                context.as_raw_fd(),
                libc::FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_void>(),
                0,
            ))?;
            fd(libc::syscall(
                libc::SYS_fsmount,
                context.as_raw_fd(),
                libc::FSMOUNT_CLOEXEC,
                libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
            ))
        }
    }

    /// A detached copy of the host's `path` (with what is mounted below it), read-only.
    pub(super) fn read_only_copy(path: &Path) -> io::Result<OwnedFd> {
        let path = c(path)?;
        // SAFETY: open_tree on a NUL-terminated path.
        let copy = fd(unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                path.as_ptr(),
                libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as u32,
            )
        })?;
        set_attr(
            &copy,
            libc::AT_RECURSIVE as libc::c_uint,
            libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        )?;
        Ok(copy)
    }

    /// Makes the tree's root mount read-only (its binds are already).
    pub(super) fn read_only(root: &OwnedFd) -> io::Result<()> {
        set_attr(root, 0, libc::MOUNT_ATTR_RDONLY)
    }

    fn set_attr(mount: &OwnedFd, flags: libc::c_uint, attr_set: u64) -> io::Result<()> {
        let attr = libc::mount_attr {
            attr_set,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        // SAFETY: mount_setattr on a mount fd we own, with a live attribute struct.
        ok(unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                mount.as_raw_fd(),
                c"".as_ptr(),
                flags | libc::AT_EMPTY_PATH as libc::c_uint,
                &attr as *const libc::mount_attr,
                std::mem::size_of::<libc::mount_attr>(),
            )
        })
    }

    pub(super) fn mkdir_at(root: &OwnedFd, relative: &Path) -> io::Result<()> {
        let path = c(relative)?;
        // SAFETY: mkdirat below a directory fd we own, on a NUL-terminated path.
        let made = unsafe { libc::mkdirat(root.as_raw_fd(), path.as_ptr(), 0o755) };
        if made < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub(super) fn file_at(root: &OwnedFd, relative: &Path) -> io::Result<()> {
        let path = c(relative)?;
        // SAFETY: mknodat of a regular file below a directory fd we own.
        ok(
            unsafe { libc::mknodat(root.as_raw_fd(), path.as_ptr(), libc::S_IFREG | 0o644, 0) }
                .into(),
        )
    }

    pub(super) fn symlink_at(target: &Path, root: &OwnedFd, relative: &Path) -> io::Result<()> {
        let (target, path) = (c(target)?, c(relative)?);
        // SAFETY: symlinkat below a directory fd we own, on NUL-terminated strings.
        ok(unsafe { libc::symlinkat(target.as_ptr(), root.as_raw_fd(), path.as_ptr()) }.into())
    }

    /// Attaches the detached `mount` at `relative` below the detached `root`.
    pub(super) fn attach(mount: &OwnedFd, root: &OwnedFd, relative: &Path) -> io::Result<()> {
        let path = c(relative)?;
        // SAFETY: move_mount between two mount fds we own, on a NUL-terminated path.
        ok(unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                mount.as_raw_fd(),
                c"".as_ptr(),
                root.as_raw_fd(),
                path.as_ptr(),
                libc::MOVE_MOUNT_F_EMPTY_PATH,
            )
        })
    }
}

/// A copy of the tree whose root is `root`, as a detached mount fd (-1 with errno set when
/// refused): what the sandbox's outer process attaches, made while it is still in vt's
/// mount namespace. Only a system call: safe between a fork or clone and the exec.
pub(crate) fn copy(root: RawFd) -> libc::c_int {
    // SAFETY: open_tree on a descriptor and an empty NUL-terminated path.
    unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            root,
            c"".as_ptr(),
            libc::OPEN_TREE_CLONE
                | libc::OPEN_TREE_CLOEXEC
                | (libc::AT_RECURSIVE | libc::AT_EMPTY_PATH) as u32,
        ) as libc::c_int
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Whether this process must be able to make a tree: root on Linux 6.15 or later.
    fn must_make() -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let new_enough = crate::kernel::parse_release(release.trim()).is_some_and(|r| {
            r >= crate::kernel::Release {
                major: 6,
                minor: 15,
            }
        });
        // SAFETY: geteuid cannot fail.
        new_enough && unsafe { libc::geteuid() } == 0
    }

    /// A tree made here; `None` where this process may not make one (not root, Linux before
    /// 6.15), which it must as root on a newer kernel.
    fn made() -> Option<Tree> {
        match make() {
            Ok(tree) => Some(tree),
            Err(e) => {
                assert!(
                    !must_make(),
                    "as root on Linux ≥ 6.15 the tree is made: {e}"
                );
                None
            }
        }
    }

    fn read_at(root: RawFd, relative: &str) -> io::Result<Vec<u8>> {
        let path = CString::new(relative).map_err(io::Error::other)?;
        // SAFETY: openat below a directory fd, on a NUL-terminated path.
        let fd = unsafe { libc::openat(root, path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just opened, owned here.
        let mut file = unsafe { File::from_raw_fd(fd) };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    #[test]
    fn the_tree_and_its_copy_show_the_hosts_etc_read_only() {
        let Some(tree) = made() else {
            return;
        };
        assert!(!tree.mounts.is_empty());
        let copy = copy(tree.root());
        assert!(copy >= 0, "copy: {}", io::Error::last_os_error());
        // SAFETY: the descriptor open_tree just returned.
        let copy = unsafe { OwnedFd::from_raw_fd(copy) };
        for root in [tree.root(), copy.as_raw_fd()] {
            for mount in &tree.mounts {
                let relative = mount.path().strip_prefix("/etc").expect("below /etc");
                let relative = relative.to_str().expect("utf-8");
                match mount {
                    Mount::Bind { path, .. } if path.is_file() => assert_eq!(
                        read_at(root, relative).expect("read"),
                        std::fs::read(path).expect("host"),
                        "{relative}"
                    ),
                    Mount::Symlink { target, .. } => {
                        let path = CString::new(relative).expect("path");
                        let mut buf = [0u8; 4096];
                        // SAFETY: readlinkat into a stack buffer of the given size.
                        let n = unsafe {
                            libc::readlinkat(root, path.as_ptr(), buf.as_mut_ptr().cast(), 4096)
                        };
                        assert_eq!(&buf[..n.max(0) as usize], target.as_os_str().as_bytes());
                    }
                    _ => {}
                }
            }
            // Read-only, the root and the binds alike.
            for name in ["new-file", "passwd"] {
                let path = CString::new(name).expect("name");
                // SAFETY: openat below a directory fd, on a NUL-terminated path.
                let fd = unsafe {
                    libc::openat(root, path.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o644)
                };
                assert_eq!(fd, -1, "{name} is writable");
                assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EROFS));
            }
        }
    }

    #[test]
    fn a_mount_made_after_the_tree_shows_on_its_watch() {
        let Some(tree) = made() else {
            return;
        };
        assert!(!tree.mounts_changed(), "nothing mounted yet");
        // Another tree made (detached mounts) is no change of vt's mount namespace.
        let other = make().expect("a second tree");
        assert!(!tree.mounts_changed());
        drop(other);
        let dir = tempfile::tempdir().expect("tempdir");
        let target = CString::new(dir.path().as_os_str().as_bytes()).expect("path");
        // SAFETY: a tmpfs mounted on our own temporary directory, then detached.
        unsafe {
            let mounted = libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            );
            assert_eq!(mounted, 0, "mount: {}", io::Error::last_os_error());
            libc::umount2(target.as_ptr(), libc::MNT_DETACH);
        }
        assert!(tree.mounts_changed(), "a mount made since is a change");
    }

    #[test]
    fn a_tree_stands_only_for_the_look_it_was_made_from_and_for_the_same_mounts() {
        if !must_make() {
            return;
        }
        keep_ahead();
        make_ahead();
        let fixed = super::super::system::fixed_paths();
        let wanted = super::super::plan::etc_mounts(|p| {
            fixed.get(p).cloned().unwrap_or_else(|| HostPath::probe(p))
        });
        // The first to ask may go without; the second waits for it. (/etc may be changing
        // under other tests: the look is then new each time, and no tree stands for it.)
        let wanted: Vec<&Mount> = wanted.iter().collect();
        let Some(tree) = take(&fixed, &wanted).or_else(|| take(&fixed, &wanted)) else {
            return;
        };
        assert!(tree.mounts.iter().eq(wanted.iter().copied()));
        // Other mounts below /etc: not this tree.
        assert!(take(&fixed, &wanted[1..]).is_none());
        // Another look at the host (as after a change of /etc): not this tree. It is
        // dropped, and the next is made from the look of the moment.
        let other_look = Arc::new((*fixed).clone());
        assert!(take(&other_look, &wanted).is_none());
        let now = super::super::system::fixed_paths();
        if let Some(next) = take(&now, &wanted) {
            assert!(!Arc::ptr_eq(&next, &tree), "a new tree");
        }
    }
}

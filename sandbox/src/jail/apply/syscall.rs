//! The calls that build the sandbox's root, behind a trait, as youki's `Syscall`: the child
//! uses [`Linux`], which makes them; unit tests use a recorder, so the call sequence a plan
//! produces is tested without root, namespaces or a fork.
//!
//! Every method returns what its syscall returns (-1 with errno set on failure), so the
//! caller's `check` reports the step and errno unchanged. An implementation used in the
//! child must be async-signal-safe: no allocation, no locks.

use std::ffi::CStr;

use libc::{c_int, c_uint, c_void};

pub(super) trait Syscall {
    fn mount(
        &self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> c_int;
    /// A detached recursive copy of the tree at `path` (`open_tree(OPEN_TREE_CLONE)`).
    fn open_tree_clone(&self, path: &CStr) -> c_int;
    /// Sets `attr_set` on the mount at `dirfd`/`path` (`mount_setattr`).
    fn mount_setattr(&self, dirfd: c_int, path: &CStr, flags: c_uint, attr_set: u64) -> c_int;
    /// A detached overlayfs of `lower` writing to `upper`, as a mount fd.
    fn make_overlay(&self, lower: &CStr, upper: &CStr, work: &CStr) -> c_int;
    /// The overlay a thread of vt's made and sends on `socket`, as a mount fd, or -1 when
    /// none comes (`jail::overlay::receive`).
    fn receive_overlay(&self, socket: c_int) -> c_int;
    fn mkdir(&self, path: &CStr) -> c_int;
    fn symlink(&self, target: &CStr, link: &CStr) -> c_int;
    /// An empty file at `path` to mount a file on: 0 also when one exists or the directory
    /// is read-only (a file inside a read-only bind is a fine mount point).
    fn touch(&self, path: &CStr) -> c_int;
    /// Attaches the detached mount `fd` at `target` (`move_mount`).
    fn move_mount(&self, fd: c_int, target: &CStr) -> c_int;
    fn close(&self, fd: c_int);
    fn chdir(&self, path: &CStr) -> c_int;
    /// `pivot_root(".", ".")`: the old root stacked on top of the new one.
    fn pivot_root_here(&self) -> c_int;
    fn umount_detach(&self, path: &CStr) -> c_int;
    fn sethostname(&self, name: &CStr) -> c_int;
    /// `ip link set lo up` in the current network namespace.
    fn loopback_up(&self) -> c_int;
}

/// The real calls.
pub(super) struct Linux;

const EMPTY: &CStr = c"";

impl Syscall for Linux {
    fn mount(
        &self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> c_int {
        let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
        // SAFETY: NUL-terminated strings (CStr) or null, as mount(2) takes them.
        unsafe {
            libc::mount(
                ptr(source),
                target.as_ptr(),
                ptr(fstype),
                flags,
                ptr(data).cast::<c_void>(),
            )
        }
    }

    fn open_tree_clone(&self, path: &CStr) -> c_int {
        // SAFETY: a NUL-terminated path and integer flags.
        unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                path.as_ptr(),
                libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as u32,
            ) as c_int
        }
    }

    fn mount_setattr(&self, dirfd: c_int, path: &CStr, flags: c_uint, attr_set: u64) -> c_int {
        let attr = libc::mount_attr {
            attr_set,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        // SAFETY: a NUL-terminated path and a live mount_attr of the size passed.
        unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                dirfd,
                path.as_ptr(),
                flags,
                &attr as *const libc::mount_attr,
                std::mem::size_of::<libc::mount_attr>(),
            ) as c_int
        }
    }

    fn make_overlay(&self, lower: &CStr, upper: &CStr, work: &CStr) -> c_int {
        // SAFETY: NUL-terminated strings; it makes only async-signal-safe syscalls.
        unsafe { super::mounts::make_overlay(lower, upper, work) }
    }

    fn receive_overlay(&self, socket: c_int) -> c_int {
        crate::jail::overlay::receive(socket)
    }

    fn mkdir(&self, path: &CStr) -> c_int {
        // SAFETY: a NUL-terminated path.
        unsafe { libc::mkdir(path.as_ptr(), 0o755) }
    }

    fn symlink(&self, target: &CStr, link: &CStr) -> c_int {
        // SAFETY: NUL-terminated paths.
        unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }
    }

    fn touch(&self, path: &CStr) -> c_int {
        // SAFETY: mknod of a regular file on a NUL-terminated path; errno read right after.
        // (One call where open and close were two: ~20 mount points per sandbox.)
        unsafe {
            if libc::mknod(path.as_ptr(), libc::S_IFREG | 0o644, 0) == 0 {
                return 0;
            }
            let errno = *libc::__errno_location();
            if errno == libc::EEXIST || errno == libc::EROFS {
                0
            } else {
                -1
            }
        }
    }

    fn move_mount(&self, fd: c_int, target: &CStr) -> c_int {
        // SAFETY: a mount fd this process holds and NUL-terminated paths.
        unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                fd,
                EMPTY.as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                libc::MOVE_MOUNT_F_EMPTY_PATH,
            ) as c_int
        }
    }

    fn close(&self, fd: c_int) {
        // SAFETY: closing a mount fd this process opened and no longer uses.
        unsafe { libc::close(fd) };
    }

    fn chdir(&self, path: &CStr) -> c_int {
        // SAFETY: a NUL-terminated path.
        unsafe { libc::chdir(path.as_ptr()) }
    }

    fn pivot_root_here(&self) -> c_int {
        // SAFETY: two NUL-terminated paths.
        unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as c_int }
    }

    fn umount_detach(&self, path: &CStr) -> c_int {
        // SAFETY: a NUL-terminated path.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) }
    }

    fn sethostname(&self, name: &CStr) -> c_int {
        // SAFETY: a live buffer of the length passed.
        unsafe { libc::sethostname(name.as_ptr(), name.to_bytes().len()) }
    }

    fn loopback_up(&self) -> c_int {
        // SAFETY: it makes socket/ioctl/close calls only.
        unsafe { super::loopback::loopback_up() }
    }
}

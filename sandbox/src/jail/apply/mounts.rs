//! The new root: every mount of the plan under the staging tmpfs, then `pivot_root` into it
//! (B, in the new mount namespace).

use std::ffi::CString;

use libc::{c_int, c_void};

use super::loopback::loopback_up;
use super::report::Step;
use super::{Op, Prepared};

impl Prepared {
    /// B: mount everything under the staging tmpfs, then make it the root.
    ///
    /// # Safety
    /// B only, after the namespaces exist: it mounts over the staging directory and pivots
    /// into it.
    pub(super) unsafe fn build_root(&mut self) -> std::io::Result<()> {
        // SAFETY: mount-family syscalls with NUL-terminated strings owned by `self`.
        unsafe {
            self.check(
                Step::MakePrivate,
                libc::mount(
                    std::ptr::null(),
                    self.root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ),
            )?;
            // Capture every bind source first: the staging tmpfs may cover some of them.
            for i in 0..self.mounts.len() {
                if let Op::Overlay { lower, upper, work } = &self.mounts[i].op {
                    let fd = make_overlay(lower, upper, work);
                    self.check(Step::Capture(i as u32), fd)?;
                    self.captured[i] = fd;
                    continue;
                }
                let Op::Bind { source, attr_set } = &self.mounts[i].op else {
                    continue;
                };
                let fd = libc::syscall(
                    libc::SYS_open_tree,
                    libc::AT_FDCWD,
                    source.as_ptr(),
                    libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as u32,
                ) as c_int;
                self.check(Step::Capture(i as u32), fd)?;
                self.captured[i] = fd;
                let attr = libc::mount_attr {
                    attr_set: *attr_set,
                    attr_clr: 0,
                    propagation: 0,
                    userns_fd: 0,
                };
                self.check(
                    Step::Capture(i as u32),
                    libc::syscall(
                        libc::SYS_mount_setattr,
                        fd,
                        self.empty.as_ptr(),
                        libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
                        &attr as *const libc::mount_attr,
                        std::mem::size_of::<libc::mount_attr>(),
                    ) as c_int,
                )?;
            }
            self.check(
                Step::Staging,
                libc::mount(
                    c"tmpfs".as_ptr(),
                    self.staging.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    c"mode=0755".as_ptr().cast::<c_void>(),
                ),
            )?;
            for i in 0..self.mounts.len() {
                let step = i as u32;
                let mount = &self.mounts[i];
                for dir in &mount.dirs {
                    self.check_exists(Step::Mountpoint(step), libc::mkdir(dir.as_ptr(), 0o755))?;
                }
                match &mount.op {
                    Op::Symlink { target } => {
                        self.check_exists(
                            Step::Attach(step),
                            libc::symlink(target.as_ptr(), mount.target.as_ptr()),
                        )?;
                        continue;
                    }
                    _ if mount.is_file => {
                        let fd = libc::open(
                            mount.target.as_ptr(),
                            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                            0o644,
                        );
                        // An existing file (inside a read-only bind) is a fine mount point.
                        if fd >= 0 {
                            libc::close(fd);
                        } else if *libc::__errno_location() != libc::EEXIST
                            && *libc::__errno_location() != libc::EROFS
                        {
                            self.check(Step::Mountpoint(step), fd)?;
                        }
                    }
                    _ => {
                        self.check_exists(
                            Step::Mountpoint(step),
                            libc::mkdir(mount.target.as_ptr(), 0o755),
                        )?;
                    }
                }
                match &mount.op {
                    Op::Bind { .. } | Op::Overlay { .. } => {
                        let fd = self.captured[i];
                        self.check(
                            Step::Attach(step),
                            libc::syscall(
                                libc::SYS_move_mount,
                                fd,
                                self.empty.as_ptr(),
                                libc::AT_FDCWD,
                                mount.target.as_ptr(),
                                libc::MOVE_MOUNT_F_EMPTY_PATH,
                            ) as c_int,
                        )?;
                        libc::close(fd);
                        self.captured[i] = -1;
                    }
                    Op::Fs {
                        fstype,
                        flags,
                        data,
                    } => {
                        self.check(
                            Step::Attach(step),
                            libc::mount(
                                fstype.as_ptr().cast(),
                                mount.target.as_ptr(),
                                fstype.as_ptr().cast(),
                                *flags,
                                data.as_ref()
                                    .map_or(std::ptr::null(), |d| d.as_ptr().cast::<c_void>()),
                            ),
                        )?;
                    }
                    Op::Symlink { .. } => {}
                }
            }
            // pivot_root(".", ".") stacks the old root on top of the new one; detaching it
            // leaves the new root alone, with nothing of the host reachable above it.
            self.check(Step::Pivot, libc::chdir(self.staging.as_ptr()))?;
            self.check(
                Step::Pivot,
                libc::syscall(libc::SYS_pivot_root, self.dot.as_ptr(), self.dot.as_ptr()) as c_int,
            )?;
            self.check(
                Step::Pivot,
                libc::umount2(self.dot.as_ptr(), libc::MNT_DETACH),
            )?;
            self.check(Step::Pivot, libc::chdir(self.root.as_ptr()))?;
            let read_only = libc::mount_attr {
                attr_set: libc::MOUNT_ATTR_RDONLY,
                attr_clr: 0,
                propagation: 0,
                userns_fd: 0,
            };
            self.check(
                Step::RootReadOnly,
                libc::syscall(
                    libc::SYS_mount_setattr,
                    libc::AT_FDCWD,
                    self.root.as_ptr(),
                    0,
                    &read_only as *const libc::mount_attr,
                    std::mem::size_of::<libc::mount_attr>(),
                ) as c_int,
            )?;
            self.check(Step::Cwd, libc::chdir(self.cwd.as_ptr()))?;
            self.check(
                Step::Hostname,
                libc::sethostname(self.hostname.as_ptr(), self.hostname.as_bytes().len()),
            )?;
            if self.loopback {
                self.check(Step::Loopback, loopback_up())?;
            }
        }
        Ok(())
    }
}

/// A detached overlayfs mount of `lower` with writes going to `upper`, as a mount fd (or
/// -1 with errno set). `userxattr`: in a user namespace overlayfs may only keep its
/// metadata (whiteouts' opaque marks) in `user.overlay.*` xattrs.
///
/// # Safety
/// Makes only syscalls on NUL-terminated strings the caller owns (async-signal-safe).
unsafe fn make_overlay(lower: &CString, upper: &CString, work: &CString) -> c_int {
    // SAFETY: fsopen/fsconfig/fsmount with valid C strings and the fds they return.
    unsafe {
        let fs =
            libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), libc::FSOPEN_CLOEXEC) as c_int;
        if fs < 0 {
            return -1;
        }
        let set = |key: &std::ffi::CStr, value: Option<&CString>| {
            libc::syscall(
                libc::SYS_fsconfig,
                fs,
                if value.is_some() {
                    libc::FSCONFIG_SET_STRING
                } else {
                    libc::FSCONFIG_SET_FLAG
                },
                key.as_ptr(),
                value.map_or(std::ptr::null(), |v| v.as_ptr()),
                0,
            ) as c_int
        };
        let configured = set(c"lowerdir", Some(lower)) == 0
            && set(c"upperdir", Some(upper)) == 0
            && set(c"workdir", Some(work)) == 0
            && set(c"userxattr", None) == 0
            && libc::syscall(
                libc::SYS_fsconfig,
                fs,
                libc::FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<c_void>(),
                0,
            ) == 0;
        let mount = if configured {
            libc::syscall(
                libc::SYS_fsmount,
                fs,
                libc::FSMOUNT_CLOEXEC,
                libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
            ) as c_int
        } else {
            -1
        };
        // Keep fsconfig's or fsmount's errno across the close.
        let errno = *libc::__errno_location();
        libc::close(fs);
        *libc::__errno_location() = errno;
        mount
    }
}

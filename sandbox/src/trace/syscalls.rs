//! Which syscalls carry paths, where their arguments are, and what they do: the single table
//! both the BPF filter and the supervisor's decoder are built from, so they cannot disagree.

/// Where a path argument is and what it is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathArg {
    /// Argument index of the directory fd (`None`: relative to the cwd, as in `open`).
    pub dirfd: Option<u8>,
    /// Argument index of the path pointer.
    pub path: u8,
}

const fn at(dirfd: u8, path: u8) -> PathArg {
    PathArg {
        dirfd: Some(dirfd),
        path,
    }
}

const fn cwd(path: u8) -> PathArg {
    PathArg { dirfd: None, path }
}

/// Whether the final path component is followed if it is a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    Always,
    Never,
    /// Followed unless `AT_SYMLINK_NOFOLLOW` is set in this argument.
    UnlessNoFollowIn(u8),
    /// Not followed unless `AT_SYMLINK_FOLLOW` is set in this argument (`linkat`).
    IfFollowIn(u8),
}

/// Where `open`'s flags are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFlags {
    Arg(u8),
    /// `openat2`: a pointer to `struct open_how` whose first u64 is the flags.
    OpenHow(u8),
    /// `creat`: always `O_CREAT|O_WRONLY|O_TRUNC`.
    Creat,
}

/// What a syscall does with its path(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Open {
        path: PathArg,
        flags: OpenFlags,
    },
    /// stat family, access family, readlink, name_to_handle_at, chdir.
    Probe {
        path: PathArg,
        follow: Follow,
    },
    Exec {
        path: PathArg,
    },
    /// getdents: lists the directory open on fd argument `fd`.
    ListDir {
        fd: u8,
    },
    MakeDir {
        path: PathArg,
    },
    MakeNode {
        path: PathArg,
    },
    Remove {
        path: PathArg,
    },
    Rename {
        from: PathArg,
        to: PathArg,
    },
    Link {
        from: PathArg,
        to: PathArg,
        follow: Follow,
    },
    /// symlink(target, linkpath): `target` is just a string, not an access.
    Symlink {
        link: PathArg,
    },
    /// truncate, utimes, chmod, chown: changes an existing file.
    Modify {
        path: PathArg,
        follow: Follow,
    },
    /// `open_by_handle_at`: no path to read before the call.
    OpenByHandle,
}

/// When the BPF filter lets a call through without notifying: cases that touch no path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exempt {
    /// A flag in this argument makes the call fd-only (e.g. `AT_EMPTY_PATH` in `fstatat`,
    /// which glibc's `fstat` uses). Only the low 32 bits of the argument are tested.
    FlagSet { arg: u8, mask: u32 },
    /// A NULL path pointer makes the call fd-only (e.g. `utimensat(fd, NULL, …)`).
    NullPointer { arg: u8 },
}

#[derive(Debug, Clone, Copy)]
pub struct Syscall {
    pub nr: i64,
    pub name: &'static str,
    pub op: Op,
    pub exempt: Option<Exempt>,
}

const AT_EMPTY_PATH: u32 = libc::AT_EMPTY_PATH as u32;
const fn sys(nr: i64, name: &'static str, op: Op) -> Syscall {
    Syscall {
        nr,
        name,
        op,
        exempt: None,
    }
}

const fn sys_exempt(nr: i64, name: &'static str, op: Op, exempt: Exempt) -> Syscall {
    Syscall {
        nr,
        name,
        op,
        exempt: Some(exempt),
    }
}

/// Every path-carrying syscall on x86_64 that vt observes.
#[cfg(target_arch = "x86_64")]
pub const TRACED: &[Syscall] = {
    use Follow::*;
    use Op::*;
    &[
        sys(
            libc::SYS_open,
            "open",
            Open {
                path: cwd(0),
                flags: OpenFlags::Arg(1),
            },
        ),
        sys(
            libc::SYS_openat,
            "openat",
            Open {
                path: at(0, 1),
                flags: OpenFlags::Arg(2),
            },
        ),
        sys(
            libc::SYS_openat2,
            "openat2",
            Open {
                path: at(0, 1),
                flags: OpenFlags::OpenHow(2),
            },
        ),
        sys(
            libc::SYS_creat,
            "creat",
            Open {
                path: cwd(0),
                flags: OpenFlags::Creat,
            },
        ),
        sys(
            libc::SYS_stat,
            "stat",
            Probe {
                path: cwd(0),
                follow: Always,
            },
        ),
        sys(
            libc::SYS_lstat,
            "lstat",
            Probe {
                path: cwd(0),
                follow: Never,
            },
        ),
        sys_exempt(
            libc::SYS_newfstatat,
            "newfstatat",
            Probe {
                path: at(0, 1),
                follow: UnlessNoFollowIn(3),
            },
            Exempt::FlagSet {
                arg: 3,
                mask: AT_EMPTY_PATH,
            },
        ),
        sys_exempt(
            libc::SYS_statx,
            "statx",
            Probe {
                path: at(0, 1),
                follow: UnlessNoFollowIn(2),
            },
            Exempt::FlagSet {
                arg: 2,
                mask: AT_EMPTY_PATH,
            },
        ),
        sys(
            libc::SYS_access,
            "access",
            Probe {
                path: cwd(0),
                follow: Always,
            },
        ),
        sys(
            libc::SYS_faccessat,
            "faccessat",
            Probe {
                path: at(0, 1),
                follow: Always,
            },
        ),
        sys_exempt(
            libc::SYS_faccessat2,
            "faccessat2",
            Probe {
                path: at(0, 1),
                follow: UnlessNoFollowIn(3),
            },
            Exempt::FlagSet {
                arg: 3,
                mask: AT_EMPTY_PATH,
            },
        ),
        sys(
            libc::SYS_readlink,
            "readlink",
            Probe {
                path: cwd(0),
                follow: Never,
            },
        ),
        sys(
            libc::SYS_readlinkat,
            "readlinkat",
            Probe {
                path: at(0, 1),
                follow: Never,
            },
        ),
        sys(
            libc::SYS_chdir,
            "chdir",
            Probe {
                path: cwd(0),
                follow: Always,
            },
        ),
        sys(
            libc::SYS_name_to_handle_at,
            "name_to_handle_at",
            Probe {
                path: at(0, 1),
                follow: IfFollowIn(4),
            },
        ),
        sys(libc::SYS_execve, "execve", Exec { path: cwd(0) }),
        sys(libc::SYS_execveat, "execveat", Exec { path: at(0, 1) }),
        sys(libc::SYS_getdents64, "getdents64", ListDir { fd: 0 }),
        sys(libc::SYS_getdents, "getdents", ListDir { fd: 0 }),
        sys(libc::SYS_mkdir, "mkdir", MakeDir { path: cwd(0) }),
        sys(libc::SYS_mkdirat, "mkdirat", MakeDir { path: at(0, 1) }),
        sys(libc::SYS_mknod, "mknod", MakeNode { path: cwd(0) }),
        sys(libc::SYS_mknodat, "mknodat", MakeNode { path: at(0, 1) }),
        sys(libc::SYS_rmdir, "rmdir", Remove { path: cwd(0) }),
        sys(libc::SYS_unlink, "unlink", Remove { path: cwd(0) }),
        sys(libc::SYS_unlinkat, "unlinkat", Remove { path: at(0, 1) }),
        sys(
            libc::SYS_rename,
            "rename",
            Rename {
                from: cwd(0),
                to: cwd(1),
            },
        ),
        sys(
            libc::SYS_renameat,
            "renameat",
            Rename {
                from: at(0, 1),
                to: at(2, 3),
            },
        ),
        sys(
            libc::SYS_renameat2,
            "renameat2",
            Rename {
                from: at(0, 1),
                to: at(2, 3),
            },
        ),
        sys(
            libc::SYS_link,
            "link",
            Link {
                from: cwd(0),
                to: cwd(1),
                follow: Never,
            },
        ),
        sys(
            libc::SYS_linkat,
            "linkat",
            Link {
                from: at(0, 1),
                to: at(2, 3),
                follow: IfFollowIn(4),
            },
        ),
        sys(libc::SYS_symlink, "symlink", Symlink { link: cwd(1) }),
        sys(libc::SYS_symlinkat, "symlinkat", Symlink { link: at(1, 2) }),
        sys(
            libc::SYS_truncate,
            "truncate",
            Modify {
                path: cwd(0),
                follow: Always,
            },
        ),
        sys_exempt(
            libc::SYS_utimensat,
            "utimensat",
            Modify {
                path: at(0, 1),
                follow: UnlessNoFollowIn(3),
            },
            Exempt::NullPointer { arg: 1 },
        ),
        sys(
            libc::SYS_utime,
            "utime",
            Modify {
                path: cwd(0),
                follow: Always,
            },
        ),
        sys(
            libc::SYS_utimes,
            "utimes",
            Modify {
                path: cwd(0),
                follow: Always,
            },
        ),
        sys(
            libc::SYS_futimesat,
            "futimesat",
            Modify {
                path: at(0, 1),
                follow: Always,
            },
        ),
        sys(
            libc::SYS_chmod,
            "chmod",
            Modify {
                path: cwd(0),
                follow: Always,
            },
        ),
        sys(
            libc::SYS_fchmodat,
            "fchmodat",
            Modify {
                path: at(0, 1),
                follow: Always,
            },
        ),
        sys(
            libc::SYS_fchmodat2,
            "fchmodat2",
            Modify {
                path: at(0, 1),
                follow: UnlessNoFollowIn(3),
            },
        ),
        sys(
            libc::SYS_chown,
            "chown",
            Modify {
                path: cwd(0),
                follow: Always,
            },
        ),
        sys(
            libc::SYS_lchown,
            "lchown",
            Modify {
                path: cwd(0),
                follow: Never,
            },
        ),
        sys(
            libc::SYS_fchownat,
            "fchownat",
            Modify {
                path: at(0, 1),
                follow: UnlessNoFollowIn(4),
            },
        ),
        sys(
            libc::SYS_open_by_handle_at,
            "open_by_handle_at",
            OpenByHandle,
        ),
        // Metadata reads and writes by path.
        sys(
            libc::SYS_statfs,
            "statfs",
            Probe {
                path: cwd(0),
                follow: Always,
            },
        ),
        sys(
            libc::SYS_getxattr,
            "getxattr",
            Probe {
                path: cwd(0),
                follow: Always,
            },
        ),
        sys(
            libc::SYS_lgetxattr,
            "lgetxattr",
            Probe {
                path: cwd(0),
                follow: Never,
            },
        ),
        sys(
            libc::SYS_listxattr,
            "listxattr",
            Probe {
                path: cwd(0),
                follow: Always,
            },
        ),
        sys(
            libc::SYS_llistxattr,
            "llistxattr",
            Probe {
                path: cwd(0),
                follow: Never,
            },
        ),
        sys(
            libc::SYS_setxattr,
            "setxattr",
            Modify {
                path: cwd(0),
                follow: Always,
            },
        ),
        sys(
            libc::SYS_lsetxattr,
            "lsetxattr",
            Modify {
                path: cwd(0),
                follow: Never,
            },
        ),
        sys(
            libc::SYS_removexattr,
            "removexattr",
            Modify {
                path: cwd(0),
                follow: Always,
            },
        ),
        sys(
            libc::SYS_lremovexattr,
            "lremovexattr",
            Modify {
                path: cwd(0),
                follow: Never,
            },
        ),
        sys(
            libc::SYS_inotify_add_watch,
            "inotify_add_watch",
            Probe {
                path: cwd(1),
                follow: Always,
            },
        ),
        sys(
            libc::SYS_chroot,
            "chroot",
            Probe {
                path: cwd(0),
                follow: Always,
            },
        ),
    ]
};

/// Syscalls refused with `ENOSYS` under tracing because they bypass every path syscall.
/// Tools (node's libuv, liburing users) fall back to plain syscalls on ENOSYS.
#[cfg(target_arch = "x86_64")]
pub const REFUSED: &[(i64, &str)] = &[(libc::SYS_io_uring_setup, "io_uring_setup")];

pub fn lookup(nr: i64) -> Option<&'static Syscall> {
    TRACED.iter().find(|s| s.nr == nr)
}

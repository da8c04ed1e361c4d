//! Performing a [`Plan`]: the thin layer of syscalls between `fork` and `exec`.
//!
//! Everything the child needs (C strings, the BPF program, the landlock ruleset) is built
//! before the fork in [`Prepared::new`]: the child of a multi-threaded process may only make
//! async-signal-safe calls, so the code in [`Prepared::enter`] allocates nothing.
//!
//! Three processes, as in bubblewrap and Bazel's linux-sandbox:
//! - **A** (the child `std::process::Command` forks) creates the namespaces, writes the
//!   uid/gid maps and waits for B, then exits with the task's status (re-raising its
//!   signal), so vt sees the task's status as its child's.
//! - **B** is pid 1 of the new pid namespace: it builds the root (mounts need a process in
//!   the new pid namespace for `/proc`), closes the doors (no_new_privs, landlock, every
//!   capability) and forks C; when C exits it reports C's status to A and exits, and the
//!   kernel kills whatever C left behind in the namespace.
//! - **C** starts a session of its own (no controlling terminal to inject into), installs
//!   the deny-list and returns to std, which runs the tracer's pre-exec and execs the task.
//!
//! A failing step writes `(step, errno)` to a report pipe, so vt can say which step failed.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libc::{c_int, c_void, sock_filter, sock_fprog};

use super::landlock::{Grant, Rights};
use super::plan::{Mount, Plan};

/// Where the new root is assembled (in the sandbox's own mount namespace, so the host's
/// `/tmp` is untouched; every bind source was captured before this is covered).
const STAGING: &str = "/tmp";

/// A step of [`Prepared::enter`], for the report pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Unshare,
    IdMaps,
    Fork,
    MakePrivate,
    Capture(u32),
    Staging,
    Mountpoint(u32),
    Attach(u32),
    Pivot,
    RootReadOnly,
    Cwd,
    Hostname,
    Loopback,
    NoNewPrivs,
    Landlock,
    Capabilities,
    Session,
    DenyList,
}

impl Step {
    fn encode(self) -> u32 {
        let (kind, index) = match self {
            Step::Unshare => (1, 0),
            Step::IdMaps => (2, 0),
            Step::Fork => (3, 0),
            Step::MakePrivate => (4, 0),
            Step::Capture(i) => (5, i),
            Step::Staging => (6, 0),
            Step::Mountpoint(i) => (7, i),
            Step::Attach(i) => (8, i),
            Step::Pivot => (9, 0),
            Step::RootReadOnly => (10, 0),
            Step::Cwd => (11, 0),
            Step::Hostname => (12, 0),
            Step::Loopback => (13, 0),
            Step::NoNewPrivs => (14, 0),
            Step::Landlock => (15, 0),
            Step::Capabilities => (16, 0),
            Step::Session => (17, 0),
            Step::DenyList => (18, 0),
        };
        kind << 16 | (index & 0xffff)
    }

    pub fn decode(raw: u32) -> Option<Step> {
        let index = raw & 0xffff;
        Some(match raw >> 16 {
            1 => Step::Unshare,
            2 => Step::IdMaps,
            3 => Step::Fork,
            4 => Step::MakePrivate,
            5 => Step::Capture(index),
            6 => Step::Staging,
            7 => Step::Mountpoint(index),
            8 => Step::Attach(index),
            9 => Step::Pivot,
            10 => Step::RootReadOnly,
            11 => Step::Cwd,
            12 => Step::Hostname,
            13 => Step::Loopback,
            14 => Step::NoNewPrivs,
            15 => Step::Landlock,
            16 => Step::Capabilities,
            17 => Step::Session,
            18 => Step::DenyList,
            _ => return None,
        })
    }

    /// What the step does, in words (`plan` names the mounts).
    pub fn describe(self, plan: &Plan) -> String {
        let mount = |i: u32| {
            plan.mounts
                .get(i as usize)
                .map(|m| format!("{} ({})", m.path().display(), kind(m)))
                .unwrap_or_else(|| format!("mount #{i}"))
        };
        match self {
            Step::Unshare => {
                "creating the user, mount, pid, ipc, uts and network namespaces".into()
            }
            Step::IdMaps => "writing the user namespace's uid/gid maps".into(),
            Step::Fork => "starting the sandbox's pid 1".into(),
            Step::MakePrivate => "making the mount tree private".into(),
            Step::Capture(i) if matches!(plan.mounts.get(i as usize), Some(Mount::Overlay(_))) => {
                format!("making {}", mount(i))
            }
            Step::Capture(i) => format!("capturing {} for a bind mount", mount(i)),
            Step::Staging => format!("mounting the new root's tmpfs on {STAGING}"),
            Step::Mountpoint(i) => format!("creating the mount point {}", mount(i)),
            Step::Attach(i) => format!("mounting {}", mount(i)),
            Step::Pivot => "switching to the new root (pivot_root)".into(),
            Step::RootReadOnly => "making the new root read-only".into(),
            Step::Cwd => format!("entering {}", plan.cwd.display()),
            Step::Hostname => "setting the hostname".into(),
            Step::Loopback => "bringing up the loopback interface".into(),
            Step::NoNewPrivs => "setting no_new_privs".into(),
            Step::Landlock => "applying the landlock rules".into(),
            Step::Capabilities => "dropping every capability".into(),
            Step::Session => "starting a new session (setsid)".into(),
            Step::DenyList => "installing the seccomp deny-list".into(),
        }
    }
}

fn kind(mount: &Mount) -> &'static str {
    match mount {
        Mount::Bind { writable: true, .. } => "writable bind",
        Mount::Bind { .. } => "read-only bind",
        Mount::Overlay(_) => "copy-on-write overlay",
        Mount::Device { .. } => "device",
        Mount::Tmpfs { .. } => "tmpfs",
        Mount::Proc { .. } => "proc",
        Mount::Symlink { .. } => "symlink",
    }
}

/// One mount, ready for the child.
struct PreparedMount {
    op: Op,
    /// Directories to create (EEXIST is fine), staging-prefixed, parents first.
    dirs: Vec<CString>,
    /// The mount point itself, staging-prefixed.
    target: CString,
    /// For binds of files: create `target` as an empty file rather than a directory.
    is_file: bool,
}

enum Op {
    Bind {
        source: CString,
        attr_set: u64,
    },
    /// An overlayfs made detached (fsopen/fsmount) before the staging tmpfs covers its
    /// directories, then attached like a captured bind.
    Overlay {
        lower: CString,
        upper: CString,
        work: CString,
    },
    Fs {
        fstype: &'static [u8],
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    Symlink {
        target: CString,
    },
}

/// Everything the child needs, allocated before the fork.
pub struct Prepared {
    clone_flags: c_int,
    setgroups: (CString, &'static [u8]),
    uid_map: (CString, Vec<u8>),
    gid_map: (CString, Vec<u8>),
    mounts: Vec<PreparedMount>,
    /// One slot per mount for the captured bind trees.
    captured: Vec<RawFd>,
    staging: CString,
    empty: CString,
    root: CString,
    dot: CString,
    cwd: CString,
    hostname: CString,
    loopback: bool,
    landlock_ruleset: Option<OwnedFd>,
    landlock_rules: Vec<(CString, u64)>,
    capabilities: Vec<u32>,
    deny: Vec<sock_filter>,
    report: OwnedFd,
}

fn c_path(path: &Path) -> CString {
    // Paths come from the plan, which has no NUL bytes (they came from the OS).
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

fn staged(path: &Path) -> CString {
    let mut bytes = STAGING.as_bytes().to_vec();
    bytes.extend_from_slice(path.as_os_str().as_bytes());
    CString::new(bytes).unwrap_or_default()
}

impl Prepared {
    pub fn new(
        plan: &Plan,
        rights: &Rights,
        landlock_ruleset: Option<OwnedFd>,
        capabilities: Vec<u32>,
        deny: Vec<sock_filter>,
        report: OwnedFd,
    ) -> Prepared {
        let mut created: Vec<&Path> = Vec::new();
        let mut mounts = Vec::with_capacity(plan.mounts.len());
        for mount in &plan.mounts {
            let path = mount.path();
            // Every ancestor inside the new root, once.
            let mut dirs = Vec::new();
            for ancestor in path
                .ancestors()
                .skip(1)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                if ancestor != Path::new("/") && !created.contains(&ancestor) {
                    created.push(ancestor);
                    dirs.push(staged(ancestor));
                }
            }
            let (op, is_file) = match mount {
                Mount::Bind { path, writable } => (
                    Op::Bind {
                        source: c_path(path),
                        attr_set: libc::MOUNT_ATTR_NOSUID
                            | libc::MOUNT_ATTR_NODEV
                            | if *writable {
                                0
                            } else {
                                libc::MOUNT_ATTR_RDONLY
                            },
                    },
                    !path.is_dir(),
                ),
                Mount::Overlay(layer) => (
                    Op::Overlay {
                        lower: c_path(&layer.path),
                        upper: c_path(&layer.upper),
                        work: c_path(&layer.work),
                    },
                    false,
                ),
                Mount::Device { path } => (
                    Op::Bind {
                        source: c_path(path),
                        attr_set: libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOEXEC,
                    },
                    true,
                ),
                Mount::Tmpfs { path } => (
                    Op::Fs {
                        fstype: b"tmpfs\0",
                        flags: libc::MS_NOSUID
                            | libc::MS_NODEV
                            | if path == Path::new("/dev") {
                                libc::MS_NOEXEC
                            } else {
                                0
                            },
                        data: Some(if path == Path::new("/dev") {
                            c"mode=0755".into()
                        } else {
                            c"mode=1777".into()
                        }),
                    },
                    false,
                ),
                Mount::Proc { .. } => (
                    Op::Fs {
                        fstype: b"proc\0",
                        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        data: None,
                    },
                    false,
                ),
                Mount::Symlink { target, .. } => (
                    Op::Symlink {
                        target: c_path(target),
                    },
                    false,
                ),
            };
            if !is_file && !matches!(op, Op::Symlink { .. }) {
                created.push(path);
            }
            mounts.push(PreparedMount {
                op,
                dirs,
                target: staged(path),
                is_file,
            });
        }
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let mut clone_flags = libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS;
        if !plan.network {
            clone_flags |= libc::CLONE_NEWNET;
        }
        let landlock_rules = super::landlock::rules(plan.writable_paths())
            .into_iter()
            .map(|(path, grant): (&Path, Grant)| (c_path(path), rights.bits(grant)))
            .collect();
        Prepared {
            clone_flags,
            setgroups: (c"/proc/self/setgroups".into(), b"deny"),
            uid_map: (
                c"/proc/self/uid_map".into(),
                format!("{uid} {uid} 1\n").into_bytes(),
            ),
            gid_map: (
                c"/proc/self/gid_map".into(),
                format!("{gid} {gid} 1\n").into_bytes(),
            ),
            captured: vec![-1; mounts.len()],
            mounts,
            staging: c_path(Path::new(STAGING)),
            empty: c"".into(),
            root: c"/".into(),
            dot: c".".into(),
            cwd: c_path(&plan.cwd),
            hostname: CString::new(plan.hostname).unwrap_or_default(),
            loopback: !plan.network,
            landlock_ruleset,
            landlock_rules,
            capabilities,
            deny,
            report,
        }
    }

    /// Runs in the child between fork and exec. Returns only in process C, ready for the
    /// tracer's pre-exec and `exec`; A and B never return.
    ///
    /// # Safety
    /// Must be called in a freshly forked child (single-threaded), before `exec`.
    pub unsafe fn enter(&mut self) -> std::io::Result<()> {
        // A. Its own process group, so vt's killpg reaches A and B.
        // SAFETY: plain syscalls on values prepared before the fork.
        unsafe {
            libc::setpgid(0, 0);
            die_with_parent();
            self.check(Step::Unshare, libc::unshare(self.clone_flags))?;
            self.check(
                Step::IdMaps,
                write_file(&self.setgroups.0, self.setgroups.1),
            )?;
            self.check(Step::IdMaps, write_file(&self.uid_map.0, &self.uid_map.1))?;
            self.check(Step::IdMaps, write_file(&self.gid_map.0, &self.gid_map.1))?;
        }
        let mut status_pipe = [0 as c_int; 2];
        // SAFETY: pipe2 writes two fds into the array.
        self.check(Step::Fork, unsafe {
            libc::pipe2(status_pipe.as_mut_ptr(), libc::O_CLOEXEC)
        })?;
        // SAFETY: fork in a single-threaded child.
        let b = unsafe { libc::fork() };
        self.check(Step::Fork, b)?;
        if b > 0 {
            // SAFETY: closes our copies of everything (the task's pipes, vt's sockets),
            // keeps the read end of the status pipe, then only waits.
            unsafe {
                close_all_but(status_pipe[0]);
                relay_status(status_pipe[0], b)
            }
        }
        // B: pid 1 of the new pid namespace.
        // SAFETY: syscalls on prepared values; see the method docs.
        unsafe {
            libc::close(status_pipe[0]);
            die_with_parent();
            self.build_root()?;
            self.lock_down()?;
        }
        // SAFETY: fork in single-threaded B.
        let c = unsafe { libc::fork() };
        self.check(Step::Fork, c)?;
        if c > 0 {
            // SAFETY: as for A.
            unsafe {
                // B is a copy of vt: the task must not reach it through /proc/1 (exe, mem).
                libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
                close_all_but(status_pipe[1]);
                init_until(c, status_pipe[1])
            }
        }
        // C: the task.
        // SAFETY: syscalls on prepared values.
        unsafe {
            libc::close(status_pipe[1]);
            self.check(Step::Session, libc::setsid())?;
            die_with_parent();
            let fprog = sock_fprog {
                len: self.deny.len() as u16,
                filter: self.deny.as_ptr().cast_mut(),
            };
            self.check(
                Step::DenyList,
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &fprog as *const sock_fprog,
                ) as c_int,
            )?;
        }
        Ok(())
    }

    /// B: mount everything under the staging tmpfs, then make it the root.
    unsafe fn build_root(&mut self) -> std::io::Result<()> {
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

    /// B: no_new_privs, landlock, then every capability (inherited by C).
    unsafe fn lock_down(&mut self) -> std::io::Result<()> {
        // SAFETY: prctl/landlock/capset syscalls on prepared values.
        unsafe {
            self.check(
                Step::NoNewPrivs,
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            )?;
            if let Some(ruleset) = &self.landlock_ruleset {
                let ruleset = ruleset.as_raw_fd();
                for (path, access) in &self.landlock_rules {
                    let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                    if fd < 0 {
                        continue; // not mounted on this host (e.g. no /dev/shm)
                    }
                    let rule = PathBeneath {
                        allowed_access: *access,
                        parent_fd: fd,
                    };
                    let added = libc::syscall(
                        libc::SYS_landlock_add_rule,
                        ruleset,
                        1, // LANDLOCK_RULE_PATH_BENEATH
                        &rule as *const PathBeneath,
                        0,
                    ) as c_int;
                    libc::close(fd);
                    self.check(Step::Landlock, added)?;
                }
                self.check(
                    Step::Landlock,
                    libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0) as c_int,
                )?;
            }
            // Securebits first (needs CAP_SETPCAP): uid 0 inside must never regain
            // capabilities through exec.
            let securebits = libc::SECBIT_NOROOT
                | libc::SECBIT_NOROOT_LOCKED
                | libc::SECBIT_NO_SETUID_FIXUP
                | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
                | libc::SECBIT_NO_CAP_AMBIENT_RAISE
                | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
            self.check(
                Step::Capabilities,
                libc::prctl(libc::PR_SET_SECUREBITS, securebits, 0, 0, 0),
            )?;
            for cap in &self.capabilities {
                self.check(
                    Step::Capabilities,
                    libc::prctl(libc::PR_CAPBSET_DROP, *cap as libc::c_ulong, 0, 0, 0),
                )?;
            }
            self.check(
                Step::Capabilities,
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                    0,
                    0,
                    0,
                ),
            )?;
            let header = CapHeader {
                version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
                pid: 0,
            };
            let data = [CapData::default(); 2];
            self.check(
                Step::Capabilities,
                libc::syscall(libc::SYS_capset, &header, data.as_ptr()) as c_int,
            )?;
        }
        Ok(())
    }

    /// `result` as an error, reported on the pipe, when it is negative.
    fn check(&self, step: Step, result: c_int) -> std::io::Result<()> {
        if result >= 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        self.report(step, err.raw_os_error().unwrap_or(0));
        Err(err)
    }

    /// Like [`Self::check`], with EEXIST as success (mount points that already exist).
    fn check_exists(&self, step: Step, result: c_int) -> std::io::Result<()> {
        if result < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST) {
            return Ok(());
        }
        self.check(step, result)
    }

    fn report(&self, step: Step, errno: i32) {
        let mut message = [0u8; 8];
        message[..4].copy_from_slice(&step.encode().to_le_bytes());
        message[4..].copy_from_slice(&errno.to_le_bytes());
        // SAFETY: writing a stack buffer to our pipe; a failed report only loses detail.
        unsafe { libc::write(self.report.as_raw_fd(), message.as_ptr().cast(), 8) };
    }
}

/// Reads what a failing child reported: the step and its errno.
pub fn read_report(report: &OwnedFd) -> Option<(Step, i32)> {
    let mut message = [0u8; 8];
    // SAFETY: reading into a stack buffer from our own pipe (non-blocking: see caller).
    let n = unsafe { libc::read(report.as_raw_fd(), message.as_mut_ptr().cast(), 8) };
    if n != 8 {
        return None;
    }
    let step = u32::from_le_bytes([message[0], message[1], message[2], message[3]]);
    let errno = i32::from_le_bytes([message[4], message[5], message[6], message[7]]);
    Step::decode(step).map(|s| (s, errno))
}

#[repr(C, packed)]
struct PathBeneath {
    allowed_access: u64,
    parent_fd: i32,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// SIGKILL when the parent dies, and die now if it already has (the race prctl leaves).
unsafe fn die_with_parent() {
    // SAFETY: prctl/getppid with integer arguments.
    unsafe {
        let parent = libc::getppid();
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != parent {
            libc::_exit(137);
        }
    }
}

unsafe fn write_file(path: &CString, contents: &[u8]) -> c_int {
    // SAFETY: open/write/close on a NUL-terminated path and a live buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return -1;
        }
        let written = libc::write(fd, contents.as_ptr().cast(), contents.len());
        let saved = *libc::__errno_location();
        libc::close(fd);
        *libc::__errno_location() = saved;
        if written == contents.len() as isize {
            0
        } else {
            -1
        }
    }
}

unsafe fn close_all_but(keep: RawFd) {
    // SAFETY: closing fds of this (forked) process only.
    unsafe {
        if keep > 0 {
            libc::close_range(0, (keep - 1) as u32, 0);
        }
        libc::close_range((keep + 1) as u32, u32::MAX, 0);
    }
}

/// A: wait for B, then leave exactly as the task did.
unsafe fn relay_status(status_pipe: RawFd, b: libc::pid_t) -> ! {
    // SAFETY: read/waitpid/signal/_exit only.
    unsafe {
        let mut raw = [0u8; 4];
        let mut got = 0usize;
        while got < 4 {
            let n = libc::read(status_pipe, raw[got..].as_mut_ptr().cast(), 4 - got);
            if n > 0 {
                got += n as usize;
            } else if n == 0 || *libc::__errno_location() != libc::EINTR {
                break;
            }
        }
        let mut b_status = 0;
        while libc::waitpid(b, &mut b_status, 0) < 0 && *libc::__errno_location() == libc::EINTR {}
        let status = if got == 4 {
            i32::from_le_bytes(raw)
        } else {
            b_status
        };
        exit_like(status)
    }
}

/// B as pid 1: reap everything until C is gone, hand C's status to A, exit (which kills
/// whatever is left in the namespace).
unsafe fn init_until(c: libc::pid_t, status_pipe: RawFd) -> ! {
    // SAFETY: waitpid/write/_exit only.
    unsafe {
        loop {
            let mut status = 0;
            let pid = libc::waitpid(-1, &mut status, 0);
            if pid == c {
                let raw = status.to_le_bytes();
                libc::write(status_pipe, raw.as_ptr().cast(), 4);
                libc::_exit(0);
            }
            if pid < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(1);
            }
        }
    }
}

unsafe fn exit_like(status: c_int) -> ! {
    // SAFETY: signal/sigprocmask/raise/_exit with plain integers.
    unsafe {
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            libc::signal(signal, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(signal);
        }
        libc::_exit(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        })
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

/// `ip link set lo up` in the new network namespace.
unsafe fn loopback_up() -> c_int {
    // SAFETY: socket/ioctl/close on a zeroed ifreq we own.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if socket < 0 {
            return -1;
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *slot = *byte as libc::c_char;
        }
        request.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        let result = libc::ioctl(socket, libc::SIOCSIFFLAGS, &request);
        libc::close(socket);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_survive_the_report_pipe() {
        for step in [
            Step::Unshare,
            Step::Capture(7),
            Step::Attach(300),
            Step::DenyList,
            Step::Mountpoint(0),
        ] {
            assert_eq!(Step::decode(step.encode()), Some(step));
        }
        assert_eq!(Step::decode(0), None);
    }
}

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
//! A failing step writes `(step, errno)` to a report pipe, so vt can say which step failed
//! ([`report`]). The kernel concepts each have a file: [`mounts`] (the new root),
//! [`lockdown`] (no_new_privs, landlock, capabilities), [`init`] (the pid-1 init and the
//! status relay), [`loopback`].

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use libc::{c_int, sock_filter, sock_fprog};

mod chain;
mod init;
mod lockdown;
mod loopback;
mod mounts;
mod report;
mod syscall;

pub use chain::{Stack, Started, starts_without_fork};
use init::{die_with_parent, init_until, relay_status};
pub(super) use loopback::loopback_up;
pub(crate) use mounts::make_overlay;
pub use report::{Step, read_report};

use super::etc_tree;
use super::landlock::{Grant, Rights};
use super::plan::{Mount, Plan};

/// Where the new root is assembled (in the sandbox's own mount namespace, so the host's
/// `/tmp` is untouched; every bind source was captured before this is covered).
const STAGING: &str = "/tmp";

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
    /// Below `/etc`, which the tree made ahead stands for when there is one ([`EtcCopy`]).
    in_etc_tree: bool,
}

/// The `/etc` tree made ahead ([`super::etc_tree`]), standing for every mount marked
/// `in_etc_tree`: A copies it while still in vt's mount namespace, B attaches the copy.
struct EtcCopy {
    /// Keeps the tree's root open until the sandbox has started.
    tree: Arc<etc_tree::Tree>,
    /// A's copy; -1 until made, and if the kernel refused it (B then builds `/etc` mount by
    /// mount, as without a tree).
    copy: c_int,
    /// `/etc` under the staging root.
    target: CString,
}

enum Op {
    Bind {
        source: CString,
        attr_set: u64,
    },
    /// An overlayfs made detached (fsopen/fsmount) before the staging tmpfs covers its
    /// directories, then attached like a captured bind; `ahead`: the socket a thread of
    /// vt's sends it on ([`super::overlay`]), else B makes it.
    Overlay {
        lower: CString,
        upper: CString,
        work: CString,
        ahead: Option<OwnedFd>,
    },
    Fs {
        fstype: &'static CStr,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    Symlink {
        target: CString,
    },
}

/// What vt makes for a sandbox on threads of its own.
#[derive(Default)]
pub struct MadeAhead {
    /// A network namespace ([`super::network`]).
    pub network: Option<OwnedFd>,
    /// The `/etc` tree, if it stands for the plan's mounts below `/etc`
    /// ([`super::etc_tree::take`] checked).
    pub etc_tree: Option<Arc<etc_tree::Tree>>,
    /// Where the plan's layer's overlay will come from ([`super::overlay`]).
    pub overlay: Option<super::overlay::Receive>,
}

/// Everything the child needs, allocated before the fork.
pub struct Prepared {
    /// A network namespace made ahead ([`super::network`]), entered before the others are
    /// created; without one, `clone_flags` creates it.
    network: Option<OwnedFd>,
    clone_flags: c_int,
    setgroups: (CString, &'static [u8]),
    uid_map: (CString, Vec<u8>),
    gid_map: (CString, Vec<u8>),
    mounts: Vec<PreparedMount>,
    /// One slot per mount for the captured bind trees.
    captured: Vec<RawFd>,
    etc: Option<EtcCopy>,
    staging: CString,
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
    /// `is_file`: whether a bind's host path is a file (a file is bound onto a file, a
    /// directory onto a directory), as the plan's probe of the host found it. `ahead`: what
    /// vt makes for this sandbox on threads of its own.
    pub fn new(
        plan: &Plan,
        is_file: impl Fn(&Path) -> bool,
        ahead: MadeAhead,
        (rights, landlock_ruleset): (&Rights, Option<OwnedFd>),
        capabilities: Vec<u32>,
        deny: Vec<sock_filter>,
        report: OwnedFd,
    ) -> Prepared {
        let MadeAhead {
            network,
            etc_tree,
            mut overlay,
        } = ahead;
        // A namespace made ahead is for a sandbox without the host's network only.
        let network = network.filter(|_| !plan.network);
        // By bytes: the plan's paths are normalized, and comparing `Path`s component by
        // component for every ancestor of ~45 mounts was a visible part of each start.
        let mut created: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
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
                if ancestor != Path::new("/") && created.insert(ancestor.as_os_str().as_bytes()) {
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
                    is_file(path),
                ),
                Mount::Overlay(layer) => (
                    Op::Overlay {
                        lower: c_path(&layer.path),
                        upper: c_path(&layer.upper),
                        work: c_path(&layer.work),
                        ahead: overlay
                            .take_if(|made| made.layer == *layer)
                            .map(|made| made.socket),
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
                        fstype: c"tmpfs",
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
                        fstype: c"proc",
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
                created.insert(path.as_os_str().as_bytes());
            }
            mounts.push(PreparedMount {
                op,
                dirs,
                target: staged(path),
                is_file,
                in_etc_tree: etc_tree.is_some() && path.starts_with("/etc"),
            });
        }
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let mut clone_flags = libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS;
        if !plan.network && network.is_none() {
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
            etc: etc_tree.map(|tree| EtcCopy {
                tree,
                copy: -1,
                target: staged(Path::new("/etc")),
            }),
            mounts,
            staging: c_path(Path::new(STAGING)),
            cwd: c_path(&plan.cwd),
            hostname: CString::new(plan.hostname).unwrap_or_default(),
            loopback: !plan.network && network.is_none(),
            network,
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
            self.enter_namespaces()?;
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
            self.build_root(&syscall::Linux)?;
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
            self.install_deny_list()
        }
    }

    /// A's namespaces: the network namespace made ahead, the others new, the id maps.
    ///
    /// # Safety
    /// Only in A, a child of vt between its clone or fork and its exec or exit.
    unsafe fn enter_namespaces(&mut self) -> std::io::Result<()> {
        // SAFETY: plain syscalls on values prepared before the clone or fork.
        unsafe {
            // While still in vt's mount namespace, the only one the kernel lets copy the tree.
            if let Some(etc) = &mut self.etc {
                etc.copy = etc_tree::copy(etc.tree.root());
            }
            // Then: entering a namespace owned by vt's user namespace needs vt's
            // capabilities, which the new user namespace leaves behind. Refused (a seccomp
            // policy around vt), the sandbox makes its own, as without one made ahead.
            if let Some(network) = &self.network
                && libc::setns(network.as_raw_fd(), libc::CLONE_NEWNET) != 0
            {
                self.clone_flags |= libc::CLONE_NEWNET;
                self.loopback = true;
            }
            self.check(Step::Unshare, libc::unshare(self.clone_flags))?;
            self.check(
                Step::IdMaps,
                write_file(&self.setgroups.0, self.setgroups.1),
            )?;
            self.check(Step::IdMaps, write_file(&self.uid_map.0, &self.uid_map.1))?;
            self.check(Step::IdMaps, write_file(&self.gid_map.0, &self.gid_map.1))
        }
    }

    /// The seccomp deny-list, on the task's process.
    ///
    /// # Safety
    /// Only in C, between its clone or fork and its exec.
    unsafe fn install_deny_list(&self) -> std::io::Result<()> {
        let fprog = sock_fprog {
            len: self.deny.len() as u16,
            filter: self.deny.as_ptr().cast_mut(),
        };
        // SAFETY: seccomp with a program that lives in `self`.
        self.check(Step::DenyList, unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &fprog as *const sock_fprog,
            ) as c_int
        })
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

/// `contents` written to `path` (0, or -1 with errno set).
///
/// # Safety
/// In the forked child: open/write/close only, errno kept across the close.
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

/// Closes every fd but `keep`.
///
/// # Safety
/// Only in a forked child that owns no fd it still needs but `keep` (A and B before they
/// only wait).
unsafe fn close_all_but(keep: RawFd) {
    // SAFETY: closing fds of this (forked) process only.
    unsafe {
        if keep > 0 {
            libc::close_range(0, (keep - 1) as u32, 0);
        }
        libc::close_range((keep + 1) as u32, u32::MAX, 0);
    }
}

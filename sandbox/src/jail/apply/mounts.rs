//! The new root: every mount of the plan under the staging tmpfs, then `pivot_root` into it
//! (B, in the new mount namespace).

use std::ffi::CStr;
use std::os::fd::AsRawFd;

use libc::{c_int, c_void};

use super::report::Step;
use super::syscall::Syscall;
use super::{Op, Prepared, PreparedMount};

impl Prepared {
    /// B, after the namespaces exist: every mount of the plan under the staging tmpfs, then
    /// `pivot_root` into it, through `sys` (the real calls in the child, a recorder in the
    /// tests below).
    pub(super) fn build_root(&mut self, sys: &impl Syscall) -> std::io::Result<()> {
        self.check(
            Step::MakePrivate,
            sys.mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None),
        )?;
        // The copy of the `/etc` tree A made, if any, stands for every mount below /etc.
        let etc_copy = self.etc.as_ref().map_or(-1, |etc| etc.copy);
        let from_tree = |mount: &PreparedMount| etc_copy >= 0 && mount.in_etc_tree;
        // Capture every bind source first: the staging tmpfs may cover some of them.
        for i in 0..self.mounts.len() {
            let step = Step::Capture(i as u32);
            if from_tree(&self.mounts[i]) {
                continue;
            }
            match &self.mounts[i].op {
                Op::Overlay {
                    lower,
                    upper,
                    work,
                    ahead,
                } => {
                    let made = ahead
                        .as_ref()
                        .map_or(-1, |socket| sys.receive_overlay(socket.as_raw_fd()));
                    let fd = if made >= 0 {
                        made
                    } else {
                        sys.make_overlay(lower, upper, work)
                    };
                    self.check(step, fd)?;
                    self.captured[i] = fd;
                }
                Op::Bind { source, attr_set } => {
                    let fd = sys.open_tree_clone(source);
                    self.check(step, fd)?;
                    self.captured[i] = fd;
                    self.check(
                        step,
                        sys.mount_setattr(
                            fd,
                            c"",
                            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
                            *attr_set,
                        ),
                    )?;
                }
                Op::Fs { .. } | Op::Symlink { .. } => {}
            }
        }
        self.check(
            Step::Staging,
            sys.mount(
                Some(c"tmpfs"),
                &self.staging,
                Some(c"tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV,
                Some(c"mode=0755"),
            ),
        )?;
        let mut etc_attached = false;
        for i in 0..self.mounts.len() {
            let step = i as u32;
            let mount = &self.mounts[i];
            if from_tree(mount) {
                if let Some(etc) = self.etc.as_ref().filter(|_| !etc_attached) {
                    self.check_exists(Step::EtcTree, sys.mkdir(&etc.target))?;
                    self.check(Step::EtcTree, sys.move_mount(etc.copy, &etc.target))?;
                    sys.close(etc.copy);
                    etc_attached = true;
                }
                continue;
            }
            for dir in &mount.dirs {
                self.check_exists(Step::Mountpoint(step), sys.mkdir(dir))?;
            }
            match &mount.op {
                Op::Symlink { target } => {
                    self.check_exists(Step::Attach(step), sys.symlink(target, &mount.target))?;
                    continue;
                }
                _ if mount.is_file => {
                    self.check(Step::Mountpoint(step), sys.touch(&mount.target))?
                }
                _ => self.check_exists(Step::Mountpoint(step), sys.mkdir(&mount.target))?,
            }
            match &mount.op {
                Op::Bind { .. } | Op::Overlay { .. } => {
                    let fd = self.captured[i];
                    self.check(Step::Attach(step), sys.move_mount(fd, &mount.target))?;
                    sys.close(fd);
                    self.captured[i] = -1;
                }
                Op::Fs {
                    fstype,
                    flags,
                    data,
                } => {
                    self.check(
                        Step::Attach(step),
                        sys.mount(
                            Some(fstype),
                            &mount.target,
                            Some(fstype),
                            *flags,
                            data.as_deref(),
                        ),
                    )?;
                }
                Op::Symlink { .. } => {}
            }
        }
        // pivot_root(".", ".") stacks the old root on top of the new one; detaching it
        // leaves the new root alone, with nothing of the host reachable above it.
        self.check(Step::Pivot, sys.chdir(&self.staging))?;
        self.check(Step::Pivot, sys.pivot_root_here())?;
        self.check(Step::Pivot, sys.umount_detach(c"."))?;
        self.check(Step::Pivot, sys.chdir(c"/"))?;
        self.check(
            Step::RootReadOnly,
            sys.mount_setattr(libc::AT_FDCWD, c"/", 0, libc::MOUNT_ATTR_RDONLY),
        )?;
        self.check(Step::Cwd, sys.chdir(&self.cwd))?;
        self.check(Step::Hostname, sys.sethostname(&self.hostname))?;
        if self.loopback {
            self.check(Step::Loopback, sys.loopback_up())?;
        }
        Ok(())
    }
}

/// A detached overlayfs mount of `lower` with writes going to `upper`, as a mount fd (or
/// -1 with errno set). `userxattr`: in a user namespace overlayfs may only keep its
/// metadata (whiteouts' opaque marks) in `user.overlay.*` xattrs.
///
/// `volatile` (Linux 5.10; an older kernel refuses the flag and the overlay is made
/// without it): the overlay's unmount does not sync the upper file system. Without it,
/// every sandboxed task's end wrote back every dirty inode of the workspace's file system
/// and flushed the disk's cache (`ovl_sync_fs` → `sync_filesystem` → `blkdev_issue_flush`,
/// seen in the scheduler's traces of a 100-task run), for a layer that vt then renames into
/// the workspace or removes: its files are as durable as any a task writes outside the
/// sandbox, which vt does not sync either. Each layer has a fresh work directory, so the
/// "was volatile" mark overlayfs leaves there is never met by a later mount.
///
/// # Safety
/// Makes only syscalls on NUL-terminated strings the caller owns (async-signal-safe).
pub(crate) unsafe fn make_overlay(lower: &CStr, upper: &CStr, work: &CStr) -> c_int {
    // SAFETY: fsopen/fsconfig/fsmount with valid C strings and the fds they return.
    unsafe {
        let fs =
            libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), libc::FSOPEN_CLOEXEC) as c_int;
        if fs < 0 {
            return -1;
        }
        let set = |key: &CStr, value: Option<&CStr>| {
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
        let required = set(c"lowerdir", Some(lower)) == 0
            && set(c"upperdir", Some(upper)) == 0
            && set(c"workdir", Some(work)) == 0
            && set(c"userxattr", None) == 0;
        if required {
            // Optional: a refusal leaves the context as it was.
            let _ = set(c"volatile", None);
        }
        let configured = required
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

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use libc::c_uint;
    use std::path::PathBuf;

    use super::*;
    use crate::jail::apply::read_report;
    use crate::jail::landlock::Rights;
    use crate::jail::plan::{Mount, Plan};

    /// Records every call as a line; fails the `fail_at`-th call (1-based) with EPERM.
    struct Recorder {
        calls: RefCell<Vec<String>>,
        fail_at: Option<usize>,
    }

    impl Recorder {
        fn new(fail_at: Option<usize>) -> Recorder {
            Recorder {
                calls: RefCell::new(Vec::new()),
                fail_at,
            }
        }

        /// Records `call`; its result: `ok`, or -1 with errno EPERM at the chosen call.
        fn record(&self, call: String, ok: c_int) -> c_int {
            let mut calls = self.calls.borrow_mut();
            calls.push(call);
            if self.fail_at == Some(calls.len()) {
                // SAFETY: writing this thread's errno, as a failing syscall would.
                unsafe { *libc::__errno_location() = libc::EPERM };
                return -1;
            }
            ok
        }
    }

    fn s(c: &CStr) -> String {
        c.to_string_lossy().into_owned()
    }

    impl Syscall for Recorder {
        fn mount(
            &self,
            source: Option<&CStr>,
            target: &CStr,
            fstype: Option<&CStr>,
            _flags: libc::c_ulong,
            data: Option<&CStr>,
        ) -> c_int {
            let o = |c: Option<&CStr>| c.map_or("-".to_owned(), s);
            let call = format!(
                "mount {} {} {} {}",
                o(source),
                s(target),
                o(fstype),
                o(data)
            );
            self.record(call, 0)
        }
        fn open_tree_clone(&self, path: &CStr) -> c_int {
            let fd = 100 + self.calls.borrow().len() as c_int;
            self.record(format!("open_tree {} = {fd}", s(path)), fd)
        }
        fn mount_setattr(&self, dirfd: c_int, path: &CStr, _flags: c_uint, attr: u64) -> c_int {
            let ro = attr & libc::MOUNT_ATTR_RDONLY != 0;
            let call = format!("setattr {dirfd}{} ro={ro}", s(path));
            self.record(call, 0)
        }
        fn make_overlay(&self, lower: &CStr, upper: &CStr, _work: &CStr) -> c_int {
            let fd = 100 + self.calls.borrow().len() as c_int;
            self.record(format!("overlay {} over {} = {fd}", s(upper), s(lower)), fd)
        }
        fn receive_overlay(&self, socket: c_int) -> c_int {
            let fd = 100 + self.calls.borrow().len() as c_int;
            self.record(format!("receive overlay on {socket} = {fd}"), fd)
        }
        fn mkdir(&self, path: &CStr) -> c_int {
            self.record(format!("mkdir {}", s(path)), 0)
        }
        fn symlink(&self, target: &CStr, link: &CStr) -> c_int {
            self.record(format!("symlink {} -> {}", s(link), s(target)), 0)
        }
        fn touch(&self, path: &CStr) -> c_int {
            self.record(format!("touch {}", s(path)), 0)
        }
        fn move_mount(&self, fd: c_int, target: &CStr) -> c_int {
            self.record(format!("move_mount {fd} {}", s(target)), 0)
        }
        fn close(&self, fd: c_int) {
            self.record(format!("close {fd}"), 0);
        }
        fn chdir(&self, path: &CStr) -> c_int {
            self.record(format!("chdir {}", s(path)), 0)
        }
        fn pivot_root_here(&self) -> c_int {
            self.record("pivot_root . .".to_owned(), 0)
        }
        fn umount_detach(&self, path: &CStr) -> c_int {
            self.record(format!("umount_detach {}", s(path)), 0)
        }
        fn sethostname(&self, name: &CStr) -> c_int {
            self.record(format!("sethostname {}", s(name)), 0)
        }
        fn loopback_up(&self) -> c_int {
            self.record("loopback up".to_owned(), 0)
        }
    }

    /// A plan of each kind of mount: a read-only directory, a writable one, a device file,
    /// a tmpfs, /proc and a symlink.
    fn prepared(workspace: &std::path::Path) -> (Prepared, std::os::fd::OwnedFd) {
        prepared_with(workspace, Vec::new(), None)
    }

    /// As [`prepared`], with `etc` (mounts below /etc) first and the tree made ahead.
    fn prepared_with(
        workspace: &std::path::Path,
        etc: Vec<Mount>,
        etc_tree: Option<std::sync::Arc<crate::jail::etc_tree::Tree>>,
    ) -> (Prepared, std::os::fd::OwnedFd) {
        let plan = Plan {
            mounts: etc
                .into_iter()
                .chain([
                    Mount::Bind {
                        path: PathBuf::from("/usr"),
                        writable: false,
                    },
                    Mount::Bind {
                        path: workspace.to_path_buf(),
                        writable: true,
                    },
                    Mount::Device {
                        path: PathBuf::from("/dev/null"),
                    },
                    Mount::Tmpfs {
                        path: PathBuf::from("/tmp"),
                    },
                    Mount::Proc {
                        path: PathBuf::from("/proc"),
                    },
                    Mount::Symlink {
                        path: PathBuf::from("/lib64"),
                        target: PathBuf::from("usr/lib64"),
                    },
                ])
                .collect(),
            cwd: workspace.to_path_buf(),
            network: false,
            hostname: "vt-sandbox",
            looked_at: Vec::new(),
        };
        prepared_for(
            &plan,
            |path| !path.is_dir(),
            super::super::MadeAhead {
                etc_tree,
                ..Default::default()
            },
        )
    }

    /// `plan` prepared with what `ahead` made, no landlock, capabilities or deny-list, and
    /// the read end of its report pipe.
    fn prepared_for(
        plan: &Plan,
        is_file: impl Fn(&std::path::Path) -> bool,
        ahead: super::super::MadeAhead,
    ) -> (Prepared, std::os::fd::OwnedFd) {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).expect("pipe");
        let prepared = Prepared::new(
            plan,
            is_file,
            ahead,
            (&Rights::for_abi(0), None),
            vec![],
            vec![],
            write,
        );
        (prepared, read)
    }

    #[test]
    fn a_plan_builds_its_root_in_this_order() {
        let workspace = tempfile::tempdir().expect("tempdir");
        let ws = workspace.path().display().to_string();
        let (mut prepared, _report) = prepared(workspace.path());
        let sys = Recorder::new(None);
        prepared.build_root(&sys).expect("every call succeeds");
        let calls = sys.calls.into_inner();
        let mut expected = vec![
            // The host's tree private, then every bind source captured before the staging
            // tmpfs covers /tmp (where the workspace may live).
            "mount - / - -".to_owned(),
            "open_tree /usr = 101".to_owned(),
            "setattr 101 ro=true".to_owned(),
            format!("open_tree {ws} = 103"),
            "setattr 103 ro=false".to_owned(),
            "open_tree /dev/null = 105".to_owned(),
            "setattr 105 ro=false".to_owned(),
            "mount tmpfs /tmp tmpfs mode=0755".to_owned(),
            "mkdir /tmp/usr".to_owned(),
            "move_mount 101 /tmp/usr".to_owned(),
            "close 101".to_owned(),
        ];
        // The workspace's ancestors, parents first, then its mount.
        let mut dir = String::from("/tmp");
        for part in workspace.path().iter().skip(1) {
            dir = format!("{dir}/{}", part.to_string_lossy());
            expected.push(format!("mkdir {dir}"));
        }
        expected.extend([
            "move_mount 103 /tmp".to_owned() + &ws,
            "close 103".to_owned(),
            "mkdir /tmp/dev".to_owned(),
            "touch /tmp/dev/null".to_owned(),
            "move_mount 105 /tmp/dev/null".to_owned(),
            "close 105".to_owned(),
            "mkdir /tmp/tmp".to_owned(),
            "mount tmpfs /tmp/tmp tmpfs mode=1777".to_owned(),
            "mkdir /tmp/proc".to_owned(),
            "mount proc /tmp/proc proc -".to_owned(),
            "symlink /tmp/lib64 -> usr/lib64".to_owned(),
            // Into the new root, the old one detached, the root read-only.
            "chdir /tmp".to_owned(),
            "pivot_root . .".to_owned(),
            "umount_detach .".to_owned(),
            "chdir /".to_owned(),
            "setattr -100/ ro=true".to_owned(),
            format!("chdir {ws}"),
            "sethostname vt-sandbox".to_owned(),
            "loopback up".to_owned(),
        ]);
        assert_eq!(calls, expected);
    }

    /// /etc's mounts: a file bound, a symlink.
    fn etc() -> Vec<Mount> {
        vec![
            Mount::Bind {
                path: PathBuf::from("/etc/passwd"),
                writable: false,
            },
            Mount::Symlink {
                path: PathBuf::from("/etc/localtime"),
                target: PathBuf::from("/usr/share/zoneinfo/UTC"),
            },
        ]
    }

    #[test]
    fn a_copy_of_the_etc_tree_stands_for_every_mount_below_etc() {
        let workspace = tempfile::tempdir().expect("tempdir");
        let tree = std::sync::Arc::new(crate::jail::etc_tree::Tree::stand_in());
        let (mut prepared, _report) = prepared_with(workspace.path(), etc(), Some(tree));
        // A's copy of the tree.
        if let Some(etc) = prepared.etc.as_mut() {
            etc.copy = 42;
        }
        let sys = Recorder::new(None);
        prepared.build_root(&sys).expect("every call succeeds");
        let calls = sys.calls.into_inner();
        let etc_calls: Vec<&String> = calls.iter().filter(|c| c.contains("etc")).collect();
        assert_eq!(etc_calls, ["mkdir /tmp/etc", "move_mount 42 /tmp/etc"]);
        let attached = calls.iter().position(|c| c == "move_mount 42 /tmp/etc");
        assert_eq!(calls[attached.expect("attached") + 1], "close 42");
        // The rest as without /etc: /usr captured first, the staging tmpfs, /usr attached.
        assert_eq!(calls[1], "open_tree /usr = 101");
        assert!(calls.contains(&"move_mount 101 /tmp/usr".to_owned()));
    }

    #[test]
    fn without_a_copy_of_the_etc_tree_etc_is_built_mount_by_mount() {
        let workspace = tempfile::tempdir().expect("tempdir");
        for tree in [
            None,
            // A was refused the copy (an older kernel): the plan's own mounts.
            Some(std::sync::Arc::new(crate::jail::etc_tree::Tree::stand_in())),
        ] {
            let (mut prepared, _report) = prepared_with(workspace.path(), etc(), tree);
            let sys = Recorder::new(None);
            prepared.build_root(&sys).expect("every call succeeds");
            let calls = sys.calls.into_inner();
            let etc_calls: Vec<&String> = calls.iter().filter(|c| c.contains("etc")).collect();
            assert_eq!(
                etc_calls,
                [
                    "open_tree /etc/passwd = 101",
                    "mkdir /tmp/etc",
                    "touch /tmp/etc/passwd",
                    "move_mount 101 /tmp/etc/passwd",
                    "symlink /tmp/etc/localtime -> /usr/share/zoneinfo/UTC",
                ]
            );
        }
    }

    #[test]
    fn an_overlay_made_ahead_is_received_and_else_made_here() {
        let workspace = tempfile::tempdir().expect("tempdir");
        let ws = workspace.path().display().to_string();
        let layer = crate::jail::plan::Layer {
            path: workspace.path().to_path_buf(),
            upper: PathBuf::from("/cache/layers/l/upper"),
            work: PathBuf::from("/cache/layers/l/work"),
        };
        let plan = Plan {
            mounts: vec![Mount::Overlay(layer.clone())],
            cwd: workspace.path().to_path_buf(),
            network: true,
            hostname: "vt-sandbox",
            looked_at: Vec::new(),
        };
        let calls = |made_for: crate::jail::plan::Layer, fail: Option<usize>| {
            let socket: std::os::fd::OwnedFd = std::fs::File::open("/dev/null").expect("fd").into();
            let number = socket.as_raw_fd();
            let (mut prepared, _report) = prepared_for(
                &plan,
                |_| false,
                super::super::MadeAhead {
                    overlay: Some(crate::jail::overlay::Receive {
                        layer: made_for,
                        socket,
                    }),
                    ..Default::default()
                },
            );
            let sys = Recorder::new(fail);
            let _ = prepared.build_root(&sys);
            (number, sys.calls.into_inner())
        };
        // Received: attached, not made.
        let (socket, received) = calls(layer.clone(), None);
        assert_eq!(received[1], format!("receive overlay on {socket} = 101"));
        assert!(
            !received.iter().any(|c| c.starts_with("overlay")),
            "{received:?}"
        );
        assert!(
            received.contains(&format!("move_mount 101 /tmp{ws}")),
            "{received:?}"
        );
        // None came (the call fails): made here, as without a thread.
        let (_, not_received) = calls(layer.clone(), Some(2));
        assert_eq!(
            not_received[2],
            format!("overlay /cache/layers/l/upper over {ws} = 102")
        );
        assert!(not_received.contains(&format!("move_mount 102 /tmp{ws}")));
        // A socket for another layer's overlay: not this one's.
        let other = crate::jail::plan::Layer {
            upper: PathBuf::from("/cache/layers/other/upper"),
            ..layer
        };
        let (_, own) = calls(other, None);
        assert_eq!(
            own[1],
            format!("overlay /cache/layers/l/upper over {ws} = 101")
        );
    }

    #[test]
    fn a_failing_call_stops_the_build_and_names_its_step() {
        let workspace = tempfile::tempdir().expect("tempdir");
        let (mut prepared, report) = prepared(workspace.path());
        // The 10th call: attaching the first mount (/usr).
        let sys = Recorder::new(Some(10));
        let error = prepared.build_root(&sys).expect_err("the move_mount fails");
        assert_eq!(error.raw_os_error(), Some(libc::EPERM));
        assert_eq!(sys.calls.borrow().len(), 10, "nothing after the failure");
        assert_eq!(read_report(&report), Some((Step::Attach(0), libc::EPERM)));
    }
}

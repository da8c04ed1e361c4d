//! The report pipe's codec: which [`Step`] of [`super::Prepared::enter`] failed, and its
//! errno, as 8 bytes a failing child writes and vt reads.

use std::os::fd::{AsRawFd, OwnedFd};

use super::{STAGING, kind};
use crate::jail::plan::{Mount, Plan};

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
    /// Attaching the copy of the `/etc` tree made ahead (`jail::etc_tree`).
    EtcTree,
}

impl Step {
    pub(super) fn encode(self) -> u32 {
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
            Step::EtcTree => (19, 0),
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
            19 => Step::EtcTree,
            _ => return None,
        })
    }

    /// Whether the step makes or mounts one of the plan's copy-on-write layers.
    pub fn is_layer(self, plan: &Plan) -> bool {
        match self {
            Step::Capture(i) | Step::Attach(i) => {
                matches!(plan.mounts.get(i as usize), Some(Mount::Overlay(_)))
            }
            _ => false,
        }
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
            Step::EtcTree => format!("mounting /etc (the tree made ahead) on {STAGING}/etc"),
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
            Step::EtcTree,
        ] {
            assert_eq!(Step::decode(step.encode()), Some(step));
        }
        assert_eq!(Step::decode(0), None);
    }

    #[test]
    fn only_the_steps_that_make_or_mount_a_layer_are_the_layers() {
        use std::path::PathBuf;
        let plan = Plan {
            mounts: vec![
                Mount::Overlay(crate::jail::plan::Layer {
                    path: PathBuf::from("/ws/app"),
                    upper: PathBuf::from("/ws/.cache/layers/l/upper"),
                    work: PathBuf::from("/ws/.cache/layers/l/work"),
                }),
                Mount::Bind {
                    path: PathBuf::from("/usr"),
                    writable: false,
                },
            ],
            cwd: PathBuf::from("/ws/app"),
            network: false,
            hostname: "vt-sandbox",
            looked_at: Vec::new(),
        };
        assert!(Step::Capture(0).is_layer(&plan));
        assert!(Step::Attach(0).is_layer(&plan));
        // A bind, a step that names no mount, a mount the plan does not have.
        for step in [
            Step::Capture(1),
            Step::Attach(1),
            Step::Mountpoint(0),
            Step::Unshare,
            Step::Capture(9),
        ] {
            assert!(!step.is_layer(&plan), "{step:?}");
        }
    }
}

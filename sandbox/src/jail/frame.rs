//! A sandbox's frame, started before its task is known: the namespaces and the part of the
//! root every sandbox of this host has, whatever its task.
//!
//! Why: of a sandboxed task's start, the clone of the outer process, its namespaces and the
//! ~40 mounts of the root's system part (`/usr`, the parts of `/etc`, `/dev`, `/proc`, the
//! scratch directories) are the same for every task, and they were all on the task's way:
//! ~1.1 ms of the 1.6 ms between the clone and the task's exec in a run of 100 sandboxed
//! tasks, ~1.4 ms of a lone `vt exec --sandbox`. A frame does them on a thread of vt's
//! while the previous task runs (a run of several sandboxed tasks: [`keep_ahead`]) or
//! while vt reads the workspace and plans (a lone sandbox: [`make_ahead`] from vt's command
//! line). Its init process then waits; the task's sandbox gives it the task's own mounts
//! (the workspace, the outputs or the copy-on-write layer, the tools on its `PATH`, vt's
//! buffers) and its launch (`apply::Frame`), and it finishes the root and starts the task
//! exactly as a sandbox started whole does.
//!
//! What the task sees is the same, with one difference: its root was assembled at `/proc`
//! of the frame's mount namespace instead of `/tmp` (so that the task's own bind sources,
//! captured only at the go, are not covered). Nothing of that shows inside.
//!
//! A frame's binds show what was at their paths when it was built, as the `/etc` tree's do
//! ([`super::etc_tree`]), and its mount namespace is a copy of vt's as it was then. So a
//! frame stands for a task only while [`super::system::fixed_paths`] returns the look it was
//! planned from and no mount or unmount happened in vt's mount namespace since
//! (`/proc/self/mounts`, opened first, `POLLPRI`), both asked after the task's change guard
//! opened (in [`super::Jail`]'s prepare), and only if the task's plan has every one of the
//! frame's mounts and none of its own above them ([`super::plan::Plan::task_part`]).
//! Otherwise the frame is let go (its processes killed) and that sandbox is built whole.
//!
//! Frames are for sandboxes without the host's network, started without a fork
//! ([`super::apply::starts_without_fork`]). `VT_SANDBOX_FRAME=0` builds every sandbox whole.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

use super::apply::{self, FrameWait};
use super::plan::{self, HostPath, Mount, Plan};
use super::{etc_tree, landlock, network, system};

/// Set to `0` to build every sandbox whole.
pub const FRAME_ENV: &str = "VT_SANDBOX_FRAME";

/// A frame whose init waits for its task, and what it was built from.
pub(crate) struct Built {
    frame: apply::Frame,
    /// The frame's mounts ([`plan::frame_mounts`]).
    mounts: Vec<Mount>,
    /// The look at the host's fixed paths they were chosen from.
    made_from: Arc<HashMap<PathBuf, HostPath>>,
    /// vt's mount table, watched from before anything else was done.
    watch: system::MountWatch,
    /// The directories of vt's `PATH` the frame binds, and what each was before the frame
    /// captured it: a bind shows the directory it was made of, and these are not among the
    /// fixed paths [`system::fixed_paths`] watches.
    tools: Vec<(PathBuf, Identity)>,
}

/// A directory's device and inode, through symlinks (as a bind resolves its source).
type Identity = (u64, u64);

fn identity(path: &Path) -> Option<Identity> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl Built {
    /// Whether the host is still what the frame shows: the fixed paths' look it was planned
    /// from, the same mounts, the same tool directories.
    fn is_current(&self) -> bool {
        Arc::ptr_eq(&self.made_from, &system::fixed_paths())
            && !self.watch.changed()
            && self
                .tools
                .iter()
                .all(|(path, was)| identity(path) == Some(*was))
    }
}

/// The frame being built or built, for the next sandbox.
static KEPT: Mutex<Option<Receiver<io::Result<Built>>>> = Mutex::new(None);

/// Set once this process could not build a frame, or `VT_SANDBOX_FRAME=0`: it does not try
/// again.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Set for a run of several tasks: taking a frame starts the next ([`keep_ahead`]).
static KEEP_AHEAD: AtomicBool = AtomicBool::new(false);

/// Frames in a row that did not fit their task: after [`MISFITS`], this process stops
/// building them (every task of the run shows something where a frame has its own).
static MISFIT_RUN: AtomicU32 = AtomicU32::new(0);
const MISFITS: u32 = 2;

/// From now on, taking a frame starts the next one: for a run of several sandboxed tasks.
pub fn keep_ahead() {
    KEEP_AHEAD.store(true, Ordering::Relaxed);
}

/// Starts building a frame for the next sandbox, unless one is being built or built, or
/// this process cannot.
fn make_ahead() {
    if REFUSED.load(Ordering::Relaxed) {
        return;
    }
    if !apply::starts_without_fork() || std::env::var_os(FRAME_ENV).is_some_and(|v| v == "0") {
        REFUSED.store(true, Ordering::Relaxed);
        return;
    }
    let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
    if kept.is_some() {
        return;
    }
    let Some(thread) = frame_thread() else {
        REFUSED.store(true, Ordering::Relaxed);
        return;
    };
    let (reply, built) = channel();
    let sent = thread
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(reply)
        .is_ok();
    if sent {
        *kept = Some(built);
    }
}

/// Starts building a frame for the next sandbox, in a run of several tasks ([`keep_ahead`])
/// only. A lone sandbox gains nothing from one: while vt reads the workspace and plans, its
/// other CPU is busy with the network namespace and the overlay made ahead, and a frame
/// built there was ready no sooner than the sandbox built whole (`vt exec --sandbox` of
/// `true`: 6.43 ms with a frame, 6.19 without, same rounds).
pub fn make_ahead_in_a_run() {
    if KEEP_AHEAD.load(Ordering::Relaxed) {
        make_ahead();
    }
}

/// Whether a frame is being built or waits: it brings the sandbox's network namespace, so
/// the sandbox need not have one made ([`super::network::make_ahead`]).
pub fn expected() -> bool {
    KEPT.lock().unwrap_or_else(|p| p.into_inner()).is_some()
}

/// The frame for `plan`, if one was started, it fits the plan, and the host is still what it
/// was built from. Waits for a frame still being built (its thread is then most of the way
/// there: the task's own sandbox would take as long). Ask after the task's change guard has
/// opened. A frame that does not stand for `plan` is let go.
pub(crate) fn take(plan: &Plan) -> Option<(apply::Frame, Vec<Mount>)> {
    if plan.network {
        return None;
    }
    let built = KEPT.lock().unwrap_or_else(|p| p.into_inner()).take()?;
    if KEEP_AHEAD.load(Ordering::Relaxed) {
        // Queued behind this one: the frame thread builds it once this frame's task runs.
        make_ahead();
    }
    let built = match built.recv() {
        Ok(Ok(built)) => built,
        Ok(Err(_)) => {
            REFUSED.store(true, Ordering::Relaxed);
            return None;
        }
        Err(_) => return None,
    };
    if !built.is_current() {
        return None;
    }
    if plan.task_part(&built.mounts).is_none() {
        if MISFIT_RUN.fetch_add(1, Ordering::Relaxed) + 1 >= MISFITS {
            REFUSED.store(true, Ordering::Relaxed);
        }
        return None;
    }
    MISFIT_RUN.store(0, Ordering::Relaxed);
    Some((built.frame, built.mounts))
}

/// A request for a frame: where to send it.
type Job = Sender<io::Result<Built>>;

/// The thread frames are built from: their processes run on its thread pointer until each
/// frame's task has exec'd, so it builds one at a time, blocks every signal, and never
/// exits (a frame's processes die with it: `PR_SET_PDEATHSIG` is the cloning thread's).
fn frame_thread() -> Option<&'static Mutex<Sender<Job>>> {
    static THREAD: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();
    THREAD
        .get_or_init(|| {
            let (jobs, queue) = channel::<Job>();
            crate::spawn_without_signals("vt-frame", move || {
                // Its B is vt's child; the reaper reaps a frame nobody used.
                crate::reaper::start();
                for reply in queue {
                    match build() {
                        Ok((built, wait)) => {
                            // Unsent (nobody waits for it any more), the frame is let go.
                            let _ = reply.send(Ok(built));
                            wait.wait();
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
            })
            .ok()
            .map(|_| Mutex::new(jobs))
        })
        .as_ref()
}

/// Builds a frame for the host as [`system::fixed_paths`] finds it now.
fn build() -> io::Result<(Built, FrameWait)> {
    // First: a change of the mount table from here on shows on it.
    let watch = system::MountWatch::new()?;
    let made_from = system::fixed_paths();
    let host = |path: &Path| {
        made_from
            .get(path)
            .cloned()
            .unwrap_or_else(|| HostPath::probe(path))
    };
    // What each is before the frame binds it (a change after this shows as a new identity).
    let tools: Vec<(PathBuf, Identity)> = path_tools()
        .into_iter()
        .filter_map(|dir| identity(&dir).map(|was| (dir, was)))
        .collect();
    let mounts = plan::frame_mounts(tools.iter().map(|(dir, _)| dir.clone()).collect(), host)
        .map_err(io::Error::other)?;
    let frame_plan = Plan {
        mounts: mounts.clone(),
        cwd: "/".into(),
        network: false,
        hostname: "vt-sandbox",
        looked_at: Vec::new(),
    };
    let (report, report_write): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
    let prepared = apply::Prepared::new(
        &frame_plan,
        |path| match made_from.get(path) {
            Some(HostPath::File) => true,
            Some(HostPath::Dir) => false,
            _ => !path.is_dir(),
        },
        apply::MadeAhead {
            network: network::take(),
            // Its `/etc` from the tree made ahead, if there is one for this look: the frame is
            // then current for as long as the tree is.
            etc_tree: etc_tree::in_use()
                .then(|| plan::etc_part(&mounts))
                .flatten()
                .and_then(|part| etc_tree::take(&made_from, &part)),
            part: apply::Part::Frame,
            overlay: None,
        },
        (&landlock::Rights::for_abi(landlock::kernel_abi()), None),
        Vec::new(),
        Vec::new(),
        report_write,
    );
    let (frame, wait) = prepared.start_frame(report)?;
    Ok((
        Built {
            frame,
            mounts,
            made_from,
            watch,
            tools,
        },
        wait,
    ))
}

/// The absolute directories of vt's own `PATH`: a task's `PATH` is most often vt's with the
/// workspace's tool directories before it, and its sandbox binds each directory of it that
/// exists (the executor's `jail_for`); a frame without them would not fit those tasks.
fn path_tools() -> Vec<PathBuf> {
    let Some(path) = std::env::var_os("PATH") else {
        return Vec::new();
    };
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute() && dir.is_dir())
        .collect()
}

//! Waiting for whole process trees.
//!
//! A task's daemonized grandchildren must be reaped too: a zombie still holds the seccomp
//! filter, so the supervisor would never see "all processes gone". vt therefore becomes a
//! child subreaper (orphans of its tasks are reparented to it), and one reaper thread waits
//! for *every* child: registered task roots get their exit status delivered, orphans are
//! just reaped.
//!
//! Rule for the rest of vt: once the reaper runs, spawn children only through [`spawn`],
//! or the reaper may reap them before their owner's `wait`.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Condvar, Mutex, OnceLock};

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

struct Reaper {
    /// Task roots waiting for their status. Held across `spawn` so a root that exits at
    /// once is still found registered when the reaper sees it.
    waiting: Mutex<Registry>,
    spawned: Condvar,
}

#[derive(Default)]
struct Registry {
    roots: HashMap<i32, Sender<ExitStatus>>,
    generation: u64,
}

fn reaper() -> &'static Reaper {
    static REAPER: OnceLock<Reaper> = OnceLock::new();
    REAPER.get_or_init(|| {
        // SAFETY: prctl with integer arguments only.
        let _ = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        std::thread::Builder::new()
            .name("vt-reaper".into())
            .spawn(reap_forever)
            .expect("spawning the reaper thread");
        Reaper {
            waiting: Mutex::new(Registry::default()),
            spawned: Condvar::new(),
        }
    })
}

/// Spawns `command` and returns the child and a receiver for its exit status.
pub fn spawn(command: &mut Command) -> std::io::Result<(Child, Receiver<ExitStatus>)> {
    let reaper = reaper();
    let mut registry = reaper.waiting.lock().unwrap_or_else(|p| p.into_inner());
    let child = command.spawn()?;
    let (sender, receiver) = channel();
    registry.roots.insert(child.id() as i32, sender);
    registry.generation += 1;
    reaper.spawned.notify_all();
    Ok((child, receiver))
}

fn reap_forever() {
    let reaper = reaper();
    let mut seen_generation = 0;
    loop {
        // Peek (WNOWAIT) so we can decide under the lock whether this pid is a task root.
        match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(status) => {
                let Some(pid) = status.pid() else { continue };
                let sender = reaper
                    .waiting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .roots
                    .remove(&pid.as_raw());
                let reaped = waitpid(pid, Some(WaitPidFlag::WNOHANG));
                if let (Some(sender), Ok(status)) = (sender, reaped) {
                    let _ = sender.send(exit_status(status));
                }
            }
            Err(Errno::EINTR) => {}
            Err(_) => {
                // ECHILD: no children at all. Sleep until something is spawned.
                let registry = reaper.waiting.lock().unwrap_or_else(|p| p.into_inner());
                let registry = reaper
                    .spawned
                    .wait_while(registry, |r| r.generation == seen_generation)
                    .unwrap_or_else(|p| p.into_inner());
                seen_generation = registry.generation;
            }
        }
    }
}

fn exit_status(status: WaitStatus) -> ExitStatus {
    // Rebuild the raw wait status std understands.
    ExitStatus::from_raw(match status {
        WaitStatus::Exited(_, code) => (code & 0xff) << 8,
        WaitStatus::Signaled(_, signal, core) => signal as i32 | if core { 0x80 } else { 0 },
        _ => 0,
    })
}

/// Kills the process group of `pid` and then every remaining child of vt (orphans of
/// tasks). Used on Ctrl-C and when vt gives up on a task.
pub fn kill_tree(pid: u32) {
    let _ = nix::sys::signal::killpg(Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
    let me = std::process::id();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let status =
                std::fs::read_to_string(format!("/proc/{child}/status")).unwrap_or_default();
            let parent = status
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .map(str::trim);
            if parent == Some(me.to_string().as_str()) {
                let _ =
                    nix::sys::signal::kill(Pid::from_raw(child), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

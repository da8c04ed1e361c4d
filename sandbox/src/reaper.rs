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

/// Starts the reaper now (it starts at the first spawn otherwise): for a thread that works
/// ahead of the first task, so its start is not on the task's way.
pub fn start() {
    reaper();
}

/// Spawns `command` and returns the child and a receiver for its exit status.
pub fn spawn(command: &mut Command) -> std::io::Result<(Child, Receiver<ExitStatus>)> {
    let mut child = None;
    let (_, receiver) = spawn_with(|| {
        let spawned = command.spawn()?;
        let pid = spawned.id();
        child = Some(spawned);
        Ok(pid)
    })?;
    let child = child.ok_or_else(|| std::io::Error::other("spawned without a child"))?;
    Ok((child, receiver))
}

/// Starts a child with `start` (which returns its pid) and returns a receiver for its exit
/// status: for children started without `Command` ([`crate::trace::launch`]).
pub fn spawn_with(
    start: impl FnOnce() -> std::io::Result<u32>,
) -> std::io::Result<(u32, Receiver<ExitStatus>)> {
    let reaper = reaper();
    let mut registry = reaper.waiting.lock().unwrap_or_else(|p| p.into_inner());
    let pid = start()?;
    let (sender, receiver) = channel();
    registry.roots.insert(pid as i32, sender);
    registry.generation += 1;
    reaper.spawned.notify_all();
    Ok((pid, receiver))
}

/// The exit status of the task root `pid` (started through [`spawn_with`] or [`spawn`],
/// whose receiver `status` is), reaped by the caller itself when it gets there first.
///
/// Why: the root's owner waits for its end anyway, and the kernel wakes every thread that
/// waits for a child. Waiting through the reaper thread put two wake-ups between the root's
/// exit and its owner (the reaper's, then the owner's by the reaper's message), and a
/// task's end waits for both: on this machine a wake-up on another CPU can take a tenth of
/// a millisecond. Whoever removes the root's registration reaps it, under the registry's
/// lock, so the reaper (which removes it first too) never reaps a root the owner took, and
/// the owner falls back to the message when the reaper was first.
pub fn wait_for(pid: u32, status: &Receiver<ExitStatus>) -> Option<ExitStatus> {
    let raw = pid as i32;
    loop {
        // Until the root has exited, without reaping it (the reaper may still take it).
        match waitid(
            Id::Pid(Pid::from_raw(raw)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ) {
            Ok(_) => break,
            Err(Errno::EINTR) => {}
            // Reaped already (by the reaper): its message is on the way.
            Err(_) => return status.recv().ok(),
        }
    }
    let mut registry = reaper().waiting.lock().unwrap_or_else(|p| p.into_inner());
    if registry.roots.remove(&raw).is_none() {
        drop(registry);
        return status.recv().ok();
    }
    let reaped = waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG));
    drop(registry);
    match reaped {
        Ok(WaitStatus::StillAlive) | Err(_) => None,
        Ok(reaped) => Some(exit_status(reaped)),
    }
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

/// Kills every descendant of this process with SIGKILL, repeating until none is left.
///
/// Used when vt is told to stop: every process below vt belongs to some task. One pass is
/// not enough: a grandchild in its own session is neither in the task's process group nor
/// vt's child until its parent dies, and a process may fork while we scan. Bounded, so a
/// process that cannot be killed (stuck in the kernel) cannot hang vt.
pub fn kill_all_descendants() {
    let me = std::process::id() as i32;
    for _ in 0..100 {
        let descendants = descendants_of(me);
        if descendants.is_empty() {
            return;
        }
        for pid in descendants {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Live (non-zombie) descendants of `root`, from one scan of /proc.
fn descendants_of(root: i32) -> Vec<i32> {
    let mut parent_of: HashMap<i32, i32> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid …": comm may contain spaces and parentheses.
        let Some(after_comm) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = after_comm.split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|s| s.parse::<i32>().ok());
        if let (Some(state), Some(ppid)) = (state, ppid)
            && state != "Z"
        {
            parent_of.insert(pid, ppid);
        }
    }
    parent_of
        .keys()
        .copied()
        .filter(|&pid| {
            let mut cursor = pid;
            for _ in 0..4096 {
                match parent_of.get(&cursor) {
                    Some(&parent) if parent == root => return true,
                    Some(&parent) if parent > 1 => cursor = parent,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The owner and the reaper race for each root: whichever takes it, the owner gets the
    /// root's own status, and a root's orphan is still reaped (by the reaper).
    #[test]
    fn an_owner_gets_its_roots_status_whoever_reaps_it() {
        for code in 0..40 {
            let mut command = Command::new("/bin/sh");
            // The background child outlives the root: an orphan for the reaper.
            command.args(["-c", &format!("/bin/true & exit {code}")]);
            let (child, status) = spawn(&mut command).expect("spawn");
            let got = wait_for(child.id(), &status).expect("a status");
            assert_eq!(got.code(), Some(code));
        }
    }
}

//! A thread that holds the tracing filter before there is a task to start: armed.
//!
//! Installing the filter is not cheap: the kernel copies the program, converts it,
//! JIT-compiles it and precomputes its action cache, ~0.2 ms here (`strace -T` on a lone
//! `vt exec`), and a child that installs it between its clone and its exec makes the task
//! wait for that, then for the supervisor to receive the listener on another CPU. Seccomp
//! filters belong to threads and are copied to the processes a thread clones, so a thread
//! of vt's can install the filter while vt still reads the workspace, and start the task
//! later: its child runs under that filter from its first instruction, and the listener is
//! the thread's. The supervisor thread is started ahead with it, already waiting.
//!
//! An armed thread starts one task, then leaves: the listener reports the end of the task's
//! tree only once every thread and process under the filter is gone, the armed thread
//! included. It makes no traced system call itself (a path syscall of its own would stop
//! for a supervisor that serves only the task): it waits on a channel, clones and exits.
//! The supervisor is started before the filter is installed, or it would inherit it.
//!
//! Arming is also the seccomp probe: a thread that cannot install the filter says so, and
//! the task is started under ptrace.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::launch::{self, Prepared};
use super::{Supervisor, TraceError, filter, notify};

/// A thread holding the tracing filter, and the supervisor waiting on its listener.
pub struct Armed {
    requests: SyncSender<Request>,
    supervisor: Supervisor,
}

/// One start: the prepared launch (its address; the asker waits for the reply, so it
/// outlives the start) and where to reply.
struct Request {
    prepared: usize,
    reply: SyncSender<io::Result<u32>>,
}

/// What the armed thread reports once its filter is installed, or why it is not.
type Ready = Result<Armed, i32>;

/// The next armed thread, while it arms or once it is armed.
static NEXT: Mutex<Option<Receiver<Ready>>> = Mutex::new(None);

/// Starts arming a thread, unless one is armed or arming already. `answered` is told
/// whether the kernel gave it a listener (the seccomp probe's answer). `ahead` runs on the
/// thread first, with what the task's start would otherwise do on the caller's: a new
/// thread often starts on its creator's CPU and runs ahead of it (the other CPU was still
/// busy with vt's parent), so the creator waits for it anyway; moving the task start's own
/// preparations here makes that wait useful.
pub fn arm(ahead: fn(), answered: impl FnOnce(bool) + Send + 'static) {
    let Ok(mut next) = NEXT.lock() else {
        return;
    };
    if next.is_some() {
        return;
    }
    let (ready, receiver) = sync_channel::<Ready>(1);
    let spawned =
        crate::spawn_without_signals("vt-armed", move || armed_thread(ready, ahead, answered));
    if spawned.is_ok() {
        *next = Some(receiver);
    }
}

/// The armed thread, if one was armed: waits for one that is still arming (it was started
/// ahead; installing the filter again in the child would take as long). `None` if none was
/// started or its filter was refused.
pub fn take() -> Option<Armed> {
    let receiver = NEXT.lock().ok()?.take()?;
    receiver.recv().ok()?.ok()
}

impl Armed {
    /// Starts `prepared` (made with [`Prepared::inheriting`]) as a child of the armed
    /// thread; returns once it has exec'd (its pid) or failed. The thread starts one child:
    /// a second start finds it gone.
    pub fn start(&self, prepared: &Prepared) -> io::Result<u32> {
        let (reply, replied) = sync_channel(1);
        let ended = || io::Error::other("the armed thread ended");
        self.requests
            .send(Request {
                prepared: prepared as *const Prepared as usize,
                reply,
            })
            .map_err(|_| ended())?;
        replied.recv().unwrap_or_else(|_| Err(ended()))
    }

    /// The supervisor serving what this thread started.
    pub fn into_supervisor(self) -> Supervisor {
        self.supervisor
    }
}

fn armed_thread(ready: SyncSender<Ready>, ahead: fn(), answered: impl FnOnce(bool)) {
    let started = crate::timings::phase("armed: what the task's start needs");
    let (give, listener) = sync_channel::<Result<OwnedFd, i32>>(1);
    // Started before the filter is installed: a thread this one started afterwards would
    // run under it.
    let supervisor = std::thread::Builder::new()
        .name("vt-supervisor".into())
        .spawn(move || match listener.recv() {
            Ok(Ok(fd)) => super::supervise_listener(notify::Listener::new(fd)),
            Ok(Err(errno)) => Err(TraceError::SeccompUnavailable {
                source: io::Error::from_raw_os_error(errno),
            }),
            Err(_) => Err(TraceError::Setup(io::Error::other("never armed"))),
        });
    let Ok(supervisor) = supervisor else {
        // No answer for the probe either: whoever waits for one asks again.
        drop(answered);
        let _ = ready.send(Err(libc::EAGAIN));
        return;
    };
    // The task's start would do these otherwise; all before the filter, which would stop
    // their system calls (and be inherited by the threads they start).
    crate::reaper::start();
    super::fast_path::warm();
    ahead();
    started.end();
    let installing = crate::timings::phase("armed: filter");
    let installed = notify::install_listener(filter::task_filter());
    installing.end();
    let fd = match installed {
        Ok(fd) => fd,
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(libc::EINVAL);
            let _ = give.send(Err(errno));
            answered(false);
            let _ = ready.send(Err(errno));
            return;
        }
    };
    // SAFETY: the listener fd seccomp just returned is ours (close-on-exec: a child does
    // not keep it past its exec).
    let _ = give.send(Ok(unsafe { OwnedFd::from_raw_fd(fd) }));
    answered(true);
    let (requests, asked) = sync_channel::<Request>(1);
    if ready
        .send(Ok(Armed {
            requests,
            supervisor,
        }))
        .is_err()
    {
        return;
    }
    // From here on: channel waits (futex), the clone, the exit; nothing the filter stops.
    if let Ok(Request { prepared, reply }) = asked.recv() {
        // SAFETY: the asker's `Prepared`, alive until it has our reply.
        let prepared = unsafe { &*(prepared as *const Prepared) };
        let _ = reply.send(launch::start(prepared));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child of an armed thread is traced from its exec on, in its working directory,
    /// and its supervisor ends with the tree.
    #[test]
    fn a_child_of_an_armed_thread_is_traced_where_it_was_asked_to_run() {
        let (answer, answered) = std::sync::mpsc::channel();
        arm(
            || {},
            move |available| {
                let _ = answer.send(available);
            },
        );
        let Some(armed) = take() else {
            assert!(!answered.recv().expect("an answer"), "armed but not taken");
            panic!("seccomp user notification is not available here");
        };
        assert!(answered.recv().expect("an answer"));
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("input.txt"), "x").expect("write");
        let (out_read, out_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let null = || OwnedFd::from(std::fs::File::open("/dev/null").expect("/dev/null"));
        let run = launch::Launch {
            program: "/bin/sh".into(),
            arg0: "sh".into(),
            args: vec!["-c".into(), "cat input.txt; pwd".into()],
            env: [("PATH".into(), "/usr/bin:/bin".into())]
                .into_iter()
                .collect(),
            cwd: dir.path().to_owned(),
            stdin: None,
            stdout: out_write,
            stderr: null(),
            inherit: vec![],
        };
        let prepared = Prepared::inheriting(&run).expect("prepared");
        let (pid, status) = crate::reaper::spawn_with(|| armed.start(&prepared)).expect("started");
        drop(prepared);
        drop(run);
        let mut output = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(out_read), &mut output)
            .expect("output");
        let status = crate::reaper::wait_for(pid, &status).expect("status");
        assert!(status.success());
        let canonical = dir.path().canonicalize().expect("canonical");
        assert_eq!(output, format!("x{}\n", canonical.display()));
        let log = armed
            .into_supervisor()
            .join()
            .expect("the supervisor ran")
            .expect("traced");
        assert!(
            log.accesses.iter().any(|a| a.path.ends_with("input.txt")),
            "the task's read was not seen: {:?}",
            log.accesses
        );
    }

    /// The armed thread's listener is close-on-exec: the task cannot answer its own stops.
    #[test]
    fn listeners_are_close_on_exec() {
        let allow_all = [crate::trace::bpf::ret(libc::SECCOMP_RET_ALLOW)];
        let fd = std::thread::spawn(move || notify::install_listener(&allow_all))
            .join()
            .expect("joined")
            .expect("a listener");
        // SAFETY: the listener fd is ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD).expect("flags");
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
    }
}

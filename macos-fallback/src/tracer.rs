//! vt's side on macOS (NOT compiled on vt's Linux CI): start the task with the library
//! injected, collect its frames, watch the process tree independently, replay.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use access_log::{AccessLog, Traced, Tracer, TracerError};

use crate::event::{Event, FrameDecoder};
use crate::replay::{Replay, SeenProcess};

/// The fd number the socket gets in the task (inherited across exec).
const CHILD_FD: i32 = 1021;

pub struct MacTracer {
    /// `libvt_macos_fallback.dylib` (this crate's cdylib), next to the vt binary.
    pub library: PathBuf,
}

/// A copy of `/bin/sh` outside SIP's protected paths, for running `sh -c COMMAND`: the
/// protected original would drop DYLD_INSERT_LIBRARIES for the whole task.
pub fn unprotected_shell(private_dir: &Path) -> std::io::Result<PathBuf> {
    let copy = private_dir.join("sh");
    if !copy.exists() {
        std::fs::copy("/bin/sh", &copy)?;
    }
    Ok(copy)
}

impl Tracer for MacTracer {
    fn name(&self) -> &'static str {
        "interpose"
    }

    fn spawn(&self, mut command: Command) -> Result<Box<dyn Traced>, TracerError> {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two fds into the array.
        if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: both fds were just created and are owned here.
        let (ours, theirs) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let theirs_raw = theirs.as_raw_fd();
        command
            .env("DYLD_INSERT_LIBRARIES", &self.library)
            .env(crate::FD_ENV, CHILD_FD.to_string());
        // SAFETY: dup2 between fork and exec; the copy at CHILD_FD is not close-on-exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(theirs_raw, CHILD_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        drop(theirs);
        let root = child.id();
        let reader = std::thread::spawn(move || read_frames(ours));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let watcher = {
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || watch_tree(root, &seen))
        };
        Ok(Box::new(MacTraced {
            child,
            reader,
            watcher,
            seen,
        }))
    }
}

struct MacTraced {
    child: Child,
    reader: JoinHandle<(Vec<Event>, Option<String>)>,
    watcher: JoinHandle<()>,
    seen: Arc<Mutex<Vec<SeenProcess>>>,
}

impl Traced for MacTraced {
    fn id(&self) -> u32 {
        self.child.id()
    }

    fn wait(mut self: Box<Self>) -> Result<(ExitStatus, AccessLog), TracerError> {
        let status = self.child.wait()?;
        // Every injected process holds the socket: EOF means the whole tree is gone.
        let (events, broken) = self
            .reader
            .join()
            .map_err(|_| "the reader thread panicked")?;
        let _ = self.watcher.join();
        let mut replay = Replay::new();
        replay.events(events);
        let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        let mut log = replay.finish(&seen);
        if let Some(why) = broken {
            log.gap(self.child.id(), "stream", why);
        }
        Ok((status, log))
    }
}

fn read_frames(socket: OwnedFd) -> (Vec<Event>, Option<String>) {
    let mut file = std::fs::File::from(socket);
    let mut decoder = FrameDecoder::default();
    let mut events = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => match decoder.push(&buffer[..n]) {
                Ok(more) => events.extend(more),
                Err(e) => return (events, Some(e.to_string())),
            },
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (events, Some(e.to_string())),
        }
    }
    let broken = decoder.finish().err().map(|e| e.to_string());
    (events, broken)
}

/// Polls the tree below `root` (libproc) until it is empty: the library-independent list
/// of processes that ran, which the replay checks every hello against. A process shorter
/// than one poll can slip through unseen; its own hello (if injected) still reports it.
fn watch_tree(root: u32, seen: &Mutex<Vec<SeenProcess>>) {
    loop {
        let mut alive = 0;
        let mut stack = vec![root as i32];
        while let Some(pid) = stack.pop() {
            let mut children = vec![0 as libc::pid_t; 1024];
            // SAFETY: the buffer holds 1024 pids; the call returns how many it wrote.
            let n = unsafe {
                libc::proc_listchildpids(
                    pid,
                    children.as_mut_ptr().cast(),
                    (children.len() * std::mem::size_of::<libc::pid_t>()) as i32,
                )
            };
            for &child in children.iter().take(n.max(0) as usize) {
                alive += 1;
                stack.push(child);
                let mut path = vec![0u8; libc::PROC_PIDPATHINFO_MAXSIZE as usize];
                // SAFETY: proc_pidpath writes at most the buffer's size.
                let len = unsafe {
                    libc::proc_pidpath(child, path.as_mut_ptr().cast(), path.len() as u32)
                };
                path.truncate(len.max(0) as usize);
                if let Ok(mut seen) = seen.lock()
                    && !seen.iter().any(|s| s.pid == child as u32)
                {
                    seen.push(SeenProcess {
                        pid: child as u32,
                        exe: PathBuf::from(String::from_utf8_lossy(&path).into_owned()),
                    });
                }
            }
        }
        // SAFETY: kill with signal 0 only checks that the root exists.
        if alive == 0 && unsafe { libc::kill(root as i32, 0) } != 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

//! Ctrl-C and SIGTERM: stop the whole task tree, not just vt.
//!
//! Tasks run in their own process group (so a terminal's Ctrl-C reaches only vt); vt blocks
//! SIGINT/SIGTERM/SIGHUP in all its threads and a dedicated thread waits for them. It passes
//! the signal on to every registered tree's process group, so a dev server or a watcher can
//! stop the way it stops by hand, waits up to [`GRACE`] (a second signal cuts it short,
//! unless it is the first one's copy: [`SAME_EVENT`]),
//! then kills what is left, strays included, and exits with 128 + signal. Tasks start with
//! an empty signal mask ([`unblock_in_child`]): a mask survives exec, and std does not reset
//! it, so without this every task ran with SIGINT, SIGTERM and SIGHUP blocked and could be
//! stopped only by SIGKILL (found by `persistent_tasks`' clean-up test).

use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal, killpg};
use nix::unistd::Pid;

static TREES: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// How long the tasks get to stop after vt passed the signal on, before it kills them.
const GRACE: Duration = Duration::from_secs(2);
/// A second signal this soon after the first is the same event arriving twice, not the user
/// insisting: a terminal's Ctrl-C reaches vt and a launcher in front of it (npm's `vt`, a
/// wrapper script), and the launcher passes its copy on. No one presses twice this fast.
const SAME_EVENT: Duration = Duration::from_millis(300);
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Called by a thread that saw its task die after a stop signal: the signal thread is still
/// killing stragglers and will exit the process with 128 + signal, so never return.
pub fn wait_for_shutdown() -> ! {
    loop {
        std::thread::park();
    }
}

/// The stop signal vt received, if any. A task that died because vt stopped it reports
/// this (as 128 + signal), not its own SIGKILL.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// SIGINT, SIGTERM and SIGHUP: the signals vt stops on.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(signal);
    }
    set
}

/// Blocks the stop signals on this thread and starts the thread that waits for them (unless
/// it runs already). Call it on the main thread before the threads that must inherit the
/// mask start (threads started earlier block every signal: `sandbox::spawn_without_signals`).
pub fn install() -> anyhow::Result<()> {
    stop_signals().thread_block()?;
    start_thread()?;
    Ok(())
}

/// Starts the thread that waits for the stop signals, once per process, from a thread that
/// blocks them already (the armed thread does it ahead of the first task).
pub fn start_thread() -> std::io::Result<()> {
    static STARTED: Mutex<bool> = Mutex::new(false);
    let mut started = STARTED.lock().unwrap_or_else(|p| p.into_inner());
    if *started {
        return Ok(());
    }
    let set = stop_signals();
    std::thread::Builder::new()
        .name("vt-signals".into())
        .spawn(move || {
            let signal = set.wait().unwrap_or(Signal::SIGTERM);
            // Recorded first: the main thread sees its task die and must report *this*.
            RECEIVED.store(signal as i32, Ordering::SeqCst);
            let trees = || TREES.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for pid in trees() {
                let _ = killpg(Pid::from_raw(pid as i32), signal);
            }
            let first = Instant::now();
            let deadline = first + GRACE;
            while !trees().is_empty() && Instant::now() < deadline {
                if another_signal(&set, Duration::from_millis(50)) && first.elapsed() > SAME_EVENT {
                    break;
                }
            }
            // Process groups first (fast, and atomic for the common case), then every
            // straggler: a grandchild in its own session is in no task's group.
            for pid in trees() {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            sandbox::reaper::kill_all_descendants();
            crate::say!("vt: {signal}: stopped the running task tree");
            std::process::exit(128 + signal as i32);
        })?;
    *started = true;
    Ok(())
}

/// Whether one of `set`'s signals arrives within `wait` (the user insists: stop now).
fn another_signal(set: &SigSet, wait: Duration) -> bool {
    let timeout = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: sigtimedwait reads the set and the timeout, both live locals; no siginfo.
    unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &timeout) > 0 }
}

/// Makes `command`'s process start with no signal blocked, whatever vt's threads block.
pub fn unblock_in_child(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec, one async-signal-safe call.
    unsafe {
        command.pre_exec(sandbox::trace::launch::reset_signal_mask);
    }
}

pub fn register_tree(pid: u32) {
    TREES.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
}

pub fn unregister_tree(pid: u32) {
    TREES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|p| *p != pid);
}

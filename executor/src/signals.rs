//! Ctrl-C and SIGTERM: stop the whole task tree, not just vt.
//!
//! Tasks run in their own process group (so a terminal's Ctrl-C reaches only vt); vt blocks
//! SIGINT/SIGTERM/SIGHUP in all its threads and a dedicated thread waits for them, kills
//! every registered tree, and exits with 128 + signal. Children start with a clean signal
//! mask (std resets it before exec).

use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SigSet, Signal, killpg};
use nix::unistd::Pid;

static TREES: Mutex<Vec<u32>> = Mutex::new(Vec::new());
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

/// Call once, before any other thread starts, so every thread inherits the blocked mask.
pub fn install() -> anyhow::Result<()> {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(signal);
    }
    set.thread_block()?;
    std::thread::Builder::new()
        .name("vt-signals".into())
        .spawn(move || {
            let signal = set.wait().unwrap_or(Signal::SIGTERM);
            // Recorded first: the main thread sees its task die and must report *this*.
            RECEIVED.store(signal as i32, Ordering::SeqCst);
            // Process groups first (fast, and atomic for the common case), then every
            // straggler: a grandchild in its own session is in no task's group.
            let trees = TREES.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for pid in trees {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            sandbox::reaper::kill_all_descendants();
            eprintln!("vt: {signal}: stopped the running task tree");
            std::process::exit(128 + signal as i32);
        })?;
    Ok(())
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

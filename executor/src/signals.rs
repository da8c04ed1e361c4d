//! Ctrl-C and SIGTERM: stop the whole task tree, not just vt.
//!
//! Tasks run in their own process group (so a terminal's Ctrl-C reaches only vt); vt blocks
//! SIGINT/SIGTERM/SIGHUP in all its threads and a dedicated thread waits for them, kills
//! every registered tree, and exits with 128 + signal. Children start with a clean signal
//! mask (std resets it before exec).

use std::sync::Mutex;

use nix::sys::signal::{SigSet, Signal};

static TREES: Mutex<Vec<u32>> = Mutex::new(Vec::new());

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
            let trees = TREES.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for pid in trees {
                sandbox::reaper::kill_tree(pid);
            }
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

//! The vt executor: config → graph → plan → trace/jail → fingerprint → store → replay.
//!
//! config (workspace, packages, tasks) → graph (dependency order) → run::plan (command,
//! env, pre-run key) → trace (sandbox) → cache (fingerprint, store, replay).

/// `eprintln!` that never panics: vt's own lines on stderr, written in one `write` (stderr
/// is unbuffered). A closed stderr (vt piped into `head`) loses the line, as a closed
/// console loses the tasks' output (`run::output`), and the run goes on; `eprintln!`
/// panicked there, and a task thread that panicked left the run waiting for it.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut line = format!($($arg)*);
        line.push('\n');
        let _ = std::io::stderr().write_all(line.as_bytes());
    }};
}

/// [`say!`] without the newline.
#[macro_export]
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = std::io::stderr().write_all(format!($($arg)*).as_bytes());
    }};
}

pub mod cache;
pub mod cli;
pub mod commands;
pub mod config;
pub mod graph;
pub mod ipc;
// Only where build.rs links libstdc++ statically (elsewhere the system's arc4random stays).
#[cfg(target_os = "linux")]
pub mod libstdcxx;
pub mod reapi;
pub mod remote_exec;
pub mod run;
pub mod signals;
pub mod watch;

//! The vt executor: config → graph → plan → trace/jail → fingerprint → store → replay.
//!
//! config (workspace, packages, tasks) → graph (dependency order) → run::plan (command,
//! env, pre-run key) → trace (sandbox) → cache (fingerprint, store, replay).

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

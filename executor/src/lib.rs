//! The vt executor: config → graph → plan → trace/jail → fingerprint → store → replay.
//!
//! Today: the CLI front end, `vt trace`, and the cache store. The task graph, fingerprints
//! and replay arrive with the executor issue.

pub mod cache;
pub mod cli;
pub mod commands;
pub mod signals;

//! The vt executor: config → graph → plan → trace/jail → fingerprint → store → replay.
pub mod cache;

//! Running a task that missed the cache somewhere else, as the runner sees it.
//!
//! The runner knows only this interface; remote execution (`crate::remote_exec`, `vt run
//! --remote-exec`) implements it. So the runner never names a REAPI type, and remote
//! execution depends on the runner's lower stages (plan, execute, output), never the
//! other way round.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::cache::Cache;
use crate::cache::path_set::Observation;

use super::plan::Plan;

/// Where tasks that missed the cache may run instead of here.
pub trait Offload: Send + Sync {
    /// Why `plan` must run here, if it must.
    fn refuses(&self, plan: &Plan) -> Option<String>;
    /// Runs `plan` elsewhere; `Err` says why it must run here after all.
    fn run(&self, plan: &Plan, cache: &Cache) -> Result<Offloaded, String>;
}

/// A task that ran elsewhere: its result, what it observed there (the values already
/// checked against this workspace) and what it changed (restored here already).
pub struct Offloaded {
    pub worker: String,
    pub exit_code: i32,
    /// The captured stdout/stderr chunks.
    pub output: Vec<u8>,
    pub duration: Duration,
    pub observations: Vec<Observation>,
    pub values: Vec<String>,
    /// Absolute paths in the workspace the task changed.
    pub outputs: BTreeSet<PathBuf>,
    pub attempts: usize,
}

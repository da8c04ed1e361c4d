//! What the runner asks of the cache for one task: record a finished run, replay a stored
//! one. Local runs (`run/task.rs`) and runs on workers go through here, so neither builds an
//! [`Entry`] or a [`Batch`] or names a column family.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::entry::{Entry, PreParts, Stored};
use super::guard::Window;
use super::key::Key;
use super::observe::Moved;
use super::path_set::{Observation, is_noise};
use super::store::{Batch, Family};
use super::{Cache, archive};

/// Why a successful run is not stored. Each says what the user sees after "not cached:".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Uncacheable {
    #[error("{0} was read and then written by the task (both input and output)")]
    ReadThenWritten(String),
    #[error("it wrote {0}, outside the workspace")]
    WroteOutsideWorkspace(String),
    #[error("tracing gap: {0}")]
    Gap(String),
    /// A tool called `disableCache` (who).
    #[error("disabled by {0}")]
    DisabledBy(String),
    #[error("the task's IPC server could not serve it: {0}")]
    Ipc(String),
    /// Something the task saw changed while it ran (the store-time check).
    #[error("{0}")]
    Moved(String),
    /// A declared input was written, changed, appeared or vanished while the task ran.
    #[error("{0}")]
    DeclaredInput(String),
    /// Archiving the outputs failed (a file vanished or could not be read).
    #[error("{0}")]
    Archive(String),
    #[error("the cache's disk is full")]
    DiskFull,
    #[error("cannot write the cache: {0}")]
    Write(String),
}

impl From<Moved> for Uncacheable {
    fn from(moved: Moved) -> Uncacheable {
        Uncacheable::Moved(moved.to_string())
    }
}

/// A successful run, as the cache records it.
pub struct Finished<'a> {
    pub task: String,
    pub pre_key: Key,
    pub pre_parts: PreParts,
    /// The path set, and what each of its observations saw (checked: nothing moved).
    pub observations: Vec<Observation>,
    pub values: Vec<String>,
    /// Absolute paths inside the workspace the task changed (or declared as outputs).
    pub outputs: BTreeSet<PathBuf>,
    /// The captured stdout/stderr chunks.
    pub output: &'a [u8],
    pub duration: Duration,
    /// When it ran here (`None`: on a worker, which checked its own run).
    pub window: Option<&'a Window>,
}

impl Cache {
    /// Archives `run`'s outputs and log and stores its entry; the entry's result key.
    pub fn record(&self, run: Finished) -> Result<Key, Uncacheable> {
        let mut outputs = run.outputs;
        outputs.retain(|p| !is_noise(p, self.dir()));
        let mut batch = Batch::default();
        let outputs = archive::archive(self.root(), &outputs, &mut batch, run.window)
            .map_err(|e| Uncacheable::Archive(e.to_string()))?;
        let log = archive::log_key(run.output);
        batch.put(Family::Blobs, log.0.to_vec(), run.output.to_vec());
        let entry = Entry {
            task: run.task,
            pre_key: run.pre_key,
            pre_parts: run.pre_parts,
            observations: run.observations,
            values: run.values,
            outputs,
            log,
            exit_code: 0,
            duration_ms: run.duration.as_millis() as u64,
        };
        match self.store_run(&entry, batch) {
            Ok(_) => Ok(entry.result_key()),
            Err(e) if e.is_disk_full() => {
                // Once per vt: every other task that cannot be stored says so in a few words.
                static WARNED: AtomicBool = AtomicBool::new(false);
                if !WARNED.swap(true, Ordering::Relaxed) {
                    crate::say!(
                        "vt: warning: the disk holding the cache at {} is full; tasks' results stand but are not stored ({})\n  hint: free space there, lower the cache's limit (VT_CACHE_MAX_SIZE, cacheMaxSize) or run `vt cache prune --max-size SIZE`",
                        self.dir().display(),
                        e.detail().trim()
                    );
                }
                Err(Uncacheable::DiskFull)
            }
            Err(e) => Err(Uncacheable::Write(e.to_string())),
        }
    }

    /// Restores `entry`'s outputs and returns its log (the stdout/stderr chunks) for the
    /// console. `fetched` runs once everything was read and checked, before any file is
    /// written: a corrupt or missing blob is an error with nothing touched.
    pub fn replay(&self, entry: &Stored, fetched: impl FnOnce()) -> Result<Vec<u8>, String> {
        // The database only while reading: writing the files and the console takes longer.
        let reading = sandbox::timings::phase("replay: read");
        let (log, blobs) = {
            let store = self.store().map_err(|e| e.to_string())?;
            let log = store
                .get(Family::Blobs, entry.log.0)
                .map_err(|e| e.to_string())?
                .ok_or("its log is missing")?;
            let blobs = archive::fetch(&store, &entry.outputs).map_err(|e| e.to_string())?;
            (log, blobs)
        };
        if archive::log_key(&log) != entry.log {
            return Err("its log is corrupt".into());
        }
        drop(reading);
        fetched();
        let _restoring = sandbox::timings::phase("replay: restore");
        // The restored files are changes the task's dependents must find settled: the run
        // loop notes when this task finished (`run::rerun`).
        archive::restore(self.root(), &entry.outputs, blobs).map_err(|e| e.to_string())?;
        Ok(log)
    }
}

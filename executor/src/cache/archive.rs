//! Outputs: archiving what a run left behind, and restoring it atomically on a hit.

use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::entry::Output;
use super::guard::Window;
use super::key::{Key, content};
use super::path_set::CachePath;
use super::store::{Batch, Family, Store};

/// File contents by their blob key.
pub type BlobsByKey = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

/// Like [`archive`], with the blobs handed back by key instead of put in a batch: a worker
/// uploads them rather than storing them.
pub fn archive_blobs(
    root: &Path,
    outputs: &std::collections::BTreeSet<PathBuf>,
    run: Option<&Window>,
) -> Result<(Vec<Output>, BlobsByKey), ArchiveError> {
    let mut batch = Batch::default();
    let described = archive(root, outputs, &mut batch, run)?;
    let blobs = batch
        .blobs()
        .map(|(key, bytes)| (key.to_vec(), bytes.to_vec()))
        .collect();
    Ok((described, blobs))
}

/// Archives the final state of each output path into `batch` (blobs) and describes it.
pub fn archive(
    root: &Path,
    outputs: &std::collections::BTreeSet<PathBuf>,
    batch: &mut Batch,
    run: Option<&Window>,
) -> Result<Vec<Output>, ArchiveError> {
    let mut described = Vec::new();
    for path in outputs {
        let cache_path = CachePath::new(root, path);
        let output = match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Output::Deleted { path: cache_path }
            }
            Err(e) => return Err(e.into()),
            Ok(meta) if meta.file_type().is_symlink() => Output::Symlink {
                path: cache_path,
                target: std::fs::read_link(path)?.as_os_str().as_bytes().to_vec(),
            },
            Ok(meta) if meta.is_dir() => Output::Dir { path: cache_path },
            // A fifo, socket or device the task wrote to talks to something outside the
            // task: there is nothing to store that a replay could give back.
            Ok(meta) if !meta.is_file() => {
                return Err(ArchiveError::Special(cache_path.display()));
            }
            Ok(meta) => {
                // Non-blocking: a regular file replaced by a fifo since the lstat must not
                // hang vt waiting for a writer.
                let mut file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(path)?;
                let mut bytes = Vec::with_capacity(meta.len() as usize);
                file.read_to_end(&mut bytes)?;
                // What was read must be what the task left: not a file another process
                // rewrote after the task ended (a parallel task, an editor).
                let read = file.metadata()?;
                if run.is_some_and(|run| run.changed_after_end(read.ctime(), read.ctime_nsec()))
                    || read.ino() != meta.ino()
                {
                    return Err(ArchiveError::ChangedAfterEnd(cache_path.display()));
                }
                let blob = content(&bytes);
                let size = bytes.len() as u64;
                batch.put(Family::Blobs, blob.0.to_vec(), bytes);
                Output::File {
                    path: cache_path,
                    mode: meta.permissions().mode() & 0o7777,
                    blob,
                    size,
                    mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                }
            }
        };
        described.push(output);
    }
    Ok(described)
}

/// Why a run's outputs cannot be archived.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0} changed after the task ended")]
    ChangedAfterEnd(String),
    #[error("the task wrote to {0}, which is not a regular file (a fifo, socket or device)")]
    Special(String),
    #[error("cannot archive the outputs: {0}")]
    Io(#[from] std::io::Error),
}

/// The time `ns` nanoseconds after (or before) the epoch.
fn mtime(ns: i64) -> std::time::SystemTime {
    let epoch = std::time::UNIX_EPOCH;
    let offset = std::time::Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        epoch + offset
    } else {
        epoch - offset
    }
}

/// Why an entry cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("output blob for {path} is missing from the cache")]
    MissingBlob { path: String },
    #[error("output blob for {path} is corrupt (content hash mismatch)")]
    CorruptBlob { path: String },
    #[error("cannot read the cache: {0}")]
    Store(#[from] super::store::StoreError),
    #[error("cannot restore {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs `f` over `items` on a few threads, keeping the order of the results: restoring
/// thousands of files is many small, independent reads, hashes and writes.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = sandbox::cpus().clamp(1, 8);
    if items.len() < 64 || threads == 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Fetches and verifies every blob first, so a bad entry changes nothing on disk.
pub fn fetch(store: &Store, outputs: &[Output]) -> Result<Vec<Option<Vec<u8>>>, RestoreError> {
    parallel_map(outputs, |output| match output {
        Output::File { path, blob, .. } => {
            let bytes =
                store
                    .get(Family::Blobs, blob.0)?
                    .ok_or_else(|| RestoreError::MissingBlob {
                        path: path.display(),
                    })?;
            if content(&bytes) != *blob {
                return Err(RestoreError::CorruptBlob {
                    path: path.display(),
                });
            }
            Ok(Some(bytes))
        }
        _ => Ok(None),
    })
    .into_iter()
    .collect()
}

/// Writes the outputs: each file to a temporary name in its directory, then renamed over
/// the target, so a reader never sees a half-written file. Directories and deletions first,
/// in order; then files and symlinks, in parallel.
pub fn restore(
    root: &Path,
    outputs: &[Output],
    blobs: Vec<Option<Vec<u8>>>,
) -> Result<(), RestoreError> {
    let fail = |target: &Path| {
        let target = target.to_path_buf();
        move |source| RestoreError::Write {
            path: target.clone(),
            source,
        }
    };
    let mut files = Vec::new();
    for (output, bytes) in outputs.iter().zip(blobs) {
        let target = output.path().absolute(root);
        match output {
            Output::Dir { .. } => std::fs::create_dir_all(&target).map_err(fail(&target))?,
            Output::Deleted { .. } => match std::fs::symlink_metadata(&target) {
                Ok(meta) if meta.is_dir() => {
                    std::fs::remove_dir_all(&target).map_err(fail(&target))?
                }
                Ok(_) => std::fs::remove_file(&target).map_err(fail(&target))?,
                Err(_) => {}
            },
            Output::File { .. } | Output::Symlink { .. } => files.push((output, target, bytes)),
        }
    }
    parallel_map(
        &files,
        |(output, target, bytes)| -> Result<(), RestoreError> {
            let temp = temp_name(target);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(fail(target))?;
            }
            match output {
                Output::File { mode, mtime_ns, .. } => {
                    let file = std::fs::File::create(&temp).map_err(fail(target))?;
                    (&file)
                        .write_all(bytes.as_deref().unwrap_or_default())
                        .map_err(fail(target))?;
                    file.set_modified(mtime(*mtime_ns)).map_err(fail(target))?;
                    drop(file);
                    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(*mode))
                        .map_err(fail(target))?;
                }
                Output::Symlink { target: link, .. } => {
                    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(link), &temp)
                        .map_err(fail(target))?;
                }
                _ => return Ok(()),
            }
            replace(&temp, target).map_err(fail(target))
        },
    )
    .into_iter()
    .collect()
}

fn replace(temp: &Path, target: &Path) -> std::io::Result<()> {
    // A directory where a file must go cannot be renamed over.
    if std::fs::symlink_metadata(target).is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(target)?;
    }
    std::fs::rename(temp, target).inspect_err(|_| {
        let _ = std::fs::remove_file(temp);
    })
}

/// A name beside `target` that no other restore writes: tasks of one `vt run` restore in
/// parallel, and two whose declared outputs overlap restore the same files.
fn temp_name(target: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    target.with_file_name(format!(".{name}.vt-{}-{n}", std::process::id()))
}

/// The blob key of a log.
pub fn log_key(bytes: &[u8]) -> Key {
    content(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_rewritten_after_the_task_ended_is_not_archived() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let output = root.join("out.txt");
        std::fs::write(&output, "the task's").expect("write");
        let mut window = Window::at(0);
        window.end();
        let outputs: std::collections::BTreeSet<PathBuf> = [output.clone()].into();
        let archived = archive(root, &outputs, &mut Batch::default(), Some(&window));
        assert!(archived.is_ok(), "{archived:?}");
        // Someone else's write after the end (once the coarse clock has passed the end: in
        // the tick of the end itself a coarse stamp could be older, README, known limits).
        super::super::guard::settled();
        let _ = Window::open();
        std::fs::write(&output, "another's").expect("write");
        let archived = archive(root, &outputs, &mut Batch::default(), Some(&window));
        assert!(
            matches!(&archived, Err(ArchiveError::ChangedAfterEnd(path)) if path == "out.txt"),
            "{archived:?}"
        );
        // A restored file gets its archived mtime back.
        let Ok(described) = archive(root, &outputs, &mut Batch::default(), None) else {
            panic!("archive");
        };
        let Output::File { mtime_ns, .. } = &described[0] else {
            panic!("{described:?}");
        };
        let restored = root.join("restored");
        std::fs::create_dir(&restored).expect("mkdir");
        restore(&restored, &described, vec![Some(b"another's".to_vec())]).expect("restore");
        let meta = std::fs::metadata(restored.join("out.txt")).expect("stat");
        assert_eq!(meta.mtime() * 1_000_000_000 + meta.mtime_nsec(), *mtime_ns);
    }
}

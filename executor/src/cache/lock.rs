//! One vt at a time per cache: an `flock` on `<cache>/vt.lock` holding the owner's pid.
//! A second vt says who holds it and waits; the kernel drops the lock when its holder dies,
//! however it dies.

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::Context;

/// The lock's file name inside the cache directory.
pub const LOCK_FILE: &str = "vt.lock";

pub struct CacheLock {
    _file: std::fs::File,
}

impl CacheLock {
    pub fn acquire(dir: &Path) -> anyhow::Result<CacheLock> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the cache directory {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock on our own open fd.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            eprintln!(
                "vt: waiting for the cache at {}: it is in use by vt (pid {})",
                dir.display(),
                holder.trim()
            );
            // SAFETY: as above, blocking this time.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(CacheLock { _file: file })
    }
}

//! What a directory's `stat` says of its entries having changed, for what a process keeps
//! of a listing or of lookups in that directory (the `node_modules` links a sandbox
//! shows, what the system paths the sandbox binds are).
//!
//! Adding, removing, renaming or replacing an entry (a symlink cannot be changed in place)
//! changes the directory's modification and change times. Two changes within one tick of
//! the file system's clock, one just before a look and one just after, would leave the same
//! times: what was looked at in a directory changed within [`RACY`] of the look is not
//! kept (git's "racily clean" rule).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// How recently a directory may have changed for what was seen in it not to be kept: well
/// over a clock tick of any local file system (a jiffy), and over the 1–2 s granularity
/// some others have.
pub const RACY: Duration = Duration::from_secs(2);

/// A directory's identity and times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    pub fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The stamp of the directory at `path` now (`None`: not a directory).
    pub fn now(path: &Path) -> Option<Stamp> {
        std::fs::symlink_metadata(path)
            .ok()
            .filter(|m| m.is_dir())
            .map(|m| Stamp::of(&m))
    }

    /// Changed at or after `since` by its own clock (or at a time that cannot be read).
    pub fn changed_since(&self, since: SystemTime) -> bool {
        let changed = |(secs, nanos): (i64, i64)| {
            let Ok(secs) = u64::try_from(secs) else {
                return true;
            };
            SystemTime::UNIX_EPOCH + Duration::new(secs, nanos.clamp(0, 999_999_999) as u32)
                >= since
        };
        changed(self.mtime) || changed(self.ctime)
    }

    /// Whether what was seen in this directory from `started` on may be kept: it had not
    /// changed within `racy` before.
    pub fn settled_before(&self, started: SystemTime, racy: Duration) -> bool {
        let racy = started.checked_sub(racy).unwrap_or(SystemTime::UNIX_EPOCH);
        !self.changed_since(racy)
    }
}

//! What the system paths every sandbox shows ([`SYSTEM_DIRS`], [`ETC_ESSENTIALS`],
//! [`DEVICES`]) are on this host: looked up once per process and kept while the
//! directories holding them (`/`, `/etc`, `/dev`) are unchanged ([`crate::stamp`]).
//!
//! Every sandboxed task's plan asked the ~40 of them again (an `lstat` each, a `readlink`
//! for the symlinks), a visible part of each task's start in a run. What a path is (missing,
//! a file, a directory, a symlink and its target) changes only by adding, removing,
//! renaming or replacing the entry, which changes the directory holding it. What is
//! *below* a directory shown is the host's, live, through the bind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::plan::{DEVICES, ETC_ESSENTIALS, HostPath, SYSTEM_DIRS};
use crate::stamp::{RACY, Stamp};

/// The fixed system paths of this host, as [`HostPath::probe`] finds them now.
pub fn fixed_paths() -> Arc<HashMap<PathBuf, HostPath>> {
    static KEPT: Mutex<Option<Kept>> = Mutex::new(None);
    let paths = || {
        SYSTEM_DIRS
            .iter()
            .chain(ETC_ESSENTIALS)
            .chain(DEVICES)
            .map(PathBuf::from)
    };
    look_up(&KEPT, paths, RACY).0
}

/// What one look found, and the stamps of the directories it looked in, taken before.
struct Kept {
    stamps: Vec<(PathBuf, Stamp)>,
    found: Arc<HashMap<PathBuf, HostPath>>,
}

/// The kept answer for `paths` while their directories are unchanged, else a new look (kept
/// unless a directory changed within `racy` of it); and whether it looked.
fn look_up<I: Iterator<Item = PathBuf>>(
    kept: &Mutex<Option<Kept>>,
    paths: impl Fn() -> I,
    racy: Duration,
) -> (Arc<HashMap<PathBuf, HostPath>>, bool) {
    let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(seen) = kept.as_ref()
        && seen
            .stamps
            .iter()
            .all(|(dir, stamp)| Stamp::now(dir) == Some(*stamp))
    {
        return (Arc::clone(&seen.found), false);
    }
    // Stamps first: a change from here on shows in the next look's stamps.
    let started = SystemTime::now();
    let mut dirs: Vec<PathBuf> = paths()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    let stamps: Option<Vec<(PathBuf, Stamp)>> = dirs
        .into_iter()
        .map(|dir| Stamp::now(&dir).map(|stamp| (dir, stamp)))
        .collect();
    let found: Arc<HashMap<PathBuf, HostPath>> = Arc::new(
        paths()
            .map(|path| {
                let what = HostPath::probe(&path);
                (path, what)
            })
            .collect(),
    );
    *kept = stamps
        .filter(|stamps| stamps.iter().all(|(_, s)| s.settled_before(started, racy)))
        .map(|stamps| Kept {
            stamps,
            found: Arc::clone(&found),
        });
    (found, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets `path`'s modification time an hour back (its change time stays now).
    fn age(path: &Path) {
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let file = std::fs::File::open(path).expect("open");
        file.set_modified(hour_ago).expect("set_modified");
    }

    #[test]
    fn the_fixed_paths_are_what_a_probe_finds() {
        let found = fixed_paths();
        for (path, what) in found.iter() {
            assert_eq!(*what, HostPath::probe(path), "{}", path.display());
        }
        assert!(found.contains_key(Path::new("/usr")));
        assert!(found.contains_key(Path::new("/etc/passwd")));
    }

    #[test]
    fn a_look_is_kept_until_a_directory_holding_the_paths_changes() {
        let temp = tempfile::tempdir().expect("tempdir");
        let etc = temp.path().join("etc");
        std::fs::create_dir(&etc).expect("mkdir");
        std::fs::write(etc.join("hosts"), "").expect("hosts");
        std::os::unix::fs::symlink("/run/resolv.conf", etc.join("resolv.conf")).expect("link");
        let names = ["hosts", "resolv.conf", "localtime"];
        let paths = || names.iter().map(|n| etc.join(n));
        // Nothing counts as racy: the directory was changed just now.
        let kept = Mutex::new(None);
        let look = || look_up(&kept, paths, Duration::ZERO);
        // Changes `etc` by `change` after a look under times set an hour back, so that the
        // change shows in its times even where the clock did not tick.
        let change = |change: &dyn Fn()| {
            age(&etc);
            look();
            change();
        };

        let (found, looked) = look();
        assert!(looked);
        assert_eq!(found[&etc.join("hosts")], HostPath::File);
        assert_eq!(
            found[&etc.join("resolv.conf")],
            HostPath::Symlink("/run/resolv.conf".into())
        );
        assert_eq!(found[&etc.join("localtime")], HostPath::Missing);
        // Unchanged: the kept look.
        assert!(!look().1);
        // A missing file created: seen.
        change(&|| std::fs::write(etc.join("localtime"), "").expect("localtime"));
        let (found, looked) = look();
        assert!(looked);
        assert_eq!(found[&etc.join("localtime")], HostPath::File);
        // A symlink replaced by another target (by rename, as tools do): seen.
        change(&|| {
            std::os::unix::fs::symlink("/elsewhere", etc.join("new")).expect("link");
            std::fs::rename(etc.join("new"), etc.join("resolv.conf")).expect("rename");
        });
        assert_eq!(
            look().0[&etc.join("resolv.conf")],
            HostPath::Symlink("/elsewhere".into())
        );
        // A file replaced by a directory: seen.
        change(&|| {
            std::fs::remove_file(etc.join("hosts")).expect("rm");
            std::fs::create_dir(etc.join("hosts")).expect("mkdir");
        });
        assert_eq!(look().0[&etc.join("hosts")], HostPath::Dir);
    }

    #[test]
    fn a_look_at_a_directory_changed_within_the_racy_window_is_not_kept() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().to_path_buf();
        let paths = || std::iter::once(dir.join("a"));
        let kept = Mutex::new(None);
        // The directory was created a moment ago: within the window, so never kept.
        assert!(look_up(&kept, paths, Duration::from_secs(3600)).1);
        assert!(look_up(&kept, paths, Duration::from_secs(3600)).1);
    }
}

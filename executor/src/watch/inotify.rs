//! The kernel side of the watch: an inotify instance over a set of directories, read as
//! bursts of events.
//!
//! inotify, not fanotify: it needs no privilege, watches exactly the directories asked for
//! (fanotify marks whole mounts or filesystems, which puts every write on the machine in
//! front of vt), and reports the entry name that changed, which is what the index looks up.
//! Idle, vt sleeps in `poll` on one descriptor: no timer, no scan.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};

/// What happened, as the index looks it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `name` in `dir` was created, written, closed after a write, had its metadata
    /// changed, was deleted or renamed; `None`: `dir` itself went away.
    Entry {
        dir: PathBuf,
        name: Option<OsString>,
    },
    /// The kernel's queue overflowed: events were lost, anything may have changed.
    Overflow,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start watching files (inotify_init1: {0})")]
pub struct StartError(#[source] Errno);

pub struct Watcher {
    inotify: Inotify,
    /// Several paths can name one directory (a symlinked package): the kernel gives them
    /// one descriptor, and an event is reported under every one of them.
    paths: HashMap<WatchDescriptor, Vec<PathBuf>>,
    watched: HashMap<PathBuf, WatchDescriptor>,
    /// Said once: the per-user watch limit was reached.
    warned_limit: bool,
}

/// Every change that can alter an entry's content, metadata, existence or a listing.
/// `EXCL_UNLINK`: a file that is deleted while still open (a temp file) stops reporting.
fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
        // Not among nix's named flags.
        | AddWatchFlags::from_bits_retain(libc::IN_EXCL_UNLINK)
}

impl Watcher {
    pub fn new() -> Result<Watcher, StartError> {
        let inotify =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(StartError)?;
        Ok(Watcher {
            inotify,
            paths: HashMap::new(),
            watched: HashMap::new(),
            warned_limit: false,
        })
    }

    pub fn len(&self) -> usize {
        self.watched.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    /// Watches exactly `dirs` from now on; returns the ones newly watched (an edit there
    /// before this call was not seen: the caller checks what they hold). A directory that
    /// cannot be watched (gone already, no permission) is left out: the entry that names
    /// it in its parent is watched too, so its coming back is still seen.
    pub fn watch_exactly<'a>(&mut self, dirs: impl IntoIterator<Item = &'a Path>) -> Vec<PathBuf> {
        let wanted: std::collections::HashSet<&Path> = dirs.into_iter().collect();
        let gone: Vec<PathBuf> = self
            .watched
            .keys()
            .filter(|dir| !wanted.contains(dir.as_path()))
            .cloned()
            .collect();
        for dir in gone {
            self.unwatch(&dir);
        }
        let mut added = Vec::new();
        for dir in wanted {
            if self.watched.contains_key(dir) {
                continue;
            }
            match self.inotify.add_watch(dir, mask()) {
                Ok(wd) => {
                    self.watched.insert(dir.to_path_buf(), wd);
                    self.paths.entry(wd).or_default().push(dir.to_path_buf());
                    added.push(dir.to_path_buf());
                }
                Err(Errno::ENOSPC) if !self.warned_limit => {
                    self.warned_limit = true;
                    crate::say!(
                        "vt: warning: watch: the limit of inotify watches is reached ({} directories watched); changes under {} and others are not seen\n  hint: raise it: sysctl fs.inotify.max_user_watches=524288",
                        self.watched.len(),
                        dir.display()
                    );
                }
                // Gone or unreadable: watched through its parent's entry (see above).
                Err(_) => {}
            }
        }
        added
    }

    fn unwatch(&mut self, dir: &Path) {
        let Some(wd) = self.watched.remove(dir) else {
            return;
        };
        let Some(aliases) = self.paths.get_mut(&wd) else {
            return;
        };
        aliases.retain(|alias| alias != dir);
        if aliases.is_empty() {
            self.paths.remove(&wd);
            // Fails only for a watch the kernel already dropped (its directory was deleted).
            let _ = self.inotify.rm_watch(wd);
        }
    }

    /// Every event queued now, without waiting.
    pub fn drain(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            match self.inotify.read_events() {
                Ok(batch) if !batch.is_empty() => {
                    for event in batch {
                        self.translate(event, &mut events);
                    }
                }
                Ok(_) | Err(Errno::EAGAIN) => return events,
                Err(Errno::EINTR) => {}
                // A read error on an inotify descriptor means nothing sane can be known
                // about what changed: treat it as lost events.
                Err(_) => {
                    events.push(Event::Overflow);
                    return events;
                }
            }
        }
    }

    /// Waits for the next change, then for `quiet` without one (a burst of saves, an
    /// editor's write-then-rename, a `git checkout` are one burst), but no longer than
    /// `longest` in all: a directory that never stops changing still gets looked at.
    pub fn next_burst(&mut self, quiet: Duration, longest: Duration) -> Vec<Event> {
        let mut events = Vec::new();
        while events.is_empty() {
            self.wait(None);
            events = self.drain();
        }
        let until = Instant::now() + longest;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.wait(Some(quiet.min(left))) {
                return events;
            }
            events.extend(self.drain());
        }
    }

    /// Whether an event is ready within `timeout` (`None`: however long it takes).
    fn wait(&self, timeout: Option<Duration>) -> bool {
        let timeout = match timeout {
            None => PollTimeout::NONE,
            Some(t) => PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX),
        };
        let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
        loop {
            match poll(&mut fds, timeout) {
                Ok(ready) => return ready > 0,
                Err(Errno::EINTR) => continue,
                // Cannot wait: report readiness and let `drain` find out.
                Err(_) => return true,
            }
        }
    }

    fn translate(&mut self, event: InotifyEvent, into: &mut Vec<Event>) {
        if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            into.push(Event::Overflow);
            return;
        }
        let Some(aliases) = self.paths.get(&event.wd).cloned() else {
            return;
        };
        let dir_gone = event.mask.intersects(
            AddWatchFlags::IN_IGNORED | AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF,
        );
        for dir in &aliases {
            into.push(Event::Entry {
                dir: dir.clone(),
                name: if dir_gone { None } else { event.name.clone() },
            });
        }
        if dir_gone {
            // The kernel dropped (or will drop) the watch; a new directory at the same
            // path is watched again when the index next asks for it.
            for dir in &aliases {
                self.watched.remove(dir);
            }
            self.paths.remove(&event.wd);
            let _ = self.inotify.rm_watch(event.wd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dir: &Path, name: &str) -> Event {
        Event::Entry {
            dir: dir.to_path_buf(),
            name: Some(name.into()),
        }
    }

    #[test]
    fn a_save_by_rename_and_a_new_file_are_reported_by_name() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut watcher = Watcher::new().expect("inotify instance");
        assert_eq!(watcher.watch_exactly([dir.as_path()]), vec![dir.clone()]);
        std::fs::write(dir.join(".a.js.swp"), "new").expect("test fixture");
        std::fs::rename(dir.join(".a.js.swp"), dir.join("a.js")).expect("test fixture");
        let events = watcher.drain();
        assert!(events.contains(&entry(&dir, ".a.js.swp")), "{events:?}");
        assert!(events.contains(&entry(&dir, "a.js")), "{events:?}");
        assert!(watcher.drain().is_empty());
    }

    #[test]
    fn a_deleted_directory_is_reported_and_dropped() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("src");
        std::fs::create_dir(&dir).expect("test fixture");
        let mut watcher = Watcher::new().expect("inotify instance");
        watcher.watch_exactly([dir.as_path()]);
        std::fs::remove_dir(&dir).expect("test fixture");
        let events = watcher.drain();
        assert!(
            events.contains(&Event::Entry {
                dir: dir.clone(),
                name: None
            }),
            "{events:?}"
        );
        assert!(watcher.is_empty());
        // Back again: watched anew when asked for.
        std::fs::create_dir(&dir).expect("test fixture");
        assert_eq!(watcher.watch_exactly([dir.as_path()]), vec![dir.clone()]);
    }

    #[test]
    fn directories_no_longer_wanted_stop_reporting() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir(&a).expect("test fixture");
        std::fs::create_dir(&b).expect("test fixture");
        let mut watcher = Watcher::new().expect("inotify instance");
        watcher.watch_exactly([a.as_path(), b.as_path()]);
        assert_eq!(watcher.watch_exactly([b.as_path()]), Vec::<PathBuf>::new());
        std::fs::write(a.join("x"), "").expect("test fixture");
        std::fs::write(b.join("y"), "").expect("test fixture");
        let events = watcher.drain();
        assert!(events.iter().all(|e| *e != entry(&a, "x")), "{events:?}");
        assert!(events.contains(&entry(&b, "y")), "{events:?}");
    }

    #[test]
    fn a_burst_ends_after_a_quiet_gap() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut watcher = Watcher::new().expect("inotify instance");
        watcher.watch_exactly([dir.as_path()]);
        for i in 0..10 {
            std::fs::write(dir.join("a.js"), format!("{i}")).expect("test fixture");
        }
        // Everything already queued is one burst; nothing more comes, so it ends.
        let events = watcher.next_burst(Duration::from_millis(1), Duration::from_secs(60));
        assert!(events.contains(&entry(&dir, "a.js")), "{events:?}");
    }
}

//! Many vt processes, one cache: each holds the database only while it uses it.
//!
//! RocksDB lets one process at a time open a database, and a vt that held it for its whole
//! run (a dev server, a watcher, a long build) made every other vt in the workspace wait
//! for its end. So a vt opens the database when it needs it (a lookup, a store, a replay's
//! blob reads) and closes it again when
//! - another vt is waiting for it and this one has held it for at least [`MIN_HOLD`] (so
//!   two busy vt take turns in slices worth the reopening, instead of on every lookup), or
//! - it has not used it for [`IDLE_CLOSE`] (a long task runs; nothing to look up or store).
//!
//! A holder learns that somebody waits at the end of each lease and, while it is idle,
//! from a closer thread that looks every [`WANT_POLL`]. So a vt alone on its cache opens
//! it once per busy stretch, as before, and pays a reopening (tens of milliseconds,
//! measured in BENCHMARKS.md) only when another vt took the cache in between.
//!
//! A wait is therefore bounded by one slice plus the operation in progress, and a wait
//! longer than [`NOTICE_AFTER`] says who holds the cache.
//!
//! A lease is for reading ([`Leases::lease`]) or for writing ([`Leases::lease_to_write`]).
//! The database is opened read-only while this process only reads it (a fifth of the cost
//! of a read-write open, see [`deferred`](super::deferred)); the first write lease waits
//! for the process's read leases to end and reopens it read-write, still holding the lock.
//!
//! Two `flock`ed files in the cache directory carry the protocol. The kernel drops both
//! when their holder dies, however it dies:
//! - [`LOCK_FILE`]: exclusive while the database is open; it names the holder's pid.
//! - [`WANT_FILE`]: a vt waiting for the lock holds it shared. A holder that cannot take it
//!   exclusively knows somebody waits.

use std::cell::Cell;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::store::{Store, StoreError};

/// The lock's file name inside the cache directory.
pub const LOCK_FILE: &str = "vt.lock";
/// Held shared by whoever waits for [`LOCK_FILE`].
pub const WANT_FILE: &str = "vt.want";

/// A holder nobody waits for closes the database after this long unused (so a vt that
/// waits without saying so, or a tool that opens the database itself, gets in too).
pub const IDLE_CLOSE: Duration = Duration::from_secs(1);
/// A holder others wait for keeps the database at least this long before handing it over:
/// a reopening costs tens of milliseconds, so shorter slices would be spent reopening.
pub const MIN_HOLD: Duration = Duration::from_millis(100);
/// How often an idle holder looks whether another vt waits.
pub const WANT_POLL: Duration = Duration::from_millis(20);
/// A wait longer than this is announced on stderr.
const NOTICE_AFTER: Duration = Duration::from_millis(500);

thread_local! {
    /// Leases this thread holds: a thread that holds one never waits for a hand-over (it
    /// would wait for itself).
    static HELD_HERE: Cell<usize> = const { Cell::new(0) };
}

fn flock(file: &File, operation: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock on a descriptor this function's caller owns.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn open_rw(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// The cache directory's lock, held exclusively. Dropping it releases it.
#[derive(Debug)]
pub struct DirLock {
    file: File,
    /// [`WANT_FILE`], kept open to test it cheaply after each lease.
    want: File,
}

impl DirLock {
    /// Waits (announcing a long wait) until this process holds `dir`'s lock.
    pub fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let failed = |what: &'static str, path: &Path, source| StoreError::Lock {
            path: path.to_owned(),
            what,
            source,
        };
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(LOCK_FILE);
        let mut file = open_rw(&path).map_err(|e| failed("open", &path, e))?;
        let want_path = dir.join(WANT_FILE);
        let want = open_rw(&want_path).map_err(|e| failed("open", &want_path, e))?;
        if flock(&file, libc::LOCK_EX | libc::LOCK_NB).is_err() {
            // Say that we wait, so the holder hands over at its next chance.
            flock(&want, libc::LOCK_SH).map_err(|e| failed("lock", &want_path, e))?;
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let notice = Notice::after(NOTICE_AFTER, dir, holder.trim());
            flock(&file, libc::LOCK_EX).map_err(|e| failed("lock", &path, e))?;
            notice.done();
            flock(&want, libc::LOCK_UN).map_err(|e| failed("unlock", &want_path, e))?;
        }
        // The pid is for the waiting notice only; failing to write it changes nothing else.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{}", std::process::id()));
        Ok(DirLock { file, want })
    }

    /// Whether another vt waits for this lock.
    fn wanted(&self) -> bool {
        match flock(&self.want, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => {
                let _ = flock(&self.want, libc::LOCK_UN);
                false
            }
            Err(_) => true,
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = flock(&self.file, libc::LOCK_UN);
    }
}

/// Prints "waiting for the cache" if a wait lasts longer than a moment.
struct Notice {
    done: Option<std::sync::mpsc::Sender<()>>,
}

impl Notice {
    fn after(delay: Duration, dir: &Path, holder: &str) -> Notice {
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let message = format!(
            "vt: waiting for the cache at {}: vt (pid {holder}) is writing to it",
            dir.display()
        );
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(delay) {
                crate::say!("{message}");
            }
        });
        Notice { done: Some(done) }
    }

    fn done(mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

/// An open database and the lock that lets this process have it. Fields drop in order:
/// the database closes (and appends what it deferred) before the lock is released. A
/// database reopened read-write shares the lock of the read-only one it replaced, which
/// may still be closing in a lease that just ended.
struct Held {
    store: Store,
    lock: Arc<DirLock>,
    since: Instant,
}

/// What a lease is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Lookups, replays, stat memos and times of use (which may wait, see `deferred`).
    Read,
    /// Everything else: stores, prunes, schema changes.
    Write,
}

/// Opens the database once its lock is held: for [`Access::Read`] it may open it
/// read-only.
type Opener = dyn Fn(&Path, Access) -> Result<Store, StoreError> + Send + Sync;

/// The opener a cache uses after its first open: read-only for reading where it can be
/// (see [`Store::open_read_only`]), read-write otherwise.
pub fn reopen_for(dir: &Path, access: Access) -> Result<Store, StoreError> {
    match access {
        Access::Read => Store::open_read_only(dir).map_or_else(|| Store::reopen(dir), Ok),
        Access::Write => Store::reopen(dir),
    }
}

struct State {
    held: Option<Arc<Held>>,
    /// Live [`Lease`]s.
    users: usize,
    last_use: Instant,
    /// Another vt waits: no new lease until the live ones end and the database is closed.
    handing_over: bool,
    /// A write lease waits for the read-only database's leases to end: no new lease meanwhile.
    upgrading: bool,
    stopping: bool,
}

struct Shared {
    dir: PathBuf,
    open: Box<Opener>,
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The database of one cache directory, opened and closed as this process uses it.
pub struct Leases {
    shared: Arc<Shared>,
    closer: Option<std::thread::JoinHandle<()>>,
    /// The thread of [`Leases::prepare_to_write`], if one was started.
    preparing: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Leases {
    /// Takes the lock and opens the database with `first` (which may repair, wipe or report
    /// what it found); later reopenings use `open`.
    pub fn new<T>(
        dir: &Path,
        first: impl FnOnce(&Path) -> Result<(Store, T), StoreError>,
        open: impl Fn(&Path, Access) -> Result<Store, StoreError> + Send + Sync + 'static,
    ) -> Result<(Leases, T), StoreError> {
        let lock = Arc::new(DirLock::acquire(dir)?);
        let (store, found) = first(dir)?;
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            open: Box::new(open),
            state: Mutex::new(State {
                held: Some(Arc::new(Held {
                    store,
                    lock,
                    since: Instant::now(),
                })),
                users: 0,
                last_use: Instant::now(),
                handing_over: false,
                upgrading: false,
                stopping: false,
            }),
            changed: Condvar::new(),
        });
        let closer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("vt-cache-closer".into())
                .spawn(move || close_when_idle(&shared))
                .ok()
        };
        Ok((
            Leases {
                shared,
                closer,
                preparing: Mutex::default(),
            },
            found,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The database to read, opened (after waiting for another vt, if one has it) if it is
    /// not: read-only if it can be.
    pub fn lease(&self) -> Result<Lease<'_>, StoreError> {
        self.shared.lease_for(Access::Read)
    }

    /// The database to write, reopened read-write if it was open read-only. A thread that
    /// holds a read lease on a read-only database cannot take one (it would wait for
    /// itself): that is refused as [`StoreError::ReadOnly`].
    pub fn lease_to_write(&self) -> Result<Lease<'_>, StoreError> {
        self.shared.lease_for(Access::Write)
    }

    /// Reopens a read-only database read-write on another thread: a lookup missed, so a
    /// store follows once the task has run, and the reopening (the expensive open) then
    /// overlaps the task instead of delaying the store.
    pub fn prepare_to_write(&self) {
        {
            let state = self.shared.state();
            if state.upgrading || state.held.as_ref().is_none_or(|h| h.store.writable()) {
                return;
            }
        }
        let mut preparing = self.preparing.lock().unwrap_or_else(|p| p.into_inner());
        if preparing.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let shared = Arc::clone(&self.shared);
        *preparing = std::thread::Builder::new()
            .name("vt-cache-reopen".into())
            // A failure is met again, and reported, by the store that needs the database.
            .spawn(move || drop(shared.lease_for(Access::Write)))
            .ok();
    }
}

impl Shared {
    fn lease_for(&self, access: Access) -> Result<Lease<'_>, StoreError> {
        let shared = self;
        let mut state = shared.state();
        let held_here = HELD_HERE.with(Cell::get) > 0;
        let held = loop {
            while (state.handing_over || state.upgrading) && !held_here {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
            match &state.held {
                Some(held) if access == Access::Read || held.store.writable() => {
                    break Arc::clone(held);
                }
                Some(_) if held_here => {
                    return Err(StoreError::ReadOnly {
                        path: shared.dir.clone(),
                    });
                }
                Some(_) if state.users > 0 => {
                    // Other threads read: the reopening waits for their leases' end.
                    state.upgrading = true;
                    while state.users > 0 {
                        state = shared
                            .changed
                            .wait(state)
                            .unwrap_or_else(|p| p.into_inner());
                    }
                    state.upgrading = false;
                }
                Some(read_only) => {
                    let lock = Arc::clone(&read_only.lock);
                    let since = read_only.since;
                    // Closes it (unless a lease that just ended drops it a moment later).
                    state.held = None;
                    let reopened = (shared.open)(&shared.dir, Access::Write);
                    // Leases waiting for the reopening go on either way.
                    shared.changed.notify_all();
                    let held = Arc::new(Held {
                        store: reopened?,
                        lock,
                        since,
                    });
                    state.held = Some(Arc::clone(&held));
                    break held;
                }
                None => {
                    // Others of this process wait on the mutex meanwhile: one opening is
                    // enough.
                    let lock = Arc::new(DirLock::acquire(&shared.dir)?);
                    let store = (shared.open)(&shared.dir, access)?;
                    let held = Arc::new(Held {
                        store,
                        lock,
                        since: Instant::now(),
                    });
                    state.held = Some(Arc::clone(&held));
                    // The closer thread sleeps while nothing is open: it has work again.
                    shared.changed.notify_all();
                    break held;
                }
            }
        };
        state.users += 1;
        HELD_HERE.with(|n| n.set(n.get() + 1));
        Ok(Lease { held, shared: self })
    }
}

impl Drop for Leases {
    fn drop(&mut self) {
        let preparing = self.preparing.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(thread) = preparing.take() {
            let _ = thread.join();
        }
        {
            let mut state = self.shared.state();
            state.stopping = true;
        }
        self.shared.changed.notify_all();
        if let Some(closer) = self.closer.take() {
            let _ = closer.join();
        }
        self.shared.state().held = None;
    }
}

/// The closer thread: closes the database while no lease is live, once another vt waits
/// (and this one has had its [`MIN_HOLD`]) or after [`IDLE_CLOSE`] unused.
fn close_when_idle(shared: &Shared) {
    let mut state = shared.state();
    loop {
        if state.stopping {
            return;
        }
        state = match (&state.held, state.users) {
            (Some(held), 0) => {
                let idle = state.last_use.elapsed();
                let held_for = held.since.elapsed();
                if idle_close(idle, held_for, || held.lock.wanted()) {
                    state.held = None;
                    continue;
                }
                let next = WANT_POLL
                    .max(MIN_HOLD.saturating_sub(held_for))
                    .min(IDLE_CLOSE - idle);
                shared
                    .changed
                    .wait_timeout(state, next)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            // In use: look again later rather than be woken at every lease's end (a
            // wake-up per lookup cost more than the lookup).
            (Some(_), _) => {
                shared
                    .changed
                    .wait_timeout(state, WANT_POLL)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            (None, _) => shared
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner()),
        };
    }
}

/// Whether a holder with no live lease closes the database now. `wanted` (a syscall) is
/// asked only once the holder has had its [`MIN_HOLD`].
fn idle_close(idle: Duration, held_for: Duration, wanted: impl FnOnce() -> bool) -> bool {
    idle >= IDLE_CLOSE || (held_for >= MIN_HOLD && wanted())
}

/// The open database, for one operation (or a few that belong together).
pub struct Lease<'a> {
    held: Arc<Held>,
    shared: &'a Shared,
}

impl std::ops::Deref for Lease<'_> {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.held.store
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        HELD_HERE.with(|n| n.set(n.get().saturating_sub(1)));
        let mut state = self.shared.state();
        state.users -= 1;
        state.last_use = Instant::now();
        if !state.handing_over && self.held.since.elapsed() >= MIN_HOLD && self.held.lock.wanted() {
            state.handing_over = true;
        }
        if state.users == 0 && state.upgrading {
            // A write lease waits in `lease_for` for this.
            self.shared.changed.notify_all();
        }
        if state.users == 0 && state.handing_over {
            // This lease's `held` still refers to the database: it closes when `self.held`
            // drops, right after this, and the last reference goes.
            state.held = None;
            state.handing_over = false;
            drop(state);
            // Threads of this process wait in `lease` for the hand-over's end.
            self.shared.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::store::{Batch, Family};
    use std::sync::atomic::{AtomicBool, Ordering};

    // Two `Leases` on one directory in one process contend exactly like two processes:
    // each opens its own descriptions of the lock files, and flock locks descriptions.
    fn open(dir: &Path) -> Leases {
        Leases::new(
            dir,
            |d| Store::open(d).map(|(s, _)| (s, ())),
            |d, _| Store::reopen(d),
        )
        .expect("open")
        .0
    }

    /// As `Cache::open` opens: read-only where it can.
    fn open_read_only_first(dir: &Path) -> Leases {
        drop(Store::open(dir).expect("create"));
        let first = |d: &Path| {
            Store::open_read_only(d)
                .map(|s| (s, ()))
                .ok_or_else(|| StoreError::ReadOnly { path: d.to_owned() })
        };
        Leases::new(dir, first, reopen_for).expect("open").0
    }

    fn put(lease: &Lease<'_>, value: &str) {
        let mut batch = Batch::default();
        batch.put(Family::Meta, "k", value);
        lease.write(batch).expect("write");
    }

    /// What [`put`] wrote, as `lease` sees it.
    fn seen(lease: &Lease<'_>) -> Option<Vec<u8>> {
        lease.get(Family::Meta, "k").expect("get")
    }

    #[test]
    fn a_write_lease_reopens_a_read_only_database_read_write() {
        let temp = tempfile::tempdir().expect("tempdir");
        let leases = open_read_only_first(&temp.path().join("cache"));
        assert!(!leases.lease().expect("read").writable());
        let write = leases.lease_to_write().expect("write");
        assert!(write.writable());
        put(&write, "v");
        drop(write);
        // Read leases now get the read-write database, which saw the write.
        let read = leases.lease().expect("read");
        assert!(read.writable());
        assert_eq!(seen(&read).as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn preparing_to_write_reopens_read_write_on_another_thread() {
        let temp = tempfile::tempdir().expect("tempdir");
        let leases = open_read_only_first(&temp.path().join("cache"));
        // Even from a thread that holds a read lease: the reopening waits for it.
        let read = leases.lease().expect("read");
        leases.prepare_to_write();
        assert!(!read.writable());
        drop(read);
        let thread = leases.preparing.lock().expect("lock").take();
        thread.expect("started").join().expect("reopened");
        assert!(leases.lease().expect("read").writable());
        // Already read-write: nothing to prepare.
        leases.prepare_to_write();
        assert!(leases.preparing.lock().expect("lock").is_none());
    }

    #[test]
    fn a_write_lease_inside_a_read_lease_on_a_read_only_database_is_refused() {
        let temp = tempfile::tempdir().expect("tempdir");
        let leases = open_read_only_first(&temp.path().join("cache"));
        let read = leases.lease().expect("read");
        // Not a wait for itself: an error.
        assert!(matches!(
            leases.lease_to_write(),
            Err(StoreError::ReadOnly { .. })
        ));
        drop(read);
        assert!(leases.lease_to_write().expect("write").writable());
    }

    #[test]
    fn a_write_lease_waits_for_the_read_leases_of_other_threads() {
        let temp = tempfile::tempdir().expect("tempdir");
        let leases = open_read_only_first(&temp.path().join("cache"));
        let reading_done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let read = leases.lease().expect("read");
            let writer = scope.spawn(|| {
                let write = leases.lease_to_write().expect("write");
                // Only once the reader's lease ended.
                assert!(reading_done.load(Ordering::SeqCst));
                put(&write, "w");
            });
            // The writer waits for this lease (it says so in the state).
            while !leases.shared.state().upgrading {
                std::thread::yield_now();
            }
            assert_eq!(seen(&read), None);
            reading_done.store(true, Ordering::SeqCst);
            drop(read);
            writer.join().expect("writer");
        });
        let read = leases.lease().expect("read");
        assert_eq!(seen(&read).as_deref(), Some(&b"w"[..]));
    }

    #[test]
    fn an_idle_holder_lets_another_in_and_both_see_each_others_writes() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("cache");
        let first = open(&dir);
        {
            let mut batch = Batch::default();
            batch.put(Family::Meta, "from", "first");
            first.lease().expect("lease").write(batch).expect("write");
        }
        // `first` is idle: it sees the second waiting and closes.
        let second = open(&dir);
        let seen = second
            .lease()
            .expect("lease")
            .get(Family::Meta, "from")
            .expect("get");
        assert_eq!(seen.as_deref(), Some(&b"first"[..]));
        {
            let mut batch = Batch::default();
            batch.put(Family::Meta, "from", "second");
            second.lease().expect("lease").write(batch).expect("write");
        }
        let seen = first
            .lease()
            .expect("the first reopens once the second is idle")
            .get(Family::Meta, "from")
            .expect("get");
        assert_eq!(seen.as_deref(), Some(&b"second"[..]));
    }

    #[test]
    fn a_busy_holder_hands_over_to_a_waiting_one() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("cache");
        let busy = open(&dir);
        let got_in = AtomicBool::new(false);
        std::thread::scope(|scope| {
            // Never idle: one lease after another until the other got in.
            let first = busy.lease().expect("lease");
            scope.spawn(|| {
                let other = open(&dir);
                let lease = other.lease().expect("lease");
                assert!(lease.get(Family::Meta, "x").is_ok());
                got_in.store(true, Ordering::SeqCst);
            });
            drop(first);
            let mut leases = 0u64;
            while !got_in.load(Ordering::SeqCst) {
                let lease = busy.lease().expect("lease");
                let _ = lease.get(Family::Meta, "x");
                leases += 1;
                assert!(leases < 50_000_000, "never handed over");
            }
        });
        // And it gets the database back.
        assert!(
            busy.lease()
                .expect("lease again")
                .get(Family::Meta, "x")
                .is_ok()
        );
    }

    #[test]
    fn an_idle_holder_keeps_the_database_until_another_wants_it() {
        let ms = Duration::from_millis;
        // Alone: a task runs for a while, and the store after it finds the database open.
        assert!(!idle_close(ms(900), ms(5_000), || false));
        assert!(idle_close(IDLE_CLOSE, ms(5_000), || false));
        // Wanted: handed over at once, but not before this vt had its slice.
        assert!(idle_close(ms(1), MIN_HOLD, || true));
        assert!(!idle_close(ms(1), ms(10), || panic!(
            "not asked before MIN_HOLD"
        )));
    }

    #[test]
    fn a_lease_taken_inside_a_lease_never_waits_for_itself() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("cache");
        let leases = open(&dir);
        let outer = leases.lease().expect("outer");
        {
            let mut state = leases.shared.state();
            state.handing_over = true;
        }
        let inner = leases.lease().expect("inner, while handing over");
        drop(inner);
        drop(outer);
        assert!(
            leases.shared.state().held.is_none(),
            "closed once both ended"
        );
    }
}

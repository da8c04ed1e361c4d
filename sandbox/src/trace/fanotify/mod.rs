//! fanotify as a second source (docs/architecture.md, "Trace and jail"): a filesystem mark on the workspace's file
//! system reports, from the kernel's side, what the task's processes opened, executed and
//! changed inside the workspace. After the run the two sources are reconciled:
//!
//! - a change (modify, create, delete, rename) fanotify saw but the tracer did not — e.g. a
//!   write through an fd the task inherited, or an mmap'd write — is a tracing **gap**;
//! - an open fanotify saw but the tracer did not is recorded as a `Read` input: these are
//!   the kernel's own opens (a script's interpreter, `binfmt_misc`), which are real inputs.
//!   (Calling every disagreement a gap would, for reads, make every run of a dynamic
//!   binary uncacheable, while the right answer — hash it — is at hand.)
//!
//! Events are attributed to the task by pid: a pid the tracer saw make a path syscall. One
//! group serves every task of the process on a file system ([`Group`]); a task gets the
//! events queued between its start and its end.
//! Needs CAP_SYS_ADMIN (filesystem marks, FID reporting); without it the tracer runs alone
//! and the log says so.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use rustc_hash::{FxHashMap, FxHashSet};

use super::paths::{CanonicalDirs, Resolved, is_under};
use crate::access::{AccessKind, AccessLog};
use crate::lock;

mod quiet;

/// Set to `off` to run without the second source.
pub const FANOTIFY_ENV: &str = "VT_FANOTIFY";

const INPUT_EVENTS: u64 = libc::FAN_OPEN | libc::FAN_OPEN_EXEC;
const OUTPUT_EVENTS: u64 = libc::FAN_MODIFY
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO;

/// One event as read, before attribution and path resolution (both are done after the run,
/// when the set of task pids is known).
#[derive(Clone)]
struct RawEvent {
    mask: u64,
    pid: u32,
    /// `handle_type` followed by the handle bytes of the parent directory.
    dir_handle: Vec<u8>,
    name: Vec<u8>,
}

/// A task's window on its file system's group ([`Group`]): the events queued from its
/// start ([`start`]) to its end ([`Watch::stop_watching`]), taken by [`Watch::finish`].
pub struct Watch {
    group: Arc<Group>,
    /// This watch's number in the group's list.
    id: u64,
    /// Any descriptor on the file system, for `open_by_handle_at`.
    mount: OwnedFd,
    root: PathBuf,
    /// Set once `finish` has taken the events (a dropped watch leaves the list otherwise).
    finished: bool,
}

/// One fanotify group per vt process and file system, shared by the tasks on it.
///
/// Why: a group of its own per task (made, marked, given a reader thread, closed) was ~0.2
/// ms of every task's time in a run of small ones (100 of `sh -c true`: 0.883× the wall
/// without fanotify), and its close waits for the marks' destruction. Sharing changes no
/// attribution: a filesystem mark reports every process's events to every group alike,
/// and each task's events were always told from the rest by their pids. What a task gets
/// is the events queued between its start and its end (a sequence number per event read),
/// which the group keeps until no task's window needs them.
///
/// The group is kept until vt exits (the janitor holds a copy, so vt's own close is not the
/// slow last one); its filesystem mark is removed after [`IDLE_MS`] without a task, so an
/// idle `vt watch` does not gather other processes' events, and added back by the next.
struct Group {
    fanotify: OwnedFd,
    /// The file system's device number.
    dev: u64,
    state: Mutex<Shared>,
    /// Signalled when a watch starts: the reader waits on it while none is running.
    started: Condvar,
}

/// The events read from the group and the watches that want them, shared by the reader
/// thread and the watches.
struct Shared {
    events: Vec<RawEvent>,
    /// The sequence number of `events[0]`.
    first: u64,
    /// The sequence numbers at which the kernel said it had dropped events.
    overflows: Vec<u64>,
    /// How many of the events read the quieting has looked at (a sequence number).
    looked: u64,
    watches: Vec<Watching>,
    next_id: u64,
    /// Reused by whoever reads (under the lock): a fresh one per read would be a fresh
    /// mapping, faulted in page by page.
    buffer: Vec<u8>,
    /// The directories outside every running task's workspace the reader quiets (`None`:
    /// could not dup the mount descriptor; nothing is quieted).
    quiet: Option<quiet::Quiet>,
    /// Whether the filesystem mark is in place (see [`Group`]).
    marked: bool,
    /// Set when the group cannot be trusted for new watches (its mark could not be added
    /// back, a quieted directory could not be heard again): the next watch makes another.
    retired: bool,
}

/// A watch as the group sees it.
struct Watching {
    id: u64,
    root: PathBuf,
    /// The sequence number of the first event that may be the task's.
    from: u64,
    /// The one after its last, once its tree is gone.
    until: Option<u64>,
    /// Its work for the reader after each look ([`WhileRunning`]); taken out while it runs.
    while_running: Option<WhileRunning>,
}

impl Shared {
    /// The sequence number the next event read gets.
    fn end(&self) -> u64 {
        self.first + self.events.len() as u64
    }

    /// Reads everything queued now: events are queued synchronously by the syscalls that
    /// cause them, so once the task tree is gone, this reads all of its events.
    fn drain(&mut self, fanotify: RawFd) {
        let Shared {
            buffer,
            events,
            quiet,
            overflows,
            first,
            ..
        } = self;
        read_queue(fanotify, buffer, |read| {
            let read_from = events.len();
            let overflowed = parse(read, events);
            if let Some(quiet) = quiet {
                quiet.saw(&events[read_from..]);
                if overflowed {
                    quiet.lost_sight();
                }
            }
            if overflowed {
                overflows.push(*first + events.len() as u64);
            }
        });
    }

    /// Reads and drops everything queued now, for when no task is running: nobody's
    /// events, so none is kept or numbered. Only what they say of directories' paths is
    /// noted (a directory renamed: `quiet`), from the records' fixed part.
    fn discard(&mut self, fanotify: RawFd) {
        const META: usize = std::mem::size_of::<libc::fanotify_event_metadata>();
        let Shared { buffer, quiet, .. } = self;
        let mut moved = Vec::new();
        read_queue(fanotify, buffer, |mut read| {
            let mut lost_sight = false;
            while read.len() >= META {
                let len = u32::from_ne_bytes(read[0..4].try_into().unwrap_or_default()) as usize;
                if len < META || len > read.len() {
                    break;
                }
                let mask = u64::from_ne_bytes(read[8..16].try_into().unwrap_or_default());
                if mask & libc::FAN_Q_OVERFLOW != 0 {
                    lost_sight = true;
                } else if quiet::is_directory_moved_away(mask) {
                    // The one kind of record parsed whole (see `quiet::Quiet::saw`).
                    parse(&read[..len], &mut moved);
                }
                read = &read[len..];
            }
            if let Some(quiet) = quiet {
                if lost_sight {
                    quiet.lost_sight();
                }
                quiet.saw(&moved);
            }
            moved.clear();
        });
    }

    /// Quiets the directories the events read since the last look show with only opens in
    /// them, outside every running task's workspace.
    fn look(&mut self, fanotify: RawFd) {
        let start = self.looked.saturating_sub(self.first) as usize;
        self.looked = self.end();
        // Events while no task runs are nobody's: a directory decided on from them (one a
        // later task's files were being created in, say) would stay decided.
        if self.watches.is_empty() {
            return;
        }
        let Shared {
            events,
            quiet,
            watches,
            ..
        } = self;
        if let Some(quiet) = quiet {
            let roots: Vec<&Path> = watches.iter().map(|w| w.root.as_path()).collect();
            quiet.look(fanotify, events.get(start..).unwrap_or_default(), &roots);
        }
    }

    /// Drops the events no watch's window holds.
    fn forget_unneeded(&mut self) {
        let keep_from = self
            .watches
            .iter()
            .map(|w| w.from)
            .min()
            .unwrap_or(self.end());
        let drop = (keep_from.saturating_sub(self.first) as usize).min(self.events.len());
        self.events.drain(..drop);
        self.first += drop as u64;
        self.overflows.retain(|&at| at >= keep_from);
    }
}

/// Work for the reader to do after each of its looks while the task runs (it wakes then
/// anyway): the preload buffers' early reading.
pub type WhileRunning = Box<dyn FnMut() + Send>;

/// How long the group keeps its mark without a task (see [`Group`]).
const IDLE_MS: u64 = 200;

/// The groups of this process, one per file system.
static GROUPS: Mutex<Vec<Arc<Group>>> = Mutex::new(Vec::new());

/// Starts watching the file system that holds `root` for a task about to start, or says
/// why it cannot. `while_running` runs on the reader's thread after each look at the
/// events, until the watch ends.
pub fn start(root: &Path, while_running: Option<WhileRunning>) -> std::io::Result<Watch> {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::canonicalize(root)?;
    // open_by_handle_at needs any fd on the same file system.
    let mount = std::fs::File::open(&root)?;
    let dev = mount.metadata()?.dev();
    let mount = OwnedFd::from(mount);
    let mut while_running = while_running;
    for attempt in 0..2 {
        let group = group_for(dev, &root, &mount)?;
        let mut shared = lock(&group.state);
        match shared.watch(&group, &root) {
            Ok(()) => {
                let id = shared.next_id;
                shared.next_id += 1;
                let from = shared.end();
                shared.watches.push(Watching {
                    id,
                    root: root.clone(),
                    from,
                    until: None,
                    while_running: while_running.take(),
                });
                drop(shared);
                group.started.notify_one();
                return Ok(Watch {
                    group,
                    id,
                    mount,
                    root,
                    finished: false,
                });
            }
            Err(e) if attempt == 1 => return Err(e),
            Err(_) => {
                shared.retired = true;
                drop(shared);
                // Its reader may be waiting for a task: it leaves instead.
                group.started.notify_one();
            }
        }
    }
    Err(std::io::Error::other("no fanotify group"))
}

impl Shared {
    /// Makes the group ready for a new watch of `root`: its mark in place, the events
    /// queued so far read (they came before the task), and no directory quieted that holds
    /// `root`. An error retires the group.
    fn watch(&mut self, group: &Group, root: &Path) -> std::io::Result<()> {
        if self.retired {
            return Err(std::io::Error::other("retired"));
        }
        if !self.marked {
            mark(&group.fanotify, root)?;
            self.marked = true;
            // Directories may have moved while nobody listened.
            if let Some(quiet) = &mut self.quiet {
                quiet.lost_sight();
            }
        }
        if self.watches.is_empty() {
            // What came before the task is nobody's.
            self.discard(group.fanotify.as_raw_fd());
        } else {
            self.drain(group.fanotify.as_raw_fd());
        }
        self.forget_unneeded();
        // The running tasks' events read so far are looked at now, before `hear_again`
        // forgets the decisions not to quiet: the quieting then decides afresh from what
        // comes after this task's start, as a group of the task's own did. Looked at after
        // the forgetting, the creation of this task's files in a directory (in another
        // task's window) would keep that directory from being quieted for it. (This is the
        // reader's next look, done sooner, not more work.)
        self.look(group.fanotify.as_raw_fd());
        if let Some(quiet) = &mut self.quiet {
            crate::timings::time("spawn: fanotify: hear again", || {
                quiet.hear_again(group.fanotify.as_raw_fd(), root)
            })?;
        }
        Ok(())
    }
}

/// This process's group for file system `dev`, made (and marked through `root`) the first
/// time, or again after the last one was retired.
fn group_for(dev: u64, root: &Path, mount: &OwnedFd) -> std::io::Result<Arc<Group>> {
    let mut groups = lock(&GROUPS);
    groups.retain(|g| !lock(&g.state).retired);
    if let Some(group) = groups.iter().find(|g| g.dev == dev) {
        return Ok(Arc::clone(group));
    }
    let flags = libc::FAN_CLASS_NOTIF
        | libc::FAN_CLOEXEC
        | libc::FAN_NONBLOCK
        | libc::FAN_UNLIMITED_QUEUE
        | libc::FAN_REPORT_DFID_NAME;
    // SAFETY: fanotify_init takes flags only and returns a new fd or -1.
    let fd = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_LARGEFILE) as u32) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the fd was just created for us.
    let fanotify = unsafe { OwnedFd::from_raw_fd(fd) };
    mark(&fanotify, root)?;
    let quiet = mount.try_clone().ok().map(quiet::Quiet::new);
    let group = Arc::new(Group {
        fanotify,
        dev,
        state: Mutex::new(Shared {
            events: Vec::new(),
            first: 0,
            overflows: Vec::new(),
            looked: 0,
            watches: Vec::new(),
            next_id: 0,
            buffer: vec![0u8; 256 * 1024],
            quiet,
            marked: true,
            retired: false,
        }),
        started: Condvar::new(),
    });
    let reader = Arc::clone(&group);
    std::thread::Builder::new()
        .name("vt-fanotify".into())
        .spawn(move || {
            // Off the critical path: the janitor holds a copy of the group, so that
            // neither a task's end nor vt's exit waits for its close.
            crate::janitor::start();
            crate::janitor::hold_until_exit(&reader.fanotify);
            read_events(&reader);
        })?;
    groups.push(Arc::clone(&group));
    Ok(group)
}

/// Marks the whole file system that holds `root` for the events vt reads.
fn mark(fanotify: &OwnedFd, root: &Path) -> std::io::Result<()> {
    let c_root = std::ffi::CString::new(root.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    let mask = INPUT_EVENTS | OUTPUT_EVENTS | libc::FAN_ONDIR;
    // SAFETY: marks the file system of a NUL-terminated path we own.
    let rc = unsafe {
        libc::fanotify_mark(
            fanotify.as_raw_fd(),
            libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
            mask,
            libc::AT_FDCWD,
            c_root.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The group's reader, for the life of the process.
///
/// While tasks run, it reads the queue every [`BATCH_MS`], quiets the new directories
/// outside the running tasks' workspaces (`quiet`), then runs each task's work
/// ([`WhileRunning`]): a build opens files hundreds of thousands of times, and a wake-up
/// per open cost more CPU than the reading itself. The queue must not grow long either: the
/// kernel compares each new event with up to 128 queued ones of the same object to merge
/// them. Drained every millisecond, the reader's wake-ups cost `make -j2` of 200 C files
/// ~3 % of its CPU; every 20 ms, with the opens outside the workspace quieted (92 % fewer
/// events), neither that build nor node's 2 000 modules got slower (BENCHMARKS.md, stop
/// 44; an earlier 20 ms reader, without quieting, had measured node 4–6 % slower). A task's
/// end reads the rest itself ([`Watch::finish`]) rather than wake this thread and wait for
/// it. Without a task it sleeps; after [`IDLE_MS`] of that it removes the mark.
fn read_events(group: &Group) {
    let fanotify = group.fanotify.as_raw_fd();
    loop {
        {
            let shared = lock(&group.state);
            if shared.watches.is_empty() {
                // A retired group's reader leaves with its last task (the group goes with
                // the last reference to it).
                let (mut idle, waited) = group
                    .started
                    .wait_timeout_while(shared, std::time::Duration::from_millis(IDLE_MS), |s| {
                        s.watches.is_empty() && !s.retired
                    })
                    .unwrap_or_else(|p| p.into_inner());
                if idle.retired && idle.watches.is_empty() {
                    return;
                }
                if waited.timed_out() && idle.marked {
                    unmark(fanotify);
                    idle.marked = false;
                    idle.discard(fanotify);
                    idle.forget_unneeded();
                }
                while idle.watches.is_empty() {
                    if idle.retired {
                        return;
                    }
                    idle = group.started.wait(idle).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(BATCH_MS));
        let mut work = Vec::new();
        {
            let mut shared = lock(&group.state);
            shared.drain(fanotify);
            shared.look(fanotify);
            for watching in shared.watches.iter_mut().filter(|w| w.until.is_none()) {
                if let Some(w) = watching.while_running.take() {
                    work.push((watching.id, w));
                }
            }
        }
        // Outside the lock: a task's end must not wait for another's buffers.
        for (_, w) in &mut work {
            w();
        }
        {
            let mut shared = lock(&group.state);
            for (id, w) in work {
                if let Some(watching) = shared.watches.iter_mut().find(|x| x.id == id) {
                    watching.while_running = Some(w);
                }
            }
        }
        // Until the next event (or a while, to see whether tasks still run): a task that
        // opens nothing costs no wake-ups.
        let mut queued = readable(fanotify);
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut queued, 1, IDLE_MS as i32) };
    }
}

/// A `poll` entry waiting for `fd` to be readable.
fn readable(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Removes the group's filesystem marks (the quieting's ignore marks stay).
fn unmark(fanotify: RawFd) {
    // SAFETY: removes this group's file system marks; the path is ignored for a flush.
    unsafe {
        libc::fanotify_mark(
            fanotify,
            libc::FAN_MARK_FLUSH | libc::FAN_MARK_FILESYSTEM,
            0,
            libc::AT_FDCWD,
            c"/".as_ptr(),
        )
    };
}

/// Reads the group's queue into `buffer` until it is empty, handing each read's bytes to
/// `each` (whole records: the kernel never splits one across reads).
fn read_queue(fanotify: RawFd, buffer: &mut [u8], mut each: impl FnMut(&[u8])) {
    loop {
        // SAFETY: reads into our buffer; the fd is non-blocking.
        let n = unsafe { libc::read(fanotify, buffer.as_mut_ptr().cast(), buffer.len()) };
        if n <= 0 {
            break;
        }
        each(&buffer[..n as usize]);
        // A read that left room for another event emptied the queue. Stop there: a
        // process writing to the same file system, or one reacting to vt's own reads
        // (`strace -f -o FILE vt …` did), would otherwise keep this loop reading forever
        // and vt would never finish. Later events are read next time, or, at the end, came
        // after the task was gone.
        if (n as usize) + MAX_EVENT_LEN <= buffer.len() {
            break;
        }
    }
}

/// More than one event can take: metadata, a DFID_NAME record with the largest file handle
/// (`MAX_HANDLE_SZ`) and a 255-byte name.
const MAX_EVENT_LEN: usize = 1024;

/// How long the reader lets events gather between its looks while tasks run.
const BATCH_MS: u64 = 20;

impl Watch {
    /// Marks the end of the task's window: call it as soon as the task tree is gone (every
    /// event of the task is queued by then).
    pub fn stop_watching(&self) {
        let mut shared = lock(&self.group.state);
        shared.drain(self.group.fanotify.as_raw_fd());
        let end = shared.end();
        if let Some(watching) = shared.watches.iter_mut().find(|w| w.id == self.id) {
            watching.until.get_or_insert(end);
            watching.while_running = None;
        }
    }

    /// Stops watching and reconciles with `log`; events under `ignore` (vt's own files in
    /// the task's processes, such as the preload buffers) are not the task's.
    pub fn finish(mut self, log: &mut AccessLog, ignore: &[&Path]) {
        self.finished = true;
        let (events, overflowed, moved_in) = {
            // A reader that panicked while it held the lock may have lost what it had read
            // from the queue: the run is not known to be complete, and the group is not
            // trusted again (the next task makes another).
            let mut shared = match self.group.state.lock() {
                Ok(shared) => shared,
                Err(poisoned) => {
                    poisoned.into_inner().retired = true;
                    self.group.started.notify_one();
                    log.gap(
                        0,
                        "fanotify",
                        "the fanotify reader stopped before the task ended",
                    );
                    return;
                }
            };
            crate::timings::time("end: fanotify drain", || {
                shared.drain(self.group.fanotify.as_raw_fd())
            });
            let end = shared.end();
            let Some(at) = shared.watches.iter().position(|w| w.id == self.id) else {
                log.gap(0, "fanotify", "the task's fanotify window was lost");
                return;
            };
            let watching = shared.watches.swap_remove(at);
            let until = watching.until.unwrap_or(end);
            let window = watching.from..until;
            let overflowed = shared
                .overflows
                .iter()
                .any(|at| window.contains(at) || *at == until);
            let first = shared.first;
            let range = (window.start.saturating_sub(first) as usize).min(shared.events.len())
                ..(window.end.saturating_sub(first) as usize).min(shared.events.len());
            // Taken without a copy when no other running task's window reaches back into
            // this one's (the usual case: one task at a time).
            let shared_with_others = shared.watches.iter().any(|w| w.from < until);
            let events = if shared_with_others {
                shared.events[range].iter().map(RawEvent::clone).collect()
            } else {
                let taken: Vec<RawEvent> =
                    shared.events.drain(..range.end).skip(range.start).collect();
                shared.first += range.end as u64;
                taken
            };
            shared.forget_unneeded();
            let moved_in = shared
                .quiet
                .as_mut()
                .map(|q| q.moved_in(&self.root))
                .unwrap_or_default();
            (events, overflowed, moved_in)
        };
        if overflowed {
            log.gap(
                0,
                "fanotify",
                "the fanotify event queue overflowed; changes may have been missed",
            );
        }
        crate::timings::time("end: fanotify reconcile", || {
            reconcile(&events, &self.mount, &self.root, ignore, log)
        });
        for (was, now) in moved_in {
            log.gap(
                0,
                "fanotify",
                format!(
                    "{} moved into the workspace while the task ran (from {}), after vt had stopped hearing of the opens in it: its reads since were not cross-checked",
                    now.display(),
                    was.display()
                ),
            );
        }
    }
}

impl Drop for Watch {
    /// A watch dropped unfinished (a task that failed to start) leaves the group's list.
    fn drop(&mut self) {
        if !self.finished {
            let mut shared = lock(&self.group.state);
            shared.watches.retain(|w| w.id != self.id);
            shared.forget_unneeded();
        }
    }
}

/// Parses a read buffer of `fanotify_event_metadata` records with DFID_NAME info records.
fn parse(mut buffer: &[u8], events: &mut Vec<RawEvent>) -> bool {
    let mut overflowed = false;
    const META: usize = std::mem::size_of::<libc::fanotify_event_metadata>();
    while buffer.len() >= META {
        let event_len = u32::from_ne_bytes(buffer[0..4].try_into().unwrap_or_default()) as usize;
        let metadata_len = u16::from_ne_bytes(buffer[6..8].try_into().unwrap_or_default()) as usize;
        if event_len < META || event_len > buffer.len() {
            break;
        }
        let mask = u64::from_ne_bytes(buffer[8..16].try_into().unwrap_or_default());
        let pid = i32::from_ne_bytes(buffer[20..24].try_into().unwrap_or_default());
        if mask & libc::FAN_Q_OVERFLOW != 0 {
            overflowed = true;
        }
        // Info records: header (type u8, pad u8, len u16), fsid (8 bytes), file_handle
        // (handle_bytes u32, handle_type i32, bytes), then the NUL-terminated name.
        let mut info = &buffer[metadata_len.min(event_len)..event_len];
        while info.len() >= 4 {
            let info_type = info[0];
            let info_len = u16::from_ne_bytes([info[2], info[3]]) as usize;
            if info_len < 4 || info_len > info.len() {
                break;
            }
            let record = &info[..info_len];
            if info_type == libc::FAN_EVENT_INFO_TYPE_DFID_NAME && record.len() >= 20 {
                let handle_bytes =
                    u32::from_ne_bytes(record[12..16].try_into().unwrap_or_default()) as usize;
                let handle_end = 20 + handle_bytes;
                if handle_end <= record.len() {
                    let dir_handle = record[16..handle_end].to_vec();
                    let name_bytes = &record[handle_end..];
                    let name = name_bytes
                        .split(|&b| b == 0)
                        .next()
                        .unwrap_or_default()
                        .to_vec();
                    events.push(RawEvent {
                        mask,
                        pid: pid.max(0) as u32,
                        dir_handle,
                        name,
                    });
                }
            }
            info = &info[info_len..];
        }
        buffer = &buffer[event_len..];
    }
    overflowed
}

fn reconcile(
    events: &[RawEvent],
    mount: &OwnedFd,
    root: &Path,
    ignore: &[&Path],
    log: &mut AccessLog,
) {
    // Each process's accesses come in runs: one insert per run, not per access.
    let mut task_pids: FxHashSet<u32> = log.processes.iter().copied().collect();
    let mut last_pid = None;
    for access in &log.accesses {
        if last_pid != Some(access.pid) {
            task_pids.insert(access.pid);
            last_pid = Some(access.pid);
        }
    }
    // The tracer's paths in the workspace (and whether each was changed), by bytes: hashing a
    // `Path` walks its components.
    let mut inside: FxHashMap<&[u8], bool> = FxHashMap::default();
    inside.reserve(log.accesses.len());
    for access in log.accesses.iter().filter(|a| is_under(&a.path, root)) {
        *inside
            .entry(access.path.as_os_str().as_bytes())
            .or_default() |= !access.kind.is_input();
    }
    let mut tracer = TracerPaths {
        inside,
        canonical: None,
    };
    // Each event's directory, resolved once; None for one that is gone or that cannot hold
    // the workspace or anything in it. A build's reads of system headers and libraries
    // stop here (the mark covers the whole file system); the reader quiets most of them
    // while the task runs (`quiet`).
    let mut dirs: FxHashMap<&[u8], Option<PathBuf>> = FxHashMap::default();
    let mut extra_inputs = Vec::new();
    let mut gaps = Vec::new();
    // The entries (directory handle, name) already looked at, as the event names them: an
    // input seen again adds nothing, and is dropped before its path is made and hashed.
    // (Two handles of one path are possible, a directory replaced during the run; what is
    // recorded is kept once per path below.)
    let mut reported: FxHashSet<(&[u8], &[u8])> = FxHashSet::default();
    reported.reserve(events.len());
    let mut gap_reported: FxHashSet<PathBuf> = FxHashSet::default();
    let mut added: FxHashSet<PathBuf> = FxHashSet::default();
    // Each event's path, made in one buffer: a path is allocated only for what the log
    // gets (an input the tracer missed, a gap), not for each of node's 2 000 opens.
    let mut joined: Vec<u8> = Vec::with_capacity(256);
    for event in events.iter().filter(|e| task_pids.contains(&e.pid)) {
        let first_time = reported.insert((&event.dir_handle, &event.name));
        if !first_time && event.mask & OUTPUT_EVENTS == 0 {
            continue; // an input already handled
        }
        let dir = dirs.entry(&event.dir_handle).or_insert_with(|| {
            resolve_handle(mount, &event.dir_handle).filter(|dir| holds_the_workspace(dir, root))
        });
        let Some(dir) = dir else { continue };
        joined.clear();
        joined.extend_from_slice(dir.as_os_str().as_bytes());
        if !(event.name.is_empty() || event.name == b".") {
            if joined.last() != Some(&b'/') {
                joined.push(b'/');
            }
            joined.extend_from_slice(&event.name);
        }
        let path = Path::new(OsStr::from_bytes(&joined));
        if !is_under(path, root) || ignore.iter().any(|dir| is_under(path, dir)) {
            continue;
        }
        if event.mask & OUTPUT_EVENTS != 0 {
            if !tracer.changed(path) && !gap_reported.contains(path) {
                gap_reported.insert(path.to_path_buf());
                gaps.push((
                    event.pid,
                    format!(
                        "fanotify saw {} changed, but the tracer saw no path syscall doing it",
                        path.display()
                    ),
                ));
            }
        } else if event.mask & INPUT_EVENTS != 0 && !tracer.saw(path) && !added.contains(path) {
            added.insert(path.to_path_buf());
            extra_inputs.push((event.pid, path.to_path_buf()));
        }
    }
    // fanotify events carry no time: "unknown" sorts first, so a file the task also wrote
    // counts as read before written (the cautious reading).
    for (pid, path) in extra_inputs {
        log.push_at(AccessKind::Read, path, pid, 0);
    }
    for (pid, reason) in gaps {
        log.gap(pid, "fanotify", reason);
    }
}

/// Whether events in `dir` can be about the workspace: it is in the workspace `root`, or
/// is its parent (whose entry is the workspace itself). Events in any other directory are
/// dropped by the reconciliation, and the reader quiets such directories (`quiet`).
/// Compared as bytes, as `is_under` does: both paths are plain (canonical, or the kernel's
/// from a descriptor), and the quieting asks this of every quieted directory at each start.
fn holds_the_workspace(dir: &Path, root: &Path) -> bool {
    is_under(dir, root)
        || root
            .parent()
            .is_some_and(|parent| parent.as_os_str().as_bytes() == dir.as_os_str().as_bytes())
}

/// What the tracer saw in the workspace, asked about fanotify's paths.
struct TracerPaths<'log> {
    /// As the tracer recorded them → whether changed.
    inside: FxHashMap<&'log [u8], bool>,
    /// The same, canonicalized like fanotify's (which come from the dentry): (seen,
    /// changed). Built on the first path not found as recorded: canonicalizing costs a few
    /// syscalls per path (4 ms for node's 2 000 modules), and a workspace without symlinks
    /// never needs it.
    canonical: Option<(FxHashSet<PathBuf>, FxHashSet<PathBuf>)>,
}

impl TracerPaths<'_> {
    fn saw(&mut self, path: &Path) -> bool {
        self.inside.contains_key(path.as_os_str().as_bytes()) || self.canonical().0.contains(path)
    }

    fn changed(&mut self, path: &Path) -> bool {
        self.inside.get(path.as_os_str().as_bytes()) == Some(&true)
            || self.canonical().1.contains(path)
    }

    fn canonical(&mut self) -> &(FxHashSet<PathBuf>, FxHashSet<PathBuf>) {
        let inside = &self.inside;
        self.canonical.get_or_insert_with(|| {
            let mut canonical = Canonical::default();
            let mut seen = FxHashSet::default();
            let mut changed = FxHashSet::default();
            for (path, is_output) in inside {
                let path = canonical.of(Path::new(OsStr::from_bytes(path)));
                if *is_output {
                    changed.insert(path.clone());
                }
                seen.insert(path);
            }
            (seen, changed)
        })
    }
}

/// Paths with symlinks resolved, as fanotify names them (from the dentry); each directory
/// resolved once ([`CanonicalDirs`]).
#[derive(Default)]
struct Canonical {
    dirs: CanonicalDirs,
}

impl Canonical {
    /// `path` with symlinks resolved where it exists (else its parent's, plus the name).
    fn of(&mut self, path: &Path) -> PathBuf {
        match self.dirs.resolve(path) {
            Resolved::Found(resolved) | Resolved::Missing(resolved) => resolved,
            Resolved::Whole => std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        }
    }
}

/// The path of a directory from its file handle (`handle_type` + bytes), if it still exists.
fn resolve_handle(mount: &OwnedFd, handle: &[u8]) -> Option<PathBuf> {
    fd_path(&open_handle(mount, handle)?)
}

/// An `O_PATH` descriptor of the directory with file handle `handle` (`handle_type` +
/// bytes), if it still exists.
fn open_handle(mount: &OwnedFd, handle: &[u8]) -> Option<OwnedFd> {
    if handle.len() < 4 {
        return None;
    }
    let handle_type = i32::from_ne_bytes(handle[0..4].try_into().ok()?);
    let bytes = &handle[4..];
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }
    let mut raw = Vec::with_capacity(8 + bytes.len());
    raw.extend_from_slice(&(bytes.len() as u32).to_ne_bytes());
    raw.extend_from_slice(&handle_type.to_ne_bytes());
    raw.extend_from_slice(bytes);
    // SAFETY: `raw` is a well-formed file_handle that outlives the call.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            raw.as_mut_ptr().cast(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: the fd is new and ours.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Where the file `fd` is open on is now (a deleted one ends in " (deleted)").
fn fd_path(fd: &OwnedFd) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracers_paths_match_fanotifys_as_recorded_or_through_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        std::fs::create_dir(root.join("real")).expect("mkdir");
        std::os::unix::fs::symlink("real", root.join("link")).expect("symlink");
        let plain = root.join("real/a");
        let via_link = root.join("link/b");
        let mut tracer = TracerPaths {
            inside: [
                (plain.as_os_str().as_bytes(), false),
                (via_link.as_os_str().as_bytes(), true),
            ]
            .into_iter()
            .collect(),
            canonical: None,
        };
        assert!(tracer.saw(&plain));
        assert!(tracer.canonical.is_none(), "found as recorded: no syscalls");
        // fanotify names `link/b` by its dentry: `real/b`.
        assert!(tracer.saw(&root.join("real/b")));
        assert!(tracer.changed(&root.join("real/b")));
        assert!(!tracer.changed(&plain));
        assert!(!tracer.saw(&root.join("real/c")));
    }

    #[test]
    fn canonical_paths_resolve_links_in_directories_and_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        std::fs::create_dir(root.join("real")).expect("mkdir");
        std::fs::write(root.join("real/f"), "x").expect("write");
        std::os::unix::fs::symlink(root.join("real"), root.join("dirlink")).expect("symlink");
        std::os::unix::fs::symlink(root.join("real/f"), root.join("real/flink")).expect("symlink");
        let mut canonical = Canonical::default();
        assert_eq!(canonical.of(&root.join("dirlink/f")), root.join("real/f"));
        assert_eq!(canonical.of(&root.join("real/flink")), root.join("real/f"));
        assert_eq!(
            canonical.of(&root.join("dirlink/gone")),
            root.join("real/gone")
        );
        assert_eq!(canonical.of(&root.join("nodir/x")), root.join("nodir/x"));
        for path in ["dirlink/f", "real/flink", "real/f"] {
            assert_eq!(
                canonical.of(&root.join(path)),
                std::fs::canonicalize(root.join(path)).expect("exists")
            );
        }
    }

    /// Builds one event record with a DFID_NAME info record, as the kernel lays it out.
    fn record(mask: u64, pid: i32, handle: &[u8], name: &[u8]) -> Vec<u8> {
        let mut info = vec![libc::FAN_EVENT_INFO_TYPE_DFID_NAME, 0, 0, 0];
        info.extend_from_slice(&[0u8; 8]); // fsid
        info.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        info.extend_from_slice(&7i32.to_ne_bytes()); // handle_type
        info.extend_from_slice(handle);
        info.extend_from_slice(name);
        info.push(0);
        while info.len() % 4 != 0 {
            info.push(0);
        }
        let info_len = info.len() as u16;
        info[2..4].copy_from_slice(&info_len.to_ne_bytes());
        let meta = std::mem::size_of::<libc::fanotify_event_metadata>();
        let mut out = Vec::new();
        out.extend_from_slice(&((meta + info.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&[3, 0]);
        out.extend_from_slice(&(meta as u16).to_ne_bytes());
        out.extend_from_slice(&mask.to_ne_bytes());
        out.extend_from_slice(&(-1i32).to_ne_bytes());
        out.extend_from_slice(&pid.to_ne_bytes());
        out.extend(info);
        out
    }

    #[test]
    fn parses_records_and_survives_truncation() {
        let mut buffer = record(libc::FAN_MODIFY, 42, &[1, 2, 3, 4, 5, 6, 7, 8], b"out.txt");
        buffer.extend(record(libc::FAN_Q_OVERFLOW, 0, &[], b""));
        let mut events = Vec::new();
        assert!(parse(&buffer, &mut events), "overflow is reported");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].pid, 42);
        assert_eq!(events[0].name, b"out.txt");
        assert_eq!(&events[0].dir_handle[..4], &7i32.to_ne_bytes());
        assert_eq!(&events[0].dir_handle[4..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        // Every truncation and garbage length parses without panicking.
        for cut in 0..buffer.len() {
            let mut events = Vec::new();
            parse(&buffer[..cut], &mut events);
        }
        let mut garbage = buffer.clone();
        garbage[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        parse(&garbage, &mut Vec::new());
        let mut bad_info = buffer;
        let meta = std::mem::size_of::<libc::fanotify_event_metadata>();
        bad_info[meta + 2..meta + 4].copy_from_slice(&u16::MAX.to_ne_bytes());
        parse(&bad_info, &mut Vec::new());
    }

    /// fanotify needs CAP_SYS_ADMIN: CI runs as root and must exercise it, never skip there.
    fn may_watch() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run as root so that fanotify is tested"
        );
        eprintln!("skipped: fanotify needs root");
        false
    }

    /// A fresh directory (canonical) for a test of the group; `None` where it may not run.
    fn watched_dir() -> Option<(tempfile::TempDir, PathBuf)> {
        if !may_watch() {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let top = std::fs::canonicalize(dir.path()).expect("canonical");
        Some((dir, top))
    }

    impl Watch {
        /// Reads what is queued and quiets as the reader would: the names of every event
        /// read so far in this watch's window.
        fn read_now(&self) -> Vec<Vec<u8>> {
            let mut shared = self.group.state.lock().expect("lock");
            let fanotify = self.group.fanotify.as_raw_fd();
            shared.drain(fanotify);
            shared.look(fanotify);
            let from = shared
                .watches
                .iter()
                .find(|w| w.id == self.id)
                .expect("watching")
                .from;
            let start = (from - shared.first) as usize;
            shared.events[start..]
                .iter()
                .map(|e| e.name.clone())
                .collect()
        }

        /// The directories the group has quieted.
        fn quieted(&self) -> Vec<PathBuf> {
            let shared = self.group.state.lock().expect("lock");
            shared.quiet.as_ref().expect("quiet").quieted()
        }
    }

    /// A directory outside the workspace with only opens in it stops being reported; one in
    /// the workspace, one with a change in it and the workspace's parent never do. A
    /// quieted directory that moves into the workspace is a gap; left outside, none.
    #[test]
    fn opens_outside_the_workspace_are_quieted_and_a_quieted_directory_moved_in_is_a_gap() {
        if !may_watch() {
            return;
        }
        for moved in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let top = std::fs::canonicalize(dir.path()).expect("canonical");
            let root = top.join("ws");
            for d in ["ws", "outside", "written"] {
                std::fs::create_dir(top.join(d)).expect("mkdir");
            }
            for f in [
                "ws/in-1",
                "ws/in-2",
                "outside/out-1",
                "outside/out-2",
                "sibling",
            ] {
                std::fs::write(top.join(f), "x").expect("write");
            }
            let watch = start(&root, None).expect("fanotify");
            let open = |f: &str| drop(std::fs::File::open(top.join(f)).expect("open"));
            open("ws/in-1");
            open("outside/out-1");
            open("sibling");
            std::fs::write(top.join("written/new"), "x").expect("write");
            let first = watch.read_now();
            for name in ["in-1", "out-1", "sibling", "new"] {
                assert!(
                    first.contains(&name.as_bytes().to_vec()),
                    "{name}: {first:?}"
                );
            }
            let quieted = watch.quieted();
            // (Other processes' directories may be quieted too: the mark is the file system's.)
            assert!(quieted.contains(&top.join("outside")), "{quieted:?}");
            for never in [top.clone(), root.clone(), top.join("written")] {
                assert!(!quieted.contains(&never), "{never:?} in {quieted:?}");
            }
            open("ws/in-2");
            open("outside/out-2");
            open("written/new");
            let second = watch.read_now().split_off(first.len());
            for name in ["in-2", "new"] {
                assert!(
                    second.contains(&name.as_bytes().to_vec()),
                    "{name}: {second:?}"
                );
            }
            assert!(!second.contains(&b"out-2".to_vec()), "quieted: {second:?}");
            if moved {
                std::fs::rename(top.join("outside"), root.join("moved")).expect("mv");
            }
            watch.stop_watching();
            let mut log = AccessLog::default();
            watch.finish(&mut log, &[]);
            let gaps: Vec<&str> = log.gaps.iter().map(|g| g.reason.as_str()).collect();
            if moved {
                assert_eq!(gaps.len(), 1, "{gaps:?}");
                assert!(
                    gaps[0].starts_with(&format!(
                        "{} moved into the workspace",
                        root.join("moved").display()
                    )),
                    "{gaps:?}"
                );
            } else {
                assert!(gaps.is_empty(), "{gaps:?}");
            }
        }
    }

    /// A task that reads in more directories outside than vt keeps descriptors for: the
    /// first ones are quieted, the rest reported as before.
    #[test]
    fn quieting_stops_at_its_limit() {
        let Some((_dir, top)) = watched_dir() else {
            return;
        };
        let root = top.join("ws");
        std::fs::create_dir(&root).expect("mkdir");
        let outside: Vec<PathBuf> = (0..quiet::MAX_QUIETED + 20)
            .map(|i| top.join(format!("out/{i}")))
            .collect();
        for d in &outside {
            std::fs::create_dir_all(d).expect("mkdir");
            std::fs::write(d.join("f"), "x").expect("write");
        }
        let watch = start(&root, None).expect("fanotify");
        for d in &outside {
            drop(std::fs::File::open(d.join("f")).expect("open"));
        }
        watch.read_now();
        assert_eq!(watch.quieted().len(), quiet::MAX_QUIETED);
    }

    /// What `finish` gives a watch of this process's own opens: the files it adds as
    /// inputs (the tracer saw none of them).
    fn inputs_of(watch: Watch) -> Vec<PathBuf> {
        let mut log = AccessLog::default();
        log.processes.insert(std::process::id());
        watch.finish(&mut log, &[]);
        assert!(log.gaps.is_empty(), "{:?}", log.gaps);
        log.accesses.into_iter().map(|a| a.path).collect()
    }

    /// The group is shared, each watch gets the events of its own window: from its start to
    /// its tree's end (`stop_watching`), however the windows of other watches overlap it.
    #[test]
    fn each_watch_gets_the_events_of_its_own_window() {
        let Some((_dir, top)) = watched_dir() else {
            return;
        };
        for f in ["before", "x", "y", "z"] {
            std::fs::write(top.join(f), "x").expect("write");
        }
        let open = |f: &str| drop(std::fs::File::open(top.join(f)).expect("open"));
        open("before");
        let a = start(&top, None).expect("fanotify");
        open("x");
        let b = start(&top, None).expect("fanotify");
        assert!(Arc::ptr_eq(&a.group, &b.group), "one group per file system");
        open("y");
        a.stop_watching();
        open("z");
        b.stop_watching();
        // (The second `start` opened `top` itself, in the first one's window: this process
        // is the "task" here.)
        let files = |inputs: Vec<PathBuf>| -> Vec<PathBuf> {
            inputs.into_iter().filter(|p| p != &top).collect()
        };
        let (a, b) = (files(inputs_of(a)), files(inputs_of(b)));
        assert_eq!(a, vec![top.join("x"), top.join("y")]);
        assert_eq!(b, vec![top.join("y"), top.join("z")]);
    }

    /// A directory quieted while one task ran (outside its workspace) is heard again when a
    /// task whose workspace holds it starts, and stays heard while that task runs: an
    /// earlier task's quieting must never hide a later task's reads from the cross-check.
    #[test]
    fn a_directory_quieted_for_one_task_is_heard_for_a_task_whose_workspace_holds_it() {
        let Some((_dir, top)) = watched_dir() else {
            return;
        };
        let (one, two) = (top.join("one"), top.join("two"));
        std::fs::create_dir_all(&one).expect("mkdir");
        std::fs::create_dir_all(two.join("tools")).expect("mkdir");
        std::fs::write(two.join("tools/interp"), "x").expect("write");
        let open = || drop(std::fs::File::open(two.join("tools/interp")).expect("open"));
        let first = start(&one, None).expect("fanotify");
        open();
        first.read_now();
        assert!(first.quieted().contains(&two.join("tools")));
        let second = start(&two, None).expect("fanotify");
        assert!(!second.quieted().contains(&two.join("tools")));
        open();
        first.read_now();
        assert!(
            !second.quieted().contains(&two.join("tools")),
            "quieted again while a task of its workspace runs"
        );
        second.stop_watching();
        assert_eq!(inputs_of(second), vec![two.join("tools/interp")]);
        first.stop_watching();
        assert!(
            inputs_of(first).is_empty(),
            "outside the first one's workspace"
        );
    }

    /// A group that went idle (its mark removed) marks the file system again for the next
    /// task.
    #[test]
    fn an_idle_group_hears_the_next_task_again() {
        if !may_watch() {
            return;
        }
        // A file system no other test watches (a group is per file system and process):
        // the unmark below, done with other tasks running, would blind their windows, as
        // vt's reader never does (it unmarks only without a task).
        use std::os::unix::fs::MetadataExt;
        let shm = Path::new("/dev/shm");
        let others = std::env::temp_dir();
        assert_ne!(
            std::fs::metadata(shm).map(|m| m.dev()).ok(),
            std::fs::metadata(&others).map(|m| m.dev()).ok(),
            "/dev/shm is not a file system apart from {}",
            others.display()
        );
        let dir = tempfile::tempdir_in(shm).expect("tempdir");
        let top = std::fs::canonicalize(dir.path()).expect("canonical");
        std::fs::write(top.join("x"), "x").expect("write");
        let watch = start(&top, None).expect("fanotify");
        let group = Arc::clone(&watch.group);
        watch.stop_watching();
        drop(inputs_of(watch));
        {
            // What the reader does after `IDLE_MS` without a task.
            let mut shared = group.state.lock().expect("lock");
            assert!(
                shared.watches.is_empty(),
                "another test watches {}",
                top.display()
            );
            unmark(group.fanotify.as_raw_fd());
            shared.marked = false;
        }
        let watch = start(&top, None).expect("fanotify");
        drop(std::fs::File::open(top.join("x")).expect("open"));
        watch.stop_watching();
        assert_eq!(inputs_of(watch), vec![top.join("x")]);
    }

    /// Where a quieted directory is, is asked again only after a directory was renamed on
    /// the file system; a rename of one above it must then be seen: here the quieted
    /// directory ends up in the next task's workspace by its parent's rename.
    #[test]
    fn a_quieted_directory_moved_with_its_parent_into_a_workspace_is_heard_again() {
        let Some((_dir, top)) = watched_dir() else {
            return;
        };
        let one = top.join("one");
        std::fs::create_dir_all(&one).expect("mkdir");
        std::fs::create_dir_all(top.join("staging/tools")).expect("mkdir");
        std::fs::write(top.join("staging/tools/interp"), "x").expect("write");
        let first = start(&one, None).expect("fanotify");
        drop(std::fs::File::open(top.join("staging/tools/interp")).expect("open"));
        first.read_now();
        assert!(first.quieted().contains(&top.join("staging/tools")));
        first.stop_watching();
        assert!(inputs_of(first).is_empty());
        // `tools` itself is not renamed: its parent is.
        std::fs::rename(top.join("staging"), top.join("two")).expect("mv");
        let second = start(&top.join("two"), None).expect("fanotify");
        drop(std::fs::File::open(top.join("two/tools/interp")).expect("open"));
        second.stop_watching();
        assert_eq!(inputs_of(second), vec![top.join("two/tools/interp")]);
    }
}

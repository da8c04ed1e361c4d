//! The tracer's fast path: the LD_PRELOAD recorder (`vt-preload`) and what vt does with its
//! buffers (docs/architecture.md, "Trace and jail").
//!
//! vt injects the library into the task with `LD_PRELOAD` and gives it a private directory
//! for its per-process buffers; when the tree is gone, [`Injection::collect`] turns every
//! record into the same accesses the seccomp decoder would have produced for that call
//! (most of them already read while the task ran, [`early`]).
//! The filter exempts the trampoline ([`super::filter`]), so recorded calls cost no
//! notification; everything else is still notified, so a missing or refused library only
//! makes tracing slower, never incomplete.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use preload_abi::{
    BIT_DIR, BIT_FOUND, BIT_UNSURE, BufferError, OP_EXEC, OP_OPEN, OP_PROBE_FOLLOW,
    OP_PROBE_NOFOLLOW, OP_REMOVE, Record,
};

use crate::access::{AccessKind, AccessLog};

use super::decode::{Existence, exec_accesses, open_accesses, probe};
use super::paths::{CleanPaths, is_under, without_self_links};

mod early;
mod leftovers;

/// `VT_PRELOAD=off` disables the fast path; `VT_PRELOAD=/path/libvt_preload.so` injects
/// that file instead of the library built into vt (for working on the recorder).
pub const PRELOAD_ENV: &str = "VT_PRELOAD";
pub const LIBRARY_NAME: &str = "libvt_preload.so";

/// The recorder, built by `build.rs` from `sandbox/preload`.
static EMBEDDED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libvt_preload.so"));
/// A digest of [`EMBEDDED`] (`build.rs`), naming its reusable copy.
const EMBEDDED_DIGEST: &str = env!("VT_PRELOAD_DIGEST");

/// Where the library to inject comes from.
#[derive(Debug, Clone)]
pub enum Library {
    Embedded,
    File(PathBuf),
}

/// The library to inject, or why there is none.
pub fn library() -> Result<Library, String> {
    match std::env::var_os(PRELOAD_ENV) {
        Some(v) if v == "off" => Err(format!("{PRELOAD_ENV}=off")),
        Some(v) if !v.is_empty() => {
            let path = PathBuf::from(v);
            if path.is_file() {
                Ok(Library::File(path))
            } else {
                Err(format!("{PRELOAD_ENV}={} does not exist", path.display()))
            }
        }
        _ => Ok(Library::Embedded),
    }
}

/// The library injected into one traced command, and its buffer directory.
pub struct Injection {
    /// The library's directory when it is a user's file (`VT_PRELOAD=FILE`).
    library_parent: Option<PathBuf>,
    /// Where the embedded library was written (None for `VT_PRELOAD=FILE`).
    library_dir: Option<LibraryDir>,
    /// The per-process buffers: on tmpfs when there is one, because the first store to a
    /// sparse file on a disk file system costs a block allocation (measured: ~35 ms on ext4,
    /// once per process). Locked while this process uses it ([`leftovers`]).
    buffers: leftovers::LockedDir,
    /// What was read of the buffers while the task ran ([`Injection::reader_while_running`]).
    early: std::sync::Arc<early::Early>,
}

/// `/dev/shm` if it is a tmpfs we can write, else the temp dir (decided once per process).
fn buffer_parent() -> &'static Path {
    static PARENT: OnceLock<PathBuf> = OnceLock::new();
    PARENT.get_or_init(find_buffer_parent)
}

fn find_buffer_parent() -> PathBuf {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let shm = Path::new("/dev/shm");
    let is_tmpfs =
        nix::sys::statfs::statfs(shm).is_ok_and(|fs| fs.filesystem_type().0 == TMPFS_MAGIC);
    if is_tmpfs && nix::unistd::access(shm, nix::unistd::AccessFlags::W_OK).is_ok() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// This user's shared copy of the embedded library (its directory, its path), made or
/// checked once per process: reading it back to compare took every task's start ~0.05 ms.
/// The copy is in a directory only this user can write, named for the content's digest.
fn shared_library_copy() -> Option<&'static (PathBuf, PathBuf)> {
    static COPY: OnceLock<Option<(PathBuf, PathBuf)>> = OnceLock::new();
    COPY.get_or_init(|| super::library_file::shared_copy(EMBEDDED, EMBEDDED_DIGEST, LIBRARY_NAME))
        .as_ref()
}

/// Does now what the first task's [`Injection`] would (the library's copy checked, the
/// buffers' place found): for a thread that works ahead of the first task.
pub fn warm() {
    if matches!(library(), Ok(Library::Embedded)) {
        let _ = shared_library_copy();
    }
    leftovers::sweep_once(buffer_parent());
}

/// The directory holding the embedded library.
enum LibraryDir {
    /// This user's copy, kept for later runs (`library_file`).
    Shared(PathBuf),
    /// A private copy for this run only, where no shared one could be made.
    Private(tempfile::TempDir),
}

impl LibraryDir {
    fn path(&self) -> &Path {
        match self {
            LibraryDir::Shared(path) => path,
            LibraryDir::Private(dir) => dir.path(),
        }
    }
}

impl Injection {
    /// Creates vt's private directories (the library, the buffers), and sets `LD_PRELOAD`
    /// (in front of any the command already has) and `VT_PRELOAD_DIR`.
    pub fn prepare(command: &mut Command, library: &Library) -> Result<Injection, String> {
        let existing = command
            .get_envs()
            .find(|(name, _)| *name == "LD_PRELOAD")
            .map(|(_, value)| value.map(OsStr::to_os_string))
            .unwrap_or_else(|| std::env::var_os("LD_PRELOAD"));
        let (injection, vars) = Injection::prepare_env(existing, library)?;
        command.envs(vars);
        Ok(injection)
    }

    /// [`Injection::prepare`] for a command whose environment is a map: the variables to
    /// set, given the `LD_PRELOAD` it already has.
    pub fn prepare_env(
        existing: Option<OsString>,
        library: &Library,
    ) -> Result<(Injection, [(OsString, OsString); 2]), String> {
        let private_dir = |parent: &Path| {
            tempfile::Builder::new()
                .prefix("vt-library-")
                .tempdir_in(parent)
                .map_err(|e| format!("cannot create a directory in {}: {e}", parent.display()))
        };
        let (library, library_dir) = match library {
            Library::File(path) => (path.clone(), None),
            Library::Embedded => match shared_library_copy() {
                Some((dir, path)) => (path.clone(), Some(LibraryDir::Shared(dir.clone()))),
                None => {
                    let dir = private_dir(&std::env::temp_dir())?;
                    let path = dir.path().join(LIBRARY_NAME);
                    std::fs::write(&path, EMBEDDED)
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                    (path, Some(LibraryDir::Private(dir)))
                }
            },
        };
        // The loader cannot map a library from a noexec mount; it would say so on the
        // task's stderr and go on without it.
        if super::library_file::on_noexec_mount(&library) == Some(true) {
            return Err(format!("{} is on a noexec mount", library.display()));
        }
        let parent = buffer_parent();
        let buffers = leftovers::LockedDir::new(parent)?;
        // Off this task's way: on a worker of vt's unless a thread working ahead did it.
        if !leftovers::swept() {
            let _ = crate::ahead::later(move || leftovers::sweep_once(parent));
        }
        let mut preload = OsString::from(&library);
        if let Some(existing) = existing.filter(|v| !v.is_empty()) {
            preload.push(":");
            preload.push(existing);
        }
        let vars = [
            (OsString::from("LD_PRELOAD"), preload),
            (
                OsString::from(preload_abi::DIR_ENV),
                buffers.path().as_os_str().to_owned(),
            ),
        ];
        let injection = Injection {
            library_parent: library_dir
                .is_none()
                .then(|| library.parent().map(Path::to_path_buf))
                .flatten(),
            library_dir,
            buffers,
            early: Default::default(),
        };
        Ok((injection, vars))
    }

    /// vt's directories a sandboxed task must see: the buffers (written) and the library.
    pub fn private_dirs(&self) -> Vec<(&Path, bool)> {
        let mut dirs = vec![(self.buffers.path(), true)];
        dirs.extend(self.library_dir.as_ref().map(|d| (d.path(), false)));
        dirs.extend(self.library_parent.as_deref().map(|d| (d, false)));
        dirs
    }

    /// vt's own directories: what is in them (the library, the buffers) is not the task's.
    pub fn own_dirs(&self) -> Vec<&Path> {
        let mut dirs = vec![self.buffers.path()];
        dirs.extend(self.library_dir.as_ref().map(|d| d.path()));
        dirs
    }

    /// What reads the records the task's processes have finished, while the task runs: for
    /// a thread that wakes up during the run anyway (fanotify's reader). Whatever it reads
    /// is not left for [`Injection::collect`], after the task, where the user waits for it.
    pub fn reader_while_running(&self) -> Box<dyn FnMut() + Send> {
        let early = std::sync::Arc::clone(&self.early);
        let dir = self.buffers.path().to_path_buf();
        Box::new(move || {
            crate::timings::time("while running: preload buffers", || early.read(&dir))
        })
    }

    /// Adds every record of every buffer to `log` and drops the loader's accesses to vt's
    /// own directories; a buffer that cannot be read whole is a gap. Call after the whole
    /// tree is gone.
    pub fn collect(&self, log: &mut AccessLog) {
        // The sweep started with the first task is done before any task ends (so a vt that
        // runs one short task still leaves no leftovers of killed vts behind it).
        leftovers::sweep_once(buffer_parent());
        let own = self.own_dirs();
        log.accesses
            .retain(|a| !own.iter().any(|dir| is_under(&a.path, dir)));
        // What was read while the task ran, and where each buffer's unread records begin.
        let (read_early, unread) = self.early.finish();
        let entries = match std::fs::read_dir(self.buffers.path()) {
            Ok(entries) => entries,
            Err(e) => {
                log.gap(
                    0,
                    "preload",
                    format!("cannot list the preload buffers: {e}"),
                );
                return;
            }
        };
        let mut files = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => files.push(entry.path()),
                Err(e) => log.gap(
                    0,
                    "preload",
                    format!("cannot list the preload buffers: {e}"),
                ),
            }
        }
        // Read on every CPU: this runs after the task has finished, so it is time the user
        // waits for (45 ms for the 600 buffers of a 200-file C build, read one by one).
        let next = std::sync::atomic::AtomicUsize::new(0);
        let read_some = || {
            let mut part = AccessLog::default();
            let mut paths = CleanPaths::default();
            let mut seen = Seen::default();
            let mut bytes = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(path) = files.get(i) else { break };
                let unread = path.file_name().and_then(|name| unread.get(name));
                let from = unread.map_or(preload_abi::HEADER_LEN, early::Unread::from);
                match read_buffer(path, from, &mut bytes) {
                    Ok(true) => {
                        let buffer = Buffer {
                            bytes: &bytes,
                            from,
                            unread,
                            path,
                        };
                        add_buffer(&buffer, &mut paths, &mut seen, &mut part)
                    }
                    Ok(false) => part.gap(
                        0,
                        "preload",
                        format!("{} is not a vt preload buffer", path.display()),
                    ),
                    Err(e) => {
                        part.gap(0, "preload", format!("cannot read {}: {e}", path.display()))
                    }
                }
                // Here, on every reader thread, rather than all at once when the directory
                // is dropped: freeing a buffer's pages is most of what removing it costs
                // (3 ms for a C build's 600 buffers, on one thread after everything else).
                let _ = std::fs::remove_file(path);
            }
            part
        };
        let threads = crate::cpus()
            .clamp(1, 4)
            .min(files.len().div_ceil(16).max(1));
        let parts: Vec<AccessLog> = std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(read_some)).collect();
            let mut parts = vec![read_some()];
            for helper in helpers {
                parts.push(helper.join().unwrap_or_else(|_| {
                    let mut lost = AccessLog::default();
                    lost.gap(
                        0,
                        "preload",
                        "a thread reading the preload buffers panicked",
                    );
                    lost
                }));
            }
            parts
        });
        log.absorb_all(parts);
        log.absorb(read_early);
    }
}

/// The records of the buffer at `path` from offset `from` to its cursor, into `bytes`
/// (reused from buffer to buffer: a fresh allocation of a few hundred KiB is a fresh
/// mapping, faulted in page by page and unmapped again; the rest of the sparse file is
/// zeros); `false` if it is not a buffer of this recorder.
fn read_buffer(path: &Path, from: usize, bytes: &mut Vec<u8>) -> std::io::Result<bool> {
    let file = std::fs::File::open(path)?;
    let Some(end) = early::records_end(&file)? else {
        return Ok(false);
    };
    bytes.clear();
    bytes.resize(end.saturating_sub(from), 0);
    std::os::unix::fs::FileExt::read_exact_at(&file, bytes, from as u64)?;
    Ok(true)
}

/// The records one reader thread has turned into accesses, by what they say (the call, its
/// outcome and the path; not when, nor which process), and where those accesses are.
///
/// Processes repeat each other: every `cc1` of a C build reads the same headers, and a
/// process repeats itself (gcc resolves the same include directories for every header).
/// The earliest of identical records is the observation; later ones add nothing to what
/// was read or written before what, which is all the cache asks of the log
/// (`executor::cache::observe`). On the 200-file C build: 264 000 records, 87 000 accesses
/// when kept once per process, a few thousand when kept once.
#[derive(Default)]
struct Seen {
    /// Serialized record content → the range of `AccessLog::accesses` it produced.
    accesses: rustc_hash::FxHashMap<Box<[u8]>, (usize, usize)>,
    key: Vec<u8>,
}

/// The content of `record` as a lookup key, written into `key` (reused: most records
/// repeat one already seen).
fn record_key<'k>(key: &'k mut Vec<u8>, record: &Record<'_>) -> &'k [u8] {
    key.clear();
    key.extend_from_slice(&[record.op, record.bits, u8::from(record.done)]);
    key.extend_from_slice(&record.flags.to_le_bytes());
    key.extend_from_slice(&record.result.to_le_bytes());
    // `/proc/self/...` means a different file in each process.
    let pid = if record.path.starts_with(b"/proc/") {
        record.pid
    } else {
        0
    };
    key.extend_from_slice(&pid.to_le_bytes());
    key.extend_from_slice(record.path);
    key
}

/// Records copied out of the buffer file `path`, from offset `from` to its cursor.
#[derive(Clone, Copy)]
struct Buffer<'a> {
    bytes: &'a [u8],
    from: usize,
    /// What was not read while the task ran (`None`: nothing was read).
    unread: Option<&'a early::Unread>,
    path: &'a Path,
}

/// Adds the records of `buffer` that were not added while the task ran.
fn add_buffer(buffer: &Buffer<'_>, paths: &mut CleanPaths, seen: &mut Seen, log: &mut AccessLog) {
    let Buffer {
        bytes,
        from,
        unread,
        path,
    } = *buffer;
    let mut records = preload_abi::records_in(bytes);
    // Room for every record being new, grown once instead of doubling (each doubling of
    // the map rehashes it): a record is its 32-byte header and a path, ~64 bytes on a
    // node run whose 8 000 records name 6 000 different files.
    let expected = bytes.len() / 64;
    seen.accesses.reserve(expected);
    log.accesses.reserve(expected);
    let mut last_pid = None;
    loop {
        let offset = from + records.offset();
        let Some(record) = records.next() else { break };
        match record {
            // Added while the task ran.
            Ok(_) if unread.is_some_and(|u| !u.wants(offset)) => {}
            Ok(record) => add_record(&record, &mut last_pid, paths, seen, log),
            Err(BufferError::Torn { offset } | BufferError::Corrupt { offset }) => log.gap(
                0,
                "preload",
                format!(
                    "buffer {} is unreadable from offset {} (a process died while \
                     reserving a record, or the file was damaged)",
                    path.display(),
                    from + offset
                ),
            ),
            Err(BufferError::NotABuffer) => {}
        }
    }
}

/// Adds one record's accesses to `log`, unless an identical record was added before
/// (`seen`); `last_pid`: the process of the record before it, whose process is known.
fn add_record(
    record: &Record<'_>,
    last_pid: &mut Option<u32>,
    paths: &mut CleanPaths,
    seen: &mut Seen,
    log: &mut AccessLog,
) {
    log.fast_path_records += 1;
    if *last_pid != Some(record.pid) {
        log.processes.insert(record.pid);
        *last_pid = Some(record.pid);
    }
    let key = record_key(&mut seen.key, record);
    if let Some(&(start, end)) = seen.accesses.get(key) {
        // Seen before: only an earlier time can matter.
        for access in &mut log.accesses[start..end] {
            if record.time_ns < access.at_ns {
                access.at_ns = record.time_ns;
                access.pid = record.pid;
            }
        }
        return;
    }
    let key: Box<[u8]> = key.into();
    let start = log.accesses.len();
    for (kind, access_path) in decode_record(record, paths) {
        log.push_at(kind, access_path, record.pid, record.time_ns);
    }
    seen.accesses.insert(key, (start, log.accesses.len()));
}

fn is_missing(errno: i32) -> bool {
    errno == libc::ENOENT || errno == libc::ENOTDIR
}

/// What a call that failed with `errno` on the clean `path` found there. ENOTDIR is
/// ambiguous: a component on the way is not a directory (then nothing is at `path`), or
/// `path` itself is a file asked for as a directory (`O_DIRECTORY`, a trailing slash: cp
/// opens its destination that way first). The supervisor decides such a call by looking at
/// the clean path, so the record is decided the same way: by looking now.
fn found_on_failure(errno: i32, path: &Path, follow: bool) -> Existence {
    match errno {
        libc::ENOTDIR => probe(path, follow),
        _ if is_missing(errno) => Existence::Missing,
        _ => Existence::Unknown,
    }
}

/// The accesses one record stands for: what [`super::decode`] makes of the same syscall,
/// except that a finished call's own result says whether the path existed. A pending record
/// (the process died during the call) is decided by looking now, as the supervisor would.
pub fn decode_record(record: &Record<'_>, paths: &mut CleanPaths) -> Vec<(AccessKind, PathBuf)> {
    use AccessKind::*;
    let path = without_self_links(paths.absolute(record.path), record.pid);
    let errno = -record.result;
    match record.op {
        OP_OPEN if record.flags & libc::O_CREAT != 0 && record.done => {
            // The recorder looked the path up just before the open; the result says whether
            // the open then created it.
            let existence = if record.bits & BIT_UNSURE != 0 {
                Existence::Unknown
            } else if record.bits & BIT_FOUND == 0 {
                Existence::Missing
            } else if record.bits & BIT_DIR != 0 {
                Existence::Dir
            } else {
                Existence::File
            };
            match existence {
                Existence::Missing if record.result == 0 => vec![(Create, path)],
                // Not there, and the open failed (no such directory, no permission to
                // create, read-only file system, …): nothing was created, the task only
                // found that the name is free. (The supervisor, which never sees results,
                // has to call this a creation.)
                Existence::Missing => vec![(Missing, path)],
                _ => open_accesses(path, record.flags, existence),
            }
        }
        OP_OPEN => {
            let flags = record.flags;
            let existence = if record.done {
                if record.result == 0 && record.bits & BIT_DIR != 0 {
                    Existence::Dir
                } else if record.result == 0 {
                    Existence::File
                } else {
                    found_on_failure(errno, &path, flags & libc::O_NOFOLLOW == 0)
                }
            } else {
                probe(&path, flags & libc::O_NOFOLLOW == 0)
            };
            // Not creating (or pending: decided by looking), so the result alone decides.
            open_accesses(path, flags, existence)
        }
        OP_PROBE_FOLLOW | OP_PROBE_NOFOLLOW => {
            let missing = if record.done {
                record.result != 0
                    && found_on_failure(errno, &path, record.op == OP_PROBE_FOLLOW)
                        == Existence::Missing
            } else {
                probe(&path, record.op == OP_PROBE_FOLLOW) == Existence::Missing
            };
            vec![(if missing { Missing } else { Stat }, path)]
        }
        // A finished exec failed; a pending one succeeded (or its process died on the way).
        OP_EXEC if record.done && is_missing(errno) => vec![(Missing, path)],
        OP_EXEC => exec_accesses(path),
        // As the supervisor decides a removal: a name that was not there is a lookup that
        // found nothing; anything else (removed, or refused: not empty, a directory) is
        // the task acting on its output. A pending one (its process died) counts as done.
        OP_REMOVE if record.done && is_missing(errno) => vec![(Missing, path)],
        OP_REMOVE => vec![(Delete, path)],
        // A newer library's operation this vt does not know: say so rather than drop it.
        _ => vec![(Read, path)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn record(op: u8, flags: i32, result: i32, bits: u8, path: &[u8]) -> Record<'_> {
        Record {
            done: true,
            op,
            bits,
            pid: 7,
            flags,
            result,
            time_ns: 1,
            path,
        }
    }

    #[test]
    fn records_decode_like_the_syscalls_they_stand_for() {
        use AccessKind::*;
        let p = PathBuf::from;
        let enoent = -libc::ENOENT;
        assert_eq!(
            decode_record(
                &record(OP_OPEN, 0, 0, 0, b"/a/./b"),
                &mut CleanPaths::default()
            ),
            vec![(Read, p("/a/b"))]
        );
        assert_eq!(
            decode_record(
                &record(OP_OPEN, 0, 0, BIT_DIR, b"/a"),
                &mut CleanPaths::default()
            ),
            vec![(Stat, p("/a"))]
        );
        assert_eq!(
            decode_record(
                &record(OP_OPEN, 0, enoent, 0, b"/x"),
                &mut CleanPaths::default()
            ),
            vec![(Missing, p("/x"))]
        );
        assert_eq!(
            decode_record(
                &record(OP_OPEN, libc::O_RDWR, 0, 0, b"/f"),
                &mut CleanPaths::default()
            ),
            vec![(Read, p("/f")), (Write, p("/f"))]
        );
        assert_eq!(
            decode_record(
                &record(OP_OPEN, libc::O_PATH, 0, 0, b"/f"),
                &mut CleanPaths::default()
            ),
            vec![(Stat, p("/f"))]
        );
        assert_eq!(
            decode_record(
                &record(OP_PROBE_NOFOLLOW, 0, -libc::EINVAL, 0, b"/usr"),
                &mut CleanPaths::default()
            ),
            vec![(Stat, p("/usr"))]
        );
        assert_eq!(
            decode_record(
                &record(OP_PROBE_FOLLOW, 0, -libc::ENOTDIR, 0, b"/etc/passwd/x"),
                &mut CleanPaths::default(),
            ),
            vec![(Missing, p("/etc/passwd/x"))]
        );
        assert_eq!(
            decode_record(
                &record(OP_PROBE_FOLLOW, 0, 0, 0, b"/proc/self/exe"),
                &mut CleanPaths::default()
            ),
            vec![(Stat, p("/proc/7/exe"))]
        );
        let remove = |result: i32| {
            decode_record(
                &record(OP_REMOVE, 0, result, 0, b"/w/tmp.s"),
                &mut CleanPaths::default(),
            )
        };
        assert_eq!(remove(0), vec![(Delete, p("/w/tmp.s"))]);
        assert_eq!(remove(-libc::ENOENT), vec![(Missing, p("/w/tmp.s"))]);
        assert_eq!(remove(-libc::ENOTEMPTY), vec![(Delete, p("/w/tmp.s"))]);
    }

    #[test]
    fn a_creating_open_is_decided_by_what_was_there_before_and_its_result() {
        use AccessKind::*;
        let p = PathBuf::from;
        let w = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
        let open = |flags: i32, result: i32, bits: u8| {
            decode_record(
                &record(OP_OPEN, flags, result, bits, b"/w/out.o"),
                &mut CleanPaths::default(),
            )
        };
        // Missing before, opened: the open created it.
        assert_eq!(open(w, 0, 0), vec![(Create, p("/w/out.o"))]);
        // There before: the task wrote to it.
        assert_eq!(open(w, 0, BIT_FOUND), vec![(Write, p("/w/out.o"))]);
        assert_eq!(
            open((w & !libc::O_WRONLY) | libc::O_RDWR, 0, BIT_FOUND),
            vec![(Read, p("/w/out.o")), (Write, p("/w/out.o"))]
        );
        // mkstemp's O_EXCL on a name that exists: only looked up.
        assert_eq!(
            open(w | libc::O_EXCL, -libc::EEXIST, BIT_FOUND),
            vec![(Stat, p("/w/out.o"))]
        );
        // No such directory, or no right to create: a lookup that found nothing.
        assert_eq!(open(w, -libc::ENOENT, 0), vec![(Missing, p("/w/out.o"))]);
        assert_eq!(open(w, -libc::EACCES, 0), vec![(Missing, p("/w/out.o"))]);
        // A directory: looked up, never written.
        assert_eq!(
            open(w, -libc::EISDIR, BIT_FOUND | BIT_DIR),
            vec![(Stat, p("/w/out.o"))]
        );
    }

    #[test]
    fn a_pending_record_is_decided_by_looking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let present = dir.path().join("present");
        std::fs::write(&present, "x").expect("write");
        let absent = dir.path().join("absent");
        for (path, kind) in [(&present, AccessKind::Stat), (&absent, AccessKind::Missing)] {
            let bytes = path.as_os_str().as_bytes();
            let mut r = record(OP_PROBE_FOLLOW, 0, 0, 0, bytes);
            r.done = false;
            assert_eq!(
                decode_record(&r, &mut CleanPaths::default()),
                vec![(kind, path.clone())]
            );
        }
    }

    #[test]
    fn enotdir_on_a_file_that_is_there_is_not_a_missing_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("dest");
        std::fs::write(&file, "x").expect("write");
        let decode = |op, flags, path: &Path| {
            decode_record(
                &record(op, flags, -libc::ENOTDIR, 0, path.as_os_str().as_bytes()),
                &mut CleanPaths::default(),
            )
        };
        // cp's first look at its destination: open(dest, O_PATH | O_DIRECTORY) = ENOTDIR.
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        assert_eq!(
            decode(OP_OPEN, flags, &file),
            vec![(AccessKind::Stat, file.clone())]
        );
        assert_eq!(
            decode(OP_PROBE_FOLLOW, 0, &file),
            vec![(AccessKind::Stat, file.clone())]
        );
        // A file on the way: nothing can be at dest/x.
        let below = file.join("x");
        assert_eq!(
            decode(OP_OPEN, flags, &below),
            vec![(AccessKind::Missing, below.clone())]
        );
        assert_eq!(
            decode(OP_PROBE_FOLLOW, 0, &below),
            vec![(AccessKind::Missing, below.clone())]
        );
    }
}

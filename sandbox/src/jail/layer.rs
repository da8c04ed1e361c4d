//! The copy-on-write layer of a sandboxed task that declared no outputs: the task sees its
//! package directory writable through an overlayfs ([`super::plan::Mount::Overlay`]); what
//! it changed is in the layer's upper directory, which vt applies to the host after the
//! task succeeded ([`apply`]) and throws away otherwise ([`LayerDirs`]'s drop).
//!
//! The upper directory is overlayfs's record of the changes (the kernel's
//! `Documentation/filesystems/overlayfs.rst`): a file or symlink there is the new content
//! of that path, a character device 0/0 (a *whiteout*) says the path was removed, and a
//! directory with the xattr `user.overlay.opaque = "y"` replaced the one below (its old
//! entries are gone). Anything else is a directory that holds changes further down.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::plan::Layer;

/// A layer's own directories (`upper`, `work`), removed when dropped.
#[derive(Debug)]
pub struct LayerDirs {
    layer: Layer,
    dir: PathBuf,
    kept: bool,
    /// Held while the layer is in use: a vt sweeping stale layers takes only those whose
    /// lock it can get (a pid would not do: vt processes in other pid namespaces, CI
    /// containers sharing a cache, would look dead).
    lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

impl LayerDirs {
    /// Creates fresh `upper` and `work` directories for a view of `path`, in a new
    /// directory under `base` (which must be on a file system overlayfs can write to, and
    /// not inside `path`). In a run of several tasks ([`keep_ahead`]) they were made while
    /// the task before ran, and the next task's are started.
    pub fn create(base: &Path, path: &Path) -> io::Result<LayerDirs> {
        std::fs::create_dir_all(base)?;
        sweep_once(base);
        let made = match take_ahead(base) {
            Some(made) => made,
            None => Made::new(base)?,
        };
        if KEEP_AHEAD.load(Ordering::Relaxed) {
            make_ahead(base);
        }
        let layer = Layer {
            path: path.to_path_buf(),
            upper: made.dir.join("upper"),
            work: made.dir.join("work"),
        };
        look_like(&layer.upper, path);
        Ok(LayerDirs {
            layer,
            dir: made.dir,
            kept: false,
            lock: Some(made.lock),
        })
    }

    pub fn layer(&self) -> &Layer {
        &self.layer
    }

    /// The layer's file system, if it has no room left (no block or no inode free): a
    /// task that failed then most likely failed for that (`ENOSPC` on its writes into its
    /// package), not for anything of its own. A layer in a tmpfs temp directory holds the
    /// task's whole output in memory until it is applied.
    pub fn out_of_space(&self) -> Option<&Path> {
        let fs = nix::sys::statvfs::statvfs(&self.layer.upper).ok()?;
        (fs.blocks_available() == 0 || fs.files_available() == 0).then_some(self.dir.as_path())
    }

    /// Leaves what the task wrote in place, renamed `kept-…` so no later vt sweeps it;
    /// returns where it is.
    pub fn keep(mut self) -> PathBuf {
        self.kept = true;
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let kept = self
            .dir
            .with_file_name(format!("kept-{}", name.unwrap_or_default()));
        match std::fs::rename(&self.dir, &kept) {
            Ok(()) => kept.join("upper"),
            Err(_) => self.layer.upper.clone(),
        }
    }

    /// Applies the task's changes to the host directory (see [`apply`]), and to the
    /// directory itself what the task changed of its mode and times ([`look_like`]).
    pub fn apply(&self) -> io::Result<Applied> {
        let applied = apply(&self.layer.upper, &self.layer.path)?;
        if let (Ok(upper), Ok(host)) = (
            std::fs::symlink_metadata(&self.layer.upper),
            std::fs::symlink_metadata(&self.layer.path),
        ) {
            // Only what differs: a change of the package directory's mode or times is a
            // change of its ctime, which the change guard reads for what the task looked
            // at. Its access time is no change (a task that listed its package read it).
            if upper.mode() & 0o7777 != host.mode() & 0o7777 {
                std::fs::set_permissions(
                    &self.layer.path,
                    std::fs::Permissions::from_mode(upper.mode() & 0o7777),
                )?;
            }
            if (upper.mtime(), upper.mtime_nsec()) != (host.mtime(), host.mtime_nsec()) {
                let _ = keep_times(&self.layer.path, &upper);
            }
        }
        Ok(applied)
    }
}

/// Gives a layer's upper directory the mode, owner and times of the directory it is a view
/// of. The overlay's root shows its upper directory's own attributes, not the lower one's:
/// the task would otherwise see its package with the mode vt made the layer with and the
/// layer's age (`stat .` said 755 and a moment ago for a package of mode 750 from 2005).
/// Best effort: where one cannot be set (another user's package, for a vt not root), the
/// task sees the layer's, as before.
fn look_like(upper: &Path, dir: &Path) {
    let (Ok(meta), Ok(made)) = (std::fs::metadata(dir), std::fs::symlink_metadata(upper)) else {
        return;
    };
    // Each only where it differs (a package of vt's own user with the usual mode needs
    // neither): every call costs a write of the inode.
    if (made.uid(), made.gid()) != (meta.uid(), meta.gid()) {
        let _ = std::os::unix::fs::lchown(upper, Some(meta.uid()), Some(meta.gid()));
    }
    if made.mode() & 0o7777 != meta.mode() & 0o7777 {
        let _ =
            std::fs::set_permissions(upper, std::fs::Permissions::from_mode(meta.mode() & 0o7777));
    }
    let _ = keep_times(upper, &meta);
}

/// A layer's directories, made and locked, not yet given a directory to be a view of.
struct Made {
    dir: PathBuf,
    lock: nix::fcntl::Flock<std::fs::File>,
}

impl Made {
    /// A new directory under `base` (which exists) with its lock held and an empty `upper`
    /// and `work`.
    fn new(base: &Path) -> io::Result<Made> {
        let dir = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(base)?
            .keep();
        let lock = std::fs::File::create(dir.join("lock"))
            .and_then(|file| {
                nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
                    .map_err(|(_, errno)| io::Error::from(errno))
            })
            .inspect_err(|_| {
                let _ = std::fs::remove_dir_all(&dir);
            })?;
        let made = std::fs::create_dir(dir.join("upper"))
            .and_then(|()| std::fs::create_dir(dir.join("work")));
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(Made { dir, lock })
    }
}

/// Set for a run of several tasks: taking a layer starts making the next one in the same
/// directory ([`keep_ahead`]).
static KEEP_AHEAD: AtomicBool = AtomicBool::new(false);

/// The layer being made for the next task, and the directory it is made in.
type Ahead = Option<(PathBuf, crate::ahead::Pending<io::Result<Made>>)>;
static AHEAD: std::sync::Mutex<Ahead> = std::sync::Mutex::new(None);

/// From now on, each layer taken starts the next one on vt's worker thread
/// ([`crate::ahead`]), as
/// [`super::network::keep_ahead`] does for network namespaces: making a layer is a directory,
/// a lock file and two directories, 0.2–0.4 ms of each sandboxed task's start in a run of
/// 100 on this project's machine (its ext4, without a journal, skips every inode freed in
/// the last minute when it allocates one, and each task frees a layer's). A lone task does
/// not ask. The one no task took is removed at the run's end ([`let_go_of_the_one_ahead`]).
pub fn keep_ahead() {
    KEEP_AHEAD.store(true, Ordering::Relaxed);
}

/// Removes the layer made ahead, if one was: at the end of a run, whose last task (or a
/// cache hit) did not take it. It was never mounted, so this is a lock file and three
/// directories; removed here rather than left for the next vt's sweep.
pub fn let_go_of_the_one_ahead() {
    let ahead = AHEAD.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some((_, made)) = ahead
        && let Some(Ok(made)) = made.wait()
    {
        remove_layer(&made.dir);
    }
}

/// Starts making a layer in `base` unless one is being made already.
fn make_ahead(base: &Path) {
    let mut ahead = AHEAD.lock().unwrap_or_else(|p| p.into_inner());
    if ahead.is_none() {
        let dir = base.to_path_buf();
        *ahead =
            crate::ahead::later(move || Made::new(&dir)).map(|made| (base.to_path_buf(), made));
    }
}

/// The layer made ahead in `base`, if one was (waiting for it to be done); `None` if none
/// was started there or it could not be made (the caller makes one itself).
fn take_ahead(base: &Path) -> Option<Made> {
    let made = {
        let mut ahead = AHEAD.lock().unwrap_or_else(|p| p.into_inner());
        if ahead.as_ref().is_none_or(|(dir, _)| dir != base) {
            return None;
        }
        ahead.take()?.1
    };
    made.wait()?.ok()
}

/// Where this process found that the host refuses a layer: inside a container whose root
/// is itself an overlayfs ("not supported as upperdir"), or under a seccomp policy without
/// the new mount API. Keyed by the layers' directory and the file system of the directory
/// layered, the two things overlayfs judges.
///
/// vt does not check beforehand: a task whose sandbox fails at its layer has not run (the
/// failure is before exec), so the caller notes it here and runs the task again without
/// one. A check would be a whole sandboxed `/bin/true`, ~10 ms on every lone
/// `vt exec --sandbox`.
type Refusals = Vec<((PathBuf, u64), String)>;
static REFUSED: std::sync::Mutex<Refusals> = std::sync::Mutex::new(Vec::new());

fn refusal_key(base: &Path, path: &Path) -> Option<(PathBuf, u64)> {
    let device = std::fs::metadata(path).ok()?.dev();
    Some((base.to_path_buf(), device))
}

/// Why a layer of `path` in `base` cannot be made, if a task of this process found out.
pub fn refused(base: &Path, path: &Path) -> Option<String> {
    let key = refusal_key(base, path)?;
    let refused = REFUSED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    refused
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, why)| why.clone())
}

/// Records that the host refused a layer of `path` in `base`, and why.
pub fn note_refused(base: &Path, path: &Path, why: String) {
    let Some(key) = refusal_key(base, path) else {
        return;
    };
    let mut refused = REFUSED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !refused.iter().any(|(k, _)| *k == key) {
        refused.push((key, why));
    }
}

impl Drop for LayerDirs {
    fn drop(&mut self) {
        if !self.kept {
            remove_later(std::mem::take(&mut self.dir), self.lock.take());
        }
    }
}

/// Where the remover thread takes its work from: layers nothing uses, each with its lock
/// if this process holds it.
type Removal = (PathBuf, Option<nix::fcntl::Flock<std::fs::File>>);
type Removals = std::sync::Mutex<std::sync::mpsc::Sender<Removal>>;

/// Removes a layer after the task's end, not on its way: removing even an empty layer's
/// directories (overlayfs's `work/work` among them) took ~0.5 ms of every layered task's
/// end (`VT_TIMINGS`), and renaming it `trash-…` first, ~0.07 ms more. The layer goes to
/// one thread of the process with its lock, which it holds until the layer is gone (no
/// other vt's [`sweep`] takes a locked layer); that thread renames it and removes it; what
/// it has not removed when vt exits, the next vt's sweep does. Removed here if there is no
/// thread.
fn remove_later(dir: PathBuf, lock: Option<nix::fcntl::Flock<std::fs::File>>) {
    static REMOVER: std::sync::OnceLock<Option<Removals>> = std::sync::OnceLock::new();
    let remover = REMOVER.get_or_init(|| {
        let (queue, removals) = std::sync::mpsc::channel::<Removal>();
        std::thread::Builder::new()
            .name("vt-layer-remover".into())
            .spawn(move || {
                for (dir, lock) in removals {
                    remove_layer(&as_trash(dir));
                    drop(lock);
                }
            })
            .ok()
            .map(|_| std::sync::Mutex::new(queue))
    });
    let unqueued = match remover {
        Some(queue) => queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send((dir, lock))
            .err()
            .map(|unsent| unsent.0),
        None => Some((dir, lock)),
    };
    if let Some((dir, _lock)) = unqueued {
        remove_layer(&as_trash(dir));
    }
}

/// `dir` renamed `trash-…` (where it is not yet): a removal cut short by vt's exit may have
/// removed the lock file already, and a sweep leaves a `layer-…` without one alone (it is
/// being created), but removes any `trash-…`.
fn as_trash(dir: PathBuf) -> PathBuf {
    let Some(name) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return dir;
    };
    if name.starts_with(TRASH) {
        return dir;
    }
    let trash = dir.with_file_name(format!("{TRASH}{name}"));
    match std::fs::rename(&dir, &trash) {
        Ok(()) => trash,
        Err(_) => dir,
    }
}

/// The name prefix of a layer nothing uses any more, for whoever removes it first.
const TRASH: &str = "trash-";

fn remove_layer(dir: &Path) {
    // overlayfs leaves `work/work` with mode 000: a non-root vt must open it up first.
    let inner = dir.join("work/work");
    let _ = std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o700));
    let _ = std::fs::remove_dir_all(dir);
}

/// [`sweep`]s `base` the first time this process makes a layer there, not for every task
/// of a run: what a vt killed meanwhile leaves is for the next vt to sweep.
fn sweep_once(base: &Path) {
    static SWEPT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut swept = SWEPT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !swept.iter().any(|b| b == base) {
        swept.push(base.to_path_buf());
        sweep(base);
    }
}

/// How long a layer may go without its lock file before it counts as abandoned.
const ABANDONED: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes the layers of vt processes that are gone (a vt killed by SIGKILL cannot remove
/// its own): those whose lock nobody holds. A layer without a lock file is being created
/// right now and is left alone (unless it was [`ABANDONED`]); one kept after a failed apply is named `kept-…` and never
/// swept; a `trash-…` one (an earlier vt's way of discarding) is handed to the remover thread
/// whoever's it was.
fn sweep(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(TRASH) {
            // Off the way of the task about to start, like the layers this vt discards.
            remove_later(entry.path(), None);
            continue;
        }
        if !name.to_string_lossy().starts_with("layer-") {
            continue;
        }
        let Ok(file) = std::fs::File::open(entry.path().join("lock")) else {
            // Being created right now, unless it has been for an hour: then its vt exited
            // between making it and locking it (a layer made ahead of a task that never came).
            if entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|at| at.elapsed().is_ok_and(|age| age > ABANDONED))
            {
                remove_later(entry.path(), None);
            }
            continue;
        };
        if let Ok(lock) = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        {
            // Off the way too, its lock held until it is gone.
            remove_later(entry.path(), Some(lock));
        }
    }
}

/// What applying a layer changed on the host.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Files and symlinks written (moved or copied from the layer).
    pub written: Vec<PathBuf>,
    /// Paths removed (whiteouts, and what an opaque directory replaced).
    pub removed: Vec<PathBuf>,
}

/// Applies the changes recorded in `upper` to `target` (the host directory the layer was a
/// view of). Files are moved when the layer is on the same file system, copied otherwise;
/// each lands by a rename, so a reader of the host never sees half a file.
pub fn apply(upper: &Path, target: &Path) -> io::Result<Applied> {
    let mut applied = Applied::default();
    apply_dir(upper, target, &mut applied)?;
    Ok(applied)
}

fn apply_dir(upper: &Path, target: &Path, applied: &mut Applied) -> io::Result<()> {
    for entry in std::fs::read_dir(upper)? {
        let entry = entry?;
        let from = entry.path();
        let to = target.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&from)?;
        let kind = meta.file_type();
        if kind.is_char_device() && meta.rdev() == 0 {
            if remove_any(&to)? {
                applied.removed.push(to);
            }
        } else if kind.is_dir() {
            // A directory stays (and takes the changes below) unless overlayfs marked it as
            // replacing the one below, or a non-directory is there.
            let stays = match std::fs::symlink_metadata(&to) {
                Ok(existing) if existing.is_dir() && !is_opaque(&from) => true,
                Ok(_) => {
                    remove_any(&to)?;
                    applied.removed.push(to.clone());
                    false
                }
                Err(_) => false,
            };
            if !stays {
                std::fs::create_dir(&to)?;
            }
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            apply_dir(&from, &to, applied)?;
            // The times the task saw: the apply's own moves into the directory changed
            // them (overlayfs's copy-up keeps a directory's times, and the task's changes
            // in it, or its `touch`, `tar` or `cp -a`, set them in the layer). Best effort:
            // a directory of another user's that the task could write to takes no times
            // from vt (`EPERM`), and then has the times of its last change, the apply's.
            let _ = keep_times(&to, &meta);
        } else {
            if std::fs::symlink_metadata(&to).is_ok_and(|m| m.is_dir()) {
                remove_any(&to)?;
            }
            place(&from, &to, &meta)?;
            applied.written.push(to);
        }
    }
    Ok(())
}

/// Puts `from` at `to`: a rename on the same file system, else a copy next to `to`
/// renamed over it.
fn place(from: &Path, to: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => {
            strip_overlay_xattrs(to);
            return Ok(());
        }
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
        Err(e) => return Err(e),
    }
    let parent = to.parent().unwrap_or(Path::new("/"));
    let name = to.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    let mut temp_name = std::ffi::OsString::from(".vt-layer-");
    temp_name.push(&name);
    let temp = parent.join(temp_name);
    let _ = std::fs::remove_file(&temp);
    let kind = meta.file_type();
    let copied = if kind.is_symlink() {
        std::fs::read_link(from).and_then(|target| std::os::unix::fs::symlink(target, &temp))
    } else if kind.is_file() {
        std::fs::copy(from, &temp)
            .map(|_| ())
            .and_then(|()| copy_own_xattrs(from, &temp))
    } else if kind.is_fifo() || kind.is_socket() {
        // A fifo or a socket's name the task left: made again (a task in the sandbox can
        // make no device, and overlayfs's whiteouts never get here).
        nix::sys::stat::mknod(
            &temp,
            nix::sys::stat::SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT),
            nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777),
            0,
        )
        .map_err(io::Error::from)
    } else {
        return Ok(());
    };
    // What a rename would have kept: the copy stands in for the task's own file.
    copied
        .and_then(|()| keep_times(&temp, meta))
        .and_then(|()| std::fs::rename(&temp, to))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&temp);
        })
}

/// Gives `path` (a symlink itself, not its target) the access and modification times in
/// `meta`. A task that extracted an archive, ran `cp -p` or `touch -d` left them on
/// purpose, and `make` decides by them; `std::fs::copy` gives a copy the time of the copy,
/// and moving entries into a directory gives it the time of the move.
fn keep_times(path: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    use nix::sys::time::TimeSpec;
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &TimeSpec::new(meta.atime(), meta.atime_nsec()),
        &TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Copies the extended attributes the task set on `from` (the `user.` ones, overlayfs's own
/// left out) to `to`, as a rename would have kept them; `std::fs::copy` copies none. A file
/// system that has no user attributes is not an error: the task's own write there would
/// have found none either.
fn copy_own_xattrs(from: &Path, to: &Path) -> io::Result<()> {
    for name in xattr_names(from)?.into_iter().filter(|name| {
        name.starts_with(b"user.") && !OVERLAY_XATTRS.iter().any(|p| name.starts_with(p))
    }) {
        match set_xattr(to, &name, &xattr_value(from, &name)?) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            set => set?,
        }
    }
    Ok(())
}

/// The prefixes of overlayfs's own extended attributes: `user.overlay.` on a mount with
/// `userxattr` (vt's), `trusted.overlay.` on one without.
const OVERLAY_XATTRS: [&[u8]; 2] = [b"user.overlay.", b"trusted.overlay."];

/// Removes overlayfs's own extended attributes from `path`, a file the task changed that
/// was moved from the upper directory. A file overlayfs copied up carries
/// `user.overlay.origin` (the file below it came from): the kernel's bookkeeping of the
/// layer, never the task's (overlayfs refuses a task's own writes of those names), so
/// the host file must not keep it, as it would not have had the task written the file
/// directly; an overlay that later had the package as its upper directory would read it
/// as its own. Best effort: the file's content is in place either way, and a file system
/// without extended attributes has none of these.
fn strip_overlay_xattrs(path: &Path) {
    let (Ok(c_path), Ok(names)) = (c_string(path.as_os_str().as_bytes()), xattr_names(path)) else {
        return;
    };
    for name in names
        .iter()
        .filter(|name| OVERLAY_XATTRS.iter().any(|prefix| name.starts_with(prefix)))
    {
        let Ok(c_name) = c_string(name) else {
            continue;
        };
        // SAFETY: both strings are NUL-terminated.
        unsafe { libc::lremovexattr(c_path.as_ptr(), c_name.as_ptr()) };
    }
}

/// The names of `path`'s extended attributes: the path's own, a symlink's rather than its
/// target's.
pub fn xattr_names(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let c_path = c_string(path.as_os_str().as_bytes())?;
    let list = read_sized(|buffer| {
        // SAFETY: llistxattr writes at most `buffer.len()` bytes into `buffer`.
        unsafe { libc::llistxattr(c_path.as_ptr(), buffer.as_mut_ptr().cast(), buffer.len()) }
    })?;
    Ok(list
        .split(|b| *b == 0)
        .filter(|name| !name.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// The value of `path`'s extended attribute `name` (the path's own, not a link's target's).
fn xattr_value(path: &Path, name: &[u8]) -> io::Result<Vec<u8>> {
    let (c_path, c_name) = (c_string(path.as_os_str().as_bytes())?, c_string(name)?);
    read_sized(|buffer| {
        // SAFETY: lgetxattr writes at most `buffer.len()` bytes into `buffer`.
        unsafe {
            libc::lgetxattr(
                c_path.as_ptr(),
                c_name.as_ptr(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        }
    })
}

/// Sets `path`'s extended attribute `name` (the path's own, not a link's target's).
fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let (c_path, c_name) = (c_string(path.as_os_str().as_bytes())?, c_string(name)?);
    // SAFETY: NUL-terminated strings and a value of `value.len()` bytes.
    let set = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if set == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What a size-then-fill call (`llistxattr`, `lgetxattr`) gives: asked once with an empty
/// buffer for the size it needs, then with a buffer of that size. A value that grew in
/// between fails with `ERANGE`.
fn read_sized(call: impl Fn(&mut [u8]) -> libc::ssize_t) -> io::Result<Vec<u8>> {
    let filled =
        |buffer: &mut [u8]| usize::try_from(call(buffer)).map_err(|_| io::Error::last_os_error());
    let mut bytes = vec![0u8; filled(&mut [])?];
    let n = filled(&mut bytes)?;
    bytes.truncate(n);
    Ok(bytes)
}

/// `bytes` as a C string; one with a NUL inside is no path or name the kernel takes.
fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Removes whatever is at `path`; false if nothing was there.
fn remove_any(path: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path).map(|()| true),
        Ok(_) => std::fs::remove_file(path).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether overlayfs marked `dir` as replacing the directory below it.
fn is_opaque(dir: &Path) -> bool {
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut value = [0u8; 4];
    // SAFETY: lgetxattr writes at most `value.len()` bytes into `value`; both strings are
    // NUL-terminated.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"user.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn layers_of_vt_processes_that_are_gone_are_swept() {
        let base = tempfile::tempdir().expect("tempdir");
        // A layer whose lock nobody holds: its vt is gone.
        let dead = base.path().join("layer-abc");
        std::fs::create_dir_all(dead.join("work/work")).expect("mkdir");
        std::fs::write(dead.join("lock"), "").expect("lock");
        // One being created (no lock file yet), and one kept after a failed apply.
        let creating = base.path().join("layer-new");
        std::fs::create_dir_all(&creating).expect("mkdir");
        // One whose vt exited before it locked it, two hours ago.
        let abandoned = base.path().join("layer-old");
        std::fs::create_dir_all(abandoned.join("upper")).expect("mkdir");
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        std::fs::File::open(&abandoned)
            .and_then(|dir| dir.set_modified(two_hours_ago))
            .expect("set_modified");
        let kept = base.path().join("kept-layer-def");
        std::fs::create_dir_all(kept.join("upper")).expect("mkdir");
        // A layer some vt was done with but had not removed when it exited.
        let trash = base.path().join("trash-layer-ghi");
        std::fs::create_dir_all(trash.join("work/work")).expect("mkdir");
        let mine = LayerDirs::create(base.path(), Path::new("/x")).expect("layer");
        assert!(creating.exists(), "a layer being created was swept");
        assert!(kept.exists(), "a kept layer was swept");
        // A later sweep (another vt's: this process sweeps a base only once) leaves a
        // layer whose lock is held.
        sweep(base.path());
        assert!(mine.layer().upper.exists(), "a live vt's layer was swept");
        // Dropped, a layer goes to the remover thread with its lock, and is gone soon after.
        let dir = mine
            .layer()
            .upper
            .parent()
            .expect("layer dir")
            .to_path_buf();
        drop(mine);
        let gone = || {
            !dir.exists()
                && !dead.exists()
                && !abandoned.exists()
                && std::fs::read_dir(base.path())
                    .expect("list")
                    .flatten()
                    .all(|e| !e.file_name().to_string_lossy().starts_with(TRASH))
        };
        // The remover is another thread: wait for it, with a bound (no sleep decides).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !gone() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(!dead.exists(), "a dead vt's layer is left");
        assert!(!abandoned.exists(), "an abandoned layer is left");
        assert!(gone(), "the remover thread left a discarded layer");
        assert!(!trash.exists(), "another vt's discarded layer is left");
    }

    #[test]
    fn a_layer_made_ahead_is_the_next_one_taken_in_its_directory() {
        let (base, other) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        make_ahead(base.path());
        // Another directory's layer is made on the spot; the one ahead stays for its own.
        let elsewhere = LayerDirs::create(other.path(), Path::new("/x")).expect("layer");
        assert!(elsewhere.layer().upper.starts_with(other.path()));
        let ahead_in = |dir: &Path| {
            AHEAD
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_some_and(|(d, _)| d == dir)
        };
        assert!(
            ahead_in(base.path()),
            "the layer ahead was taken for another directory"
        );
        let taken = LayerDirs::create(base.path(), Path::new("/y")).expect("layer");
        assert!(!ahead_in(base.path()), "the layer ahead was not taken");
        let layer = taken.layer();
        assert_eq!(layer.path, Path::new("/y"));
        assert!(layer.upper.starts_with(base.path()));
        for dir in [&layer.upper, &layer.work] {
            let entries = std::fs::read_dir(dir).expect("made").count();
            assert_eq!(entries, 0, "{} is not empty", dir.display());
        }
        // Its lock is held: no sweep takes it.
        let lock = layer.upper.parent().expect("layer dir").join("lock");
        let file = std::fs::File::open(lock).expect("lock file");
        assert!(
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err(),
            "the layer made ahead is not locked"
        );
    }

    #[test]
    fn files_land_and_whiteouts_remove() {
        let temp = tempfile::tempdir().expect("tempdir");
        let (host, upper) = (temp.path().join("host"), temp.path().join("upper"));
        write(&host.join("keep.txt"), "kept");
        write(&host.join("gone.txt"), "old");
        write(&host.join("dist/old.js"), "old");
        write(&host.join("src/a.js"), "old a");
        write(&upper.join("src/a.js"), "new a");
        write(&upper.join("dist/new.js"), "new");
        std::os::unix::fs::symlink("src/a.js", upper.join("link")).expect("symlink");
        // A whiteout is a character device 0/0 (mknod as root, which the tests run as).
        let whiteout = CString::new(upper.join("gone.txt").as_os_str().as_bytes()).expect("c");
        // SAFETY: mknod on a NUL-terminated path.
        let made = unsafe { libc::mknod(whiteout.as_ptr(), libc::S_IFCHR | 0o600, 0) };
        assert_eq!(made, 0, "mknod: {}", io::Error::last_os_error());
        let applied = apply(&upper, &host).expect("apply");
        assert_eq!(
            std::fs::read_to_string(host.join("src/a.js")).expect("a"),
            "new a"
        );
        assert_eq!(
            std::fs::read_to_string(host.join("dist/new.js")).expect("n"),
            "new"
        );
        assert_eq!(
            std::fs::read_to_string(host.join("dist/old.js")).expect("o"),
            "old"
        );
        assert_eq!(
            std::fs::read_to_string(host.join("keep.txt")).expect("k"),
            "kept"
        );
        assert!(!host.join("gone.txt").exists());
        assert_eq!(
            std::fs::read_link(host.join("link")).expect("link"),
            Path::new("src/a.js")
        );
        assert_eq!(applied.removed, [host.join("gone.txt")]);
        assert_eq!(applied.written.len(), 3);
    }

    #[test]
    fn overlayfs_own_attributes_stay_behind_and_the_tasks_own_land() {
        let temp = tempfile::tempdir().expect("tempdir");
        let (host, upper) = (temp.path().join("host"), temp.path().join("upper"));
        write(&host.join("f.txt"), "old");
        write(&upper.join("f.txt"), "new");
        let set = |name: &str, value: &[u8]| {
            set_xattr(&upper.join("f.txt"), name.as_bytes(), value).expect("lsetxattr");
        };
        // What a copy-up leaves (as root, the test can write overlayfs's names itself), and
        // an attribute of the task's own.
        set("user.overlay.origin", b"\x00\xfb\x1d");
        set("trusted.overlay.impure", b"y");
        set("user.mine", b"kept");
        apply(&upper, &host).expect("apply");
        assert_eq!(
            std::fs::read_to_string(host.join("f.txt")).expect("f"),
            "new"
        );
        let names = |path: &Path| -> Vec<String> {
            xattr_names(path)
                .expect("llistxattr")
                .iter()
                .map(|name| String::from_utf8_lossy(name).into_owned())
                .collect()
        };
        let landed = names(&host.join("f.txt"));
        assert!(
            landed.iter().all(|n| !n.contains(".overlay.")),
            "overlayfs's attributes reached the host: {landed:?}"
        );
        assert!(landed.contains(&"user.mine".to_string()), "{landed:?}");
    }

    #[test]
    fn a_directory_replaces_a_file_and_a_file_a_directory() {
        let temp = tempfile::tempdir().expect("tempdir");
        let (host, upper) = (temp.path().join("host"), temp.path().join("upper"));
        write(&host.join("was_file"), "f");
        write(&host.join("was_dir/x"), "x");
        write(&upper.join("was_file/inside"), "i");
        write(&upper.join("was_dir"), "now a file");
        apply(&upper, &host).expect("apply");
        assert_eq!(
            std::fs::read_to_string(host.join("was_file/inside")).expect("i"),
            "i"
        );
        assert_eq!(
            std::fs::read_to_string(host.join("was_dir")).expect("d"),
            "now a file"
        );
    }
}

//! Reading what a stopped tracee meant: strings from its memory, its cwd and fd paths.
//!
//! What we read can change under us (another thread may rewrite the buffer): fine for
//! observation, never usable for enforcement (see REFERENCE.md).

use std::ffi::OsString;
use std::io::IoSliceMut;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

const PAGE: usize = 4096;

/// Set once `process_vm_readv` has been refused while `/proc/PID/mem` worked: a container's
/// seccomp profile (Docker's default) blocks the former unless the container has
/// CAP_SYS_PTRACE, while reading the latter needs the same ptrace access and plain
/// `pread`, which no profile blocks.
static USE_PROC_MEM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Reads `buffer.len()` bytes at `addr` of `pid`: `process_vm_readv`, or `/proc/PID/mem`
/// where the former is refused. Returns the bytes read (short at an unmapped page).
fn read_memory(pid: u32, addr: usize, buffer: &mut [u8]) -> Result<usize, Errno> {
    use std::sync::atomic::Ordering;
    if !USE_PROC_MEM.load(Ordering::Relaxed) {
        let remote = [RemoteIoVec {
            base: addr,
            len: buffer.len(),
        }];
        match process_vm_readv(
            Pid::from_raw(pid as i32),
            &mut [IoSliceMut::new(buffer)],
            &remote,
        ) {
            Err(Errno::EPERM | Errno::ENOSYS) => {}
            other => return other,
        }
    }
    let read = read_proc_mem(pid, addr, buffer)?;
    USE_PROC_MEM.store(true, Ordering::Relaxed);
    Ok(read)
}

fn read_proc_mem(pid: u32, addr: usize, buffer: &mut [u8]) -> Result<usize, Errno> {
    use std::os::unix::fs::FileExt;
    let errno = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
    let file = std::fs::File::open(format!("/proc/{pid}/mem")).map_err(|e| match errno(e) {
        Errno::ENOENT => Errno::ESRCH,
        other => other,
    })?;
    match file.read_at(buffer, addr as u64) {
        Ok(n) => Ok(n),
        // An unmapped address reads as EIO here where process_vm_readv says EFAULT.
        Err(e) if e.raw_os_error() == Some(libc::EIO) => Err(Errno::EFAULT),
        Err(e) => Err(errno(e)),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The pointer is bad: the syscall itself will fail with EFAULT, nothing is accessed.
    Fault,
    /// The tracee is gone.
    Gone,
    /// No NUL within `limit` bytes: the kernel will fail with ENAMETOOLONG.
    TooLong,
    Other(Errno),
}

/// Reads a NUL-terminated string of at most `limit` bytes (excluding the NUL) at `addr`.
/// Reads page by page: one `process_vm_readv` cannot cross into an unmapped page.
pub fn read_c_string(pid: u32, addr: u64, limit: usize) -> Result<Vec<u8>, ReadError> {
    if addr == 0 {
        return Err(ReadError::Fault);
    }
    let mut out = Vec::with_capacity(256);
    let mut cursor = addr as usize;
    while out.len() <= limit {
        let chunk = (PAGE - cursor % PAGE).min(limit + 1 - out.len());
        let start = out.len();
        out.resize(start + chunk, 0);
        let read = match read_memory(pid, cursor, &mut out[start..]) {
            Ok(n) => n,
            Err(Errno::EFAULT) => return Err(ReadError::Fault),
            Err(Errno::ESRCH) => return Err(ReadError::Gone),
            Err(e) => return Err(ReadError::Other(e)),
        };
        out.truncate(start + read);
        if let Some(nul) = out[start..].iter().position(|&b| b == 0) {
            out.truncate(start + nul);
            return Ok(out);
        }
        if read < chunk {
            return Err(ReadError::Fault);
        }
        cursor += chunk;
    }
    Err(ReadError::TooLong)
}

/// Reads a little-endian u64 at `addr` (e.g. `open_how.flags`).
pub fn read_u64(pid: u32, addr: u64) -> Result<u64, ReadError> {
    let mut bytes = [0u8; 8];
    match read_memory(pid, addr as usize, &mut bytes) {
        Ok(8) => Ok(u64::from_le_bytes(bytes)),
        Ok(_) | Err(Errno::EFAULT) => Err(ReadError::Fault),
        Err(Errno::ESRCH) => Err(ReadError::Gone),
        Err(e) => Err(ReadError::Other(e)),
    }
}

#[derive(Debug)]
pub enum DirError {
    /// The tracee is gone (its /proc entry vanished).
    Gone,
    /// The directory was deleted; relative lookups in it see nothing.
    Deleted(PathBuf),
    /// The fd is not a directory on a filesystem (pipe, socket, anon inode) or not open:
    /// the syscall will fail without touching a path.
    NotAPath,
    /// The kernel cannot name the directory through /proc (e.g. longer than PATH_MAX).
    Unnamed(std::io::Error),
}

impl PartialEq for DirError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (DirError::Gone, DirError::Gone) | (DirError::NotAPath, DirError::NotAPath) => true,
            (DirError::Deleted(a), DirError::Deleted(b)) => a == b,
            (DirError::Unnamed(a), DirError::Unnamed(b)) => a.raw_os_error() == b.raw_os_error(),
            _ => false,
        }
    }
}

/// The directory a relative path of thread `tid` is resolved against: its cwd for
/// `AT_FDCWD` (or no dirfd), else the path of `dirfd`.
pub fn base_dir(tid: u32, dirfd: Option<i32>) -> Result<PathBuf, DirError> {
    let link = match dirfd {
        None | Some(libc::AT_FDCWD) => format!("/proc/{tid}/cwd"),
        Some(fd) if fd >= 0 => format!("/proc/{tid}/fd/{fd}"),
        Some(_) => return Err(DirError::NotAPath),
    };
    let target = match std::fs::read_link(&link) {
        Ok(target) => target,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && dirfd.is_some_and(|fd| fd >= 0) => {
            return Err(DirError::NotAPath);
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH)) => {
            return Err(DirError::Gone);
        }
        // Anything else (ENAMETOOLONG for a cwd deeper than PATH_MAX, EACCES, …) means the
        // call will look something up that we cannot name: never drop it silently.
        Err(e) => return Err(DirError::Unnamed(e)),
    };
    classify_link(target)
}

/// The path of an open fd (for getdents and fd-relative calls).
pub fn fd_path(tid: u32, fd: i32) -> Result<PathBuf, DirError> {
    base_dir(tid, Some(fd))
}

fn classify_link(target: PathBuf) -> Result<PathBuf, DirError> {
    let bytes = target.into_os_string().into_vec();
    if !bytes.starts_with(b"/") {
        return Err(DirError::NotAPath); // "pipe:[123]", "anon_inode:[eventfd]", …
    }
    const DELETED: &[u8] = b" (deleted)";
    if bytes.ends_with(DELETED) {
        let live = PathBuf::from(OsString::from_vec(
            bytes[..bytes.len() - DELETED.len()].to_vec(),
        ));
        return Err(DirError::Deleted(live));
    }
    Ok(PathBuf::from(OsString::from_vec(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_strings_from_own_memory_across_pages() {
        // Place a string so it straddles a page boundary.
        let mut buffer = vec![b'a'; PAGE * 3];
        let base = buffer.as_ptr() as usize;
        let start = (base / PAGE + 1) * PAGE - 5;
        let offset = start - base;
        buffer[offset + 10] = 0;
        let got = read_c_string(std::process::id(), start as u64, 4096).expect("readable");
        assert_eq!(got, vec![b'a'; 10]);
    }

    #[test]
    fn proc_mem_reads_what_process_vm_readv_reads() {
        let text = b"through /proc/self/mem\0";
        let mut buffer = vec![0u8; text.len()];
        let n = read_proc_mem(std::process::id(), text.as_ptr() as usize, &mut buffer)
            .expect("readable");
        assert_eq!(&buffer[..n], text);
        assert_eq!(
            read_proc_mem(std::process::id(), 8, &mut buffer),
            Err(Errno::EFAULT)
        );
    }

    #[test]
    fn too_long_and_null_are_reported() {
        let buffer = [b'x'; 64];
        let got = read_c_string(std::process::id(), buffer.as_ptr() as u64, 16);
        assert_eq!(got, Err(ReadError::TooLong));
        assert_eq!(
            read_c_string(std::process::id(), 0, 16),
            Err(ReadError::Fault)
        );
    }

    #[test]
    fn base_dir_of_cwd_and_bad_fds() {
        let me = std::process::id();
        assert_eq!(
            base_dir(me, None),
            Ok(std::env::current_dir().expect("cwd"))
        );
        assert_eq!(base_dir(me, Some(987_654)), Err(DirError::NotAPath));
        assert_eq!(classify_link("pipe:[12]".into()), Err(DirError::NotAPath));
        assert_eq!(
            classify_link("/a/b (deleted)".into()),
            Err(DirError::Deleted("/a/b".into()))
        );
    }
}

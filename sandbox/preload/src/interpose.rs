//! The interposed libc functions. Each one makes exactly the syscall glibc would, through
//! [`observed`]; whatever it does not handle it passes on as a notified syscall.

use core::ffi::{c_char, c_int, c_long, c_uint, c_void};

use preload_abi::{BIT_DIR, OP_EXEC, OP_OPEN, OP_PROBE_FOLLOW, OP_PROBE_NOFOLLOW, OP_REMOVE};

use crate::observe::{Dir, observed, observed_create};
use crate::realpath;
use crate::syscall::{errno, set_errno, to_libc, traced};

// ---- open ----------------------------------------------------------------------------

/// `openat` as glibc makes it. A creating open also records whether its path existed
/// before ([`observed_create`]); an `O_TMPFILE` one (a nameless file) stays notified.
pub(crate) fn open_at(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    let args = [
        dirfd as usize,
        path as usize,
        flags as usize,
        mode as usize,
        0,
        0,
    ];
    let r = if flags & libc::O_TMPFILE == libc::O_TMPFILE {
        // SAFETY: the caller's own openat.
        unsafe { traced(libc::SYS_openat, args) }
    } else if flags & libc::O_CREAT != 0 {
        // SAFETY: the caller's own openat on its own path argument.
        unsafe { observed_create(dirfd, path, flags, mode) }
    } else {
        // SAFETY: the caller's own openat on its own path argument.
        unsafe {
            observed(
                OP_OPEN,
                flags,
                Dir::at(dirfd),
                path,
                |sys| sys(libc::SYS_openat, args),
                |fd| if fd >= 0 && is_dir(fd) { BIT_DIR } else { 0 },
            )
        }
    };
    to_libc(r) as c_int
}

fn is_dir(fd: isize) -> bool {
    // SAFETY: all-zero is a valid `stat`; fstat writes into it.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: fstat on the fd we just opened (fd-only: not notified).
    let r = unsafe {
        traced(
            libc::SYS_fstat,
            [fd as usize, &mut st as *mut _ as usize, 0, 0, 0, 0],
        )
    };
    r == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

#[unsafe(no_mangle)]
pub extern "C" fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    open_at(libc::AT_FDCWD, path, flags, mode)
}

#[unsafe(no_mangle)]
pub extern "C" fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    open_at(libc::AT_FDCWD, path, flags, mode)
}

#[unsafe(no_mangle)]
pub extern "C" fn __open_2(path: *const c_char, flags: c_int) -> c_int {
    open_at(libc::AT_FDCWD, path, flags, 0)
}

#[unsafe(no_mangle)]
pub extern "C" fn __open64_2(path: *const c_char, flags: c_int) -> c_int {
    open_at(libc::AT_FDCWD, path, flags, 0)
}

#[unsafe(no_mangle)]
pub extern "C" fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    open_at(dirfd, path, flags, mode)
}

#[unsafe(no_mangle)]
pub extern "C" fn openat64(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    open_at(dirfd, path, flags, mode)
}

#[unsafe(no_mangle)]
pub extern "C" fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    open_at(dirfd, path, flags, 0)
}

#[unsafe(no_mangle)]
pub extern "C" fn __openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    open_at(dirfd, path, flags, 0)
}

// ---- fopen ---------------------------------------------------------------------------

/// The open flags of an `fopen` mode, or None for what only glibc's own fopen understands
/// (`,ccs=`) or an invalid mode.
fn fopen_flags(mode: &[u8]) -> Option<c_int> {
    let (&first, rest) = mode.split_first()?;
    let mut access = libc::O_RDONLY;
    let mut flags = match first {
        b'r' => 0,
        b'w' => {
            access = libc::O_WRONLY;
            libc::O_CREAT | libc::O_TRUNC
        }
        b'a' => {
            access = libc::O_WRONLY;
            libc::O_CREAT | libc::O_APPEND
        }
        _ => return None,
    };
    for &c in rest {
        match c {
            b'+' => access = libc::O_RDWR,
            b'x' => flags |= libc::O_EXCL,
            b'e' => flags |= libc::O_CLOEXEC,
            b',' => return None,
            _ => {} // b, t, m, c and unknown letters: glibc ignores them for the open
        }
    }
    Some(flags | access)
}

unsafe extern "C" {
    /// glibc's own `fopen` under its historical alias (exported since 2.2.5): the fallback
    /// for modes only glibc understands, without `dlsym` (which would tie the library to
    /// glibc ≥ 2.34, where it moved into libc).
    fn _IO_fopen(path: *const c_char, mode: *const c_char) -> *mut libc::FILE;
}

fn real_fopen(path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    // SAFETY: glibc's fopen with the caller's arguments. Its internal open is notified.
    unsafe { _IO_fopen(path, mode) }
}

fn fopen_impl(path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    if mode.is_null() {
        return real_fopen(path, mode);
    }
    // SAFETY: the caller's NUL-terminated mode.
    let mode_bytes = unsafe { core::ffi::CStr::from_ptr(mode) }.to_bytes();
    let Some(flags) = fopen_flags(mode_bytes) else {
        return real_fopen(path, mode);
    };
    let fd = open_at(libc::AT_FDCWD, path, flags, 0o666);
    if fd < 0 {
        return core::ptr::null_mut();
    }
    // SAFETY: wrapping our fresh fd in a stream, as glibc's fopen does.
    let file = unsafe { libc::fdopen(fd, mode) };
    if file.is_null() {
        let errno = errno();
        // SAFETY: closing our own fd.
        unsafe { traced(libc::SYS_close, [fd as usize, 0, 0, 0, 0, 0]) };
        set_errno(errno);
    }
    file
}

#[unsafe(no_mangle)]
pub extern "C" fn fopen(path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    fopen_impl(path, mode)
}

#[unsafe(no_mangle)]
pub extern "C" fn fopen64(path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    fopen_impl(path, mode)
}

// ---- stat family ---------------------------------------------------------------------

/// `newfstatat`, which every glibc stat variant comes down to on x86_64.
fn stat_at(dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int {
    let args = [
        dirfd as usize,
        path as usize,
        buf as usize,
        flags as usize,
        0,
        0,
    ];
    let op = probe_op(flags);
    // SAFETY: the caller's own newfstatat.
    let r = unsafe {
        observed(
            op,
            0,
            Dir::at(dirfd),
            path,
            |sys| sys(libc::SYS_newfstatat, args),
            |_| 0,
        )
    };
    to_libc(r) as c_int
}

fn probe_op(flags: c_int) -> u8 {
    if flags & libc::AT_SYMLINK_NOFOLLOW != 0 {
        OP_PROBE_NOFOLLOW
    } else {
        OP_PROBE_FOLLOW
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn stat(path: *const c_char, buf: *mut libc::stat) -> c_int {
    stat_at(libc::AT_FDCWD, path, buf, 0)
}

#[unsafe(no_mangle)]
pub extern "C" fn stat64(path: *const c_char, buf: *mut libc::stat) -> c_int {
    stat_at(libc::AT_FDCWD, path, buf, 0)
}

#[unsafe(no_mangle)]
pub extern "C" fn lstat(path: *const c_char, buf: *mut libc::stat) -> c_int {
    stat_at(libc::AT_FDCWD, path, buf, libc::AT_SYMLINK_NOFOLLOW)
}

#[unsafe(no_mangle)]
pub extern "C" fn lstat64(path: *const c_char, buf: *mut libc::stat) -> c_int {
    stat_at(libc::AT_FDCWD, path, buf, libc::AT_SYMLINK_NOFOLLOW)
}

#[unsafe(no_mangle)]
pub extern "C" fn fstatat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut libc::stat,
    flags: c_int,
) -> c_int {
    stat_at(dirfd, path, buf, flags)
}

#[unsafe(no_mangle)]
pub extern "C" fn fstatat64(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut libc::stat,
    flags: c_int,
) -> c_int {
    stat_at(dirfd, path, buf, flags)
}

// The versioned entry points programs built against glibc < 2.33 call. On x86_64 every
// version number means the kernel's `struct stat`.
#[unsafe(no_mangle)]
pub extern "C" fn __xstat(_ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int {
    stat_at(libc::AT_FDCWD, path, buf, 0)
}

#[unsafe(no_mangle)]
pub extern "C" fn __xstat64(_ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int {
    stat_at(libc::AT_FDCWD, path, buf, 0)
}

#[unsafe(no_mangle)]
pub extern "C" fn __lxstat(_ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int {
    stat_at(libc::AT_FDCWD, path, buf, libc::AT_SYMLINK_NOFOLLOW)
}

#[unsafe(no_mangle)]
pub extern "C" fn __lxstat64(_ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int {
    stat_at(libc::AT_FDCWD, path, buf, libc::AT_SYMLINK_NOFOLLOW)
}

#[unsafe(no_mangle)]
pub extern "C" fn __fxstatat(
    _ver: c_int,
    dirfd: c_int,
    path: *const c_char,
    buf: *mut libc::stat,
    flags: c_int,
) -> c_int {
    stat_at(dirfd, path, buf, flags)
}

#[unsafe(no_mangle)]
pub extern "C" fn __fxstatat64(
    _ver: c_int,
    dirfd: c_int,
    path: *const c_char,
    buf: *mut libc::stat,
    flags: c_int,
) -> c_int {
    stat_at(dirfd, path, buf, flags)
}

fn statx_impl(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mask: c_uint,
    buf: *mut c_void,
) -> c_int {
    let args = [
        dirfd as usize,
        path as usize,
        flags as usize,
        mask as usize,
        buf as usize,
        0,
    ];
    // SAFETY: the caller's own statx.
    let r = unsafe {
        observed(
            probe_op(flags),
            0,
            Dir::at(dirfd),
            path,
            |sys| sys(libc::SYS_statx, args),
            |_| 0,
        )
    };
    to_libc(r) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn statx(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mask: c_uint,
    buf: *mut c_void,
) -> c_int {
    statx_impl(dirfd, path, flags, mask, buf)
}

// ---- access --------------------------------------------------------------------------

fn access_at(dirfd: c_int, path: *const c_char, mode: c_int, flags: c_int) -> c_int {
    // faccessat2 is the only one that takes flags (kernel ≥ 5.8).
    let nr = if flags == 0 {
        libc::SYS_faccessat
    } else {
        libc::SYS_faccessat2
    };
    let args = [
        dirfd as usize,
        path as usize,
        mode as usize,
        flags as usize,
        0,
        0,
    ];
    // SAFETY: the caller's own faccessat.
    let r = unsafe {
        observed(
            probe_op(flags),
            0,
            Dir::at(dirfd),
            path,
            |sys| sys(nr, args),
            |_| 0,
        )
    };
    to_libc(r) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn access(path: *const c_char, mode: c_int) -> c_int {
    access_at(libc::AT_FDCWD, path, mode, 0)
}

#[unsafe(no_mangle)]
pub extern "C" fn faccessat(dirfd: c_int, path: *const c_char, mode: c_int, flags: c_int) -> c_int {
    access_at(dirfd, path, mode, flags)
}

#[unsafe(no_mangle)]
pub extern "C" fn euidaccess(path: *const c_char, mode: c_int) -> c_int {
    access_at(libc::AT_FDCWD, path, mode, libc::AT_EACCESS)
}

#[unsafe(no_mangle)]
pub extern "C" fn eaccess(path: *const c_char, mode: c_int) -> c_int {
    access_at(libc::AT_FDCWD, path, mode, libc::AT_EACCESS)
}

// ---- readlink ------------------------------------------------------------------------

fn readlink_at(dirfd: c_int, path: *const c_char, buf: *mut c_char, size: usize) -> isize {
    let args = [dirfd as usize, path as usize, buf as usize, size, 0, 0];
    // SAFETY: the caller's own readlinkat.
    let r = unsafe {
        observed(
            OP_PROBE_NOFOLLOW,
            0,
            Dir::at(dirfd),
            path,
            |sys| sys(libc::SYS_readlinkat, args),
            |_| 0,
        )
    };
    to_libc(r)
}

#[unsafe(no_mangle)]
pub extern "C" fn readlink(path: *const c_char, buf: *mut c_char, size: usize) -> isize {
    readlink_at(libc::AT_FDCWD, path, buf, size)
}

#[unsafe(no_mangle)]
pub extern "C" fn readlinkat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_char,
    size: usize,
) -> isize {
    readlink_at(dirfd, path, buf, size)
}

// ---- realpath ------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub extern "C" fn realpath(path: *const c_char, resolved: *mut c_char) -> *mut c_char {
    realpath::realpath(path, resolved)
}

#[unsafe(no_mangle)]
pub extern "C" fn __realpath_chk(
    path: *const c_char,
    resolved: *mut c_char,
    _len: usize,
) -> *mut c_char {
    realpath::realpath(path, resolved)
}

#[unsafe(no_mangle)]
pub extern "C" fn canonicalize_file_name(path: *const c_char) -> *mut c_char {
    realpath::realpath(path, core::ptr::null_mut())
}

// ---- remove ---------------------------------------------------------------------------

/// `unlinkat` as glibc makes it. The result says whether the name was there, so the
/// supervisor's look beforehand is not needed: gcc removing its temporary files cost one
/// notification each.
fn remove_at(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    let args = [dirfd as usize, path as usize, flags as usize, 0, 0, 0];
    // SAFETY: the caller's own unlinkat on its own path argument.
    let r = unsafe {
        observed(
            OP_REMOVE,
            flags,
            Dir::at(dirfd),
            path,
            |sys| sys(libc::SYS_unlinkat, args),
            |_| 0,
        )
    };
    to_libc(r) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn unlink(path: *const c_char) -> c_int {
    remove_at(libc::AT_FDCWD, path, 0)
}

#[unsafe(no_mangle)]
pub extern "C" fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    remove_at(dirfd, path, flags)
}

#[unsafe(no_mangle)]
pub extern "C" fn rmdir(path: *const c_char) -> c_int {
    remove_at(libc::AT_FDCWD, path, libc::AT_REMOVEDIR)
}

/// glibc's `remove`: unlink, and if that says it is a directory, rmdir.
#[unsafe(no_mangle)]
pub extern "C" fn remove(path: *const c_char) -> c_int {
    if remove_at(libc::AT_FDCWD, path, 0) == 0 {
        return 0;
    }
    if errno() != libc::EISDIR {
        return -1;
    }
    remove_at(libc::AT_FDCWD, path, libc::AT_REMOVEDIR)
}

// ---- exec -----------------------------------------------------------------------------

unsafe extern "C" {
    static environ: *const *const c_char;
}

pub(crate) fn exec(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let args = [path as usize, argv as usize, envp as usize, 0, 0, 0];
    // On success this never returns: the record stays pending and vt decides it by looking
    // at the file, as the supervisor would have.
    // SAFETY: the caller's own execve.
    let r = unsafe {
        observed(
            OP_EXEC,
            0,
            Dir::Cwd,
            path,
            |sys| sys(libc::SYS_execve, args),
            |_| 0,
        )
    };
    to_libc(r) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    exec(path, argv, envp)
}

#[unsafe(no_mangle)]
pub extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: reading libc's environ pointer, as glibc's execv does.
    exec(path, argv, unsafe { environ })
}

// ---- exec with a PATH search ---------------------------------------------------------

/// Fails with `code`, as libc functions do.
fn fail(code: c_int) -> c_int {
    set_errno(code);
    -1
}

/// `execvp`/`execvpe` as glibc does them: a name without a slash is tried in each `PATH`
/// directory in turn (an empty entry is the current directory). Every attempt goes through
/// [`exec`], so it is recorded (a missing candidate as a failed exec, which vt reads as a
/// lookup that found nothing) instead of notified: `gcc` starting `as` cost one
/// notification per `PATH` entry, with gcc itself stopped in `vfork` meanwhile.
fn exec_search(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    if file.is_null() {
        return exec(file, argv, envp);
    }
    // SAFETY: the caller's NUL-terminated file name.
    let name = unsafe { core::ffi::CStr::from_ptr(file) }.to_bytes();
    if name.is_empty() {
        return fail(libc::ENOENT);
    }
    if name.contains(&b'/') {
        return exec(file, argv, envp);
    }
    if name.len() > 255 {
        return fail(libc::ENAMETOOLONG);
    }
    // glibc searches the caller's PATH (not `envp`'s), or confstr(_CS_PATH) without one.
    // SAFETY: getenv on a NUL-terminated name; the result is NUL-terminated or null.
    let path_env = unsafe { libc::getenv(c"PATH".as_ptr()) };
    let search: &[u8] = if path_env.is_null() {
        b"/bin:/usr/bin"
    } else {
        // SAFETY: getenv returned a NUL-terminated string.
        unsafe { core::ffi::CStr::from_ptr(path_env) }.to_bytes()
    };
    let mut got_eacces = false;
    let mut result = fail(libc::ENOENT);
    for dir in search.split(|&b| b == b':') {
        let mut candidate = [0u8; libc::PATH_MAX as usize];
        let len = if dir.is_empty() {
            name.len()
        } else {
            dir.len() + 1 + name.len()
        };
        let Some(target) = candidate.get_mut(..len) else {
            continue; // too long for a path: glibc skips it too
        };
        if dir.is_empty() {
            target.copy_from_slice(name);
        } else {
            target[..dir.len()].copy_from_slice(dir);
            target[dir.len()] = b'/';
            target[dir.len() + 1..].copy_from_slice(name);
        }
        if len >= candidate.len() {
            continue; // no room for the NUL
        }
        result = exec(candidate.as_ptr().cast(), argv, envp);
        match errno() {
            libc::ENOEXEC => return exec_script(candidate.as_ptr().cast(), argv, envp),
            libc::EACCES => got_eacces = true,
            libc::ENOENT | libc::ESTALE | libc::ENOTDIR | libc::ENODEV | libc::ETIMEDOUT => {}
            _ => return result,
        }
    }
    if got_eacces {
        return fail(libc::EACCES);
    }
    result
}

/// A file the kernel would not execute, run as a shell script the way glibc's `execvp`
/// does: `/bin/sh FILE ARGS…` (argv[0] dropped).
fn exec_script(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    const MAX: usize = 1024;
    let mut args: [*const c_char; MAX] = [core::ptr::null(); MAX];
    args[0] = c"/bin/sh".as_ptr();
    args[1] = path;
    if !argv.is_null() {
        let mut i = 1;
        loop {
            // SAFETY: argv is the caller's NULL-terminated array; we stop at its NULL.
            let arg = unsafe { *argv.add(i) };
            if arg.is_null() {
                break;
            }
            let Some(slot) = args.get_mut(i + 1).filter(|_| i + 2 < MAX) else {
                return fail(libc::E2BIG);
            };
            *slot = arg;
            i += 1;
        }
    }
    exec(c"/bin/sh".as_ptr(), args.as_ptr(), envp)
}

#[unsafe(no_mangle)]
pub extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: reading libc's environ pointer, as glibc's execvp does.
    exec_search(file, argv, unsafe { environ })
}

#[unsafe(no_mangle)]
pub extern "C" fn execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    exec_search(file, argv, envp)
}

// ---- syscall() -----------------------------------------------------------------------

/// `syscall(2)`, which libuv (node) uses for `statx`. The sixth argument is read from the
/// caller's stack whether or not it passed one, as the variadic convention allows.
#[unsafe(no_mangle)]
pub extern "C" fn syscall(
    nr: c_long,
    a1: c_long,
    a2: c_long,
    a3: c_long,
    a4: c_long,
    a5: c_long,
    a6: c_long,
) -> c_long {
    let int = |v: c_long| v as c_int;
    let ptr = |v: c_long| v as *const c_char;
    match nr {
        libc::SYS_statx => {
            statx_impl(int(a1), ptr(a2), int(a3), a4 as c_uint, a5 as *mut c_void).into()
        }
        libc::SYS_newfstatat => stat_at(int(a1), ptr(a2), a3 as *mut libc::stat, int(a4)).into(),
        libc::SYS_stat => stat_at(libc::AT_FDCWD, ptr(a1), a2 as *mut libc::stat, 0).into(),
        libc::SYS_lstat => stat_at(
            libc::AT_FDCWD,
            ptr(a1),
            a2 as *mut libc::stat,
            libc::AT_SYMLINK_NOFOLLOW,
        )
        .into(),
        libc::SYS_open => open_at(libc::AT_FDCWD, ptr(a1), int(a2), a3 as c_uint).into(),
        libc::SYS_openat => open_at(int(a1), ptr(a2), int(a3), a4 as c_uint).into(),
        libc::SYS_access => access_at(libc::AT_FDCWD, ptr(a1), int(a2), 0).into(),
        libc::SYS_faccessat => access_at(int(a1), ptr(a2), int(a3), 0).into(),
        libc::SYS_faccessat2 => access_at(int(a1), ptr(a2), int(a3), int(a4)).into(),
        libc::SYS_readlink => {
            readlink_at(libc::AT_FDCWD, ptr(a1), a2 as *mut c_char, a3 as usize) as c_long
        }
        libc::SYS_readlinkat => {
            readlink_at(int(a1), ptr(a2), a3 as *mut c_char, a4 as usize) as c_long
        }
        _ => {
            let args = [a1, a2, a3, a4, a5, a6].map(|a| a as usize);
            // SAFETY: exactly the syscall the caller asked for, from our code: notified
            // if it is one the filter traces.
            to_libc(unsafe { traced(nr, args) }) as c_long
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fopen_modes_map_to_glibc_flags() {
        assert_eq!(fopen_flags(b"r"), Some(libc::O_RDONLY));
        assert_eq!(fopen_flags(b"rb"), Some(libc::O_RDONLY));
        assert_eq!(fopen_flags(b"re"), Some(libc::O_RDONLY | libc::O_CLOEXEC));
        assert_eq!(fopen_flags(b"r+"), Some(libc::O_RDWR));
        assert_eq!(
            fopen_flags(b"w"),
            Some(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)
        );
        assert_eq!(
            fopen_flags(b"wx"),
            Some(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL)
        );
        assert_eq!(
            fopen_flags(b"a+"),
            Some(libc::O_RDWR | libc::O_CREAT | libc::O_APPEND)
        );
        assert_eq!(fopen_flags(b"r,ccs=UTF-8"), None);
        assert_eq!(fopen_flags(b"q"), None);
        assert_eq!(fopen_flags(b""), None);
    }
}

//! One observed call: name the path, record it as pending, make the call through the
//! trampoline, record the result. Anything that cannot be done falls back to a notified call.

use core::ffi::{CStr, c_char};

use preload_abi::{BIT_DIR, BIT_FOUND, BIT_UNSURE, OP_OPEN, OP_PROBE_FOLLOW, OP_PROBE_NOFOLLOW};

use crate::syscall::{Sys, exempt, fast_path_ready, traced};
use crate::{buffer, seen};

const PATH_MAX: usize = libc::PATH_MAX as usize;

/// What a relative path is relative to.
#[derive(Clone, Copy)]
pub enum Dir {
    Cwd,
    Fd(i32),
}

impl Dir {
    pub fn at(dirfd: i32) -> Dir {
        if dirfd == libc::AT_FDCWD {
            Dir::Cwd
        } else {
            Dir::Fd(dirfd)
        }
    }
}

/// Makes `call` (given the syscall path to use) for the path `path` relative to `dir`,
/// recording it as `op`; `bits` derives the record's bits from the result. Returns the raw
/// result (`-errno` on failure).
///
/// # Safety
/// `path` is null or a NUL-terminated string; `call` is the syscall the caller made.
pub unsafe fn observed(
    op: u8,
    flags: i32,
    dir: Dir,
    path: *const c_char,
    mut call: impl FnMut(Sys) -> isize,
    bits: impl FnOnce(isize) -> u8,
) -> isize {
    // SAFETY: the caller's path argument, as `named` requires.
    let made = unsafe {
        named(dir, path, |parts| {
            recorded(op, flags, parts, &mut call, bits)
        })
    };
    match made {
        Some(result) => result,
        None => call(traced),
    }
}

/// Runs `f` on the absolute path that `path` names relative to `dir`, as parts to
/// concatenate; None when the fast path is off or cannot name it (empty or overlong, a
/// base directory without a usable name): the caller then makes its call notified, and the
/// kernel and the supervisor handle these rare cases.
///
/// # Safety
/// `path` is null or a NUL-terminated string.
unsafe fn named<R>(dir: Dir, path: *const c_char, f: impl FnOnce(&[&[u8]]) -> R) -> Option<R> {
    if path.is_null() || !fast_path_ready() || !buffer::ready() {
        return None;
    }
    // SAFETY: the caller's NUL-terminated path argument.
    let raw = unsafe { CStr::from_ptr(path) }.to_bytes();
    if raw.is_empty() || raw.len() >= PATH_MAX {
        // AT_EMPTY_PATH (fd-only, not notified anyway), ENOENT or ENAMETOOLONG.
        return None;
    }
    if raw[0] == b'/' {
        return Some(f(&[raw]));
    }
    // Only a relative path needs (and zeroes) a buffer for its base: zeroing 4 KiB costs
    // ~20 ns, a tenth of what recording a call costs.
    let mut base = [0u8; PATH_MAX];
    let dir = base_dir(dir, &mut base)?;
    Some(f(&[dir, b"/", raw]))
}

/// An open with `O_CREAT` (not `O_TMPFILE`), made in process. Whether it creates the file
/// decides what it is (an output, or a write to a file that was there), and its result does
/// not say; so, as the supervisor does for a notified one, the path is looked up first
/// (`newfstatat`, following a final symlink unless `O_NOFOLLOW`, as the open will), and the
/// record carries what that found. The open itself is exactly the caller's.
///
/// # Safety
/// `path` is null or a NUL-terminated string.
pub unsafe fn observed_create(dirfd: i32, path: *const c_char, flags: i32, mode: u32) -> isize {
    let open = |sys: Sys| {
        let args = [
            dirfd as usize,
            path as usize,
            flags as usize,
            mode as usize,
            0,
            0,
        ];
        // SAFETY: the caller's own openat.
        unsafe { sys(libc::SYS_openat, args) }
    };
    // SAFETY: the caller's path argument, as `named` requires.
    let made = unsafe {
        named(Dir::at(dirfd), path, |parts| {
            let slot = buffer::begin(OP_OPEN, flags, parts)?;
            let found = existed(dirfd, path, flags);
            let result = open(exempt);
            slot.finish(result, found);
            Some(result)
        })
    };
    match made.flatten() {
        Some(result) => result,
        None => open(traced),
    }
}

/// What a creating open's path was just before it: `BIT_FOUND` (and `BIT_DIR`), nothing
/// (missing), or `BIT_UNSURE`.
fn existed(dirfd: i32, path: *const c_char, flags: i32) -> u8 {
    // SAFETY: all-zero is a valid `stat`; newfstatat writes into it.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    let follow = if flags & libc::O_NOFOLLOW != 0 {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    };
    // SAFETY: a lookup of the caller's path into our `stat`; through the trampoline because
    // the record carries its answer.
    let r = unsafe {
        exempt(
            libc::SYS_newfstatat,
            [
                dirfd as usize,
                path as usize,
                &mut st as *mut libc::stat as usize,
                follow as usize,
                0,
                0,
            ],
        )
    };
    match r {
        0 if st.st_mode & libc::S_IFMT == libc::S_IFDIR => BIT_FOUND | BIT_DIR,
        0 => BIT_FOUND,
        e if e == -(libc::ENOENT as isize) || e == -(libc::ENOTDIR as isize) => 0,
        _ => BIT_UNSURE,
    }
}

/// Records the call on the path `parts` concatenated, then makes it through the trampoline;
/// without room in the buffer it makes the call notified instead.
fn recorded(
    op: u8,
    flags: i32,
    parts: &[&[u8]],
    mut call: impl FnMut(Sys) -> isize,
    bits: impl FnOnce(isize) -> u8,
) -> isize {
    if op == OP_PROBE_FOLLOW || op == OP_PROBE_NOFOLLOW {
        return recorded_lookup(op, flags, parts, call, bits);
    }
    let Some(slot) = buffer::begin(op, flags, parts) else {
        return call(traced);
    };
    let result = call(exempt);
    let bits = bits(result);
    slot.finish(result, bits);
    result
}

/// A lookup (stat, access, readlink) changes nothing, so unlike an open it needs no record
/// before it is made: a process that dies during one never acted on its answer. It is made
/// first and recorded after, unless this process already recorded the same answer
/// ([`seen`]). Without room for the record, it is made again, notified, and the caller gets
/// that answer: the one seccomp saw.
///
/// Its time is read after the call, and only when it is recorded: most lookups of a C build
/// are repeats, and reading the clock for each was a quarter of what skipping one costs.
/// The end of a call orders it against calls that did not overlap it exactly as its start
/// does; and vt orders a lookup against nothing but the same path's changes, which make
/// it the task checking its own output whatever the order (`executor::cache::observe`).
fn recorded_lookup(
    op: u8,
    flags: i32,
    parts: &[&[u8]],
    mut call: impl FnMut(Sys) -> isize,
    bits: impl FnOnce(isize) -> u8,
) -> isize {
    let result = call(exempt);
    let bits = bits(result);
    let key = seen::Key {
        op,
        bits,
        flags,
        result: buffer::stored_result(result),
        parts,
    };
    if seen::contains(buffer::base(), &key) {
        return result;
    }
    match buffer::begin(op, flags, parts) {
        Some(slot) => {
            let offset = slot.offset();
            slot.finish(result, bits);
            seen::remember(&key, offset);
            result
        }
        None => call(traced),
    }
}

/// The absolute path of the cwd or of the directory open on `fd`; None when it has no
/// usable name (deleted, unreachable, not a directory path), so the supervisor decides.
fn base_dir(dir: Dir, out: &mut [u8; PATH_MAX]) -> Option<&[u8]> {
    let len = match dir {
        Dir::Cwd => {
            // SAFETY: getcwd writes at most PATH_MAX bytes into `out`; through the trampoline
            // because it is bookkeeping, not an observation.
            let r = unsafe {
                exempt(
                    libc::SYS_getcwd,
                    [out.as_mut_ptr() as usize, PATH_MAX, 0, 0, 0, 0],
                )
            };
            // The kernel returns the length including the NUL.
            usize::try_from(r).ok()?.checked_sub(1)?
        }
        Dir::Fd(fd) => {
            let mut link = [0u8; 40];
            link[..14].copy_from_slice(b"/proc/self/fd/");
            let mut digits = [0u8; 20];
            let text = crate::buffer::decimal(u64::try_from(fd).ok()?, &mut digits);
            link[14..14 + text.len()].copy_from_slice(text);
            // SAFETY: `link` is NUL-terminated; readlink writes at most PATH_MAX bytes.
            let r = unsafe {
                exempt(
                    libc::SYS_readlinkat,
                    [
                        libc::AT_FDCWD as usize,
                        link.as_ptr() as usize,
                        out.as_mut_ptr() as usize,
                        PATH_MAX,
                        0,
                        0,
                    ],
                )
            };
            usize::try_from(r).ok()?
        }
    };
    let name = out.get(..len)?;
    if name.first() != Some(&b'/') || name.ends_with(b" (deleted)") || len >= PATH_MAX {
        return None;
    }
    Some(name)
}

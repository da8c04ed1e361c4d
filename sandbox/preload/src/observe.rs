//! One observed call: name the path, record it as pending, make the call through the
//! trampoline, record the result. Anything that cannot be done falls back to a notified call.

use core::ffi::{CStr, c_char};

use preload_abi::{OP_PROBE_FOLLOW, OP_PROBE_NOFOLLOW};

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
    if path.is_null() || !fast_path_ready() || !buffer::ready() {
        return call(traced);
    }
    // SAFETY: the caller's NUL-terminated path argument.
    let raw = unsafe { CStr::from_ptr(path) }.to_bytes();
    if raw.is_empty() || raw.len() >= PATH_MAX {
        // AT_EMPTY_PATH (fd-only, not notified anyway), ENOENT or ENAMETOOLONG: the kernel
        // and the supervisor handle these rare cases.
        return call(traced);
    }
    if raw[0] == b'/' {
        return recorded(op, flags, &[raw], call, bits);
    }
    // Only a relative path needs (and zeroes) a buffer for its base: zeroing 4 KiB costs
    // ~20 ns, a tenth of what recording a call costs.
    let mut base = [0u8; PATH_MAX];
    match base_dir(dir, &mut base) {
        Some(dir) => recorded(op, flags, &[dir, b"/", raw], call, bits),
        None => call(traced),
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
fn recorded_lookup(
    op: u8,
    flags: i32,
    parts: &[&[u8]],
    mut call: impl FnMut(Sys) -> isize,
    bits: impl FnOnce(isize) -> u8,
) -> isize {
    let time_ns = buffer::monotonic_ns();
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
    match buffer::begin_at(op, flags, parts, time_ns) {
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

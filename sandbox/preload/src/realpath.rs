//! `realpath(3)` with the same lookups as glibc's (gnulib's algorithm): a `readlink` of
//! every prefix, following links, plus a directory check before a trailing `/`, `/.` or
//! `/..`. Each lookup is an observation, exactly as if glibc had made it under seccomp —
//! this is where gcc's hundreds of thousands of `readlink`s come from.

use core::ffi::{CStr, c_char};

use preload_abi::{OP_PROBE_FOLLOW, OP_PROBE_NOFOLLOW};

use crate::observe::{Dir, observed};
use crate::syscall::{exempt, fast_path_ready, set_errno};

const PATH_MAX: usize = libc::PATH_MAX as usize;
/// glibc's `MAXSYMLINKS`/`__eloop_threshold`.
const MAX_LINKS: u32 = 40;

fn fail(errno: i32) -> *mut c_char {
    set_errno(errno);
    core::ptr::null_mut()
}

pub fn realpath(path: *const c_char, resolved: *mut c_char) -> *mut c_char {
    if path.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: the caller's NUL-terminated path.
    let name = unsafe { CStr::from_ptr(path) }.to_bytes();
    if name.is_empty() {
        return fail(libc::ENOENT);
    }
    let mut out = [0u8; PATH_MAX];
    let len = match resolve(name, &mut out) {
        Ok(len) => len,
        Err(errno) => return fail(errno),
    };
    let dest = if resolved.is_null() {
        // SAFETY: malloc is not interposed; the caller frees the result, as with glibc.
        let p = unsafe { libc::malloc(len + 1) } as *mut c_char;
        if p.is_null() {
            return fail(libc::ENOMEM);
        }
        p
    } else {
        resolved
    };
    // SAFETY: `dest` holds PATH_MAX bytes (the caller's contract) or len + 1 (ours).
    unsafe {
        core::ptr::copy_nonoverlapping(out.as_ptr(), dest as *mut u8, len);
        *dest.add(len) = 0;
    }
    dest
}

/// Resolves `name` into `out`, returning the length or an errno.
fn resolve(name: &[u8], out: &mut [u8; PATH_MAX]) -> Result<usize, i32> {
    // The rest still to walk. A link's target is spliced in front of what followed it.
    let mut rest = [0u8; 2 * PATH_MAX];
    let mut rest_len = name.len();
    if rest_len >= PATH_MAX {
        return Err(libc::ENAMETOOLONG);
    }
    rest[..rest_len].copy_from_slice(name);
    let mut at = 0; // position in `rest`
    let mut len = if name[0] == b'/' {
        out[0] = b'/';
        1
    } else {
        cwd(out)?
    };
    let mut links = 0;
    while at < rest_len {
        // Skip slashes, then take one component.
        while at < rest_len && rest[at] == b'/' {
            at += 1;
        }
        let start = at;
        while at < rest_len && rest[at] != b'/' {
            at += 1;
        }
        let component = &rest[start..at];
        match component {
            b"" => break,
            b"." => continue,
            b".." => {
                // `out` is already physical, so dropping its last component is exact.
                while len > 1 && out[len - 1] != b'/' {
                    len -= 1;
                }
                if len > 1 {
                    len -= 1;
                }
                continue;
            }
            _ => {}
        }
        let prefix_len = len;
        if len > 1 {
            out[len] = b'/';
            len += 1;
        }
        if len + component.len() >= PATH_MAX {
            return Err(libc::ENAMETOOLONG);
        }
        out[len..len + component.len()].copy_from_slice(component);
        len += component.len();

        // Not zeroed (see `lookup`): only the bytes readlink wrote are read.
        let mut target = core::mem::MaybeUninit::<[u8; PATH_MAX]>::uninit();
        let r = lookup(&out[..len], OP_PROBE_NOFOLLOW, |p, sys| {
            // SAFETY: readlinkat into our buffer.
            unsafe {
                sys(
                    libc::SYS_readlinkat,
                    [
                        libc::AT_FDCWD as usize,
                        p as usize,
                        target.as_mut_ptr() as usize,
                        PATH_MAX - 1,
                        0,
                        0,
                    ],
                )
            }
        });
        if r >= 0 {
            // A symlink: splice its target in front of the rest and walk again from the
            // link's directory (or from `/`).
            links += 1;
            if links > MAX_LINKS {
                return Err(libc::ELOOP);
            }
            let target_len = r as usize;
            if target_len == 0 {
                return Err(libc::ENOENT); // Linux has no empty symlinks; never trust one
            }
            if target_len >= PATH_MAX - 1 {
                return Err(libc::ENAMETOOLONG);
            }
            // SAFETY: readlink wrote `target_len` bytes (less than its size) at the start.
            let target =
                unsafe { core::slice::from_raw_parts(target.as_ptr() as *const u8, target_len) };
            let tail_len = rest_len - at;
            if target_len + tail_len >= rest.len() {
                return Err(libc::ENAMETOOLONG);
            }
            rest.copy_within(at..rest_len, target_len);
            rest[..target_len].copy_from_slice(target);
            rest_len = target_len + tail_len;
            at = 0;
            len = prefix_len;
            if target[0] == b'/' {
                len = 1;
            }
            continue;
        }
        if r != -(libc::EINVAL as isize) {
            return Err((-r) as i32);
        }
        // Not a link. A following "/", "/." or "/.." needs it to be a directory.
        if suffix_requires_dir_check(&rest[at..rest_len]) {
            out[len] = b'/';
            let r = lookup(&out[..len + 1], OP_PROBE_FOLLOW, |p, sys| {
                // SAFETY: faccessat on our NUL-terminated path.
                unsafe {
                    sys(
                        libc::SYS_faccessat,
                        [
                            libc::AT_FDCWD as usize,
                            p as usize,
                            libc::F_OK as usize,
                            0,
                            0,
                            0,
                        ],
                    )
                }
            });
            if r != 0 {
                return Err(if r < 0 { (-r) as i32 } else { libc::ENOTDIR });
            }
        }
    }
    Ok(len)
}

/// gnulib's `suffix_requires_dir_check`: does `end` (what follows a component) start with
/// slashes followed by nothing, `.` or `..`?
fn suffix_requires_dir_check(end: &[u8]) -> bool {
    if end.first() != Some(&b'/') {
        return false;
    }
    let start = end.iter().position(|&b| b != b'/').unwrap_or(end.len());
    matches!(
        &end[start..],
        [] | [b'.'] | [b'.', b'/', ..] | [b'.', b'.'] | [b'.', b'.', b'/', ..]
    )
}

/// One observed lookup of the absolute `path` (copied to a NUL-terminated buffer).
fn lookup(
    path: &[u8],
    op: u8,
    mut call: impl FnMut(*const c_char, crate::syscall::Sys) -> isize,
) -> isize {
    if path.len() > PATH_MAX {
        return -(libc::ENAMETOOLONG as isize);
    }
    // Not zeroed: this runs for every prefix of every resolved name (hundreds of thousands
    // of times in a C build), and only the path and its NUL are ever read.
    let mut c = core::mem::MaybeUninit::<[u8; PATH_MAX + 1]>::uninit();
    let p = c.as_mut_ptr() as *mut u8;
    // SAFETY: `path` fits with its NUL (checked above).
    unsafe {
        core::ptr::copy_nonoverlapping(path.as_ptr(), p, path.len());
        *p.add(path.len()) = 0;
    }
    let p = p as *const c_char;
    // SAFETY: `p` is NUL-terminated; `call` makes the lookup on it.
    unsafe { observed(op, 0, Dir::Cwd, p, |sys| call(p, sys), |_| 0) }
}

/// The cwd, as glibc's realpath starts a relative name from it.
fn cwd(out: &mut [u8; PATH_MAX]) -> Result<usize, i32> {
    let sys = if fast_path_ready() {
        exempt
    } else {
        crate::syscall::traced
    };
    // SAFETY: getcwd writes at most PATH_MAX bytes.
    let r = unsafe {
        sys(
            libc::SYS_getcwd,
            [out.as_mut_ptr() as usize, PATH_MAX, 0, 0, 0, 0],
        )
    };
    if r < 0 {
        return Err((-r) as i32);
    }
    let len = (r as usize).saturating_sub(1);
    if out.first() != Some(&b'/') {
        return Err(libc::ENOENT);
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_checks_follow_gnulib() {
        assert!(suffix_requires_dir_check(b"/"));
        assert!(suffix_requires_dir_check(b"//"));
        assert!(suffix_requires_dir_check(b"/."));
        assert!(suffix_requires_dir_check(b"/../x"));
        assert!(!suffix_requires_dir_check(b"/x"));
        assert!(!suffix_requires_dir_check(b"/.hidden"));
        assert!(!suffix_requires_dir_check(b""));
    }
}

//! The Rust half of the injected library (macOS only; NOT compiled on vt's Linux CI): the C
//! hooks in `interpose/interpose.c` call these functions with each call and its result;
//! they frame an [`Event`] and write it to the socket vt passed in `VT_INTERPOSE_FD`.
//!
//! Rules for code that runs inside every call of every task process: no panics across the
//! FFI boundary (everything is caught or infallible), errno preserved by the C side, one
//! `write` per frame, and a process that forked says hello again before its first event.

use std::ffi::{CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use libc::{c_char, c_int, pid_t};

use crate::event::{Call, Event, encode};

/// The socket to vt, from `VT_INTERPOSE_FD` (-1: not under vt, report nothing).
static SOCKET: AtomicI32 = AtomicI32::new(-1);
/// The pid that last said hello: a forked child sees a different `getpid()`.
static HELLO_PID: AtomicU32 = AtomicU32::new(0);

fn now_ns() -> u64 {
    // SAFETY: clock_gettime_nsec_np takes a clock id and returns a value.
    unsafe { libc::clock_gettime_nsec_np(libc::CLOCK_UPTIME_RAW) }
}

fn bytes(path: *const c_char) -> Vec<u8> {
    if path.is_null() {
        return Vec::new();
    }
    // SAFETY: the C caller passes the NUL-terminated path the program passed to libc.
    unsafe { CStr::from_ptr(path) }.to_bytes().to_vec()
}

fn send(call: Call) {
    let fd = SOCKET.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() } as u32;
    if HELLO_PID.swap(pid, Ordering::Relaxed) != pid {
        write_frame(fd, pid, hello());
    }
    write_frame(fd, pid, call);
}

fn write_frame(fd: c_int, pid: u32, call: Call) {
    let event = Event {
        pid,
        at_ns: now_ns(),
        call,
    };
    if let Ok(frame) = encode(&event) {
        // SAFETY: writing a live buffer to the inherited socket; a failed write loses an
        // event, which vt notices (the stream ends early or a process never says hello).
        unsafe { libc::write(fd, frame.as_ptr().cast(), frame.len()) };
    }
}

fn hello() -> Call {
    let mut exe = vec![0u8; libc::PROC_PIDPATHINFO_MAXSIZE as usize];
    // SAFETY: proc_pidpath writes at most the buffer's size.
    let n =
        unsafe { libc::proc_pidpath(libc::getpid(), exe.as_mut_ptr().cast(), exe.len() as u32) };
    exe.truncate(n.max(0) as usize);
    let cwd = std::env::current_dir()
        .map(|d| d.as_os_str().as_bytes().to_vec())
        .unwrap_or_default();
    Call::Hello {
        // SAFETY: getppid cannot fail.
        ppid: unsafe { libc::getppid() } as u32,
        exe,
        cwd,
    }
}

/// Runs when dyld loads the library into a process.
extern "C" fn init() {
    let fd = std::env::var(crate::FD_ENV)
        .ok()
        .and_then(|v| v.parse::<c_int>().ok())
        .unwrap_or(-1);
    SOCKET.store(fd, Ordering::Relaxed);
    if fd >= 0 {
        send_hello();
    }
}

fn send_hello() {
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() } as u32;
    HELLO_PID.store(pid, Ordering::Relaxed);
    write_frame(SOCKET.load(Ordering::Relaxed), pid, hello());
}

#[used]
#[unsafe(link_section = "__DATA,__mod_init_func")]
static INIT: extern "C" fn() = init;

/// The directory an `openat` dirfd names (`F_GETPATH`), empty for `AT_FDCWD`.
fn dir_of(dirfd: c_int) -> Vec<u8> {
    if dirfd == libc::AT_FDCWD {
        return Vec::new();
    }
    let mut buffer = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: F_GETPATH writes a NUL-terminated path of at most PATH_MAX bytes.
    if unsafe { libc::fcntl(dirfd, libc::F_GETPATH, buffer.as_mut_ptr()) } < 0 {
        return Vec::new();
    }
    let len = buffer.iter().position(|&b| b == 0).unwrap_or(0);
    buffer.truncate(len);
    OsStr::from_bytes(&buffer).as_bytes().to_vec()
}

#[unsafe(no_mangle)]
pub extern "C" fn vt_report_open(dirfd: c_int, path: *const c_char, flags: c_int, result: c_int) {
    send(Call::Open {
        dir: dir_of(dirfd),
        path: bytes(path),
        flags,
        result,
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn vt_report_probe(path: *const c_char, follow: c_int, result: c_int) {
    send(Call::Probe {
        path: bytes(path),
        follow: follow != 0,
        result,
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn vt_report_list(path: *const c_char, result: c_int) {
    send(Call::ListDir {
        path: bytes(path),
        result,
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn vt_report_exec(path: *const c_char, result: c_int) {
    send(Call::Exec {
        path: bytes(path),
        result,
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn vt_report_path(op: c_int, path: *const c_char, result: c_int) {
    let path = bytes(path);
    send(match op {
        1 => Call::Mkdir { path, result },
        2 => Call::Unlink { path, result },
        3 => Call::Rmdir { path, result },
        _ => Call::Chdir { path, result },
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn vt_report_rename(from: *const c_char, to: *const c_char, result: c_int) {
    send(Call::Rename {
        from: bytes(from),
        to: bytes(to),
        result,
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn vt_report_forked(child: pid_t) {
    send(Call::Forked {
        child: child as u32,
    });
}

//! This process's record buffer: a `MAP_SHARED` file under `$VT_PRELOAD_DIR` (layout in
//! `preload_abi`). Lock-free: writers reserve space with a compare-and-swap on the cursor.

use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use preload_abi::{
    CAPACITY, DIR_ENV, HEADER_LEN, MAGIC, OFFSET_CURSOR, OFFSET_TIME, RECORD_HEADER_LEN,
    STATE_DONE, STATE_PENDING, VERSION, record_len,
};

use crate::syscall::{exempt, traced};

static BUFFER: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());

/// This process's id, stamped on every record: set by the constructor and again in a `fork`
/// child, because asking per record (`gettid`, a real syscall of ~90 ns) was almost half of
/// what recording a call costs. A `vfork` or `posix_spawn` child runs on its parent's memory
/// until it execs, so its few records carry the parent's id; vt only uses the id to map
/// `/proc/self` and to know which processes are the task's, and the parent is the task's.
static PID: AtomicU32 = AtomicU32::new(0);

/// Runs in the child of every `fork` that goes through libc.
extern "C" fn after_fork_in_child() {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { traced(libc::SYS_getpid, [0; 6]) } as u32;
    PID.store(pid, Ordering::Relaxed);
    crate::seen::fork_child();
}

/// Creates and maps this process image's buffer; leaves the fast path off on any failure.
///
/// # Safety
/// Only from the constructor, after the trampoline is mapped.
pub unsafe fn open() {
    // SAFETY: getenv during single-threaded initialization; the name is NUL-terminated.
    let dir = unsafe { libc::getenv(c"VT_PRELOAD_DIR".as_ptr()) };
    debug_assert_eq!(DIR_ENV, "VT_PRELOAD_DIR");
    if dir.is_null() {
        return;
    }
    // SAFETY: getenv returned a NUL-terminated string.
    let dir = unsafe { core::ffi::CStr::from_ptr(dir) }.to_bytes();
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { traced(libc::SYS_getpid, [0; 6]) } as u64;
    PID.store(pid as u32, Ordering::Relaxed);
    // SAFETY: registers a handler that only stores an integer; the constructor runs once.
    if unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) } != 0 {
        return; // without it a forked child's records would carry the wrong process
    }
    for n in 0..1000u64 {
        let mut name = [0u8; 4096];
        if file_name(&mut name, dir, pid, n).is_none() {
            return;
        }
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC;
        // SAFETY: `name` is NUL-terminated. Through the trampoline: vt's own file, not an
        // observation of the task.
        let fd = unsafe {
            exempt(
                libc::SYS_openat,
                [
                    libc::AT_FDCWD as usize,
                    name.as_ptr() as usize,
                    flags as usize,
                    0o600,
                    0,
                    0,
                ],
            )
        };
        if fd == -(libc::EEXIST as isize) {
            continue; // this pid exec'd before: the next name
        }
        if fd < 0 {
            return;
        }
        // SAFETY: our fresh fd; a sparse file costs no memory until written.
        unsafe { map(fd as usize) };
        // SAFETY: closing our fd (the mapping keeps the file).
        unsafe { traced(libc::SYS_close, [fd as usize, 0, 0, 0, 0, 0]) };
        return;
    }
}

/// `DIR/PID.N` with a NUL, or None if it does not fit.
fn file_name(out: &mut [u8; 4096], dir: &[u8], pid: u64, n: u64) -> Option<()> {
    let mut at = 0;
    let mut push = |bytes: &[u8]| -> Option<()> {
        let end = at + bytes.len();
        out.get_mut(at..end)?.copy_from_slice(bytes);
        at = end;
        Some(())
    };
    push(dir)?;
    push(b"/")?;
    push(decimal(pid, &mut [0u8; 20]))?;
    push(b".")?;
    push(decimal(n, &mut [0u8; 20]))?;
    push(b"\0")
}

/// `n` in decimal, written at the end of `digits` (no allocation, no formatting machinery).
pub fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[start..];
        }
    }
}

/// # Safety
/// `fd` is a fresh, empty, writable regular file.
unsafe fn map(fd: usize) {
    // SAFETY: growing our own file.
    if unsafe { traced(libc::SYS_ftruncate, [fd, CAPACITY, 0, 0, 0, 0]) } != 0 {
        return;
    }
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as usize;
    // SAFETY: a new shared mapping of our file.
    let base = unsafe {
        traced(
            libc::SYS_mmap,
            [0, CAPACITY, prot, libc::MAP_SHARED as usize, fd, 0],
        )
    };
    if base < 0 {
        return;
    }
    let base = base as *mut u8;
    // SAFETY: the mapping is CAPACITY bytes, zero-filled, and not yet published.
    unsafe {
        core::ptr::copy_nonoverlapping(MAGIC.to_le_bytes().as_ptr(), base, 4);
        core::ptr::copy_nonoverlapping(VERSION.to_le_bytes().as_ptr(), base.add(4), 4);
    }
    BUFFER.store(base, Ordering::Release);
}

pub fn ready() -> bool {
    !BUFFER.load(Ordering::Relaxed).is_null()
}

/// The mapping's start (null without a buffer).
pub fn base() -> *const u8 {
    BUFFER.load(Ordering::Acquire)
}

/// A reserved record being written.
pub struct Slot {
    record: *mut u8,
    len: usize,
    /// Where the record starts in the buffer.
    offset: usize,
}

/// Reserves and writes a pending record for `op` on the path `parts` concatenated, made
/// now; None if there is no buffer or no room (the caller then makes a notified call
/// instead).
pub fn begin(op: u8, flags: i32, parts: &[&[u8]]) -> Option<Slot> {
    let time_ns = monotonic_ns();
    let base = BUFFER.load(Ordering::Acquire);
    if base.is_null() {
        return None;
    }
    let path_len: usize = parts.iter().map(|p| p.len()).sum();
    let path_len16 = u16::try_from(path_len).ok()?;
    let len = record_len(path_len);
    // SAFETY: the cursor is an 8-aligned u64 inside the mapping, shared by every writer.
    let cursor = unsafe { &*(base.add(OFFSET_CURSOR) as *const AtomicU64) };
    let mut used = cursor.load(Ordering::Relaxed);
    loop {
        let end = (HEADER_LEN as u64)
            .checked_add(used)?
            .checked_add(len as u64)?;
        if end > CAPACITY as u64 {
            return None;
        }
        match cursor.compare_exchange_weak(
            used,
            used + len as u64,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => break,
            Err(now) => used = now,
        }
    }
    let offset = HEADER_LEN + used as usize;
    // SAFETY: [offset, offset + len) is ours alone and inside the mapping.
    let record = unsafe { base.add(offset) };
    let slot = Slot {
        record,
        len,
        offset,
    };
    slot.state().store((len as u32) << 2, Ordering::Relaxed);
    let pid = PID.load(Ordering::Relaxed);
    // SAFETY: the header fields and the path lie inside our reserved record.
    unsafe {
        *record.add(4) = op;
        *record.add(5) = 0;
        core::ptr::copy_nonoverlapping(path_len16.to_le_bytes().as_ptr(), record.add(6), 2);
        core::ptr::copy_nonoverlapping(pid.to_le_bytes().as_ptr(), record.add(8), 4);
        core::ptr::copy_nonoverlapping(flags.to_le_bytes().as_ptr(), record.add(12), 4);
        core::ptr::copy_nonoverlapping(time_ns.to_le_bytes().as_ptr(), record.add(OFFSET_TIME), 8);
        let mut at = record.add(RECORD_HEADER_LEN);
        for part in parts {
            core::ptr::copy_nonoverlapping(part.as_ptr(), at, part.len());
            at = at.add(part.len());
        }
    }
    slot.state()
        .store(((len as u32) << 2) | STATE_PENDING, Ordering::Release);
    Some(slot)
}

/// CLOCK_MONOTONIC in nanoseconds, through the vDSO (libc's `clock_gettime` is not a file
/// API and never comes back here).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into our timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// What a record keeps of a call's result: 0 or the negative errno (a length or an fd
/// says nothing about the path).
pub fn stored_result(result: isize) -> i32 {
    if result < 0 { result as i32 } else { 0 }
}

impl Slot {
    fn state(&self) -> &AtomicU32 {
        // SAFETY: the record starts 8-aligned inside the mapping.
        unsafe { &*(self.record as *const AtomicU32) }
    }

    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Stores the call's result and marks the record done.
    pub fn finish(self, result: isize, bits: u8) {
        let result = stored_result(result);
        // SAFETY: fields inside our reserved record.
        unsafe {
            *self.record.add(5) = bits;
            core::ptr::copy_nonoverlapping(result.to_le_bytes().as_ptr(), self.record.add(16), 4);
        }
        self.state()
            .store(((self.len as u32) << 2) | STATE_DONE, Ordering::Release);
    }
}

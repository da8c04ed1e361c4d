//! The two ways this library makes a syscall: through the trampoline (not notified: the call
//! is recorded here) or from its own code (notified: seccomp records it).

use core::sync::atomic::{AtomicBool, Ordering};

use preload_abi::{TRAMPOLINE_ADDR, TRAMPOLINE_CODE, TRAMPOLINE_LEN};

/// A raw syscall: number and six arguments in, result or `-errno` out.
pub type Sys = unsafe fn(i64, [usize; 6]) -> isize;

static TRAMPOLINE_READY: AtomicBool = AtomicBool::new(false);

pub fn fast_path_ready() -> bool {
    TRAMPOLINE_READY.load(Ordering::Relaxed)
}

/// Maps the trampoline page at its fixed address; false (and no fast path) if anything is
/// already there.
///
/// # Safety
/// Only from the constructor.
pub unsafe fn map_trampoline() -> bool {
    let want = TRAMPOLINE_ADDR as usize;
    let len = TRAMPOLINE_LEN as usize;
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
    // SAFETY: a fresh anonymous mapping; NOREPLACE never clobbers an existing one.
    let got = unsafe {
        traced(
            libc::SYS_mmap,
            [want, len, prot as usize, flags as usize, usize::MAX, 0],
        )
    };
    if got != want as isize {
        if got >= 0 {
            // A kernel without MAP_FIXED_NOREPLACE took it as a hint and mapped elsewhere.
            // SAFETY: unmapping the mapping we were just given.
            unsafe { traced(libc::SYS_munmap, [got as usize, len, 0, 0, 0, 0]) };
        }
        return false;
    }
    // SAFETY: `want` is our writable page; the code fits in it.
    unsafe {
        core::ptr::copy_nonoverlapping(
            TRAMPOLINE_CODE.as_ptr(),
            want as *mut u8,
            TRAMPOLINE_CODE.len(),
        );
    }
    // SAFETY: making our own page executable and read-only.
    let r = unsafe {
        traced(
            libc::SYS_mprotect,
            [
                want,
                len,
                (libc::PROT_READ | libc::PROT_EXEC) as usize,
                0,
                0,
                0,
            ],
        )
    };
    if r != 0 {
        return false;
    }
    TRAMPOLINE_READY.store(true, Ordering::Release);
    true
}

/// A syscall through the trampoline: seccomp lets it through without a notification, so
/// the caller must have recorded it.
///
/// # Safety
/// As for the syscall itself; only after `fast_path_ready()`.
pub unsafe fn exempt(nr: i64, a: [usize; 6]) -> isize {
    // SAFETY: the trampoline follows the SysV convention for this signature (see its code).
    let trampoline: extern "C" fn(i64, usize, usize, usize, usize, usize, usize) -> isize =
        unsafe { core::mem::transmute(TRAMPOLINE_ADDR as usize) };
    trampoline(nr, a[0], a[1], a[2], a[3], a[4], a[5])
}

/// A syscall from this library's own code: notified by seccomp like any libc call.
///
/// # Safety
/// As for the syscall itself.
pub unsafe fn traced(nr: i64, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 syscall convention; the kernel clobbers rcx and r11 only.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Converts a raw result to libc's convention: the value, or -1 with `errno` set.
pub fn to_libc(ret: isize) -> isize {
    if (-4095..0).contains(&ret) {
        set_errno(-ret as i32);
        -1
    } else {
        ret
    }
}

/// This thread's `errno`.
pub fn errno() -> i32 {
    // SAFETY: errno is this thread's; libc's accessor is not interposed.
    unsafe { *libc::__errno_location() }
}

pub fn set_errno(code: i32) {
    // SAFETY: errno is this thread's; libc's accessor is not interposed.
    unsafe { *libc::__errno_location() = code };
}

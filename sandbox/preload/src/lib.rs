//! The fast path of vt's tracer (docs/architecture.md, "Trace and jail"), loaded into traced processes with
//! `LD_PRELOAD`.
//!
//! A seccomp notification costs 10–50 µs; most of a build's path syscalls come from a few
//! libc functions (`open`, `stat`, `access`, `readlink`, `realpath`, …). This library
//! interposes those, writes each observation into a per-process buffer that vt reads when
//! the task ends, and makes the real syscall through a trampoline at a fixed address that
//! the seccomp filter lets through without a notification. glibc's own opens (locale files,
//! message catalogues, `opendir`), which no symbol interposition reaches, are sent to the
//! same code by a jump written over glibc's entry points (`patch`).
//!
//! Completeness never depends on this library: anything it does not interpose, any process
//! it is not loaded into (static binaries, cleared `LD_PRELOAD`), and every case it declines
//! (no buffer, buffer full, a path it cannot name) makes an ordinary syscall from its own
//! code, which seccomp notifies as before. It only ever trades a notification for a record.
//!
//! Rules inside an interposed call: no allocation, no locks, no libc file API (it would
//! come back here), no panics.
//!
//! `no_std`: std would bring `libgcc_s` (for unwinding) into every traced process, and the
//! loader's search for it would show up as lookups the task never made.

#![cfg_attr(not(test), no_std)]

mod buffer;
mod interpose;
mod observe;
mod patch;
mod realpath;
mod seen;
mod syscall;

/// Runs when the dynamic loader maps this library, before `main`.
extern "C" fn init() {
    // SAFETY: called once by the loader, single-threaded, before any interposed call can
    // use the trampoline or the buffer.
    unsafe {
        if syscall::map_trampoline() {
            buffer::open();
            if buffer::ready() {
                patch::redirect_libc_opens();
            }
        }
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = init;

/// Nothing here panics by design (no indexing without a check, no unwrap); if something
/// did, the process cannot unwind through C callers, so it ends like an abort.
#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        // SAFETY: terminating the process by signal, as abort(3) does.
        unsafe {
            let pid = syscall::traced(libc::SYS_getpid, [0; 6]) as usize;
            syscall::traced(libc::SYS_kill, [pid, libc::SIGABRT as usize, 0, 0, 0, 0]);
            syscall::traced(libc::SYS_exit_group, [134, 0, 0, 0, 0, 0]);
        }
    }
}

/// The precompiled `core` refers to the unwinder's personality routine even with
/// `panic = "abort"`; without a definition the loader refuses the library. Nothing in this
/// library unwinds, so it is never called.
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

//! What installing each of vt's seccomp filters costs (BENCHMARKS.md, "stop 47"): every
//! traced task installs the tracing filter, every sandboxed one the deny-list too.
//!
//! Each installation happens in a fresh forked child (a filter cannot be removed), timed
//! around the `seccomp()` call alone; medians of 200. Next to them: a one-instruction
//! filter (the kernel's fixed cost) and the deny-list behind a first load the kernel's
//! action-cache emulation gives up on (the same program without that emulation).
//!
//! `cargo run --release -p vt-sandbox --example seccomp_install`

use std::time::Instant;

use libc::sock_filter;
use sandbox::trace::bpf;

fn main() {
    let deny = sandbox::jail::deny::deny_filter();
    let tracing = sandbox::trace::filter::tracing_filter(libc::SECCOMP_RET_USER_NOTIF, Some(42));
    let trivial = vec![bpf::ret(libc::SECCOMP_RET_ALLOW)];
    let mut unemulated = vec![bpf::load(bpf::OFFSET_IP_LOW)];
    unemulated.extend(deny.iter().copied());
    for (name, program, listener) in [
        ("deny-list", &deny, false),
        ("tracing filter (with a listener)", &tracing, true),
        ("one instruction", &trivial, false),
        ("deny-list, not emulated", &unemulated, false),
    ] {
        println!(
            "{name:34} {:4} instructions: {:4} µs",
            program.len(),
            median_install_us(program, listener)
        );
    }
}

fn median_install_us(program: &[sock_filter], listener: bool) -> i32 {
    let mut times: Vec<i32> = (0..200)
        .map(|_| install_in_child(program, listener))
        .collect();
    times.sort_unstable();
    times[times.len() / 2]
}

/// Installs `program` in a forked child, which exits with the microseconds it took (255 at
/// most, or 255 if the call failed).
fn install_in_child(program: &[sock_filter], listener: bool) -> i32 {
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len()).unwrap_or(u16::MAX),
        filter: program.as_ptr().cast_mut(),
    };
    let flags = if listener {
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
    } else {
        0
    };
    // SAFETY: the child only makes syscalls on memory it inherited, then `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: prctl and seccomp with a valid program, in the child only.
        unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            let started = Instant::now();
            let result = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &fprog as *const libc::sock_fprog,
            );
            let micros = i32::try_from(started.elapsed().as_micros()).unwrap_or(255);
            libc::_exit(if result < 0 { 255 } else { micros.min(255) });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    libc::WEXITSTATUS(status)
}

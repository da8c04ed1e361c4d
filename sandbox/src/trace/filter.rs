//! The BPF program that makes path syscalls stop for the supervisor.
//!
//! Built from [`syscalls::TRACED`] so the filter and the decoder share one table. Layout:
//! refuse non-native ABIs (i386 via `int 0x80`, x32) whose numbers would dodge the table,
//! then a search tree on the number ([`bpf::dispatch`]) that refuses io_uring, sends a
//! traced syscall to the shared part and allows everything else. The shared part lets the preload trampoline's calls through
//! (the recorder has already logged them: docs/architecture.md, "Trace and jail"), then one
//! small block per syscall with an fd-only variant lets that variant through, and returns
//! `action` for the rest.
//!
//! The trampoline check is in the program once, not once per traced syscall: the kernel
//! converts and JIT-compiles the program at every task's start, and the per-syscall copies
//! made it 471 instructions (~0.3 ms of `seccomp()` per task, measured with `perf trace`).

use libc::sock_filter;

use super::bpf::{
    self, OFFSET_ARCH, OFFSET_IP_HIGH, OFFSET_IP_LOW, OFFSET_NR, offset_arg_high, offset_arg_low,
};
use super::syscalls::{self, Exempt};

/// `AUDIT_ARCH_X86_64` (EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE).
pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// Syscall numbers at or above this are the x32 ABI.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

pub const fn errno(code: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (code as u32 & libc::SECCOMP_RET_DATA)
}

/// The filter every task vt starts installs (`SECCOMP_RET_USER_NOTIF`, vt's exec token),
/// built once per process: building it (the search tree on the numbers) was ~0.02 ms of
/// every task's start, for the same program each time.
pub fn task_filter() -> &'static [sock_filter] {
    static PROGRAM: std::sync::OnceLock<Vec<sock_filter>> = std::sync::OnceLock::new();
    PROGRAM
        .get_or_init(|| tracing_filter(libc::SECCOMP_RET_USER_NOTIF, super::launch::exec_token()))
}

/// The tracing filter; `action` is `SECCOMP_RET_USER_NOTIF` (or `SECCOMP_RET_TRACE` for a
/// ptrace supervisor). With `exec_token`, an `execve` whose fourth argument (unused by the
/// kernel) is the token is let through: vt's own exec of the task's program, which vt
/// records itself (`launch::exec_token`).
pub fn tracing_filter(action: u32, exec_token: Option<u64>) -> Vec<sock_filter> {
    let enosys = errno(libc::ENOSYS);
    let mut program = vec![
        bpf::load(OFFSET_ARCH),
        bpf::jump_eq(AUDIT_ARCH_X86_64, 1, 0),
        bpf::ret(enosys),
        bpf::load(OFFSET_NR),
        bpf::jump_ge(X32_SYSCALL_BIT, 0, 1),
        bpf::ret(enosys),
    ];
    // Dispatch on the number (a search tree, `bpf::dispatch`): a refused syscall to
    // ENOSYS, a traced one to the shared part, every other one to ALLOW. For those the
    // result depends on `arch` and `nr` alone, which lets the kernel's seccomp action cache
    // (Linux ≥ 5.11) skip the filter entirely for read, write, mmap, ….
    const ALLOW: usize = 0;
    const REFUSE: usize = 1;
    const SHARED: usize = 2;
    let cases: Vec<(u32, usize)> = syscalls::REFUSED
        .iter()
        .map(|(nr, _)| (*nr as u32, REFUSE))
        .chain(syscalls::TRACED.iter().map(|s| (s.nr as u32, SHARED)))
        .collect();
    let mut shared = trampoline_exemption();
    shared.push(bpf::load(OFFSET_NR));
    if let Some(token) = exec_token {
        let block = [
            bpf::load(offset_arg_low(3)),
            bpf::jump_eq(token as u32, 0, 3),
            bpf::load(offset_arg_high(3)),
            bpf::jump_eq((token >> 32) as u32, 0, 1),
            bpf::ret(libc::SECCOMP_RET_ALLOW),
            bpf::ret(action),
        ];
        shared.push(bpf::jump_eq(libc::SYS_execve as u32, 0, block.len() as u8));
        shared.extend(block);
    }
    for syscall in syscalls::TRACED {
        let block = match syscall.exempt {
            None => continue,
            Some(Exempt::FlagSet { arg, mask }) => vec![
                bpf::load(offset_arg_low(arg)),
                bpf::jump_set(mask, 0, 1),
                bpf::ret(libc::SECCOMP_RET_ALLOW),
                bpf::ret(action),
            ],
            Some(Exempt::NullPointer { arg }) => vec![
                bpf::load(offset_arg_low(arg)),
                bpf::jump_eq(0, 0, 3),
                bpf::load(offset_arg_high(arg)),
                bpf::jump_eq(0, 0, 1),
                bpf::ret(libc::SECCOMP_RET_ALLOW),
                bpf::ret(action),
            ],
        };
        // Every block ends in a return, so the accumulator still holds `nr` when a
        // comparison falls through to the next block.
        let skip = u8::try_from(block.len()).expect("filter blocks are a few instructions long");
        shared.push(bpf::jump_eq(syscall.nr as u32, 0, skip));
        shared.extend(block);
    }
    shared.push(bpf::ret(action));
    program.extend(bpf::dispatch(
        &cases,
        ALLOW,
        &[
            vec![bpf::ret(libc::SECCOMP_RET_ALLOW)],
            vec![bpf::ret(enosys)],
            shared,
        ],
    ));
    program
}

/// Allows calls whose instruction pointer lies on the trampoline page; falls through (with
/// the accumulator clobbered) otherwise.
fn trampoline_exemption() -> Vec<sock_filter> {
    let start = preload_abi::TRAMPOLINE_ADDR;
    let end = start + preload_abi::TRAMPOLINE_LEN;
    // The page never straddles a 4 GiB boundary, so the high halves are equal.
    debug_assert_eq!(start >> 32, (end - 1) >> 32);
    vec![
        bpf::load(OFFSET_IP_HIGH),
        bpf::jump_eq((start >> 32) as u32, 0, 4),
        bpf::load(OFFSET_IP_LOW),
        bpf::jump_ge(start as u32, 0, 2),
        bpf::jump_ge(end as u32, 1, 0),
        bpf::ret(libc::SECCOMP_RET_ALLOW),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::bpf::{SeccompData, evaluate};

    const NOTIFY: u32 = libc::SECCOMP_RET_USER_NOTIF;

    fn run(nr: i64, args: [u64; 6]) -> u32 {
        run_at(0x7f00_1234_5678, nr, args)
    }

    fn run_at(instruction_pointer: u64, nr: i64, args: [u64; 6]) -> u32 {
        let program = tracing_filter(NOTIFY, None);
        evaluate(
            &program,
            &SeccompData {
                nr: nr as i32,
                arch: AUDIT_ARCH_X86_64,
                instruction_pointer,
                args,
            },
        )
        .expect("filter runs to a return")
    }

    #[test]
    fn untraced_syscalls_never_look_past_nr() {
        // What makes the kernel's action cache apply: for an untraced syscall the program
        // loads nothing but `arch` and `nr` on its way to ALLOW. And the kernel emulates
        // that way for every number when the filter is installed: each takes a few steps
        // (`bpf::dispatch`), not a walk past every traced syscall's comparison.
        let program = tracing_filter(NOTIFY, Some(0x1234_5678_9abc_def0));
        let mut untraced = 0;
        for nr in 0..600 {
            let path = bpf::path_of_number(&program, nr);
            assert!(path.len() <= 24, "nr {nr} takes {} steps", path.len());
            let nr = i64::from(nr);
            if syscalls::TRACED.iter().any(|s| s.nr == nr)
                || syscalls::REFUSED.iter().any(|(r, _)| *r == nr)
            {
                continue;
            }
            untraced += 1;
            assert_eq!(path.last().map(|ret| ret.k), Some(libc::SECCOMP_RET_ALLOW));
            let load = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
            for insn in path.iter().filter(|i| i.code == load) {
                assert!(
                    insn.k == OFFSET_ARCH || insn.k == OFFSET_NR,
                    "nr {nr} loads offset {}",
                    insn.k
                );
            }
            assert!(path.len() <= 16, "nr {nr} takes {} steps", path.len());
        }
        assert!(untraced > 400, "most numbers are allowed ({untraced})");
    }

    #[test]
    fn only_the_trampoline_page_is_exempt() {
        let args = [3, 0x1000, 0x2000, 0, 0, 0];
        let start = preload_abi::TRAMPOLINE_ADDR;
        let after_syscall = start + 25;
        for (ip, expected) in [
            (after_syscall, libc::SECCOMP_RET_ALLOW),
            (start, libc::SECCOMP_RET_ALLOW),
            (start + 4095, libc::SECCOMP_RET_ALLOW),
            (start + 4096, NOTIFY),
            (start - 1, NOTIFY),
            (after_syscall + (1 << 32), NOTIFY), // same low half, other 4 GiB
            (after_syscall & 0xffff_ffff, NOTIFY),
        ] {
            assert_eq!(run_at(ip, libc::SYS_openat, args), expected, "ip {ip:#x}");
        }
        // The exemption never reaches past the ABI checks or io_uring's refusal.
        assert_eq!(
            run_at(after_syscall, libc::SYS_io_uring_setup, args),
            errno(libc::ENOSYS)
        );
    }

    #[test]
    fn every_traced_syscall_notifies() {
        // Non-null pointers and no flags: the path-carrying form of every call.
        let args = [3, 0x1000, 0x2000, 0, 0, 0];
        for syscall in syscalls::TRACED {
            assert_eq!(run(syscall.nr, args), NOTIFY, "{}", syscall.name);
        }
    }

    #[test]
    fn syscalls_without_paths_pass() {
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_mmap,
            libc::SYS_close,
            libc::SYS_fstat,
            libc::SYS_clone,
            libc::SYS_fchdir,
        ] {
            assert_eq!(run(nr, [0; 6]), libc::SECCOMP_RET_ALLOW, "nr {nr}");
        }
    }

    #[test]
    fn fd_only_variants_pass_and_path_variants_notify() {
        let empty_path = libc::AT_EMPTY_PATH as u64;
        assert_eq!(
            run(libc::SYS_newfstatat, [3, 0x1000, 0x2000, empty_path, 0, 0]),
            libc::SECCOMP_RET_ALLOW
        );
        assert_eq!(
            run(
                libc::SYS_newfstatat,
                [3, 0x1000, 0x2000, libc::AT_SYMLINK_NOFOLLOW as u64, 0, 0]
            ),
            NOTIFY
        );
        assert_eq!(
            run(libc::SYS_statx, [3, 0x1000, empty_path, 0, 0, 0]),
            libc::SECCOMP_RET_ALLOW
        );
        assert_eq!(run(libc::SYS_statx, [3, 0x1000, 0, 0, 0, 0]), NOTIFY);
        // utimensat(fd, NULL, …) is futimens; a pointer with only high bits set still notifies.
        assert_eq!(
            run(libc::SYS_utimensat, [3, 0, 0, 0, 0, 0]),
            libc::SECCOMP_RET_ALLOW
        );
        assert_eq!(
            run(libc::SYS_utimensat, [3, 0x7fff_0000_0000, 0, 0, 0, 0]),
            NOTIFY
        );
        assert_eq!(run(libc::SYS_utimensat, [3, 0x1000, 0, 0, 0, 0]), NOTIFY);
    }

    #[test]
    fn io_uring_and_foreign_abis_are_refused() {
        assert_eq!(run(libc::SYS_io_uring_setup, [0; 6]), errno(libc::ENOSYS));
        let x32_open = (X32_SYSCALL_BIT as i64) | libc::SYS_open;
        assert_eq!(run(x32_open, [0; 6]), errno(libc::ENOSYS));
        let program = tracing_filter(NOTIFY, None);
        let i386 = SeccompData {
            nr: 5,
            arch: 0x4000_0003,
            ..Default::default()
        };
        assert_eq!(evaluate(&program, &i386), Ok(errno(libc::ENOSYS)));
    }

    /// What the filter must answer, read from the table directly (no BPF).
    fn expected(nr: i64, ip: u64, args: [u64; 6]) -> u32 {
        if syscalls::REFUSED.iter().any(|(refused, _)| *refused == nr) {
            return errno(libc::ENOSYS);
        }
        let Some(syscall) = syscalls::TRACED.iter().find(|s| s.nr == nr) else {
            return libc::SECCOMP_RET_ALLOW;
        };
        let start = preload_abi::TRAMPOLINE_ADDR;
        if (start..start + preload_abi::TRAMPOLINE_LEN).contains(&ip) {
            return libc::SECCOMP_RET_ALLOW;
        }
        let exempt = match syscall.exempt {
            None => false,
            Some(Exempt::FlagSet { arg, mask }) => args[usize::from(arg)] as u32 & mask != 0,
            Some(Exempt::NullPointer { arg }) => args[usize::from(arg)] == 0,
        };
        if exempt {
            libc::SECCOMP_RET_ALLOW
        } else {
            NOTIFY
        }
    }

    #[test]
    fn every_syscall_number_gets_the_tables_answer() {
        let start = preload_abi::TRAMPOLINE_ADDR;
        let ips = [0x7f00_1234_5678, start, start + 25, start + 4096, start - 1];
        let mut argument_sets = vec![[3, 0x1000, 0x2000, 0, 0, 0], [0; 6], [u64::MAX; 6]];
        for flag in [
            libc::AT_EMPTY_PATH,
            libc::AT_SYMLINK_NOFOLLOW,
            libc::O_CREAT,
        ] {
            for arg in 0..6 {
                let mut args = [3, 0x1000, 0x2000, 0, 0, 0];
                args[arg] = flag as u64;
                argument_sets.push(args);
                args[arg] = 0x7fff_0000_0000;
                argument_sets.push(args);
            }
        }
        for nr in 0..600 {
            for ip in ips {
                for args in &argument_sets {
                    assert_eq!(
                        run_at(ip, nr, *args),
                        expected(nr, ip, *args),
                        "nr {nr} ip {ip:#x} args {args:x?}"
                    );
                }
            }
        }
    }

    #[test]
    fn only_an_execve_carrying_the_token_passes_unstopped() {
        let token = 0x1234_5678_9abc_def0_u64;
        let program = tracing_filter(NOTIFY, Some(token));
        let call = |nr: i64, fourth: u64| {
            evaluate(
                &program,
                &SeccompData {
                    nr: nr as i32,
                    arch: AUDIT_ARCH_X86_64,
                    instruction_pointer: 0x7f00_1234_5678,
                    args: [0x1000, 0x2000, 0x3000, fourth, 0, 0],
                },
            )
            .expect("filter runs to a return")
        };
        assert_eq!(call(libc::SYS_execve, token), libc::SECCOMP_RET_ALLOW);
        // Either half wrong, or no token: the supervisor sees it, as every other exec.
        assert_eq!(call(libc::SYS_execve, token ^ 1), NOTIFY);
        assert_eq!(call(libc::SYS_execve, token ^ (1 << 40)), NOTIFY);
        assert_eq!(call(libc::SYS_execve, 0), NOTIFY);
        // Only execve: the token opens nothing else, execveat included.
        assert_eq!(call(libc::SYS_execveat, token), NOTIFY);
        assert_eq!(call(libc::SYS_openat, token), NOTIFY);
        assert_eq!(call(libc::SYS_read, token), libc::SECCOMP_RET_ALLOW);
        // Without a token, execve stops whatever its fourth argument.
        assert_eq!(
            run(libc::SYS_execve, [0x1000, 0x2000, 0x3000, token, 0, 0]),
            NOTIFY
        );
    }

    #[test]
    fn program_fits_the_kernel_limit() {
        assert!(tracing_filter(NOTIFY, None).len() < 4096, "BPF_MAXINSNS");
    }
}

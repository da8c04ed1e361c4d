//! The sandbox's seccomp deny-list: kernel attack surface a build never needs, as a BPF
//! program (plain data, run through [`crate::trace::bpf::evaluate`] by the tests).
//!
//! It is a second filter next to the tracing one; the kernel applies the most restrictive
//! result, and `ERRNO` outranks `USER_NOTIF`, so a denied call is refused without a
//! notification. The trampoline exemption of the tracing filter does not apply here.

use libc::sock_filter;

use crate::trace::bpf::{self, OFFSET_ARCH, OFFSET_NR, offset_arg_low};
use crate::trace::filter::{AUDIT_ARCH_X86_64, X32_SYSCALL_BIT, errno};

/// Refused with EPERM whatever their arguments.
pub const DENIED: &[(i64, &str)] = &[
    (libc::SYS_bpf, "bpf"),
    (libc::SYS_perf_event_open, "perf_event_open"),
    (libc::SYS_keyctl, "keyctl"),
    (libc::SYS_add_key, "add_key"),
    (libc::SYS_request_key, "request_key"),
    (libc::SYS_kexec_load, "kexec_load"),
    (libc::SYS_kexec_file_load, "kexec_file_load"),
    (libc::SYS_init_module, "init_module"),
    (libc::SYS_finit_module, "finit_module"),
    (libc::SYS_delete_module, "delete_module"),
    // The sandbox's mounts are final once the task runs.
    (libc::SYS_mount, "mount"),
    (libc::SYS_umount2, "umount2"),
    (libc::SYS_pivot_root, "pivot_root"),
    (libc::SYS_move_mount, "move_mount"),
    (libc::SYS_open_tree, "open_tree"),
    (libc::SYS_fsopen, "fsopen"),
    (libc::SYS_fsconfig, "fsconfig"),
    (libc::SYS_fsmount, "fsmount"),
    (libc::SYS_fspick, "fspick"),
    (libc::SYS_mount_setattr, "mount_setattr"),
    (libc::SYS_setns, "setns"),
    (libc::SYS_swapon, "swapon"),
    (libc::SYS_swapoff, "swapoff"),
    (libc::SYS_reboot, "reboot"),
    (libc::SYS_acct, "acct"),
    (libc::SYS_iopl, "iopl"),
    (libc::SYS_ioperm, "ioperm"),
    (libc::SYS_userfaultfd, "userfaultfd"),
    // Tracing another process could rewrite its syscalls after the tracer looked.
    (libc::SYS_ptrace, "ptrace"),
    (libc::SYS_process_vm_writev, "process_vm_writev"),
    (libc::SYS_open_by_handle_at, "open_by_handle_at"),
    (libc::SYS_name_to_handle_at, "name_to_handle_at"),
    (libc::SYS_lookup_dcookie, "lookup_dcookie"),
    (libc::SYS_quotactl, "quotactl"),
    (libc::SYS_settimeofday, "settimeofday"),
    (libc::SYS_clock_settime, "clock_settime"),
    (libc::SYS_clock_adjtime, "clock_adjtime"),
    (libc::SYS_adjtimex, "adjtimex"),
    (libc::SYS_syslog, "syslog"),
    (libc::SYS_vhangup, "vhangup"),
];

/// `clone3` passes its flags in memory BPF cannot read, so it says ENOSYS and libc falls
/// back to `clone`, whose flags can be checked.
pub const NO_CLONE3: (i64, &str) = (libc::SYS_clone3, "clone3");

/// `ioctl` requests that push input into a terminal (CVE-2017-5226). The request is an
/// `unsigned int`: only the low 32 bits of the argument are compared, or setting a high bit
/// would slip past (CVE-2019-10063).
pub const DENIED_IOCTLS: &[(u32, &str)] = &[
    (libc::TIOCSTI as u32, "TIOCSTI"),
    (libc::TIOCLINUX as u32, "TIOCLINUX"),
];

/// `unshare`/`clone` flags that would create a user namespace: with one, a task regains a
/// full set of capabilities over namespaces of its own and, with them, the kernel surface
/// the rest of this list closes.
pub const DENIED_NAMESPACE_FLAGS: u32 = libc::CLONE_NEWUSER as u32;

/// The deny-list program.
pub fn deny_filter() -> Vec<sock_filter> {
    let eperm = errno(libc::EPERM);
    let mut program = vec![
        bpf::load(OFFSET_ARCH),
        bpf::jump_eq(AUDIT_ARCH_X86_64, 1, 0),
        bpf::ret(libc::SECCOMP_RET_KILL_PROCESS),
        bpf::load(OFFSET_NR),
        bpf::jump_ge(X32_SYSCALL_BIT, 0, 1),
        bpf::ret(libc::SECCOMP_RET_KILL_PROCESS),
    ];
    for (nr, _) in DENIED {
        program.push(bpf::jump_eq(*nr as u32, 0, 1));
        program.push(bpf::ret(eperm));
    }
    program.push(bpf::jump_eq(NO_CLONE3.0 as u32, 0, 1));
    program.push(bpf::ret(errno(libc::ENOSYS)));
    for nr in [libc::SYS_unshare, libc::SYS_clone] {
        // Blocks end in returns or reload `nr`, so the next comparison sees it again.
        program.extend([
            bpf::jump_eq(nr as u32, 0, 4),
            bpf::load(offset_arg_low(0)),
            bpf::jump_set(DENIED_NAMESPACE_FLAGS, 0, 1),
            bpf::ret(eperm),
            bpf::ret(libc::SECCOMP_RET_ALLOW),
        ]);
    }
    let ioctls = u8::try_from(DENIED_IOCTLS.len() * 2 + 2).expect("a handful of ioctls");
    program.push(bpf::jump_eq(libc::SYS_ioctl as u32, 0, ioctls));
    program.push(bpf::load(offset_arg_low(1)));
    for (request, _) in DENIED_IOCTLS {
        program.push(bpf::jump_eq(*request, 0, 1));
        program.push(bpf::ret(eperm));
    }
    program.push(bpf::ret(libc::SECCOMP_RET_ALLOW));
    program.push(bpf::ret(libc::SECCOMP_RET_ALLOW));
    program
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::bpf::{SeccompData, evaluate};

    fn run(nr: i64, args: [u64; 6]) -> u32 {
        let data = SeccompData {
            nr: nr as i32,
            arch: AUDIT_ARCH_X86_64,
            instruction_pointer: 0x1000,
            args,
        };
        evaluate(&deny_filter(), &data).expect("the program is well formed")
    }

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const EPERM: u32 = errno(libc::EPERM);

    #[test]
    fn attack_surface_is_refused_and_ordinary_calls_pass() {
        for (nr, name) in DENIED {
            assert_eq!(run(*nr, [0; 6]), EPERM, "{name}");
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_mmap,
            libc::SYS_socket,
            libc::SYS_kill,
        ] {
            assert_eq!(run(nr, [0; 6]), ALLOW, "{nr}");
        }
        assert_eq!(run(libc::SYS_clone3, [0; 6]), errno(libc::ENOSYS));
    }

    #[test]
    fn new_user_namespaces_are_refused_other_clones_pass() {
        let newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(run(libc::SYS_unshare, [newuser, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(
            run(
                libc::SYS_clone,
                [newuser | libc::SIGCHLD as u64, 0, 0, 0, 0, 0]
            ),
            EPERM
        );
        // fork(), pthread_create(), unshare of a mount namespace alone (refused later by
        // the missing capability, not here).
        assert_eq!(
            run(libc::SYS_clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
            ALLOW
        );
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(run(libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            run(libc::SYS_unshare, [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]),
            ALLOW
        );
    }

    #[test]
    fn terminal_injection_is_refused_with_a_masked_comparison() {
        let tiocsti = libc::TIOCSTI;
        assert_eq!(run(libc::SYS_ioctl, [0, tiocsti, 0, 0, 0, 0]), EPERM);
        // CVE-2019-10063: the kernel ignores the high half of the request.
        assert_eq!(
            run(libc::SYS_ioctl, [0, tiocsti | 1 << 32, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(
            run(libc::SYS_ioctl, [0, libc::TIOCLINUX, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(
            run(libc::SYS_ioctl, [0, libc::TIOCGWINSZ, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(run(libc::SYS_ioctl, [0, libc::FIONREAD, 0, 0, 0, 0]), ALLOW);
    }

    #[test]
    fn foreign_abis_are_killed() {
        let data = SeccompData {
            nr: 1,
            arch: 0x4000_0003, // AUDIT_ARCH_I386
            ..SeccompData::default()
        };
        assert_eq!(
            evaluate(&deny_filter(), &data),
            Ok(libc::SECCOMP_RET_KILL_PROCESS)
        );
    }
}

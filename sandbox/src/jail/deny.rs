//! The sandbox's seccomp deny-list: kernel attack surface a build never needs, as a BPF
//! program (plain data, run through [`crate::trace::bpf::evaluate`] by the tests).
//!
//! It is a second filter next to the tracing one; the kernel applies the most restrictive
//! result, and `ERRNO` outranks `USER_NOTIF`, so a denied call is refused without a
//! notification. The trampoline exemption of the tracing filter does not apply here.

use libc::sock_filter;

use crate::trace::bpf::{self, OFFSET_ARCH, OFFSET_NR, offset_arg_low};
use crate::trace::filter::{AUDIT_ARCH_X86_64, X32_SYSCALL_BIT, errno};

/// `open_tree_attr` (Linux 6.15): the same number on every architecture; the libc crate
/// names it only for m68k so far.
pub const SYS_OPEN_TREE_ATTR: i64 = 467;

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
    (SYS_OPEN_TREE_ATTR, "open_tree_attr"),
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

/// [`deny_filter`], built once per process (the same program for every sandbox).
pub fn deny_program() -> &'static [sock_filter] {
    static PROGRAM: std::sync::OnceLock<Vec<sock_filter>> = std::sync::OnceLock::new();
    PROGRAM.get_or_init(deny_filter)
}

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
    // A search tree on the number (`bpf::dispatch`: cheap for the kernel to emulate when
    // the filter is installed, at every sandboxed task's start).
    const ALLOW: usize = 0;
    const REFUSE: usize = 1;
    const NO_SUCH_CALL: usize = 2;
    const NAMESPACES: usize = 3;
    const IOCTL: usize = 4;
    let mut cases: Vec<(u32, usize)> = DENIED.iter().map(|(nr, _)| (*nr as u32, REFUSE)).collect();
    cases.push((NO_CLONE3.0 as u32, NO_SUCH_CALL));
    cases.push((libc::SYS_unshare as u32, NAMESPACES));
    cases.push((libc::SYS_clone as u32, NAMESPACES));
    cases.push((libc::SYS_ioctl as u32, IOCTL));
    let namespaces = vec![
        bpf::load(offset_arg_low(0)),
        bpf::jump_set(DENIED_NAMESPACE_FLAGS, 0, 1),
        bpf::ret(eperm),
        bpf::ret(libc::SECCOMP_RET_ALLOW),
    ];
    let mut ioctl = vec![bpf::load(offset_arg_low(1))];
    for (request, _) in DENIED_IOCTLS {
        ioctl.push(bpf::jump_eq(*request, 0, 1));
        ioctl.push(bpf::ret(eperm));
    }
    ioctl.push(bpf::ret(libc::SECCOMP_RET_ALLOW));
    program.extend(bpf::dispatch(
        &cases,
        ALLOW,
        &[
            vec![bpf::ret(libc::SECCOMP_RET_ALLOW)],
            vec![bpf::ret(eperm)],
            vec![bpf::ret(errno(libc::ENOSYS))],
            namespaces,
            ioctl,
        ],
    ));
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

    /// What the deny-list must answer, read from the tables directly (no BPF).
    fn expected(nr: i64, args: [u64; 6]) -> u32 {
        if DENIED.iter().any(|(denied, _)| *denied == nr) {
            return EPERM;
        }
        if nr == NO_CLONE3.0 {
            return errno(libc::ENOSYS);
        }
        if (nr == libc::SYS_unshare || nr == libc::SYS_clone)
            && args[0] as u32 & DENIED_NAMESPACE_FLAGS != 0
        {
            return EPERM;
        }
        if nr == libc::SYS_ioctl && DENIED_IOCTLS.iter().any(|(r, _)| *r == args[1] as u32) {
            return EPERM;
        }
        ALLOW
    }

    #[test]
    fn every_syscall_number_gets_the_tables_answer() {
        let mut argument_sets = vec![[0; 6], [u64::MAX; 6], [3, 0x1000, 0, 0, 0, 0]];
        for value in [
            libc::CLONE_NEWUSER as u64,
            libc::CLONE_NEWNS as u64,
            libc::TIOCSTI,
            libc::TIOCLINUX,
            libc::TIOCSTI | (1 << 32),
        ] {
            argument_sets.push([value, 0, 0, 0, 0, 0]);
            argument_sets.push([3, value, 0, 0, 0, 0]);
        }
        for nr in 0..600 {
            for args in &argument_sets {
                assert_eq!(
                    run(nr, *args),
                    expected(nr, *args),
                    "nr {nr} args {args:x?}"
                );
            }
        }
    }

    #[test]
    fn allowed_numbers_are_decided_by_the_number_in_a_few_steps() {
        // The kernel emulates the filter for every number when it is installed and caches
        // the ones it always allows: they must load only `arch` and `nr`, and take a few
        // steps each (`bpf::dispatch`).
        let program = deny_filter();
        let load = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
        for nr in 0..600 {
            let path = crate::trace::bpf::path_of_number(&program, nr);
            assert!(path.len() <= 16, "nr {nr} takes {} steps", path.len());
            if expected(i64::from(nr), [0; 6]) == ALLOW
                && ![libc::SYS_unshare, libc::SYS_clone, libc::SYS_ioctl].contains(&i64::from(nr))
            {
                assert!(
                    path.iter()
                        .filter(|i| i.code == load)
                        .all(|i| i.k == OFFSET_ARCH || i.k == OFFSET_NR),
                    "nr {nr} loads an argument"
                );
            }
        }
    }

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

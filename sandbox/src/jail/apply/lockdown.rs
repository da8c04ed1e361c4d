//! Closing the doors before the task starts: no_new_privs, the landlock ruleset, and every
//! capability (securebits, the bounding and ambient sets, capset).

use std::os::fd::AsRawFd;

use libc::c_int;

use super::Prepared;
use super::report::Step;

#[repr(C, packed)]
struct PathBeneath {
    allowed_access: u64,
    parent_fd: i32,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

impl Prepared {
    /// B: no_new_privs, landlock, then every capability (inherited by C).
    ///
    /// # Safety
    /// B only, after [`Self::build_root`]: no_new_privs, landlock and the capability drops
    /// are irreversible for B and C.
    pub(super) unsafe fn lock_down(&mut self) -> std::io::Result<()> {
        // SAFETY: prctl/landlock/capset syscalls on prepared values.
        unsafe {
            self.check(
                Step::NoNewPrivs,
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            )?;
            if let Some(ruleset) = &self.landlock_ruleset {
                let ruleset = ruleset.as_raw_fd();
                for (path, access) in &self.landlock_rules {
                    let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                    if fd < 0 {
                        continue; // not mounted on this host (e.g. no /dev/shm)
                    }
                    let rule = PathBeneath {
                        allowed_access: *access,
                        parent_fd: fd,
                    };
                    let added = libc::syscall(
                        libc::SYS_landlock_add_rule,
                        ruleset,
                        1, // LANDLOCK_RULE_PATH_BENEATH
                        &rule as *const PathBeneath,
                        0,
                    ) as c_int;
                    libc::close(fd);
                    self.check(Step::Landlock, added)?;
                }
                self.check(
                    Step::Landlock,
                    libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0) as c_int,
                )?;
            }
            // Securebits first (needs CAP_SETPCAP): uid 0 inside must never regain
            // capabilities through exec.
            let securebits = libc::SECBIT_NOROOT
                | libc::SECBIT_NOROOT_LOCKED
                | libc::SECBIT_NO_SETUID_FIXUP
                | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
                | libc::SECBIT_NO_CAP_AMBIENT_RAISE
                | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
            self.check(
                Step::Capabilities,
                libc::prctl(libc::PR_SET_SECUREBITS, securebits, 0, 0, 0),
            )?;
            for cap in &self.capabilities {
                self.check(
                    Step::Capabilities,
                    libc::prctl(libc::PR_CAPBSET_DROP, *cap as libc::c_ulong, 0, 0, 0),
                )?;
            }
            self.check(
                Step::Capabilities,
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                    0,
                    0,
                    0,
                ),
            )?;
            let header = CapHeader {
                version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
                pid: 0,
            };
            let data = [CapData::default(); 2];
            self.check(
                Step::Capabilities,
                libc::syscall(libc::SYS_capset, &header, data.as_ptr()) as c_int,
            )?;
        }
        Ok(())
    }
}

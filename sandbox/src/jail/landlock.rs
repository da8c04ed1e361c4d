//! Landlock as the sandbox's second wall: the same rights the mounts give, enforced by an
//! LSM that also holds if a mount is ever wrong. Best effort: the rights are those of the
//! kernel's ABI, and the ABI used is reported.
//!
//! The `landlock` crate computes the access sets for the running ABI and creates the
//! ruleset (before the fork); the rules themselves must name paths inside the sandbox's
//! new root, so the child adds them with raw syscalls ([`super::apply`]).

use std::os::fd::OwnedFd;
use std::path::Path;

use landlock::{ABI, Access, AccessFs, BitFlags, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope};

/// What one rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Read, list and execute (everything the sandbox shows).
    Read,
    /// Everything: declared outputs and scratch.
    ReadWrite,
    /// Device nodes: read, write, truncate (`> /dev/null`) and ioctl (terminals).
    Device,
}

/// Access bits for the running kernel's Landlock ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rights {
    /// The kernel's ABI version (0: no Landlock).
    pub abi: i32,
    pub handled: u64,
    read: u64,
    device: u64,
}

impl Rights {
    pub fn for_abi(abi: i32) -> Rights {
        let version = ABI::from(abi);
        let bits = |flags: BitFlags<AccessFs>| flags.bits();
        let all = AccessFs::from_all(version);
        let device = AccessFs::from_read(version)
            | (all & (AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev));
        Rights {
            abi,
            handled: bits(all),
            read: bits(AccessFs::from_read(version)),
            device: bits(device),
        }
    }

    pub fn bits(&self, grant: Grant) -> u64 {
        match grant {
            Grant::Read => self.read,
            Grant::ReadWrite => self.handled,
            Grant::Device => self.device,
        }
    }

    /// How the ABI reads in messages.
    pub fn describe(&self) -> String {
        if self.abi <= 0 {
            "no landlock (the kernel does not offer it)".into()
        } else {
            format!("landlock ABI {}", self.abi)
        }
    }
}

/// The running kernel's Landlock ABI (0 without Landlock).
pub fn kernel_abi() -> i32 {
    // SAFETY: the documented version query: NULL attr, size 0, flag VERSION.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    i32::try_from(abi).unwrap_or(0).max(0)
}

/// A ruleset handling every right of `rights.abi` (and, from ABI 6, scoping signals and
/// abstract unix sockets to the sandbox). `None` when the kernel has no Landlock.
pub fn create_ruleset(rights: &Rights) -> Result<Option<OwnedFd>, String> {
    if rights.abi <= 0 {
        return Ok(None);
    }
    let version = ABI::from(rights.abi);
    let ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(version))
        .map_err(|e| e.to_string())?;
    let ruleset = if rights.abi >= 6 {
        ruleset
            .scope(Scope::from_all(version))
            .map_err(|e| e.to_string())?
    } else {
        ruleset
    };
    let created = ruleset.create().map_err(|e| e.to_string())?;
    // Rules are added by the child: drop the crate's no_new_privs request, apply sets it.
    let created = created.no_new_privs(false);
    Ok(created.into())
}

/// The rules mirroring `writable` over a read-only root.
pub fn rules<'a>(writable: impl Iterator<Item = &'a Path>) -> Vec<(&'a Path, Grant)> {
    let mut rules = vec![
        (Path::new("/"), Grant::Read),
        (Path::new("/dev"), Grant::Device),
    ];
    rules.extend(
        writable
            .filter(|p| *p != Path::new("/dev"))
            .map(|p| (p, Grant::ReadWrite)),
    );
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_grow_with_the_abi() {
        let v1 = Rights::for_abi(1);
        let v7 = Rights::for_abi(7);
        assert_eq!(v1.bits(Grant::Read), 1 | 4 | 8); // execute, read file, read dir
        assert_eq!(v1.handled & (1 << 14), 0, "truncate is ABI 3");
        assert_ne!(v7.handled & (1 << 14), 0);
        assert_ne!(v7.bits(Grant::Device) & (1 << 15), 0, "ioctl_dev is ABI 5");
        assert_eq!(
            v7.bits(Grant::Device) & (1 << 4),
            0,
            "no remove_dir on devices"
        );
        assert_eq!(Rights::for_abi(0).handled, 0);
    }

    #[test]
    fn rules_mirror_the_writable_mounts() {
        let writable = [Path::new("/tmp"), Path::new("/dev"), Path::new("/w/dist")];
        assert_eq!(
            rules(writable.into_iter()),
            vec![
                (Path::new("/"), Grant::Read),
                (Path::new("/dev"), Grant::Device),
                (Path::new("/tmp"), Grant::ReadWrite),
                (Path::new("/w/dist"), Grant::ReadWrite),
            ]
        );
    }
}

//! The oldest Linux vt serves, checked before anything is traced.
//!
//! The tracer's main path needs seccomp user notification with
//! `SECCOMP_USER_NOTIF_FLAG_CONTINUE` (Linux 5.5): a kernel from 5.0 to 5.4 hands out a
//! listener, so the availability probe passes, and then every continued syscall fails. On
//! an older kernel vt refuses with the versions named rather than tracing wrongly. (The
//! sandbox's later features — landlock 5.13, overlayfs in a user namespace 5.11 — have
//! their own probes and errors.)

use std::fmt;

/// The oldest release vt traces on.
pub const MINIMUM: Release = Release { major: 5, minor: 5 };

/// A kernel release's `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release {
    pub major: u32,
    pub minor: u32,
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "this kernel is Linux {found} (`uname -r`: {release}); vt needs Linux {MINIMUM} or \
         later (seccomp user notification with continue).\n  \
         hint: run vt on a newer kernel (a CI image's kernel is the host's)"
    )]
    TooOld { found: Release, release: String },
    #[error(
        "cannot read the kernel's release (`uname -r` said {0:?}).\n  \
         hint: set VT_SKIP_KERNEL_CHECK=1 to run anyway, at your own risk"
    )]
    Unreadable(String),
}

/// `"6.1.0-26-amd64"` → 6.1; `"5.15.153.1-microsoft-standard-WSL2"` → 5.15.
pub fn parse_release(release: &str) -> Option<Release> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some(Release { major, minor })
}

/// Whether `release` (as `uname -r` prints it) is one vt serves.
pub fn check_release(release: &str) -> Result<(), KernelError> {
    match parse_release(release) {
        Some(found) if found >= MINIMUM => Ok(()),
        Some(found) => Err(KernelError::TooOld {
            found,
            release: release.to_owned(),
        }),
        None => Err(KernelError::Unreadable(release.to_owned())),
    }
}

/// Checks the running kernel (`VT_SKIP_KERNEL_CHECK=1` skips it).
pub fn check() -> Result<(), KernelError> {
    if std::env::var_os("VT_SKIP_KERNEL_CHECK").is_some_and(|v| v == "1") {
        return Ok(());
    }
    // What `uname -r` prints, without a syscall wrapper.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    check_release(release.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_from_what_distributions_print() {
        for (release, expected) in [
            ("6.1.0-26-amd64", (6, 1)),
            ("5.15.153.1-microsoft-standard-WSL2", (5, 15)),
            ("5.4.0-1103-aws", (5, 4)),
            ("4.19.0", (4, 19)),
            ("6.12", (6, 12)),
        ] {
            let parsed = parse_release(release).expect("parses");
            assert_eq!((parsed.major, parsed.minor), expected, "{release}");
        }
        assert_eq!(parse_release(""), None);
        assert_eq!(parse_release("six"), None);
        assert_eq!(parse_release("6"), None);
    }

    #[test]
    fn the_minimum_is_served_and_older_kernels_are_refused_by_name() {
        assert!(check_release("5.5.0").is_ok());
        assert!(check_release("6.1.0-26-amd64").is_ok());
        assert!(check_release("10.0").is_ok());
        let refused = check_release("5.4.0-1103-aws").expect_err("5.4 lacks continue");
        let message = refused.to_string();
        assert!(
            message.contains("Linux 5.4") && message.contains("5.5"),
            "{message}"
        );
        assert!(message.contains("5.4.0-1103-aws"), "{message}");
        assert!(check_release("4.19.0").is_err());
        assert!(matches!(
            check_release("?"),
            Err(KernelError::Unreadable(_))
        ));
    }

    #[test]
    fn this_machine_is_served() {
        check().expect("the test machine runs a kernel vt serves");
    }
}

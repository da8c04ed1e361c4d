//! System Integrity Protection: which programs refuse injection.
//!
//! dyld ignores (and strips) `DYLD_*` variables for binaries under SIP-protected locations
//! and for "restricted" executables. vt cannot see what such a program itself opens, and
//! because the variables are stripped from its environment, its children start uninjected
//! too. The replay turns both into gaps (never silently missing accesses); the tracer avoids
//! the commonest case by running tasks with a copy of the shell outside the protected paths.

use std::path::Path;

/// Locations SIP protects (from `/System/Library/Sandbox/rootless.conf`, minus its listed
/// exceptions such as `/usr/local`).
const PROTECTED: &[&str] = &["/System", "/usr", "/bin", "/sbin", "/private/var/db"];
const EXCEPTIONS: &[&str] = &["/usr/local", "/System/Volumes/Data"];

/// Whether dyld will refuse to inject into the program at `path` (a normalized path).
pub fn refuses_injection(path: &Path) -> bool {
    PROTECTED.iter().any(|p| path.starts_with(p)) && !EXCEPTIONS.iter().any(|e| path.starts_with(e))
}

/// The shells vt copies out of the protected area to run task commands with (`sh -c`):
/// a copy at another path is not protected, so injection reaches the task's tools.
pub const SHELLS: &[&str] = &["/bin/sh", "/bin/bash", "/bin/zsh", "/bin/dash"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_binaries_refuse_and_user_tools_do_not() {
        for protected in [
            "/bin/sh",
            "/usr/bin/env",
            "/usr/bin/xcrun",
            "/System/Library/x",
        ] {
            assert!(refuses_injection(Path::new(protected)), "{protected}");
        }
        for open in [
            "/usr/local/bin/node",
            "/opt/homebrew/bin/node",
            "/Users/me/.nvm/versions/node/v22/bin/node",
            "/private/var/folders/x/vt-shell/sh",
            "/System/Volumes/Data/Users/me/bin/tool",
        ] {
            assert!(!refuses_injection(Path::new(open)), "{open}");
        }
    }
}

//! What the statically linked libstdc++ (see `build.rs`) would otherwise take from a newer
//! glibc than vt itself needs.
//!
//! GCC 12's `std::random_device`, which RocksDB uses for seeds, draws from `arc4random`:
//! glibc has it only since 2.36, so a libstdc++ built on Debian 12 and linked into vt made
//! the binary ask for GLIBC_2.36 (Ubuntu 22.04 has 2.35) where vt's own code asks for no
//! more than 2.34. Defined here, the link resolves libstdc++'s reference to this one and
//! the binary asks for no newer glibc than before. glibc's own callers use its internal
//! copy, not this symbol.

/// A uniformly random `u32` from the kernel (`getrandom`, blocking only until the kernel's
/// pool is first initialised), as glibc's `arc4random` gives: it cannot fail, so a failing
/// source ends the process, as in glibc.
#[unsafe(no_mangle)]
pub extern "C" fn arc4random() -> u32 {
    let mut bytes = [0u8; 4];
    let mut filled = 0;
    while filled < bytes.len() {
        let rest = &mut bytes[filled..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            filled += n as usize;
        } else if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        } else {
            std::process::abort();
        }
    }
    u32::from_ne_bytes(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn arc4random_varies() {
        let draws: std::collections::HashSet<u32> = (0..64).map(|_| super::arc4random()).collect();
        assert!(
            draws.len() > 60,
            "64 draws gave only {} distinct values",
            draws.len()
        );
    }
}

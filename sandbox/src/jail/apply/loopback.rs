//! The new network namespace's loopback device, up.

use libc::c_int;

/// `ip link set lo up` in the new network namespace.
///
/// # Safety
/// In the forked child of [`super::Prepared::enter`] (single-threaded, before exec) or on
/// the thread that made the namespace ([`crate::jail::network`]): it makes
/// async-signal-safe syscalls only.
pub(in crate::jail) unsafe fn loopback_up() -> c_int {
    // SAFETY: socket/ioctl/close on a zeroed ifreq we own.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if socket < 0 {
            return -1;
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *slot = *byte as libc::c_char;
        }
        request.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        let result = libc::ioctl(socket, libc::SIOCSIFFLAGS, &request);
        libc::close(socket);
        result
    }
}

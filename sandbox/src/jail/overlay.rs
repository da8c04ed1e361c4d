//! A copy-on-write layer's overlay mount ([`super::layer`]), made by a thread of vt's while
//! the sandbox starts, and handed to the sandbox's init over a socket.
//!
//! Why: making an overlayfs checks its upper file system on every mount (the work
//! directory made anew, an xattr set and removed, a tmpfile, a whiteout renamed): 0.2–0.4 ms
//! of disk metadata work, with a long tail (2 ms and more when the file system is busy),
//! the largest single step of the init's root, on every sandboxed task without declared
//! outputs. vt's worker thread for the sandbox being started ([`crate::ahead`])
//! makes it from the moment the layer's directories exist ([`super::Jail::new`]), while vt prepares the rest of the sandbox and the sandbox's
//! processes start, and sends it (`SCM_RIGHTS`) to the init, which attaches it as it
//! attaches its other captured mounts. A thread made it first and was waited for by vt
//! before the sandbox started: that wait, a thread's start on a busy CPU included, took as
//! long as the init's own making (BENCHMARKS.md, stop 50).
//!
//! The mount is the same: the same directories and options (`userxattr`, so its whiteouts'
//! marks are in `user.overlay.*` as the layer's reader expects, and `volatile`), nosuid and
//! nodev. It belongs to vt's user namespace instead of the sandbox's: the task, without a
//! capability in either, can do nothing more with it. Making one needs `CAP_SYS_ADMIN` in
//! vt's user namespace (root); elsewhere nothing is started. Where the thread could not
//! make it, it says so (a message without a descriptor), and the init makes it as before,
//! with the same errors; where the thread said nothing (it died, or a second's wait ran
//! out), likewise.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Mutex;

use nix::sys::socket::{self, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType};

use super::plan::Layer;

/// How long the init waits for the thread's word before it makes the overlay itself.
const WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// An overlay being made for a sandbox's layer: the socket end its init receives it on.
pub struct Ahead {
    layer: Layer,
    receive: Mutex<Option<OwnedFd>>,
}

impl std::fmt::Debug for Ahead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ahead")
            .field("layer", &self.layer.path)
            .finish_non_exhaustive()
    }
}

/// The init's end, for a sandbox of `layer`'s: a datagram socket whose one message is a
/// byte, with the overlay's descriptor when the thread made it.
pub struct Receive {
    pub layer: Layer,
    pub socket: OwnedFd,
}

impl Ahead {
    /// Asks for `layer`'s overlay (its paths as the plan has them), if this process may
    /// (root) and a socket can be had.
    pub fn start(layer: Layer) -> Option<Ahead> {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let (send, receive) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .ok()?;
        socket::setsockopt(
            &receive,
            socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(WAIT.as_secs() as i64, 0),
        )
        .ok()?;
        let made_from = layer.clone();
        crate::ahead::urgent(move || {
            let made = crate::timings::time("overlay ahead: make", || make(&made_from));
            send_made(&send, made.as_ref());
        })?;
        Some(Ahead {
            layer,
            receive: Mutex::new(Some(receive)),
        })
    }

    /// The init's end of the socket, once.
    pub fn take(&self) -> Option<Receive> {
        let socket = self
            .receive
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        Some(Receive {
            layer: self.layer.clone(),
            socket,
        })
    }
}

/// Sends the overlay (`1` and the descriptor) or that there is none (`0`).
fn send_made(send: &OwnedFd, made: Option<&OwnedFd>) {
    let fds;
    let (byte, control) = match made {
        Some(mount) => {
            fds = [mount.as_raw_fd()];
            ([1u8], vec![ControlMessage::ScmRights(&fds)])
        }
        None => ([0u8], Vec::new()),
    };
    // A failed send leaves the init to make the overlay itself (it sees end of file).
    let _ = socket::sendmsg::<()>(
        send.as_fd().as_raw_fd(),
        &[IoSlice::new(&byte)],
        &control,
        MsgFlags::empty(),
        None,
    );
}

/// `layer`'s overlay as a detached mount, or `None` where it cannot be made here.
fn make(layer: &Layer) -> Option<OwnedFd> {
    let c = |path: &Path| {
        std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str())).ok()
    };
    let (lower, upper, work) = (c(&layer.path)?, c(&layer.upper)?, c(&layer.work)?);
    // SAFETY: system calls on NUL-terminated strings that live across the call.
    let fd = unsafe { super::apply::make_overlay(&lower, &upper, &work) };
    // SAFETY: a descriptor just returned by fsmount, owned by no one else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The overlay the thread sent on `socket`, as a descriptor of this process, or -1 when
/// it sent none, or nothing came within [`WAIT`]. Only system calls on stack memory: safe
/// in the sandbox's init, between its clone and its exec.
pub(crate) fn receive(socket: RawFd) -> libc::c_int {
    let mut byte = 0u8;
    let mut iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    // Room for one descriptor: CMSG_SPACE(sizeof(int)) is 24 bytes on Linux; u64s align it.
    let mut control = [0u64; 4];
    // SAFETY: an all-zero msghdr is valid; its pointers are set to live stack memory below.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: recvmsg into the buffers just described, all on this stack.
    let n = unsafe { libc::recvmsg(socket, &mut message, libc::MSG_CMSG_CLOEXEC) };
    if n != 1 || byte != 1 {
        return -1;
    }
    // SAFETY: walks the control buffer the kernel filled, within msg_controllen.
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&message);
        if header.is_null()
            || (*header).cmsg_level != libc::SOL_SOCKET
            || (*header).cmsg_type != libc::SCM_RIGHTS
        {
            return -1;
        }
        std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<libc::c_int>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlay_made_ahead_is_received_or_its_absence_said() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = |name: &str| {
            let path = temp.path().join(name);
            std::fs::create_dir(&path).expect("mkdir");
            path
        };
        let layer = Layer {
            path: dir("lower"),
            upper: dir("upper"),
            work: dir("work"),
        };
        std::fs::write(layer.path.join("a"), "a").expect("a");
        let Some(ahead) = Ahead::start(layer.clone()) else {
            // SAFETY: geteuid cannot fail.
            assert_ne!(
                unsafe { libc::geteuid() },
                0,
                "as root the thread is started"
            );
            return;
        };
        let receive = ahead.take().expect("the socket");
        assert!(ahead.take().is_none(), "taken once");
        assert_eq!(receive.layer, layer);
        let fd = super::receive(receive.socket.as_raw_fd());
        assert!(fd >= 0, "no overlay received");
        // SAFETY: the descriptor just received, owned here.
        let mount = unsafe { OwnedFd::from_raw_fd(fd) };
        // The overlay shows the lower layer's file.
        let a = std::fs::read_to_string(format!("/proc/self/fd/{}/a", mount.as_raw_fd()))
            .expect("read through the overlay");
        assert_eq!(a, "a");

        // A layer that cannot be made (its upper directory missing): a message without one.
        let broken = Layer {
            upper: temp.path().join("missing"),
            ..layer
        };
        let ahead = Ahead::start(broken).expect("started");
        let receive = ahead.take().expect("the socket");
        assert_eq!(super::receive(receive.socket.as_raw_fd()), -1);
    }
}

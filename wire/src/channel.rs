//! Blocking `SOCK_SEQPACKET` sockets carrying one message, optionally with one fd attached.
//!
//! Used by the synchronous client (and by tests). The async server has its own socket type
//! built on tokio, but the bytes on the wire are the same.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use serde::{Serialize, de::DeserializeOwned};

use crate::MAX_MESSAGE_LEN;
use crate::codec::{self, CodecError};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("socket I/O failed: {0}")]
    Io(#[from] Errno),
    #[error("the peer closed the channel")]
    Closed,
    #[error("received a message larger than {MAX_MESSAGE_LEN} bytes")]
    Truncated,
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// One end of a connected SEQPACKET socket.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

/// A received message: its length in the caller's buffer and the fd that came with it.
#[derive(Debug)]
pub struct Received {
    pub len: usize,
    pub fd: Option<OwnedFd>,
}

/// A connected pair, both ends close-on-exec.
pub fn pair() -> Result<(Channel, Channel), ChannelError> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn from_fd(fd: OwnedFd) -> Self {
        Channel { fd }
    }

    /// Connects to an inherited fd by number (e.g. from `VT_IPC_FD`) after checking that it is
    /// an open SEQPACKET socket: a stale or wrong number must not make us write into some
    /// unrelated file the process happens to have open. The returned channel owns a
    /// close-on-exec *duplicate*, so the inherited fd itself stays open for children.
    pub fn dup_inherited(raw: RawFd) -> Result<Self, ChannelError> {
        // SAFETY: F_DUPFD_CLOEXEC only touches the descriptor table; an fd that is not open
        // yields EBADF, and on success we own the new descriptor.
        let dup = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(ChannelError::Io(Errno::last()));
        }
        // SAFETY: `dup` was just created for us and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(dup) };
        let ty = nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::SockType)?;
        if ty != SockType::SeqPacket {
            return Err(ChannelError::Io(Errno::ENOTSOCK));
        }
        Ok(Channel { fd })
    }

    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Sends one message. `MSG_NOSIGNAL`: a tool must never die of SIGPIPE because vt went away.
    pub fn send(&self, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> Result<(), ChannelError> {
        let iov = [IoSlice::new(bytes)];
        let fds;
        let cmsgs: &[ControlMessage] = match fd {
            Some(fd) => {
                fds = [fd.as_raw_fd()];
                &[ControlMessage::ScmRights(&fds)]
            }
            None => &[],
        };
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE) | Err(Errno::ECONNRESET) => return Err(ChannelError::Closed),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits up to `budget` for a message to be readable, spinning instead of sleeping.
    ///
    /// A request/reply exchange on a 2-core VM costs two cross-CPU wake-ups of ~25 µs each
    /// when both sides sleep; when the peer answers within a few microseconds, polling for
    /// that long is far cheaper. Returns whether a message (or end of stream) is waiting.
    pub fn spin_until_readable(&self, budget: std::time::Duration) -> bool {
        spin_until_readable(self.fd.as_raw_fd(), budget)
    }

    /// Receives one message into `buf` (which should hold [`MAX_MESSAGE_LEN`] bytes).
    /// Extra fds beyond the first are closed; all received fds are close-on-exec.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Received, ChannelError> {
        let mut cmsg_space = nix::cmsg_space!([RawFd; 4]);
        loop {
            let mut iov = [IoSliceMut::new(buf)];
            let msg = match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => msg,
                Err(Errno::EINTR) => continue,
                Err(Errno::ECONNRESET) => return Err(ChannelError::Closed),
                Err(e) => return Err(e.into()),
            };
            let mut received_fds: Vec<OwnedFd> = Vec::new();
            for cmsg in msg.cmsgs()? {
                if let ControlMessageOwned::ScmRights(raw_fds) = cmsg {
                    // SAFETY: the kernel just installed these fds in our table for us.
                    received_fds.extend(
                        raw_fds
                            .into_iter()
                            .map(|r| unsafe { OwnedFd::from_raw_fd(r) }),
                    );
                }
            }
            if msg.flags.contains(MsgFlags::MSG_TRUNC) {
                return Err(ChannelError::Truncated);
            }
            if msg.bytes == 0 && received_fds.is_empty() {
                // A zero-length read on SEQPACKET is end of stream: every peer copy is closed.
                return Err(ChannelError::Closed);
            }
            let len = msg.bytes;
            return Ok(Received {
                len,
                fd: received_fds.into_iter().next(),
            });
        }
    }

    pub fn send_message<T: Serialize>(
        &self,
        value: &T,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), ChannelError> {
        let bytes = codec::encode(value)?;
        self.send(&bytes, fd)
    }

    pub fn recv_message<T: DeserializeOwned>(
        &self,
        buf: &mut [u8],
    ) -> Result<(T, Option<OwnedFd>), ChannelError> {
        let received = self.recv(buf)?;
        let value = codec::decode(&buf[..received.len])?;
        Ok((value, received.fd))
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Clears `FD_CLOEXEC` so `fd` survives `exec` in a child. Async-signal-safe (one `fcntl`),
/// so spawners can call it from `pre_exec` on the task end of [`pair`]/`server::endpoints`.
/// See [`Channel::spin_until_readable`]; for any SEQPACKET fd.
pub fn spin_until_readable(fd: RawFd, budget: std::time::Duration) -> bool {
    let start = std::time::Instant::now();
    let mut probe = [0u8; 1];
    loop {
        // SAFETY: a non-blocking peek into a 1-byte buffer of ours; nothing is consumed.
        let n = unsafe {
            libc::recv(
                fd,
                probe.as_mut_ptr().cast(),
                probe.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return true; // a message, or 0 = end of stream
        }
        let errno = std::io::Error::last_os_error().raw_os_error();
        if errno != Some(libc::EAGAIN) && errno != Some(libc::EINTR) {
            return true; // let the real receive report it
        }
        if start.elapsed() >= budget {
            return false;
        }
        std::hint::spin_loop();
    }
}

pub fn inherit_across_exec(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: F_SETFD with 0 only changes the descriptor flags of `fd`; an invalid fd
    // returns EBADF, which we report.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

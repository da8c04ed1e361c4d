//! The seccomp user-notification kernel interface: installing the filter in the child and
//! the listener ioctls in the supervisor. Only syscalls live here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use libc::{seccomp_notif, seccomp_notif_resp, sock_filter, sock_fprog};
use nix::errno::Errno;

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (6.6+): wake the supervisor on the tracee's CPU.
const SYNC_WAKE_UP: u64 = 1;

/// `SECCOMP_FILTER_FLAG_SPEC_ALLOW` (4.17+), on every filter the tracer installs.
///
/// Where the kernel's speculation mitigations are in their `seccomp` mode (the default for
/// Speculative Store Bypass and for user-space Spectre v2 until 5.16, and still chosen by
/// some distributions), installing a filter *without* this flag force-disables speculative
/// store bypass and indirect branch speculation for the task and everything it starts,
/// irreversibly: on such a host every traced build runs slower than the same build bare, for
/// a reason that has nothing to do with tracing. This filter only observes; the task runs
/// with exactly the mitigations it would have had without vt. The sandbox's own deny-list
/// filter (`jail`) is a confinement and keeps the kernel's default.
pub const OBSERVE_ONLY: libc::c_ulong = libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW;

/// Installs `program` with a new listener and returns the listener fd.
///
/// Runs in the forked child before `exec`, so it is async-signal-safe: no allocation, only
/// syscalls. Requires `PR_SET_NO_NEW_PRIVS` (set here) unless the caller has CAP_SYS_ADMIN.
pub fn install_listener(program: &[sock_filter]) -> io::Result<RawFd> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let listener = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | OBSERVE_ONLY;
    // WAIT_KILLABLE_RECV is 5.19+; older kernels say EINVAL, so retry without it.
    let with_killable = listener | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    install_filter(program, &[with_killable, listener])
}

/// Installs `program` with the first of `flag_sets` the kernel takes (EINVAL names a flag
/// it does not know: the next set goes without it) and returns what `seccomp` returned: the
/// listener fd with `SECCOMP_FILTER_FLAG_NEW_LISTENER`, else 0.
///
/// Async-signal-safe (no allocation), for a forked child before `exec`; the caller has set
/// `PR_SET_NO_NEW_PRIVS`.
pub fn install_filter(program: &[sock_filter], flag_sets: &[libc::c_ulong]) -> io::Result<RawFd> {
    let fprog = sock_fprog {
        len: u16::try_from(program.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
        filter: program.as_ptr().cast_mut(),
    };
    let mut refused = io::Error::from_raw_os_error(libc::EINVAL);
    for &flags in flag_sets {
        // SAFETY: `fprog` points at `program`, which outlives the call; the kernel copies it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &fprog as *const sock_fprog,
            )
        };
        if rc >= 0 {
            return Ok(rc as RawFd);
        }
        refused = io::Error::last_os_error();
        if refused.raw_os_error() != Some(libc::EINVAL) {
            return Err(refused);
        }
    }
    Err(refused)
}

/// What the child reports before `exec`: the listener, or why there is none.
pub enum Handover {
    Listener(OwnedFd),
    /// Installing the filter failed with this errno.
    Failed(i32),
}

/// Sends the listener `fd` (with status 0) over `socket` with `SCM_RIGHTS`.
/// Async-signal-safe (stack buffers only), for use in the child before `exec`.
pub fn send_listener(socket: RawFd, fd: RawFd) -> io::Result<()> {
    send_status(socket, Some(fd), 0)
}

/// Reports that installing the filter failed with `errno` (no fd attached).
pub fn send_failure(socket: RawFd, errno: i32) -> io::Result<()> {
    send_status(socket, None, errno)
}

fn send_status(socket: RawFd, fd: Option<RawFd>, status: i32) -> io::Result<()> {
    #[repr(C)]
    struct Control {
        header: libc::cmsghdr,
        fd: RawFd,
    }
    let mut payload = status.to_ne_bytes();
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: all-zero is a valid `cmsghdr`/`msghdr` (plain integers and null pointers).
    let mut control: Control = unsafe { std::mem::zeroed() };
    // SAFETY: CMSG_LEN is a pure computation.
    control.header.cmsg_len =
        unsafe { libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) } as usize;
    control.header.cmsg_level = libc::SOL_SOCKET;
    control.header.cmsg_type = libc::SCM_RIGHTS;
    // SAFETY: as above.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    if let Some(fd) = fd {
        control.fd = fd;
        message.msg_control = (&mut control as *mut Control).cast();
        // SAFETY: CMSG_SPACE is a pure computation.
        message.msg_controllen =
            unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    }
    loop {
        // SAFETY: `message` points at live stack buffers for the duration of the call.
        let sent = unsafe { libc::sendmsg(socket, &message, libc::MSG_NOSIGNAL) };
        if sent >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Receives the child's [`Handover`]; `Ok(None)` if it closed without sending (its exec
/// setup failed before the filter step).
pub fn recv_handover(socket: RawFd) -> io::Result<Option<Handover>> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut payload = [0u8; 4];
    let mut cmsg = nix::cmsg_space!(RawFd);
    loop {
        let mut iov = [io::IoSliceMut::new(&mut payload)];
        match recvmsg::<()>(
            socket,
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(message) => {
                let bytes = message.bytes;
                let mut listener = None;
                for control in message.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(fds) = control {
                        for raw in fds {
                            // SAFETY: the kernel installed these fds in our table for us.
                            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                            listener.get_or_insert(fd);
                        }
                    }
                }
                if bytes == 0 && listener.is_none() {
                    return Ok(None);
                }
                return Ok(Some(match listener {
                    Some(fd) => Handover::Listener(fd),
                    None => Handover::Failed(i32::from_ne_bytes(payload)),
                }));
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The supervisor's end of a filter.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    /// Whether the kernel took SYNC_WAKE_UP (see [`Listener::continue_syscall`]).
    sync_wake_up: AtomicBool,
}

impl Listener {
    pub fn new(fd: OwnedFd) -> Self {
        Listener {
            fd,
            sync_wake_up: AtomicBool::new(false),
        }
    }

    /// Asks for same-CPU wake-ups; older kernels (EINVAL) just keep the default.
    pub fn request_sync_wake_up(&self) -> bool {
        let taken = self.set_flags(SYNC_WAKE_UP);
        self.sync_wake_up.store(taken, Ordering::Relaxed);
        taken
    }

    fn set_flags(&self, flags: u64) -> bool {
        // SAFETY: SET_FLAGS takes the flags as the argument itself; no memory is passed.
        unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS as _,
                flags,
            ) == 0
        }
    }

    /// Waits until a notification is pending (`Ok(true)`) or every process using the filter
    /// is gone (`Ok(false)`).
    pub fn wait(&self) -> io::Result<bool> {
        let mut poll = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut poll, 1, -1) };
            if ready < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(err);
            }
            if poll.revents & libc::POLLIN != 0 {
                return Ok(true);
            }
            if poll.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                return Ok(false);
            }
        }
    }

    /// Receives one notification. `Err(ENOENT)`: the tracee died or was interrupted first.
    pub fn receive(&self, notification: &mut seccomp_notif) -> Result<(), Errno> {
        // SAFETY: the kernel requires a zeroed buffer of the struct's size.
        *notification = unsafe { std::mem::zeroed() };
        // SAFETY: RECV writes exactly one `seccomp_notif` into the pointer.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV as _,
                notification as *mut seccomp_notif,
            )
        };
        if rc < 0 { Err(Errno::last()) } else { Ok(()) }
    }

    /// Lets the syscall run as if there were no filter. `Ok(false)`: the tracee was no
    /// longer waiting in notification `id` (it died or was interrupted), which is not an
    /// error, but what was read from it meanwhile may belong to a recycled pid.
    ///
    /// That answer is why there is no separate `SECCOMP_IOCTL_NOTIF_ID_VALID` before the
    /// reply: the kernel's SEND looks the id up under the same lock and accepts it on the same
    /// condition (still listed, state SENT), so a successful reply proves what ID_VALID
    /// would have, at a later moment. One ioctl less on every stop.
    ///
    /// With SYNC_WAKE_UP the reply, too, would wake the tracee on *this* CPU. When this
    /// thread serves a tracee from another CPU (the other thread was busy), that moved the
    /// tracee onto a busy CPU and left its own idle until the load balancer noticed,
    /// often milliseconds later (`perf sched`, C build on 2 CPUs: 216 ms of idle CPU
    /// against 58 ms bare). So the flag is off for the reply unless `alone`: the scheduler
    /// then wakes the tracee where it ran, which is also this CPU when it came from here.
    /// Another thread's reply or request may see the flag off meanwhile; that costs a
    /// wake-up's placement, never correctness. Measured: idle 216 → 100 ms, tracee time
    /// stopped 300 → 229 ms, and the build ~4 % faster (and again in 2026-12: 1.114× with
    /// the flag off for replies, 1.167× with it kept on, 12 rounds).
    ///
    /// `alone`: this is the only supervisor thread and the tracee the only thread of the
    /// task that has stopped so far, so this thread was woken on the tracee's CPU (the flag
    /// is on while it waits) and serves no one else. Then the reply keeps the flag and both
    /// stay on one CPU: a stop costs the tracee ~11 µs instead of ~22 on this 2-CPU VM,
    /// where a wake-up that crosses CPUs wakes an idle vCPU (`bench/round_trip.py`). That
    /// is the loader's stops of every single-process task (a lone `vt exec -- true`: 0.15 ms
    /// less; 100 sandboxed `sh -c true` at `-j1`: 3 % less; node, whose worker threads run
    /// without stopping: unchanged over 100 rounds).
    pub fn continue_syscall(&self, id: u64, alone: bool) -> Result<bool, Errno> {
        let sync = self.sync_wake_up.load(Ordering::Relaxed) && !alone;
        if sync {
            self.set_flags(0);
        }
        let sent = self.send_continue(id);
        if sync {
            self.set_flags(SYNC_WAKE_UP);
        }
        sent
    }

    fn send_continue(&self, id: u64) -> Result<bool, Errno> {
        let response = seccomp_notif_resp {
            id,
            val: 0,
            error: 0,
            flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        };
        // SAFETY: SEND reads one `seccomp_notif_resp` from the pointer.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND as _,
                &response as *const seccomp_notif_resp,
            )
        };
        match rc {
            0.. => Ok(true),
            _ => match Errno::last() {
                Errno::ENOENT => Ok(false),
                other => Err(other),
            },
        }
    }
}

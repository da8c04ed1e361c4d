//! Closing what is slow to close, where nobody waits for it.
//!
//! Some last closes wait for the kernel. Closing a fanotify group waits until its marks are
//! destroyed, a tick and an SRCU grace period after they were removed: on this project's
//! 2-CPU machine, 12 to 24 ms in about one lone `vt exec` in four. Whichever of vt's
//! threads does that close holds up vt's own exit, because a process is reported gone only
//! when its last thread is: the shell that ran vt waited for it. The last process of a
//! sandbox's mount namespace waits for an RCU grace period the same way.
//!
//! The janitor is a process of its own that receives such descriptors over a socket and
//! closes them, so the wait is nobody's. It closes each only once vt says its own copy is
//! closed (a second message), so that its close is the last one. It is started with
//! `clone(CLONE_VM)`: it shares vt's memory, so no page tables are copied (a `fork` of vt
//! costs a few tenths of a millisecond), and it runs only raw system calls on a stack of
//! its own, touching nothing else of vt's (no allocator, no thread-local `errno`, no signal handler: every signal is
//! blocked before the clone). It leaves when its socket's other end closes, that is when vt
//! is gone, having closed everything it was given.
//!
//! The janitor is vt's sibling (`CLONE_PARENT`), not its child: vt must not see it among
//! its children, whose end it waits for (the ptrace tracer waits until it has none left).
//! After vt exits, the janitor lives on for as long as its closes take (milliseconds), and
//! leaves only once vt's exit has been reported (it waits on a pidfd of vt), so a parent
//! that waits for any child gets vt's status first. vt's parent reaps it as it reaps any
//! child (a shell, make, systemd, init do; a parent that waits only for vt keeps one zombie
//! until it exits itself). `VT_JANITOR=off` closes on vt's own threads instead, as does a
//! vt that is itself an init (pid 1 of a container), which has no parent to share.
//!
//! Where the janitor cannot be started (another architecture, a refused clone), or is
//! turned off, a descriptor is closed on a thread of vt's, whose exit then waits for it.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Set to `off` to close on vt's own threads (see the module docs).
pub const JANITOR_ENV: &str = "VT_JANITOR";

/// The size of the janitor's stack. Its one function keeps a message header and room for
/// one descriptor on it.
const STACK_SIZE: usize = 64 * 1024;

/// Starts the janitor if it is not running yet, so that the first [`release`] does not pay
/// for the clone: call it from a thread off the critical path.
pub fn start() {
    janitor();
}

/// Closes `fd` where nobody waits for it: the janitor holds the last reference and closes
/// it. Give it only the last reference vt holds: a copy kept elsewhere would make that
/// copy's close the slow one.
///
/// The handover is two messages: the descriptor with a token, then, once vt's own copy is
/// closed, the token alone. The janitor closes its copy only at the second (or when vt is
/// gone): a janitor that closed at the first could be done before vt's copy was, and vt's
/// close was then the last, slow one (2 lone runs in 80 waited 10 ms in `end: fanotify`).
pub fn release(fd: OwnedFd) {
    if let Some(socket) = janitor() {
        let token = next_token();
        if send(socket, token, Some(fd.as_raw_fd())).is_ok() {
            // The message holds a reference until the janitor takes it, and the janitor
            // holds its own until it hears of this close: this close is not the last one.
            drop(fd);
            // Unsent (the socket is full: the janitor is stuck), the janitor closes its copy
            // when vt is gone.
            let _ = send(socket, token, None);
            return;
        }
    }
    let _ = std::thread::Builder::new()
        .name("vt-close".into())
        .spawn(move || drop(fd));
}

/// Gives the janitor a copy of `fd` to close only once vt is gone: vt's own close of `fd`,
/// at its exit or before, is then never the last, slow one. For a descriptor vt keeps for
/// its whole life (the fanotify group its tasks share). Whether the janitor took it.
pub fn hold_until_exit(fd: &OwnedFd) -> bool {
    // No second message (the one that says vt's copy is closed) is ever sent for its token,
    // so the janitor keeps it until its socket ends, that is until vt is gone.
    janitor().is_some_and(|socket| send(socket, next_token(), Some(fd.as_raw_fd())).is_ok())
}

/// A token no other handover has (`release`, `hold_until_exit`).
fn next_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// vt's end of the janitor's socket, once the janitor runs.
fn janitor() -> Option<&'static OwnedFd> {
    static SOCKET: OnceLock<Option<OwnedFd>> = OnceLock::new();
    SOCKET.get_or_init(|| spawn().ok()).as_ref()
}

fn spawn() -> std::io::Result<OwnedFd> {
    if !raw::SUPPORTED {
        return Err(std::io::Error::other("no janitor on this architecture"));
    }
    if std::env::var_os(JANITOR_ENV).is_some_and(|v| v == "off") {
        return Err(std::io::Error::other("turned off"));
    }
    let (ours, theirs) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )?;
    // The stack lives as long as the janitor, which may outlive every thread of vt's: it is
    // never unmapped (one per vt process).
    // SAFETY: an anonymous private mapping; the result is checked.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the top of the mapping just made (the stack grows down).
    let top = unsafe { stack.cast::<u8>().add(STACK_SIZE) };
    // Every signal blocked in the child from its first instruction: it shares vt's memory,
    // so a handler of vt's must never run on its stack. The mask is this thread's again
    // right after the clone.
    // SAFETY: a sigset_t is plain data; all zeroes is a valid (empty) set.
    let (mut all, mut previous): (libc::sigset_t, libc::sigset_t) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: sigfillset and pthread_sigmask on sets we own.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
    }
    // vt itself, for the janitor to wait until vt's exit has been reported: a parent that
    // waits for any child then sees vt's status first, never the janitor's. Without one
    // (a kernel before 5.3), the janitor leaves at once.
    // SAFETY: pidfd_open of this process; the result is checked.
    let vt = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) } as RawFd;
    let vt = (vt >= 0).then(|| {
        // SAFETY: a new fd of ours (pidfds are close-on-exec).
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(vt) }
    });
    let arg = Start {
        socket: theirs.as_raw_fd(),
        vt: vt.as_ref().map_or(-1, AsRawFd::as_raw_fd),
    }
    .pack();
    // SAFETY: the child runs `janitor_main` on its own stack and makes only raw system
    // calls (see the module docs); `theirs` and `vt` stay open in the child's copy of the fd
    // table.
    let pid = unsafe {
        libc::clone(
            janitor_main,
            top.cast(),
            // A child of vt's parent, not of vt: vt waits for its own children in places
            // (the ptrace tracer waits until it has none), and the janitor outlives them.
            libc::CLONE_VM | libc::CLONE_PARENT | libc::SIGCHLD,
            arg as *mut libc::c_void,
        )
    };
    let cloned = std::io::Error::last_os_error();
    // SAFETY: restores this thread's mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut()) };
    if pid < 0 {
        // SAFETY: the child does not exist; the stack is ours to unmap.
        unsafe { libc::munmap(stack, STACK_SIZE) };
        return Err(cloned);
    }
    // Our copies of the janitor's end (it must see end-of-file when vt is gone) and of vt.
    drop(theirs);
    drop(vt);
    Ok(ours)
}

/// What the janitor is started with: its socket and a pidfd of vt (-1: none), packed into
/// the clone's one argument (a pointer to memory of vt's could be gone before it reads).
struct Start {
    socket: RawFd,
    vt: RawFd,
}

impl Start {
    fn pack(&self) -> usize {
        (self.socket as u32 as usize) | ((self.vt as u32 as usize) << 32)
    }

    fn unpack(arg: usize) -> Start {
        Start {
            socket: (arg & 0xffff_ffff) as u32 as RawFd,
            vt: (arg >> 32) as u32 as RawFd,
        }
    }
}

/// Sends `token` to the janitor without blocking, with `fd` (a handover) or without (vt's
/// own copy of that token's descriptor is closed). A full socket means the janitor is stuck:
/// the caller closes the descriptor itself.
fn send(socket: &OwnedFd, token: u64, fd: Option<RawFd>) -> std::io::Result<()> {
    let fds = fd.as_slice();
    let rights = [nix::sys::socket::ControlMessage::ScmRights(fds)];
    let control: &[nix::sys::socket::ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let bytes = token.to_ne_bytes();
    let iov = [std::io::IoSlice::new(&bytes)];
    nix::sys::socket::sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        control,
        nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// How many handed-over descriptors the janitor holds at most while it waits to hear that
/// vt closed its copies (one per thread of vt's that is releasing, in practice). Past that,
/// the oldest is closed at once.
const HELD: usize = 64;

/// The janitor: closes every descriptor but its socket (and vt's pidfd), then every
/// descriptor it receives, until the socket ends; then waits until vt's exit has been
/// reported, and leaves.
///
/// Only raw system calls: this runs in a process that shares vt's memory but not its
/// threads, with the thread-local storage of the thread that cloned it.
extern "C" fn janitor_main(arg: *mut libc::c_void) -> libc::c_int {
    let Start { socket, vt } = Start::unpack(arg as usize);
    let socket = socket as usize;
    // SAFETY: raw system calls on integers and on buffers of this stack frame.
    unsafe {
        // Named for `ps`: otherwise it has the name of the thread that cloned it.
        raw::syscall(
            libc::SYS_prctl,
            [
                libc::PR_SET_NAME as usize,
                c"vt-janitor".as_ptr() as usize,
                0,
                0,
                0,
            ],
        );
        // What vt had open when it cloned us (its output pipes among them): not ours to
        // hold. Kept: the socket, and vt's pidfd.
        let (low, high) = if vt >= 0 {
            let vt = vt as usize;
            (socket.min(vt), socket.max(vt))
        } else {
            (socket, socket)
        };
        let close_range = |first: usize, last: usize| {
            if first <= last {
                raw::syscall(libc::SYS_close_range, [first, last, 0, 0, 0]);
            }
        };
        if low > 0 {
            close_range(0, low - 1);
        }
        if high > low + 1 {
            close_range(low + 1, high - 1);
        }
        close_range(high + 1, u32::MAX as usize);
        // Descriptors received, each with its token, until vt says its copy is closed.
        let mut held = [(0u64, -1 as RawFd); HELD];
        let mut count = 0usize;
        let close = |fd: RawFd| {
            raw::syscall(libc::SYS_close, [fd as usize, 0, 0, 0, 0]);
        };
        loop {
            let mut token = 0u64;
            let mut iov = libc::iovec {
                iov_base: (&mut token as *mut u64).cast(),
                iov_len: std::mem::size_of::<u64>(),
            };
            // Room for one SCM_RIGHTS message of one descriptor (16 + 4 bytes, aligned).
            let mut control = [0u64; 8];
            let mut header: libc::msghdr = std::mem::zeroed();
            header.msg_iov = &mut iov;
            header.msg_iovlen = 1;
            header.msg_control = control.as_mut_ptr().cast();
            header.msg_controllen = std::mem::size_of_val(&control);
            let received = raw::syscall(
                libc::SYS_recvmsg,
                [socket, (&mut header as *mut libc::msghdr) as usize, 0, 0, 0],
            );
            if received == -(libc::EINTR as isize) {
                continue;
            }
            if received <= 0 {
                break;
            }
            let mut handed = false;
            let mut message = libc::CMSG_FIRSTHDR(&header);
            while !message.is_null() {
                if (*message).cmsg_level == libc::SOL_SOCKET
                    && (*message).cmsg_type == libc::SCM_RIGHTS
                {
                    let data = libc::CMSG_DATA(message).cast::<RawFd>();
                    let count_here = ((*message).cmsg_len as usize)
                        .saturating_sub(libc::CMSG_LEN(0) as usize)
                        / std::mem::size_of::<RawFd>();
                    for i in 0..count_here {
                        handed = true;
                        if count == HELD {
                            close(held[0].1);
                            held.copy_within(1.., 0);
                            count -= 1;
                        }
                        held[count] = (token, data.add(i).read_unaligned());
                        count += 1;
                    }
                }
                message = libc::CMSG_NXTHDR(&header, message);
            }
            if !handed {
                // vt's copy is closed: ours is the last.
                if let Some(at) = held[..count].iter().position(|&(t, _)| t == token) {
                    close(held[at].1);
                    held.copy_within(at + 1..count, at);
                    count -= 1;
                }
            }
        }
        // vt is gone, and with it its copies.
        for &(_, fd) in &held[..count] {
            close(fd);
        }
        // vt closed its end in its exit, a moment before its parent hears of that exit:
        // leave only after, or a parent waiting for any child could get ours first.
        if vt >= 0 {
            let mut exited = libc::pollfd {
                fd: vt,
                events: libc::POLLIN,
                revents: 0,
            };
            while raw::syscall(
                libc::SYS_ppoll,
                [(&mut exited as *mut libc::pollfd) as usize, 1, 0, 0, 8],
            ) == -(libc::EINTR as isize)
            {}
        }
        raw::syscall(libc::SYS_exit, [0, 0, 0, 0, 0]);
    }
    0
}

/// System calls without libc's wrappers, which set the calling thread's `errno`: the
/// janitor has no thread-local storage of its own.
mod raw {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    pub const SUPPORTED: bool = true;
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub const SUPPORTED: bool = false;

    /// The raw result: a negative errno on failure.
    ///
    /// # Safety
    /// As the system call `number` with these arguments.
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn syscall(number: libc::c_long, args: [usize; 5]) -> isize {
        let result: isize;
        // SAFETY: the x86_64 system call convention; rcx and r11 are clobbered.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") number as isize => result,
                in("rdi") args[0],
                in("rsi") args[1],
                in("rdx") args[2],
                in("r10") args[3],
                in("r8") args[4],
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        result
    }

    /// # Safety
    /// As the system call `number` with these arguments.
    #[cfg(target_arch = "aarch64")]
    pub unsafe fn syscall(number: libc::c_long, args: [usize; 5]) -> isize {
        let result: isize;
        // SAFETY: the aarch64 system call convention (not compiled on this project's CI).
        unsafe {
            std::arch::asm!(
                "svc 0",
                in("x8") number,
                inlateout("x0") args[0] as isize => result,
                in("x1") args[1],
                in("x2") args[2],
                in("x3") args[3],
                in("x4") args[4],
                options(nostack),
            );
        }
        result
    }

    /// # Safety
    /// Never called: [`SUPPORTED`] is false here.
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub unsafe fn syscall(_number: libc::c_long, _args: [usize; 5]) -> isize {
        -(libc::ENOSYS as isize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor handed over is closed by the janitor, not by vt: the write end of a pipe
    /// whose read end then sees end-of-file, while no thread of this process holds it.
    #[test]
    fn the_janitor_closes_what_it_is_given() {
        start();
        assert!(janitor().is_some(), "the janitor did not start");
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        release(write);
        let mut buffer = [0u8; 1];
        // Blocks until the janitor closed the last write end.
        let n = nix::unistd::read(&read, &mut buffer).expect("read");
        assert_eq!(n, 0);
    }

    /// The janitor keeps what it was handed until it hears that vt's copy is closed: had it
    /// closed its copy at once, vt's close could have been the last, slow one.
    #[test]
    fn the_janitor_closes_only_after_vt_closed_its_copy() {
        let socket = janitor().expect("the janitor did not start");
        let (held_read, held_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        send(socket, u64::MAX, Some(held_write.as_raw_fd())).expect("handover");
        drop(held_write);
        // A later handover, completed: once its pipe ends, the janitor has read the first.
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        release(write);
        let mut buffer = [0u8; 1];
        assert_eq!(nix::unistd::read(&read, &mut buffer).expect("read"), 0);
        let mut still_open = [libc::pollfd {
            fd: held_read.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: polls one valid pollfd without waiting.
        assert_eq!(
            unsafe { libc::poll(still_open.as_mut_ptr(), 1, 0) },
            0,
            "closed before vt said so"
        );
        send(socket, u64::MAX, None).expect("closed");
        assert_eq!(nix::unistd::read(&held_read, &mut buffer).expect("read"), 0);
    }
}

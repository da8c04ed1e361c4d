//! Attempts to break out of vt's sandbox, one way per invocation, for the escape suite
//! (`tests/tests/sandbox_escape.rs`). Exit status 0 means the attempt *succeeded*; 1 means
//! it was stopped, with the reason on stderr. The suite runs every attempt twice: in the
//! sandbox (must be stopped) and without it (must succeed, so no case passes vacuously).
//!
//! `escape write PATH` · `read PATH` · `connect PORT` · `signal PID` · `ptrace PID` ·
//! `tiocsti FD` · `remount DIR` · `proc-root PID PATH` · `proc-exe PID` · `proc-mem PID` ·
//! `setuid DIR` · `bpf` ·
//! `daemon MARKER` · `heavy-daemon FIFO`

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match attempt(&args) {
        Ok(what) => {
            println!("escaped: {what}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("stopped: {why}");
            ExitCode::from(1)
        }
    }
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn attempt(args: &[String]) -> Result<String, String> {
    let arg = |i: usize| args.get(i).cloned().ok_or("missing argument".to_string());
    let number = |i: usize| -> Result<i32, String> {
        arg(i)?
            .parse::<i32>()
            .map_err(|e| format!("not a number: {e}"))
    };
    match arg(0)?.as_str() {
        "write" => {
            let path = arg(1)?;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("open {path}: {e}"))?;
            file.write_all(b"escaped\n")
                .map_err(|e| format!("write {path}: {e}"))?;
            Ok(format!("wrote {path}"))
        }
        "read" => {
            let path = arg(1)?;
            let text = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
            Ok(format!("read {path}: {}", text.trim()))
        }
        "connect" => {
            let port = number(1)?;
            std::net::TcpStream::connect(("127.0.0.1", port as u16))
                .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
            Ok(format!("connected to 127.0.0.1:{port}"))
        }
        "time-wait" => {
            // A connection on 127.0.0.1:PORT whose server side closes first: that side's
            // port stays in TIME_WAIT (for a minute) in this network namespace.
            let port = number(1)?;
            let listener = std::net::TcpListener::bind(("127.0.0.1", port as u16))
                .map_err(|e| format!("listen on 127.0.0.1:{port}: {e}"))?;
            let client = std::net::TcpStream::connect(("127.0.0.1", port as u16))
                .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
            let (server, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
            drop(server);
            let mut byte = [0u8; 1];
            let _ = std::io::Read::read(&mut &client, &mut byte);
            Ok(format!("left 127.0.0.1:{port} in TIME_WAIT"))
        }
        "bind" => {
            // Without SO_REUSEADDR (which Rust's `TcpListener` sets): fails while the port
            // has a connection in TIME_WAIT in this network namespace.
            let port = number(1)?;
            // SAFETY: socket/bind/close on a sockaddr_in on the stack.
            unsafe {
                let socket = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                if socket < 0 {
                    return Err(format!("socket: {}", errno()));
                }
                let mut address: libc::sockaddr_in = std::mem::zeroed();
                address.sin_family = libc::AF_INET as libc::sa_family_t;
                address.sin_port = (port as u16).to_be();
                address.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
                let bound = libc::bind(
                    socket,
                    (&raw const address).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                );
                let error = errno();
                libc::close(socket);
                if bound != 0 {
                    return Err(format!("bind 127.0.0.1:{port}: {error}"));
                }
            }
            Ok(format!("bound 127.0.0.1:{port}"))
        }
        "signal" => {
            let pid = number(1)?;
            // SIGCONT: really delivered, harmless to a sleeping process.
            // SAFETY: kill with integer arguments.
            if unsafe { libc::kill(pid, libc::SIGCONT) } != 0 {
                return Err(format!("kill({pid}, SIGCONT): {}", errno()));
            }
            Ok(format!("signalled {pid}"))
        }
        "ptrace" => {
            let pid = number(1)?;
            // SAFETY: ptrace attach/detach of a pid; waitpid on it.
            unsafe {
                if libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) != 0 {
                    return Err(format!("ptrace(ATTACH, {pid}): {}", errno()));
                }
                let mut status = 0;
                libc::waitpid(pid, &mut status, libc::__WALL);
                libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
            }
            Ok(format!("attached to {pid}"))
        }
        "tiocsti" => {
            let fd = number(1)?;
            let byte: libc::c_char = b'x' as libc::c_char;
            // SAFETY: ioctl on an fd with a pointer to a live byte.
            if unsafe { libc::ioctl(fd, libc::TIOCSTI, &byte) } != 0 {
                return Err(format!("ioctl({fd}, TIOCSTI): {}", errno()));
            }
            Ok(format!("pushed a byte into the terminal on fd {fd}"))
        }
        "remount" => {
            let dir = CString::new(arg(1)?).map_err(|e| e.to_string())?;
            // A private mount namespace first (never touch the host's mounts), as root or
            // through a user namespace; then bind the directory and make it writable.
            // SAFETY: unshare/mount with NUL-terminated strings.
            unsafe {
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    && libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0
                {
                    return Err(format!("unshare(CLONE_NEWNS): {}", errno()));
                }
                let null = std::ptr::null();
                if libc::mount(
                    null,
                    c"/".as_ptr(),
                    null,
                    libc::MS_REC | libc::MS_PRIVATE,
                    null.cast(),
                ) != 0
                {
                    return Err(format!("mount(/, MS_PRIVATE): {}", errno()));
                }
                if libc::mount(dir.as_ptr(), dir.as_ptr(), null, libc::MS_BIND, null.cast()) != 0 {
                    return Err(format!("mount(--bind): {}", errno()));
                }
                if libc::mount(
                    null,
                    dir.as_ptr(),
                    null,
                    libc::MS_REMOUNT | libc::MS_BIND,
                    null.cast(),
                ) != 0
                {
                    return Err(format!("mount(remount,rw): {}", errno()));
                }
            }
            Ok("remounted read-write".into())
        }
        "proc-root" => {
            let path = format!("/proc/{}/root{}", number(1)?, arg(2)?);
            let text = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
            Ok(format!("read {path}: {}", text.trim()))
        }
        "proc-exe" => {
            // In a sandbox, pid 1 is the runtime that set it up: its executable is a host
            // file.
            let path = format!("/proc/{}/exe", number(1)?);
            let mut file = std::fs::File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
            let mut magic = [0u8; 4];
            file.read_exact(&mut magic)
                .map_err(|e| format!("read {path}: {e}"))?;
            Ok(format!("read {path} ({magic:?})"))
        }
        "proc-mem" => {
            // Another process's memory through /proc: in a sandbox, pid 1 runs on vt's own.
            let pid = number(1)?;
            let maps = format!("/proc/{pid}/maps");
            let text = std::fs::read_to_string(&maps).map_err(|e| format!("read {maps}: {e}"))?;
            let start = text
                .lines()
                .find(|line| {
                    line.split_whitespace()
                        .nth(1)
                        .is_some_and(|p| p.starts_with('r'))
                })
                .and_then(|line| line.split('-').next())
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("{maps}: no readable mapping"))?;
            let path = format!("/proc/{pid}/mem");
            let file = std::fs::File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
            let mut bytes = [0u8; 8];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, start)
                .map_err(|e| format!("read {path} at {start:#x}: {e}"))?;
            Ok(format!("read {path} at {start:#x}"))
        }
        "setuid" => {
            let copy = std::path::Path::new(&arg(1)?).join("escape-suid");
            let me = std::env::current_exe().map_err(|e| e.to_string())?;
            std::fs::copy(&me, &copy).map_err(|e| format!("copy to {}: {e}", copy.display()))?;
            let path = CString::new(copy.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
            // SAFETY: chmod with a NUL-terminated path.
            if unsafe { libc::chmod(path.as_ptr(), 0o4755) } != 0 {
                return Err(format!("chmod u+s {}: {}", copy.display(), errno()));
            }
            let status = std::process::Command::new(&copy)
                .arg("capabilities")
                .status()
                .map_err(|e| format!("exec {}: {e}", copy.display()))?;
            if status.success() {
                Ok("the setuid copy runs with capabilities".into())
            } else {
                Err("the setuid copy runs without capabilities".into())
            }
        }
        "capabilities" => {
            let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
            let effective = status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .map(str::trim)
                .unwrap_or("");
            if effective.chars().all(|c| c == '0') {
                Err(format!("no effective capabilities ({effective})"))
            } else {
                Ok(format!("effective capabilities {effective}"))
            }
        }
        "bpf" => load_bpf(),
        "daemon" => {
            let marker = arg(1)?;
            // SAFETY: fork/setsid/_exit; the grandchild only sleeps and writes a file.
            unsafe {
                match libc::fork() {
                    -1 => return Err(format!("fork: {}", errno())),
                    0 => {
                        libc::setsid();
                        if libc::fork() == 0 {
                            std::thread::sleep(std::time::Duration::from_millis(700));
                            let _ = std::fs::write(&marker, b"outlived the task\n");
                        }
                        libc::_exit(0);
                    }
                    _ => {}
                }
            }
            Ok("left a daemon behind".into())
        }
        "heavy-daemon" => heavy_daemon(&arg(1)?),
        other => Err(format!("unknown attempt {other:?}")),
    }
}

/// Leaves behind a daemon (its own session) that holds `fifo` open for writing, wrote one
/// byte to it, and has 1 GiB of memory in use, so that its exit takes a while: a process's
/// descriptors are closed only after its memory is freed, so the fifo's reader sees the end
/// of the daemon, not of the signal that killed it. Returns once the daemon holds the fifo,
/// printing its pid.
fn heavy_daemon(fifo: &str) -> Result<String, String> {
    let path = CString::new(fifo).map_err(|e| e.to_string())?;
    let mut ready = [0 as libc::c_int; 2];
    // SAFETY: pipe/fork/setsid/mmap/open/write/pause/_exit on local values; the children
    // call async-signal-safe functions only.
    unsafe {
        if libc::pipe(ready.as_mut_ptr()) != 0 {
            return Err(format!("pipe: {}", errno()));
        }
        match libc::fork() {
            -1 => return Err(format!("fork: {}", errno())),
            0 => {
                libc::setsid();
                if libc::fork() == 0 {
                    const LEN: usize = 1 << 30;
                    let memory = libc::mmap(
                        std::ptr::null_mut(),
                        LEN,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                        -1,
                        0,
                    );
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                    if memory == libc::MAP_FAILED || fd < 0 {
                        libc::_exit(1);
                    }
                    libc::write(fd, b"r".as_ptr().cast(), 1);
                    // Whoever reads the task's output until its end must not wait for this.
                    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                    for standard in 0..3 {
                        libc::dup2(null, standard);
                    }
                    let pid = libc::getpid().to_ne_bytes();
                    libc::write(ready[1], pid.as_ptr().cast(), pid.len());
                    loop {
                        libc::pause();
                    }
                }
                libc::_exit(0);
            }
            _ => {}
        }
        libc::close(ready[1]);
        let mut pid = [0u8; 4];
        if libc::read(ready[0], pid.as_mut_ptr().cast(), pid.len()) != pid.len() as isize {
            return Err("the daemon did not start".into());
        }
        Ok(format!("daemon {}", i32::from_ne_bytes(pid)))
    }
}

/// `bpf(BPF_PROG_LOAD)` of the smallest socket filter: `r0 = 0; exit`.
fn load_bpf() -> Result<String, String> {
    #[repr(C)]
    struct Insn {
        code: u8,
        regs: u8,
        off: i16,
        imm: i32,
    }
    #[repr(C)]
    #[derive(Default)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        padding: [u64; 8],
    }
    let program = [
        Insn {
            code: 0xb7, // BPF_ALU64 | BPF_MOV | BPF_K
            regs: 0,
            off: 0,
            imm: 0,
        },
        Insn {
            code: 0x95, // BPF_JMP | BPF_EXIT
            regs: 0,
            off: 0,
            imm: 0,
        },
    ];
    let license = c"GPL";
    let attr = ProgLoad {
        prog_type: 1, // BPF_PROG_TYPE_SOCKET_FILTER
        insn_cnt: 2,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoad::default()
    };
    // SAFETY: bpf(BPF_PROG_LOAD = 5) with a live attribute struct of the size we pass.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            5,
            &attr as *const ProgLoad,
            std::mem::size_of::<ProgLoad>(),
        )
    };
    if fd < 0 {
        return Err(format!("bpf(BPF_PROG_LOAD): {}", errno()));
    }
    Ok("loaded a BPF program".into())
}

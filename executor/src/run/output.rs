//! A task's stdout and stderr: captured in the order they were written (so a hit replays
//! them byte for byte, interleaving included) and shown live as `--log` asks.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

/// How live output is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogMode {
    /// Bytes as they come, tasks mixed.
    Interleaved,
    /// Every line prefixed with `[package#task]`.
    Labeled,
    /// Each task's output in one block when it finishes.
    Grouped,
    /// Captured only (a worker's: its output is shown by the client).
    #[value(skip)]
    Quiet,
}

pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

/// Serializes writes to vt's own stdout/stderr across task threads.
static CONSOLE: Mutex<()> = Mutex::new(());

/// Appends one chunk: stream byte, u32 length, bytes.
pub fn push_chunk(log: &mut Vec<u8>, stream: u8, bytes: &[u8]) {
    log.push(stream);
    log.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    log.extend_from_slice(bytes);
}

/// The chunks of a captured log, or None if it is damaged.
pub fn chunks(mut log: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while !log.is_empty() {
        let stream = *log.first()?;
        let len = u32::from_le_bytes(log.get(1..5)?.try_into().ok()?) as usize;
        let bytes = log.get(5..5 + len)?;
        out.push((stream, bytes));
        log = &log[5 + len..];
    }
    Some(out)
}

/// Shows chunks on vt's stdout/stderr.
pub struct Console {
    pub mode: LogMode,
    pub label: String,
    partial: [Vec<u8>; 2],
}

impl Console {
    pub fn new(mode: LogMode, label: &str) -> Console {
        Console {
            mode,
            label: label.to_owned(),
            partial: [Vec::new(), Vec::new()],
        }
    }

    pub fn show(&mut self, stream: u8, bytes: &[u8]) {
        match self.mode {
            LogMode::Grouped | LogMode::Quiet => {}
            LogMode::Interleaved => write_stream(stream, bytes),
            LogMode::Labeled => {
                let slot = usize::from(stream == STDERR);
                self.partial[slot].extend_from_slice(bytes);
                while let Some(end) = self.partial[slot].iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.partial[slot].drain(..=end).collect();
                    let mut out = format!("[{}] ", self.label).into_bytes();
                    out.extend_from_slice(&line);
                    write_stream(stream, &out);
                }
            }
        }
    }

    /// Flushes a trailing partial line, or the whole log in grouped mode.
    pub fn finish(&mut self, log: &[u8]) {
        match self.mode {
            LogMode::Grouped => {
                let _guard = CONSOLE.lock();
                super::progress::print(|| {
                    for (stream, bytes) in chunks(log).unwrap_or_default() {
                        write_unlocked(stream, bytes);
                    }
                });
            }
            LogMode::Labeled => {
                for slot in 0..2 {
                    if !self.partial[slot].is_empty() {
                        let mut line = std::mem::take(&mut self.partial[slot]);
                        line.push(b'\n');
                        let stream = if slot == 1 { STDERR } else { STDOUT };
                        let mut out = format!("[{}] ", self.label).into_bytes();
                        out.extend_from_slice(&line);
                        write_stream(stream, &out);
                    }
                }
            }
            LogMode::Interleaved | LogMode::Quiet => {}
        }
    }

    /// Replays a stored log as if the task were running.
    pub fn replay(&mut self, log: &[u8]) {
        for (stream, bytes) in chunks(log).unwrap_or_default() {
            self.show(stream, bytes);
        }
        self.finish(log);
    }
}

fn write_stream(stream: u8, bytes: &[u8]) {
    let _guard = CONSOLE.lock();
    super::progress::print(|| write_unlocked(stream, bytes));
}

fn write_unlocked(stream: u8, bytes: &[u8]) {
    // A closed console (vt piped into `head`) must not fail the task.
    if stream == STDERR {
        let _ = std::io::stderr().write_all(bytes);
    } else {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes);
        let _ = out.flush();
    }
}

/// Reads both pipes until both close, in arrival order; shows each chunk on `console`.
pub fn capture(stdout: OwnedFd, stderr: OwnedFd, console: &mut Console) -> Vec<u8> {
    let mut log = Vec::new();
    let mut open = [Some(stdout), Some(stderr)];
    let mut buffer = vec![0u8; 64 * 1024];
    while open.iter().any(Option::is_some) {
        let mut fds: Vec<libc::pollfd> = open
            .iter()
            .flatten()
            .map(|fd| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: valid pollfds for fds we own.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        for pfd in fds {
            if pfd.revents == 0 {
                continue;
            }
            let slot = open
                .iter()
                .position(|fd| fd.as_ref().is_some_and(|fd| fd.as_raw_fd() == pfd.fd))
                .unwrap_or(0);
            // SAFETY: reading into our buffer from our fd.
            let n = unsafe { libc::read(pfd.fd, buffer.as_mut_ptr().cast(), buffer.len()) };
            if n <= 0 {
                if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                open[slot] = None;
                continue;
            }
            let stream = if slot == 0 { STDOUT } else { STDERR };
            let bytes = &buffer[..n as usize];
            push_chunk(&mut log, stream, bytes);
            console.show(stream, bytes);
        }
    }
    console.finish(&log);
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_damage_is_detected() {
        let mut log = Vec::new();
        push_chunk(&mut log, STDOUT, b"out\n");
        push_chunk(&mut log, STDERR, b"err");
        push_chunk(&mut log, STDOUT, b"");
        let parsed = chunks(&log).expect("valid");
        assert_eq!(
            parsed,
            vec![
                (STDOUT, &b"out\n"[..]),
                (STDERR, &b"err"[..]),
                (STDOUT, &b""[..])
            ]
        );
        assert!(chunks(&log[..log.len() - 2]).is_none());
        assert!(chunks(&log[..7]).is_none());
    }
}

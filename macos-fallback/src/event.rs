//! What the injected library reports, and how it travels.
//!
//! macOS has no `SOCK_SEQPACKET` for Unix sockets, so the same postcard messages vt's wire
//! protocol uses go over a `SOCK_STREAM` socket, each behind a 4-byte little-endian length.
//! Every injected process writes whole frames with one `write` each (frames are far below
//! the socket buffer, and a stream socket keeps one writer's bytes together when the write
//! fits), so frames from different processes never interleave.

use serde::{Deserialize, Serialize};

/// Frames larger than this are garbage, not events: a path is at most 1 KiB on macOS
/// (`PATH_MAX`), two paths and a few integers fit easily.
pub const MAX_FRAME: usize = 16 * 1024;

/// One intercepted call (or process life-cycle step) of one injected process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub pid: u32,
    /// `mach_absolute_time` converted to nanoseconds: orders events across processes.
    pub at_ns: u64,
    pub call: Call,
}

/// Results are the call's return value, or `-errno` on failure (macOS errno numbers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    /// First message of every injected process: who it is and where it starts.
    Hello {
        ppid: u32,
        exe: Vec<u8>,
        cwd: Vec<u8>,
    },
    /// `open`/`openat` (`dir` is the directory path of `dirfd`, empty for `AT_FDCWD`).
    Open {
        dir: Vec<u8>,
        path: Vec<u8>,
        flags: i32,
        result: i32,
    },
    /// `stat`/`lstat`/`fstatat`/`access`/`faccessat`/`readlink`/`getattrlist`.
    Probe {
        path: Vec<u8>,
        follow: bool,
        result: i32,
    },
    /// `opendir` + the first `readdir` (a listing).
    ListDir {
        path: Vec<u8>,
        result: i32,
    },
    /// `execve`/`posix_spawn` of `path` (before the call; `result` is known only on failure).
    Exec {
        path: Vec<u8>,
        result: i32,
    },
    Mkdir {
        path: Vec<u8>,
        result: i32,
    },
    Unlink {
        path: Vec<u8>,
        result: i32,
    },
    Rmdir {
        path: Vec<u8>,
        result: i32,
    },
    Rename {
        from: Vec<u8>,
        to: Vec<u8>,
        result: i32,
    },
    Chdir {
        path: Vec<u8>,
        result: i32,
    },
    /// `fork`/`vfork`/`posix_spawn` returned `child` in the parent.
    Forked {
        child: u32,
    },
}

/// macOS `open` flags the replay needs (they differ from Linux's).
pub mod flags {
    pub const O_ACCMODE: i32 = 0x0003;
    pub const O_RDONLY: i32 = 0x0000;
    pub const O_CREAT: i32 = 0x0200;
    pub const O_TRUNC: i32 = 0x0400;
    pub const O_EXCL: i32 = 0x0800;
    pub const O_DIRECTORY: i32 = 0x0010_0000;
}

/// macOS errno values the replay tells apart.
pub mod errno {
    pub const ENOENT: i32 = 2;
    pub const ENOTDIR: i32 = 20;
    pub const EEXIST: i32 = 17;
}

/// One frame: length, then the postcard bytes.
pub fn encode(event: &Event) -> Result<Vec<u8>, postcard::Error> {
    let body = postcard::to_stdvec(event)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of {0} bytes is larger than any event ({MAX_FRAME} at most)")]
    TooLarge(usize),
    #[error("undecodable event: {0}")]
    Garbage(String),
    #[error("the stream ended inside a frame ({0} bytes left over)")]
    Truncated(usize),
}

/// Splits a byte stream into events, whatever the read sizes were.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    pending: Vec<u8>,
}

impl FrameDecoder {
    /// Adds bytes and returns every event they complete. After an error the stream cannot
    /// be trusted any more: the caller records a gap and stops decoding it.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Event>, FrameError> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(header) = self.pending.get(..4) {
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            if len > MAX_FRAME {
                return Err(FrameError::TooLarge(len));
            }
            let Some(body) = self.pending.get(4..4 + len) else {
                break;
            };
            let event =
                postcard::from_bytes(body).map_err(|e| FrameError::Garbage(e.to_string()))?;
            events.push(event);
            self.pending.drain(..4 + len);
        }
        Ok(events)
    }

    /// The end of the stream: an incomplete frame is an error.
    pub fn finish(self) -> Result<(), FrameError> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated(self.pending.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &str) -> Event {
        Event {
            pid: 7,
            at_ns: 1,
            call: Call::Open {
                dir: Vec::new(),
                path: path.as_bytes().to_vec(),
                flags: flags::O_RDONLY,
                result: 3,
            },
        }
    }

    #[test]
    fn frames_survive_any_split() {
        let mut stream = Vec::new();
        for name in ["a.js", "b.js", "c/d.js"] {
            stream.extend(encode(&open(name)).expect("encode"));
        }
        for chunk in [1, 2, 3, 7, stream.len()] {
            let mut decoder = FrameDecoder::default();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                got.extend(decoder.push(piece).expect("decode"));
            }
            decoder.finish().expect("complete");
            assert_eq!(got, vec![open("a.js"), open("b.js"), open("c/d.js")]);
        }
    }

    #[test]
    fn garbage_oversize_and_truncation_are_errors() {
        let mut decoder = FrameDecoder::default();
        assert_eq!(
            decoder.push(&(1u32 << 20).to_le_bytes()),
            Err(FrameError::TooLarge(1 << 20))
        );
        let mut decoder = FrameDecoder::default();
        assert!(matches!(
            decoder.push(&[3, 0, 0, 0, 0xff, 0xff, 0xff]),
            Err(FrameError::Garbage(_))
        ));
        let mut decoder = FrameDecoder::default();
        let frame = encode(&open("x")).expect("encode");
        assert!(
            decoder
                .push(&frame[..frame.len() - 1])
                .expect("partial")
                .is_empty()
        );
        assert_eq!(
            decoder.finish(),
            Err(FrameError::Truncated(frame.len() - 1))
        );
    }
}

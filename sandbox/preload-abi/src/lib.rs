//! The contract between the LD_PRELOAD recorder (`vt-preload`, loaded into the task's
//! processes) and the tracer (`sandbox::trace`, in vt): where the syscall trampoline lives,
//! where the per-process buffers are, and how a record is laid out.
//!
//! No dependencies and no allocation: the recorder uses this from inside interposed libc
//! calls, where it must not call back into libc's file API or the allocator.
//!
//! ## Buffer
//! One file per exec'd process image, `$VT_PRELOAD_DIR/<pid>.<n>`, mapped `MAP_SHARED`: what
//! a process stored survives its death (even `SIGKILL`), because the pages belong to the file.
//! A forked child shares its parent's mapping, so records carry the process id.
//!
//! ```text
//! [0..4)   MAGIC
//! [4..8)   VERSION
//! [8..16)  cursor: bytes reserved after the header (atomic fetch_add by writers)
//! [HEADER_LEN..)  records, each 8-aligned
//! ```
//!
//! ## Record
//! ```text
//! [0..4)   state word: (len << 2) | STATE_*   (atomic; len = whole record, 8-aligned)
//! [4]      op (OP_*)
//! [5]      bits (BIT_*)
//! [6..8)   path length
//! [8..12)  process id (a `vfork` child's records carry its parent's until it execs)
//! [12..16) open flags (OP_OPEN) or 0
//! [16..20) result: 0 or a negative errno
//! [20..24) reserved
//! [24..32) CLOCK_MONOTONIC nanoseconds when the call began (orders records against
//!          each other and against the supervisor's notifications)
//! [32..)   absolute, not yet cleaned path bytes
//! ```
//! A writer reserves space (compare-and-swap on the cursor, never past `CAPACITY`), stores
//! the length with state 0, writes the record and sets `STATE_PENDING` *before* making the
//! syscall, then sets `STATE_DONE` with the result after it. So a process that dies
//! - before `PENDING` never made the call: the reader skips the record by its length;
//! - between `PENDING` and `DONE` leaves a pending record: the reader probes the path itself;
//! - between reserving and storing the length leaves a zero word the reader cannot step
//!   over: it reports a tracing gap. An observation is never lost silently.
//!
//! Lookups (`OP_PROBE_*`: stat, access, readlink) change nothing, so they are recorded only
//! after the call, done at once, and not at all when the same process image already has a
//! done record saying the same thing (same op, flags, result, bits and path): a process that
//! dies during a lookup never acted on its answer, and the reader keeps only the earliest of
//! identical records anyway. Opens, execs and removals keep the pending step.

#![no_std]

/// Where every traced process maps its one-page syscall trampoline (`MAP_FIXED_NOREPLACE`).
///
/// Chosen outside what Linux hands out on x86_64 (PIE images near `0x5555…`, mmap below
/// `0x7fff…`, non-PIE images near `0x40_0000`) and inside ASan's "high memory" application
/// range; a process that already has something here simply runs without the fast path.
pub const TRAMPOLINE_ADDR: u64 = 0x3f00_0000_0000;
/// Length of the trampoline mapping: syscalls whose instruction pointer lies in
/// `[TRAMPOLINE_ADDR, TRAMPOLINE_ADDR + TRAMPOLINE_LEN)` are not notified.
pub const TRAMPOLINE_LEN: u64 = 4096;

/// The trampoline's machine code: `long trampoline(long nr, long a1, …, long a6)` in the
/// SysV calling convention, returning the raw result (`-errno` on failure).
pub const TRAMPOLINE_CODE: [u8; 27] = [
    0x48, 0x89, 0xf8, // mov rax, rdi      (nr)
    0x48, 0x89, 0xf7, // mov rdi, rsi      (a1)
    0x48, 0x89, 0xd6, // mov rsi, rdx      (a2)
    0x48, 0x89, 0xca, // mov rdx, rcx      (a3)
    0x4d, 0x89, 0xc2, // mov r10, r8       (a4)
    0x4d, 0x89, 0xc8, // mov r8, r9        (a5)
    0x4c, 0x8b, 0x4c, 0x24, 0x08, // mov r9, [rsp+8]  (a6)
    0x0f, 0x05, // syscall
    0xc3, // ret
    0xcc, // int3 (never reached)
];

/// Directory vt creates for the buffers; its absence turns the recorder off.
pub const DIR_ENV: &str = "VT_PRELOAD_DIR";

pub const MAGIC: u32 = 0x7674_7072; // "vtpr"
pub const VERSION: u32 = 3;
pub const HEADER_LEN: usize = 64;
pub const OFFSET_CURSOR: usize = 8;
/// Size of each buffer file (sparse: only written pages cost memory). A process that fills
/// it stops recording and its calls are notified instead.
pub const CAPACITY: usize = 64 << 20;

pub const RECORD_HEADER_LEN: usize = 32;
pub const OFFSET_TIME: usize = 24;

pub const STATE_PENDING: u32 = 1;
pub const STATE_DONE: u32 = 2;
pub const STATE_MASK: u32 = 3;

/// `open`/`openat` (not `O_TMPFILE`): flags say how. With `O_CREAT`, the bits say whether
/// the path existed just before (`BIT_FOUND`, `BIT_DIR`, `BIT_UNSURE`).
pub const OP_OPEN: u8 = 1;
/// A lookup that follows a final symlink (stat, access, …).
pub const OP_PROBE_FOLLOW: u8 = 2;
/// A lookup that does not (lstat, readlink, …).
pub const OP_PROBE_NOFOLLOW: u8 = 3;
/// `execve`: a record that stays pending means the exec succeeded (the image is gone).
pub const OP_EXEC: u8 = 4;
/// `unlink`/`unlinkat`/`rmdir`: flags are unlinkat's (`AT_REMOVEDIR`).
pub const OP_REMOVE: u8 = 5;

/// The opened file is a directory (OP_OPEN, done); with `O_CREAT`: the path was one.
pub const BIT_DIR: u8 = 1;
/// A creating open (OP_OPEN with `O_CREAT`): the path existed just before the call.
pub const BIT_FOUND: u8 = 2;
/// A creating open: whether the path existed could not be told (EACCES, ELOOP, …).
pub const BIT_UNSURE: u8 = 4;

/// The 8-aligned length of a record with a `path_len`-byte path.
pub const fn record_len(path_len: usize) -> usize {
    (RECORD_HEADER_LEN + path_len + 7) & !7
}

/// One record as the reader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub done: bool,
    pub op: u8,
    pub bits: u8,
    /// The writing process (see the record layout for `vfork` children).
    pub pid: u32,
    pub flags: i32,
    pub result: i32,
    /// CLOCK_MONOTONIC nanoseconds when the call began.
    pub time_ns: u64,
    pub path: &'a [u8],
}

/// What is wrong with a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferError {
    /// Not a vt buffer (wrong magic) or another version of it.
    NotABuffer,
    /// A writer died between reserving the record at this offset and storing its length,
    /// so what follows cannot be read.
    Torn { offset: usize },
    /// A record's length points outside the buffer: the file was damaged.
    Corrupt { offset: usize },
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
}

/// Where a buffer's reserved records end, from its header (the first [`HEADER_LEN`] bytes):
/// `None` if it is not a vt buffer (wrong magic) or another version of it. A writer that
/// found the buffer full moved the cursor past the end without writing.
pub fn records_end(header: &[u8]) -> Option<usize> {
    if u32_at(header, 0) != Some(MAGIC) || u32_at(header, 4) != Some(VERSION) {
        return None;
    }
    let cursor = header
        .get(OFFSET_CURSOR..OFFSET_CURSOR + 8)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))?;
    Some(HEADER_LEN + cursor.min((CAPACITY - HEADER_LEN) as u64) as usize)
}

/// Iterates the records of a buffer's bytes (a snapshot: read after the writers are gone).
pub fn records(buffer: &[u8]) -> Result<Records<'_>, BufferError> {
    let end = records_end(buffer).ok_or(BufferError::NotABuffer)?;
    Ok(Records {
        buffer,
        at: HEADER_LEN,
        end: end.min(buffer.len()),
    })
}

/// The records in `bytes`: whole records copied out of a buffer, without its header (the
/// offsets in errors are then within `bytes`).
pub fn records_in(bytes: &[u8]) -> Records<'_> {
    Records {
        buffer: bytes,
        at: 0,
        end: bytes.len(),
    }
}

pub struct Records<'a> {
    buffer: &'a [u8],
    at: usize,
    end: usize,
}

impl Records<'_> {
    /// The offset of the record the next call to `next` looks at.
    pub fn offset(&self) -> usize {
        self.at
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, BufferError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at + RECORD_HEADER_LEN > self.end {
            return None;
        }
        let offset = self.at;
        let b = self.buffer;
        let word = u32_at(b, offset)?;
        let state = word & STATE_MASK;
        let len = (word >> 2) as usize;
        if word == 0 {
            self.at = self.end;
            return Some(Err(BufferError::Torn { offset }));
        }
        if len < RECORD_HEADER_LEN || !len.is_multiple_of(8) || offset + len > self.end {
            self.at = self.end;
            return Some(Err(BufferError::Corrupt { offset }));
        }
        if state == 0 {
            // Reserved by a writer that died before making its call.
            self.at = offset + len;
            return self.next();
        }
        let path_len = usize::from(u16::from_le_bytes([b[offset + 6], b[offset + 7]]));
        if len != record_len(path_len) {
            self.at = self.end;
            return Some(Err(BufferError::Corrupt { offset }));
        }
        let field = |at: usize| u32_at(b, offset + at).unwrap_or(0);
        let time_ns = u64::from(field(OFFSET_TIME)) | (u64::from(field(OFFSET_TIME + 4)) << 32);
        self.at = offset + len;
        Some(Ok(Record {
            done: state == STATE_DONE,
            op: b[offset + 4],
            bits: b[offset + 5],
            pid: field(8),
            flags: field(12) as i32,
            result: field(16) as i32,
            time_ns,
            path: &b[offset + RECORD_HEADER_LEN..offset + RECORD_HEADER_LEN + path_len],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    use std::vec::Vec;

    fn buffer_with(records: &[(u32, u8, &[u8])]) -> Vec<u8> {
        let mut b = std::vec![0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        for (state, op, path) in records {
            let len = record_len(path.len());
            let mut r = std::vec![0u8; len];
            r[0..4].copy_from_slice(&(((len as u32) << 2) | state).to_le_bytes());
            r[4] = *op;
            r[6..8].copy_from_slice(&(path.len() as u16).to_le_bytes());
            r[8..12].copy_from_slice(&42u32.to_le_bytes());
            r[16..20].copy_from_slice(&(-2i32).to_le_bytes());
            r[24..32].copy_from_slice(&0x1_0000_0007u64.to_le_bytes());
            r[RECORD_HEADER_LEN..RECORD_HEADER_LEN + path.len()].copy_from_slice(path);
            b.extend(r);
        }
        let cursor = (b.len() - HEADER_LEN) as u64;
        b[8..16].copy_from_slice(&cursor.to_le_bytes());
        b
    }

    #[test]
    fn records_round_trip() {
        let b = buffer_with(&[
            (STATE_DONE, OP_OPEN, b"/a/b"),
            (0, OP_OPEN, b"/never/called"),
            (STATE_PENDING, OP_PROBE_FOLLOW, b"/c"),
        ]);
        let all: Vec<_> = records(&b).expect("buffer").collect();
        assert_eq!(all.len(), 2);
        let first = all[0].expect("record");
        assert!(first.done);
        assert_eq!((first.op, first.pid, first.result), (OP_OPEN, 42, -2));
        assert_eq!(first.time_ns, 0x1_0000_0007);
        assert_eq!(first.path, b"/a/b");
        let second = all[1].expect("record");
        assert!(!second.done);
        assert_eq!(second.path, b"/c");
    }

    #[test]
    fn a_reserved_but_unwritten_record_is_torn() {
        let mut b = buffer_with(&[(STATE_DONE, OP_OPEN, b"/a")]);
        let cursor = (b.len() - HEADER_LEN + 64) as u64;
        b.extend(std::vec![0u8; 64]);
        b[8..16].copy_from_slice(&cursor.to_le_bytes());
        let all: Vec<_> = records(&b).expect("buffer").collect();
        assert!(all[0].is_ok());
        assert_eq!(
            all[1],
            Err(BufferError::Torn {
                offset: HEADER_LEN + record_len(2)
            })
        );
    }

    #[test]
    fn records_copied_out_without_the_header_say_where_they_are() {
        let b = buffer_with(&[
            (STATE_DONE, OP_OPEN, b"/a"),
            (STATE_PENDING, OP_OPEN, b"/bb"),
        ]);
        let second = HEADER_LEN + record_len(2);
        let mut records = records_in(&b[second..]);
        assert_eq!(records.offset(), 0);
        assert_eq!(records.next().expect("one").expect("record").path, b"/bb");
        assert_eq!(records.offset(), record_len(3));
        assert!(records.next().is_none());
    }

    #[test]
    fn damaged_lengths_and_foreign_files_are_refused() {
        let mut b = buffer_with(&[(STATE_DONE, OP_OPEN, b"/a")]);
        b[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&((4096u32 << 2) | STATE_DONE).to_le_bytes());
        assert!(matches!(
            records(&b).expect("buffer").next(),
            Some(Err(BufferError::Corrupt { .. }))
        ));
        assert!(records(b"not a buffer at all").is_err());
    }
}

//! Records that may wait for the next read-write open: stat memos and times of use.
//!
//! A lookup only reads, and a read-only RocksDB open costs a fifth of a read-write one (no
//! new MANIFEST, OPTIONS file, write-ahead log or flush, each synced). So a vt that only
//! looks up and replays opens the database read-only, and what a fully cached run would
//! still write (the stat memos of files it hashed, each hit's time of use) is appended to
//! [`FILE`] in the cache directory instead, under the cache's lock. The next read-write
//! open (a store, a prune, `vt cache stats`) folds the file into the database and removes
//! it; a read-only open reads its stat memos, so a file hashed once is not hashed again.
//!
//! Each record carries a hash of its bytes: a record torn by a crash or damaged on disk
//! ends the file's reading there (what follows is dropped, never trusted). Both kinds of
//! record are optimisations; losing one costs a rehash or an older time of use, while a
//! wrong memo could make vt trust a stale hash, which the checksum rules out.

use std::io::Write;
use std::path::Path;

use super::store::Family;

/// The file's name inside the cache directory.
pub const FILE: &str = "vt.deferred";

/// A read-only open is refused (the database is opened read-write, which folds the file
/// in) once the file is this large: a long streak of read-only runs appends each run's
/// times of use.
pub const FOLD_AT: u64 = 1 << 20;

/// The kinds of record the file may hold; anything else is not read back.
const MEMO: u8 = b'm';
const USED: u8 = b'u';
/// Bytes of the record's hash kept in its header.
const CHECK: usize = 16;

/// One deferred record: a put into `family`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub family: Family,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

fn tag(family: Family) -> Option<u8> {
    match family {
        Family::StatMemo => Some(MEMO),
        Family::Used => Some(USED),
        _ => None,
    }
}

fn check(payload: &[u8]) -> [u8; CHECK] {
    let mut out = [0; CHECK];
    out.copy_from_slice(&blake3::hash(payload).as_bytes()[..CHECK]);
    out
}

/// The bytes `records` append: per record, its payload's length (u32 LE), a hash of the
/// payload, then the payload (tag, key length u32 LE, key, value). Records of another
/// family are a caller's mistake and are left out.
pub fn encode<'a>(records: impl IntoIterator<Item = (Family, &'a [u8], &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (family, key, value) in records {
        let Some(tag) = tag(family) else { continue };
        let Ok(key_len) = u32::try_from(key.len()) else {
            continue;
        };
        let mut payload = Vec::with_capacity(1 + 4 + key.len() + value.len());
        payload.push(tag);
        payload.extend_from_slice(&key_len.to_le_bytes());
        payload.extend_from_slice(key);
        payload.extend_from_slice(value);
        let Ok(len) = u32::try_from(payload.len()) else {
            continue;
        };
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&check(&payload));
        out.extend_from_slice(&payload);
    }
    out
}

/// The records in `bytes`, up to the first that is torn or does not check out.
pub fn decode(bytes: &[u8]) -> Vec<Record> {
    let mut records = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 4 + CHECK {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(payload) = rest.get(4 + CHECK..4 + CHECK + len) else {
            break;
        };
        if rest[4..4 + CHECK] != check(payload) || payload.len() < 5 {
            break;
        }
        let family = match payload[0] {
            MEMO => Family::StatMemo,
            USED => Family::Used,
            _ => break,
        };
        let key_len = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]) as usize;
        let Some(key) = payload.get(5..5 + key_len) else {
            break;
        };
        records.push(Record {
            family,
            key: key.to_vec(),
            value: payload[5 + key_len..].to_vec(),
        });
        rest = &rest[4 + CHECK + len..];
    }
    records
}

/// Appends `bytes` (from [`encode`]) to the cache directory's file. The caller holds the
/// cache's lock, so appends of two vt never interleave.
pub fn append(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join(FILE))?
        .write_all(bytes)
}

/// The file's records, and its size (0: there is none).
pub fn read(dir: &Path) -> (Vec<Record>, u64) {
    match std::fs::read(dir.join(FILE)) {
        Ok(bytes) => (decode(&bytes), bytes.len() as u64),
        Err(_) => (Vec::new(), 0),
    }
}

/// Removes the file (once its records are in the database, or the database was emptied).
pub fn clear(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> Vec<u8> {
        encode([
            (Family::StatMemo, &b"inode"[..], &b"stamp+hash"[..]),
            (Family::Used, &b"post"[..], &7u64.to_le_bytes()[..]),
        ])
    }

    #[test]
    fn records_read_back_as_written() {
        let records = decode(&two());
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].family, Family::StatMemo);
        assert_eq!(records[0].key, b"inode");
        assert_eq!(records[0].value, b"stamp+hash");
        assert_eq!(records[1].family, Family::Used);
        assert_eq!(records[1].value, 7u64.to_le_bytes());
    }

    #[test]
    fn other_families_are_never_deferred() {
        assert!(encode([(Family::Entries, &b"k"[..], &b"v"[..])]).is_empty());
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_the_ones_before_kept() {
        let bytes = two();
        for cut in 1..bytes.len() {
            let records = decode(&bytes[..cut]);
            assert!(records.len() < 2, "cut at {cut}");
            if !records.is_empty() {
                assert_eq!(records[0].key, b"inode");
            }
        }
    }

    #[test]
    fn a_changed_byte_ends_the_reading_there() {
        let bytes = two();
        let first = decode(&bytes[..]).len();
        assert_eq!(first, 2);
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            let records = decode(&damaged);
            // Whatever is read back is exactly what was written (never a changed value).
            let written = decode(&bytes);
            assert!(records.len() < 2, "byte {at}");
            assert!(
                records.iter().zip(&written).all(|(r, w)| r == w),
                "byte {at}"
            );
        }
    }

    #[test]
    fn append_read_and_clear_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()), (Vec::new(), 0));
        append(dir.path(), &two()).expect("append");
        append(dir.path(), &two()).expect("append");
        let (records, size) = read(dir.path());
        assert_eq!(records.len(), 4);
        assert_eq!(size, 2 * two().len() as u64);
        clear(dir.path()).expect("clear");
        clear(dir.path()).expect("clear twice");
        assert_eq!(read(dir.path()), (Vec::new(), 0));
    }
}

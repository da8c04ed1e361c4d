//! Lookups this process already recorded, so a repeat costs no record.
//!
//! A process repeats itself: `cc1` canonicalizes every header it includes with `realpath`,
//! a `readlink` of each prefix (`/usr`, `/usr/include`, …), so on the 200-file C build 171 000
//! of 264 000 records were lookups their process had already recorded with the same
//! outcome. vt keeps the earliest of identical records and nothing else
//! (`sandbox::trace::fast_path`), so a repeat adds nothing but the cost of writing and
//! reading it.
//!
//! Only side-effect-free lookups (stat, access, readlink) are skipped, and only when an
//! earlier record of this process image says the same thing: same call, same flags, same
//! result, same path, compared byte for byte against that record in the buffer. The table
//! only says where to look: a slot overwritten by another path, or lost to a race between
//! threads, just means the repeat is recorded again.
//!
//! A forked child gets a new generation (`fork_child`), so its lookups are recorded under its
//! own process id even where its parent made them first.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use preload_abi::{CAPACITY, RECORD_HEADER_LEN, STATE_DONE, STATE_MASK};

/// 128 sets of 4 slots: a set is one cache line, and a loop over a few lookups whose
/// hashes share a set still finds them all (a direct-mapped table let two of them evict each
/// other on every turn).
const WAYS: usize = 4;
const SETS: usize = 128;

/// Each slot: `generation << 32 | offset of the record in the buffer` (0: empty; records
/// start after the header, so no record is at offset 0).
static SLOTS_TABLE: [AtomicU64; SETS * WAYS] = [const { AtomicU64::new(0) }; SETS * WAYS];
static GENERATION: AtomicU32 = AtomicU32::new(1);
/// Picks which slot of a full set to replace: varied, so no two lookups keep evicting each
/// other.
static VICTIM: AtomicU32 = AtomicU32::new(0);

/// Forgets every lookup (in a fork child: its records carry its own process id).
pub fn fork_child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// What identifies a lookup's record, apart from its time and process.
#[derive(Clone, Copy)]
pub struct Key<'a> {
    pub op: u8,
    pub bits: u8,
    pub flags: i32,
    pub result: i32,
    pub parts: &'a [&'a [u8]],
}

impl Key<'_> {
    /// The first slot of this key's set.
    fn set(&self) -> usize {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = (u64::from(self.op) << 40)
            ^ (u64::from(self.bits) << 32)
            ^ u64::from(self.flags as u32)
            ^ (u64::from(self.result as u32) << 16);
        for part in self.parts {
            let mut chunks = part.chunks_exact(8);
            for chunk in &mut chunks {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                h = (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
            }
            for &b in chunks.remainder() {
                h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
            }
        }
        (h >> 32) as usize % SETS * WAYS
    }

    /// Whether the finished record at `record` says exactly this.
    ///
    /// # Safety
    /// `record` points into the buffer with at least RECORD_HEADER_LEN bytes mapped after it,
    /// and its state word says how long it is.
    unsafe fn matches(&self, record: *const u8) -> bool {
        // SAFETY: the state word is the record's first 4 bytes, 8-aligned.
        let state = unsafe { &*(record as *const AtomicU32) }.load(Ordering::Acquire);
        if state & STATE_MASK != STATE_DONE {
            return false;
        }
        let len = (state >> 2) as usize;
        let path_len: usize = self.parts.iter().map(|p| p.len()).sum();
        if len < RECORD_HEADER_LEN + path_len {
            return false;
        }
        // SAFETY: a done record is immutable and `len` bytes long (it was written by
        // `buffer::begin`, which checked it fits in the mapping).
        let bytes = unsafe { core::slice::from_raw_parts(record, len) };
        let header_matches = bytes[4] == self.op
            && bytes[5] == self.bits
            && bytes[6..8] == (path_len as u16).to_le_bytes()
            && bytes[12..16] == self.flags.to_le_bytes()
            && bytes[16..20] == self.result.to_le_bytes();
        if !header_matches {
            return false;
        }
        let mut at = RECORD_HEADER_LEN;
        for part in self.parts {
            if bytes[at..at + part.len()] != **part {
                return false;
            }
            at += part.len();
        }
        true
    }
}

/// Whether this process image already recorded `key`, in the buffer at `base`.
pub fn contains(base: *const u8, key: &Key<'_>) -> bool {
    let generation = u64::from(GENERATION.load(Ordering::Relaxed));
    let set = key.set();
    SLOTS_TABLE[set..set + WAYS].iter().any(|slot| {
        let entry = slot.load(Ordering::Acquire);
        let offset = (entry & 0xffff_ffff) as usize;
        entry >> 32 == generation
            && offset != 0
            && offset + RECORD_HEADER_LEN <= CAPACITY
            // SAFETY: `offset` was stored by `remember` for a record of this mapping.
            && unsafe { key.matches(base.add(offset)) }
    })
}

/// Notes that `key` is recorded at `offset` in the buffer (a finished record): in a slot of
/// its set that is empty or from an earlier generation, else in one chosen in turn.
pub fn remember(key: &Key<'_>, offset: usize) {
    let Ok(offset) = u32::try_from(offset) else {
        return;
    };
    let generation = GENERATION.load(Ordering::Relaxed);
    let first = key.set();
    let set = &SLOTS_TABLE[first..first + WAYS];
    let slot = set
        .iter()
        .find(|slot| slot.load(Ordering::Relaxed) >> 32 != u64::from(generation))
        .unwrap_or_else(|| &set[VICTIM.fetch_add(1, Ordering::Relaxed) as usize % WAYS]);
    slot.store(
        (u64::from(generation) << 32) | u64::from(offset),
        Ordering::Release,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use preload_abi::record_len;

    /// A buffer holding a done record for each path, and the records' offsets.
    fn buffer_with(paths: &[Vec<u8>]) -> (Vec<u64>, Vec<usize>) {
        let mut words = vec![0u64; 4096];
        let bytes = words.as_mut_ptr() as *mut u8;
        let mut offsets = Vec::new();
        let mut at = 64;
        for path in paths {
            let len = record_len(path.len());
            // SAFETY: inside `words` (4096 × 8 bytes, far more than these records need).
            unsafe {
                let record = core::slice::from_raw_parts_mut(bytes.add(at), len);
                record[0..4].copy_from_slice(&(((len as u32) << 2) | STATE_DONE).to_le_bytes());
                record[4] = preload_abi::OP_PROBE_FOLLOW;
                record[6..8].copy_from_slice(&(path.len() as u16).to_le_bytes());
                record[16..20].copy_from_slice(&(-2i32).to_le_bytes());
                record[RECORD_HEADER_LEN..RECORD_HEADER_LEN + path.len()].copy_from_slice(path);
            }
            offsets.push(at);
            at += len;
        }
        (words, offsets)
    }

    fn key<'a>(parts: &'a [&'a [u8]]) -> Key<'a> {
        Key {
            op: preload_abi::OP_PROBE_FOLLOW,
            bits: 0,
            flags: 0,
            result: -2,
            parts,
        }
    }

    #[test]
    fn four_lookups_sharing_a_set_are_all_remembered() {
        // Five paths whose keys fall in one set.
        let set_of = |p: &[u8]| key(&[p]).set();
        let wanted = set_of(b"/p0");
        let paths: Vec<Vec<u8>> = (0..)
            .map(|i| format!("/p{i}").into_bytes())
            .filter(|p| set_of(p) == wanted)
            .take(5)
            .collect();
        let (words, offsets) = buffer_with(&paths);
        let base = words.as_ptr() as *const u8;
        fork_child(); // a generation of our own: other tests' entries do not count
        for (path, &offset) in paths.iter().zip(&offsets).take(WAYS) {
            assert!(!contains(base, &key(&[path])));
            remember(&key(&[path]), offset);
        }
        for path in paths.iter().take(WAYS) {
            assert!(contains(base, &key(&[path])), "{path:?} was forgotten");
        }
        // Same path, other outcome: not the same lookup.
        let first: [&[u8]; 1] = [&paths[0]];
        let other = Key {
            result: 0,
            ..key(&first)
        };
        assert!(!contains(base, &other));
        // A fifth replaces one of them; it is found, and a fork forgets everything.
        remember(&key(&[&paths[4]]), offsets[4]);
        assert!(contains(base, &key(&[&paths[4]])));
        fork_child();
        assert!(!contains(base, &key(&[&paths[4]])));
    }
}

//! A cache entry: what a successful run produced (outputs, logs) and what it observed
//! (for explaining the next miss). Stored with postcard behind a format byte; a value that
//! does not decode is a corrupt entry: a miss with a reason, never a crash.
//!
//! [`Entry`] is a run as vt made it (every observation and its full value). The local cache
//! keeps it as a [`Stored`]: the path set by reference (shared by every entry observed
//! under it) and each value shortened to what explaining a miss needs ([`Seen`]), since
//! the key already vouches for the full values.

use serde::{Deserialize, Serialize};

use super::key::Key;
use super::path_set::{CachePath, Observation};

const FORMAT: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    File {
        path: CachePath,
        mode: u32,
        blob: Key,
        size: u64,
        /// Modification time (ns since the epoch), put back on restore: a dependent that
        /// only stats the file (make) keys its mtime, which a restore must not move.
        mtime_ns: i64,
    },
    Symlink {
        path: CachePath,
        #[serde(with = "serde_bytes_vec")]
        target: Vec<u8>,
    },
    Dir {
        path: CachePath,
    },
    Deleted {
        path: CachePath,
    },
}

mod serde_bytes_vec {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        <Vec<u8> as serde::Deserialize>::deserialize(d)
    }
}

impl Output {
    pub fn path(&self) -> &CachePath {
        match self {
            Output::File { path, .. }
            | Output::Symlink { path, .. }
            | Output::Dir { path }
            | Output::Deleted { path } => path,
        }
    }
}

/// The parts of the pre-run key, kept to explain a miss in words.
pub type PreParts = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub task: String,
    pub pre_key: Key,
    pub pre_parts: PreParts,
    pub observations: Vec<Observation>,
    pub values: Vec<String>,
    pub outputs: Vec<Output>,
    /// The interleaved stdout/stderr chunks (see `run::output`).
    pub log: Key,
    pub exit_code: i32,
    pub duration_ms: u64,
}

impl Entry {
    /// What a dependent's pre-run key includes of this run: what it left in the workspace
    /// (each output's path, kind, mode and content; not its mtime) and its exit code. Not
    /// the entry's own key: a run that had to execute again (its sources touched, the state
    /// of its outputs beforehand differing) but produced the same files changes nothing a
    /// dependent can see, so the dependent still hits (what it reads of them is observed
    /// by its own trace anyway).
    pub fn result_key(&self) -> Key {
        result_key(self.exit_code, &self.outputs)
    }
}

fn result_key(exit_code: i32, outputs: &[Output]) -> Key {
    let mut hasher = super::key::KeyHasher::new("result");
    hasher.field(&exit_code.to_le_bytes());
    // A directory that holds another output exists anyway: whether this run created it
    // or found it (`mkdir -p`) does not change what a dependent sees.
    let holders: std::collections::BTreeSet<&[u8]> = outputs
        .iter()
        .filter(|o| matches!(o, Output::File { .. } | Output::Symlink { .. }))
        .flat_map(|o| {
            let path = o.path().0.as_slice();
            path.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'/')
                .map(move |(i, _)| &path[..i])
        })
        .collect();
    for output in outputs {
        if let Output::Dir { path } = output
            && holders.contains(path.0.as_slice())
        {
            continue;
        }
        match output {
            Output::File {
                path,
                mode,
                blob,
                size,
                mtime_ns: _,
            } => hasher
                .field(b"file")
                .field(&path.0)
                .field(&mode.to_le_bytes())
                .field(&blob.0)
                .field(&size.to_le_bytes()),
            Output::Symlink { path, target } => {
                hasher.field(b"symlink").field(&path.0).field(target)
            }
            Output::Dir { path } => hasher.field(b"dir").field(&path.0),
            Output::Deleted { path } => hasher.field(b"deleted").field(&path.0),
        };
    }
    hasher.finish()
}

/// What an observation saw, as an entry keeps it to explain a later miss: a content hash
/// shortened to 8 bytes (enough to tell *that* it changed: a collision could only make an
/// explanation vaguer, the key compares full values), anything else as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seen {
    /// `file:<hash>`: a file's content.
    File([u8; 8]),
    /// `list:<count>:<hash>`: a directory's names.
    List { count: u32, hash: [u8; 8] },
    /// Any other value, verbatim (`missing`, `dir`, `set:VALUE`, a size and mtime, …).
    Text(String),
}

fn short_hash(hex: &str) -> Option<[u8; 8]> {
    Key::from_hex(hex).map(|key| {
        let mut short = [0; 8];
        short.copy_from_slice(&key.0[..8]);
        short
    })
}

impl Seen {
    pub fn of(value: &str) -> Seen {
        if let Some(hash) = value.strip_prefix("file:").and_then(short_hash) {
            return Seen::File(hash);
        }
        if let Some((count, hex)) = value.strip_prefix("list:").and_then(|v| v.split_once(':'))
            && let (Ok(count), Some(hash)) = (count.parse(), short_hash(hex))
        {
            return Seen::List { count, hash };
        }
        Seen::Text(value.to_owned())
    }

    /// The value in the words of `observe` (hashes shortened).
    pub fn describe(&self) -> String {
        let hex = |hash: &[u8; 8]| hash.iter().map(|b| format!("{b:02x}")).collect::<String>();
        match self {
            Seen::File(hash) => format!("file:{}", hex(hash)),
            Seen::List { count, hash } => format!("list:{count}:{}", hex(hash)),
            Seen::Text(text) => text.clone(),
        }
    }
}

/// An entry as the local cache stores it (see the module comment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub task: String,
    pub pre_key: Key,
    pub pre_parts: PreParts,
    /// The path set it was observed under (the `sets` column family).
    pub path_set: Key,
    /// What each observation of the path set saw, in its order.
    pub seen: Vec<Seen>,
    pub outputs: Vec<Output>,
    pub log: Key,
    pub log_size: u64,
    pub exit_code: i32,
    pub duration_ms: u64,
}

impl Stored {
    pub fn of(entry: &Entry, path_set: Key, log_size: u64) -> Stored {
        Stored {
            task: entry.task.clone(),
            pre_key: entry.pre_key,
            pre_parts: entry.pre_parts.clone(),
            path_set,
            seen: entry.values.iter().map(|v| Seen::of(v)).collect(),
            outputs: entry.outputs.clone(),
            log: entry.log,
            log_size,
            exit_code: entry.exit_code,
            duration_ms: entry.duration_ms,
        }
    }

    /// See [`Entry::result_key`]: the same for the same run.
    pub fn result_key(&self) -> Key {
        result_key(self.exit_code, &self.outputs)
    }

    /// The bytes of the blobs it needs (log and output files), by blob.
    pub fn blobs(&self) -> impl Iterator<Item = (Key, u64)> + '_ {
        std::iter::once((self.log, self.log_size)).chain(self.outputs.iter().filter_map(
            |o| match o {
                Output::File { blob, size, .. } => Some((*blob, *size)),
                _ => None,
            },
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathSetRecord {
    pub observations: Vec<Observation>,
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = vec![FORMAT];
    // postcard cannot fail on these types (no maps with non-string keys, no io).
    bytes.extend(postcard::to_allocvec(value).unwrap_or_default());
    bytes
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => {
            postcard::from_bytes(rest).map_err(|e| format!("undecodable ({e})"))
        }
        Some((other, _)) => Err(format!("unknown format {other}")),
        None => Err("empty value".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::path_set::ObsKind;

    #[test]
    fn entries_round_trip_and_garbage_is_an_error() {
        let entry = Entry {
            task: "app#build".into(),
            pre_key: Key([1; 32]),
            pre_parts: vec![("command".into(), "node build.js".into())],
            observations: vec![Observation::new(
                ObsKind::Content,
                CachePath(b"src/\xffa.js".to_vec()),
            )],
            values: vec!["file:00".into()],
            outputs: vec![Output::Deleted {
                path: CachePath(b"dist/old.js".to_vec()),
            }],
            log: Key([2; 32]),
            exit_code: 0,
            duration_ms: 12,
        };
        let bytes = encode(&entry);
        assert_eq!(decode::<Entry>(&bytes), Ok(entry));
        assert!(decode::<Entry>(&bytes[..bytes.len() / 2]).is_err());
        assert!(decode::<Entry>(b"\x07junk").is_err());
        assert!(decode::<Entry>(b"").is_err());
    }

    #[test]
    fn the_result_a_dependent_sees_is_the_files_left_not_how_they_got_there() {
        let file = |content: u8, mtime_ns| Output::File {
            path: CachePath(b"dist/index.js".to_vec()),
            mode: 0o644,
            blob: Key([content; 32]),
            size: 10,
            mtime_ns,
        };
        let entry = |outputs: Vec<Output>| Entry {
            task: "lib#build".into(),
            pre_key: Key([1; 32]),
            pre_parts: Vec::new(),
            observations: Vec::new(),
            values: Vec::new(),
            outputs,
            log: Key([2; 32]),
            exit_code: 0,
            duration_ms: 1,
        };
        let dir = |path: &[u8]| Output::Dir {
            path: CachePath(path.to_vec()),
        };
        // First run: created dist/; second: found it (`mkdir -p`), wrote the same bytes later.
        let first = entry(vec![dir(b"dist"), file(7, 100)]);
        let second = entry(vec![file(7, 200)]);
        assert_eq!(first.result_key(), second.result_key());
        assert_ne!(first.result_key(), entry(vec![file(8, 100)]).result_key());
        // An empty directory it made is a result of its own.
        assert_ne!(
            entry(vec![dir(b"empty"), file(7, 100)]).result_key(),
            second.result_key()
        );
    }
}

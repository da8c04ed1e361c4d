//! A cache entry: what a successful run produced (outputs, logs) and what it observed
//! (for explaining the next miss). Stored with postcard behind a format byte; a value that
//! does not decode is a corrupt entry: a miss with a reason, never a crash.

use serde::{Deserialize, Serialize};

use super::key::Key;
use super::observe::{CachePath, Observation};

const FORMAT: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    File {
        path: CachePath,
        mode: u32,
        blob: Key,
        size: u64,
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
    use crate::cache::observe::ObsKind;

    #[test]
    fn entries_round_trip_and_garbage_is_an_error() {
        let entry = Entry {
            task: "app#build".into(),
            pre_key: Key([1; 32]),
            pre_parts: vec![("command".into(), "node build.js".into())],
            observations: vec![Observation {
                kind: ObsKind::Content,
                path: CachePath(b"src/\xffa.js".to_vec()),
                except: Vec::new(),
            }],
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
}

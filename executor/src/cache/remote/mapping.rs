//! How vt's two-phase cache maps onto the REAPI ActionCache and CAS (docs/architecture.md, "Around the line"), as plain
//! functions of vt's keys.
//!
//! - **Path sets**: under the action digest `sha256("vt/path-sets/v1\0" ‖ pre-run key)`, an
//!   ActionResult whose one output file `vt/path-sets` is a CAS blob: the list of path sets
//!   (vt's `PathSetRecord`s, postcard with vt's format byte) stored under that pre-run key.
//! - **Entries**: under `sha256("vt/entry/v1\0" ‖ post-run key)`, an ActionResult with the
//!   output file `vt/entry` (the entry, as stored locally) and one output file
//!   `vt/blob/<blake3 hex>` per blob the entry refers to (output files, the log), each a
//!   CAS blob under its SHA-256 digest.
//!
//! The "actions" are never executed: the digests only give vt's keys a stable, collision-free
//! place in any REAPI server's action cache. Their preimages are the bytes hashed above.

use bazel_remote_apis::build::bazel::remote::execution::v2::{ActionResult, Digest, OutputFile};
use sha2::{Digest as _, Sha256};

use crate::cache::key::Key;

pub const PATH_SETS_FILE: &str = "vt/path-sets";
pub const ENTRY_FILE: &str = "vt/entry";
const BLOB_PREFIX: &str = "vt/blob/";

/// The SHA-256 digest of `bytes`, as REAPI names blobs.
pub fn digest(bytes: &[u8]) -> Digest {
    Digest {
        hash: hex(&Sha256::digest(bytes)),
        size_bytes: bytes.len() as i64,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn action(domain: &str, key: &Key) -> Digest {
    let mut preimage = domain.as_bytes().to_vec();
    preimage.push(0);
    preimage.extend_from_slice(&key.0);
    digest(&preimage)
}

/// Where the path sets stored under `pre` live in the action cache.
pub fn path_sets_action(pre: &Key) -> Digest {
    action("vt/path-sets/v1", pre)
}

/// Where the entry with post-run key `post` lives.
pub fn entry_action(post: &Key) -> Digest {
    action("vt/entry/v1", post)
}

fn file(path: String, bytes_digest: Digest) -> OutputFile {
    OutputFile {
        path,
        digest: Some(bytes_digest),
        ..OutputFile::default()
    }
}

/// The ActionResult that stores a path-set list blob.
pub fn path_sets_result(list: Digest) -> ActionResult {
    ActionResult {
        output_files: vec![file(PATH_SETS_FILE.into(), list)],
        ..ActionResult::default()
    }
}

/// The ActionResult that stores an entry blob and the blobs it refers to (vt key, digest).
pub fn entry_result(entry: Digest, blobs: &[(Key, Digest)]) -> ActionResult {
    let mut output_files = vec![file(ENTRY_FILE.into(), entry)];
    output_files.extend(
        blobs
            .iter()
            .map(|(key, d)| file(format!("{BLOB_PREFIX}{}", key.hex()), d.clone())),
    );
    ActionResult {
        output_files,
        ..ActionResult::default()
    }
}

/// The digest of the output file named `name`.
pub fn find(result: &ActionResult, name: &str) -> Option<Digest> {
    result
        .output_files
        .iter()
        .find(|f| f.path == name)
        .and_then(|f| f.digest.clone())
}

/// The blobs an entry result lists: vt's key (parsed back from the name) and the digest.
pub fn blobs(result: &ActionResult) -> Vec<(Key, Digest)> {
    result
        .output_files
        .iter()
        .filter_map(|f| {
            let hex = f.path.strip_prefix(BLOB_PREFIX)?;
            let key = parse_key(hex)?;
            Some((key, f.digest.clone()?))
        })
        .collect()
}

fn parse_key(hex: &str) -> Option<Key> {
    if hex.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Key(key))
}

/// Whether `bytes` are what `expected` names (size and SHA-256).
pub fn verify(bytes: &[u8], expected: &Digest) -> bool {
    digest(bytes) == *expected
}

/// The downloaded `blobs` of `digests`, each present and matching its digest; otherwise
/// which one is not.
pub fn verified(digests: &[Digest], blobs: Vec<Option<Vec<u8>>>) -> Result<Vec<Vec<u8>>, String> {
    digests
        .iter()
        .zip(blobs)
        .map(|(digest, blob)| match blob {
            Some(bytes) if verify(&bytes, digest) => Ok(bytes),
            Some(_) => Err(format!(
                "blob {} does not match its digest (truncated or tampered)",
                digest.hash
            )),
            None => Err(format!("blob {} is missing on the server", digest.hash)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_names_a_missing_or_mismatching_blob() {
        let (a, b) = (b"a".to_vec(), b"b".to_vec());
        let digests = [digest(&a), digest(&b)];
        assert_eq!(
            verified(&digests, vec![Some(a.clone()), Some(b.clone())]),
            Ok(vec![a.clone(), b.clone()])
        );
        let missing = verified(&digests, vec![Some(a.clone()), None]);
        assert!(missing.is_err_and(|e| e.contains("missing") && e.contains(&digests[1].hash)));
        let tampered = verified(&digests, vec![Some(b), Some(a)]);
        assert!(tampered.is_err_and(|e| e.contains("does not match its digest")));
    }

    #[test]
    fn sha256_digests_match_the_standard() {
        assert_eq!(
            digest(b"").hash,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(digest(b"abc").size_bytes, 3);
    }

    #[test]
    fn action_digests_are_distinct_per_kind_and_key() {
        let a = Key([1; 32]);
        let b = Key([2; 32]);
        assert_ne!(path_sets_action(&a), path_sets_action(&b));
        assert_ne!(path_sets_action(&a), entry_action(&a));
        assert_eq!(entry_action(&a), entry_action(&a));
        assert_eq!(
            entry_action(&a).size_bytes,
            "vt/entry/v1".len() as i64 + 1 + 32
        );
    }

    #[test]
    fn entry_results_round_trip_their_blobs() {
        let blobs = vec![
            (Key([7; 32]), digest(b"out")),
            (Key([9; 32]), digest(b"log")),
        ];
        let result = entry_result(digest(b"entry"), &blobs);
        assert_eq!(find(&result, ENTRY_FILE), Some(digest(b"entry")));
        assert_eq!(super::blobs(&result), blobs);
        assert!(verify(b"out", &digest(b"out")));
        assert!(!verify(b"tampered", &digest(b"out")));
        assert_eq!(parse_key("zz"), None);
    }
}

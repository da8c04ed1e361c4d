//! What a vt worker reports about a run besides the standard `ActionResult`: the traced
//! path set with the values it observed, every output (deletions included) and the
//! interleaved stdout/stderr. The client checks the path set against its own workspace
//! before it believes the result ([`super::client`]).
//!
//! It travels as a CAS blob whose digest is in the result's
//! `execution_metadata.auxiliary_metadata`, as an `Any` of [`RUN_TYPE`].

use bazel_remote_apis::build::bazel::remote::execution::v2::{ActionResult, Digest};
use bazel_remote_apis::google::protobuf::Any;
use prost::Message;

use crate::cache::entry::Output;
use crate::cache::key::Key;
use crate::cache::path_set::Observation;

/// The `Any` type of the digest of a [`RemoteRun`] blob.
pub const RUN_TYPE: &str = "type.googleapis.com/vt.remote.v1.RunDigest";

/// Env values mention the client's workspace as this; the worker puts its execution root
/// in its place (a `PATH` with `node_modules/.bin`, say).
pub const ROOT_PLACEHOLDER: &str = "${VT_EXEC_ROOT}";

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RemoteRun {
    /// The worker's bot id.
    pub worker: String,
    pub tracer: String,
    /// Why the worker could not record a complete, cacheable path set (gaps, a tool that
    /// disabled the cache), if so.
    pub uncacheable: Option<String>,
    /// Paths inside the execution root are relative, as in the workspace's entries.
    pub observations: Vec<Observation>,
    /// The worker's observation of each, after the run.
    pub values: Vec<String>,
    /// The final state of every path the run changed, as a local entry keeps it.
    pub outputs: Vec<Output>,
    /// Where each output file's content (by its blake3 key) is in the CAS.
    pub blobs: Vec<(Key, BlobRef)>,
    /// The captured stdout/stderr chunks ([`crate::run::output::push_chunk`]).
    pub log: BlobRef,
    pub duration_ms: u64,
}

/// A digest in serde form.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BlobRef {
    pub hash: String,
    pub size: i64,
}

impl BlobRef {
    pub fn of(digest: &Digest) -> BlobRef {
        BlobRef {
            hash: digest.hash.clone(),
            size: digest.size_bytes,
        }
    }

    pub fn digest(&self) -> Digest {
        Digest {
            hash: self.hash.clone(),
            size_bytes: self.size,
        }
    }
}

impl RemoteRun {
    pub fn encode(&self) -> Vec<u8> {
        crate::cache::entry::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<RemoteRun, String> {
        crate::cache::entry::decode(bytes)
    }
}

/// The `Any` that points at a run report.
pub fn reference(run: &Digest) -> Any {
    Any {
        type_url: RUN_TYPE.to_owned(),
        value: run.encode_to_vec(),
    }
}

/// The run report a result points at, if a vt worker produced it.
pub fn referenced(result: &ActionResult) -> Option<Digest> {
    let metadata = result.execution_metadata.as_ref()?;
    let any = metadata
        .auxiliary_metadata
        .iter()
        .find(|a| a.type_url == RUN_TYPE)?;
    Digest::decode(any.value.as_slice()).ok()
}

/// `value` with the workspace path replaced by [`ROOT_PLACEHOLDER`].
pub fn abstract_root(value: &str, root: &str) -> String {
    if root.len() > 1 {
        value.replace(root, ROOT_PLACEHOLDER)
    } else {
        value.to_owned()
    }
}

/// `value` with [`ROOT_PLACEHOLDER`] replaced by the execution root.
pub fn concrete_root(value: &str, root: &str) -> String {
    value.replace(ROOT_PLACEHOLDER, root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bazel_remote_apis::build::bazel::remote::execution::v2::ExecutedActionMetadata;

    #[test]
    fn the_root_round_trips_through_env_values() {
        let path = "/ws/node_modules/.bin:/usr/bin:/ws/pkg/node_modules/.bin";
        let abstracted = abstract_root(path, "/ws");
        assert_eq!(
            abstracted,
            "${VT_EXEC_ROOT}/node_modules/.bin:/usr/bin:${VT_EXEC_ROOT}/pkg/node_modules/.bin"
        );
        assert_eq!(
            concrete_root(&abstracted, "/w/1"),
            "/w/1/node_modules/.bin:/usr/bin:/w/1/pkg/node_modules/.bin"
        );
        assert_eq!(abstract_root("/x", "/"), "/x");
    }

    #[test]
    fn the_reference_is_found_among_other_metadata() {
        let digest = Digest {
            hash: "ab".repeat(32),
            size_bytes: 7,
        };
        let result = ActionResult {
            execution_metadata: Some(ExecutedActionMetadata {
                auxiliary_metadata: vec![
                    Any {
                        type_url: "type.googleapis.com/other".into(),
                        value: vec![1, 2],
                    },
                    reference(&digest),
                ],
                ..ExecutedActionMetadata::default()
            }),
            ..ActionResult::default()
        };
        assert_eq!(referenced(&result), Some(digest));
        assert_eq!(referenced(&ActionResult::default()), None);
    }
}

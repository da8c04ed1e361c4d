//! The remote cache: a second level behind the local RocksDB, on any REAPI v2 server
//! (docs/architecture.md, "Around the line"; the mapping is in [`mapping`]).
//!
//! - A local miss asks the server for the path sets stored under the pre-run key, observes
//!   each here, and asks for the entry under the resulting post-run key. Everything
//!   downloaded is checked against its SHA-256 digest *and* the entry's own blake3 keys
//!   before anything is written; a remote hit is then written to the local cache and
//!   replayed like a local one.
//! - In read-write mode, every stored run is uploaded too.
//! - A server that is down or slow never fails a build: calls have deadlines, the first
//!   failure prints one warning and turns the remote cache off for the rest of the run.

pub mod mapping;

use std::collections::BTreeMap;
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2::Digest;

use super::entry::{self, Entry, PathSetRecord, Stored};
use super::key::{Key, content};
use super::key::{path_set_id, post_key};
use super::store::{Batch, Family};
use super::{Cache, PreRun};
use crate::reapi::{Address, Client, Credentials, Deadlines, LazyClient, RemoteError};

/// `VT_REMOTE_CACHE=grpc[s]://host:port[/instance]`.
pub const URL_ENV: &str = "VT_REMOTE_CACHE";
pub use crate::reapi::{CA_ENV, TOKEN_ENV};
/// Per-call deadline in milliseconds (default 10 000; connecting: 2 000).
pub const TIMEOUT_ENV: &str = "VT_REMOTE_CACHE_TIMEOUT_MS";

/// `--remote-cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Off,
    Read,
    ReadWrite,
}

/// The remote cache of this run, connected on first use.
pub struct RemoteCache {
    url: String,
    mode: Mode,
    runtime: tokio::runtime::Runtime,
    client: LazyClient,
}

/// What a remote lookup found.
pub enum RemoteLookup {
    Hit {
        post: Key,
        entry: Box<Stored>,
    },
    /// Nothing usable; `Some(reason)` when something was there but could not be used.
    Miss(Option<String>),
}

impl RemoteCache {
    /// The remote cache `flag` and the environment ask for: `VT_REMOTE_CACHE` names the
    /// server; without `--remote-cache` it is read-only, or read-write when `CI` is set.
    pub fn from_env(flag: Option<Mode>) -> anyhow::Result<Option<RemoteCache>> {
        let url = std::env::var(URL_ENV).ok().filter(|u| !u.is_empty());
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
        let mode = match (flag, &url) {
            (Some(Mode::Off), _) | (None, None) => return Ok(None),
            (Some(_), None) => anyhow::bail!(
                "--remote-cache needs a server: set {URL_ENV}=grpc://host:port[/instance]"
            ),
            (Some(mode), Some(_)) => mode,
            (None, Some(_)) if ci => Mode::ReadWrite,
            (None, Some(_)) => Mode::Read,
        };
        let url = url.unwrap_or_default();
        let address = Address::parse(&url).map_err(|e| anyhow::anyhow!("{URL_ENV}: {e}"))?;
        let credentials = Credentials::from_env().map_err(anyhow::Error::msg)?;
        let call = std::env::var(TIMEOUT_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(Duration::from_secs(10), Duration::from_millis);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let deadlines = Deadlines {
            connect: call.min(Duration::from_secs(2)),
            call,
        };
        Ok(Some(RemoteCache {
            url,
            mode,
            runtime,
            client: LazyClient::new(address, credentials, deadlines),
        }))
    }

    pub fn describe(&self) -> String {
        let mode = match self.mode {
            Mode::ReadWrite => "read-write",
            _ => "read-only",
        };
        format!("{} ({mode})", self.url)
    }

    pub fn writes(&self) -> bool {
        self.mode == Mode::ReadWrite
    }

    /// The connected client, or `None` once the server has failed this run.
    fn client(&self) -> Option<Client> {
        match self.client.get(&self.runtime) {
            Ok(client) => Some(client),
            Err(Some(e)) => {
                self.warn(&e);
                None
            }
            Err(None) => None,
        }
    }

    /// One warning, then the run goes on with the local cache only.
    fn give_up(&self, error: &RemoteError) {
        if self.client.give_up() {
            self.warn(error);
        }
    }

    fn warn(&self, error: &RemoteError) {
        crate::say!(
            "vt: warning: the remote cache {} is unavailable ({}); continuing with the local \
             cache only",
            self.url,
            error_chain(error)
        );
    }

    /// Whether `error` means the server is unusable (rather than this one request).
    fn is_outage(error: &RemoteError) -> bool {
        match error {
            RemoteError::Connect(..) | RemoteError::NoSha256 => true,
            RemoteError::Call { status, .. } => matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unauthenticated
                    | tonic::Code::PermissionDenied
                    | tonic::Code::Unknown
                    | tonic::Code::Internal
            ),
            RemoteError::Protocol(_) => false,
        }
    }

    /// Runs `call`; an outage turns the remote cache off and yields `None`.
    fn run<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, RemoteError>>,
    ) -> Option<Result<T, String>> {
        match self.runtime.block_on(call) {
            Ok(value) => Some(Ok(value)),
            Err(e) if Self::is_outage(&e) => {
                self.give_up(&e);
                None
            }
            Err(e) => Some(Err(error_chain(&e))),
        }
    }

    /// Looks `pre` up remotely; a hit is verified and written to `cache` first.
    pub fn lookup(
        &self,
        cache: &Cache,
        pre: &PreRun,
        env: &BTreeMap<String, String>,
    ) -> RemoteLookup {
        let Some(client) = self.client() else {
            return RemoteLookup::Miss(None);
        };
        let pre_key = pre.key();
        let records = match self.path_sets(&client, &pre_key) {
            Some(Ok(records)) => records,
            Some(Err(reason)) => return RemoteLookup::Miss(Some(reason)),
            None => return RemoteLookup::Miss(None),
        };
        for record in records {
            let values = cache.observe_all(&record.observations, env);
            let set_key = path_set_id(&record.observations);
            let post = post_key(&pre_key, &set_key, &values);
            let action = mapping::entry_action(&post);
            let result = match self.run(client.get_action_result(&action)) {
                Some(Ok(Some(result))) => result,
                Some(Ok(None)) => continue,
                Some(Err(reason)) => return RemoteLookup::Miss(Some(reason)),
                None => return RemoteLookup::Miss(None),
            };
            return match self.fetch_entry(&client, &result, &pre_key, &post) {
                Some(Ok((entry, blobs))) => {
                    let mut batch = Batch::default();
                    for (key, bytes) in blobs {
                        batch.put(Family::Blobs, key.0.to_vec(), bytes);
                    }
                    match cache.put(&entry, batch) {
                        Ok((_, stored)) => RemoteLookup::Hit {
                            post,
                            entry: Box::new(stored),
                        },
                        Err(e) => RemoteLookup::Miss(Some(format!(
                            "a remote hit could not be written to the local cache: {e}"
                        ))),
                    }
                }
                Some(Err(reason)) => RemoteLookup::Miss(Some(format!(
                    "the remote entry cannot be used: {reason}; nothing was restored"
                ))),
                None => RemoteLookup::Miss(None),
            };
        }
        RemoteLookup::Miss(None)
    }

    /// The path sets stored remotely under `pre` (empty when there are none).
    fn path_sets(&self, client: &Client, pre: &Key) -> Option<Result<Vec<PathSetRecord>, String>> {
        let action = mapping::path_sets_action(pre);
        let result = match self.run(client.get_action_result(&action))? {
            Ok(Some(result)) => result,
            Ok(None) => return Some(Ok(Vec::new())),
            Err(reason) => return Some(Err(reason)),
        };
        let Some(list) = mapping::find(&result, mapping::PATH_SETS_FILE) else {
            return Some(Err("the remote path-set record names no blob".into()));
        };
        let bytes = match self.download_verified(client, std::slice::from_ref(&list))? {
            Ok(mut blobs) => blobs.remove(0),
            Err(reason) => return Some(Err(format!("remote path sets: {reason}"))),
        };
        Some(
            entry::decode::<Vec<PathSetRecord>>(&bytes)
                .map_err(|e| format!("the remote path sets are undecodable: {e}")),
        )
    }

    /// Downloads `digests`, each checked against its digest.
    fn download_verified(
        &self,
        client: &Client,
        digests: &[Digest],
    ) -> Option<Result<Vec<Vec<u8>>, String>> {
        let blobs = match self.run(client.download(digests))? {
            Ok(blobs) => blobs,
            Err(reason) => return Some(Err(reason)),
        };
        Some(mapping::verified(digests, blobs))
    }

    /// The entry an ActionResult stores, and its blobs, all verified.
    #[allow(clippy::type_complexity)]
    fn fetch_entry(
        &self,
        client: &Client,
        result: &bazel_remote_apis::build::bazel::remote::execution::v2::ActionResult,
        pre: &Key,
        post: &Key,
    ) -> Option<Result<(Entry, Vec<(Key, Vec<u8>)>), String>> {
        let Some(entry_digest) = mapping::find(result, mapping::ENTRY_FILE) else {
            return Some(Err("it names no entry blob".into()));
        };
        let listed = mapping::blobs(result);
        let mut digests = vec![entry_digest];
        digests.extend(listed.iter().map(|(_, d)| d.clone()));
        let mut bytes = match self.download_verified(client, &digests)? {
            Ok(bytes) => bytes,
            Err(reason) => return Some(Err(reason)),
        };
        let entry_bytes = bytes.remove(0);
        let entry: Entry = match entry::decode(&entry_bytes) {
            Ok(entry) => entry,
            Err(e) => return Some(Err(format!("the entry is undecodable: {e}"))),
        };
        // The entry must be the one its action names, and every blob what the entry says.
        let set_key = path_set_id(&entry.observations);
        if entry.pre_key != *pre || post_key(pre, &set_key, &entry.values) != *post {
            return Some(Err("the entry belongs to another key".into()));
        }
        let mut blobs = Vec::with_capacity(listed.len());
        for ((key, _), data) in listed.into_iter().zip(bytes) {
            if content(&data) != key {
                return Some(Err(format!(
                    "blob {} does not match its content key",
                    key.hex()
                )));
            }
            blobs.push((key, data));
        }
        let mut needed: Vec<Key> = entry
            .outputs
            .iter()
            .filter_map(|o| match o {
                entry::Output::File { blob, .. } => Some(*blob),
                _ => None,
            })
            .collect();
        needed.push(entry.log);
        if let Some(missing) = needed.iter().find(|k| !blobs.iter().any(|(b, _)| b == *k)) {
            return Some(Err(format!("blob {} is not listed", missing.hex())));
        }
        Some(Ok((entry, blobs)))
    }

    /// Uploads a stored run (the caller checks [`Self::writes`]): blobs, entry, then the
    /// path-set list.
    pub fn store(&self, entry: &Entry, post: &Key, blobs: Vec<(Key, Vec<u8>)>) {
        let Some(client) = self.client() else { return };
        let entry_bytes = entry::encode(entry);
        let entry_digest = mapping::digest(&entry_bytes);
        let listed: Vec<(Key, Digest)> = blobs
            .iter()
            .map(|(key, bytes)| (*key, mapping::digest(bytes)))
            .collect();
        let mut uploads: Vec<(Digest, Vec<u8>)> = blobs
            .into_iter()
            .map(|(_, bytes)| (mapping::digest(&bytes), bytes))
            .collect();
        uploads.push((entry_digest.clone(), entry_bytes));
        let result = mapping::entry_result(entry_digest, &listed);
        let action = mapping::entry_action(post);
        let stored = self.run(async {
            client.upload(uploads).await?;
            client.update_action_result(&action, result).await
        });
        if let Some(Err(reason)) = stored {
            crate::say!(
                "vt: warning: {}: not uploaded to the remote cache: {reason}",
                entry.task
            );
            return;
        }
        // Merge this run's path set into the list under the pre-run key (last writer wins
        // on a race: the worst case is a miss, never a wrong hit).
        let mut records = match self.path_sets(&client, &entry.pre_key) {
            Some(Ok(records)) => records,
            Some(Err(_)) => Vec::new(),
            None => return,
        };
        let set_key = path_set_id(&entry.observations);
        if records
            .iter()
            .any(|r| path_set_id(&r.observations) == set_key)
        {
            return;
        }
        records.push(PathSetRecord {
            observations: entry.observations.clone(),
        });
        let list = entry::encode(&records);
        let list_digest = mapping::digest(&list);
        let action = mapping::path_sets_action(&entry.pre_key);
        let result = mapping::path_sets_result(list_digest.clone());
        if let Some(Err(reason)) = self.run(async {
            client.upload(vec![(list_digest, list)]).await?;
            client.update_action_result(&action, result).await
        }) {
            crate::say!(
                "vt: warning: {}: path set not uploaded: {reason}",
                entry.task
            );
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

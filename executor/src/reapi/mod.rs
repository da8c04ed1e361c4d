//! A small REAPI v2 client: capabilities, ActionCache get/update, CAS find/batch
//! read/update, ByteStream for blobs larger than a batch, Execution ([`execution`]) and
//! the Remote Workers API a bot speaks ([`bots`]). Every call has a deadline; every blob
//! read is checked against its digest by the caller
//! ([`crate::cache::remote::mapping::verify`]).

pub mod bots;
pub mod execution;

use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionResult, BatchReadBlobsRequest, BatchUpdateBlobsRequest, Digest, FindMissingBlobsRequest,
    GetActionResultRequest, GetCapabilitiesRequest, UpdateActionResultRequest,
    action_cache_client::ActionCacheClient, batch_update_blobs_request,
    capabilities_client::CapabilitiesClient,
    content_addressable_storage_client::ContentAddressableStorageClient, digest_function,
};
use bazel_remote_apis::google::bytestream::{
    ReadRequest, WriteRequest, byte_stream_client::ByteStreamClient,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Where the server is: `grpc://host:port[/instance]` or `grpcs://…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub tls: bool,
    pub authority: String,
    pub instance: String,
}

impl Address {
    pub fn parse(url: &str) -> Result<Address, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("grpcs://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("grpc://") {
            (false, rest)
        } else {
            return Err(format!(
                "{url:?} is not a remote cache address: expected grpc://host:port[/instance] \
                 or grpcs://host:port[/instance]"
            ));
        };
        let (authority, instance) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() || !authority.contains(':') {
            return Err(format!("{url:?} has no host:port"));
        }
        Ok(Address {
            tls,
            authority: authority.to_owned(),
            instance: instance.trim_end_matches('/').to_owned(),
        })
    }
}

/// Sent as `authorization: Bearer TOKEN`.
pub const TOKEN_ENV: &str = "VT_REMOTE_CACHE_TOKEN";
/// A PEM file with the CA that signed the server's certificate (grpcs:// only).
pub const CA_ENV: &str = "VT_REMOTE_CACHE_CA";

/// How vt proves itself to a server and checks it: the same for the remote cache, remote
/// execution and `vt worker`.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub token: Option<String>,
    pub ca: Option<Vec<u8>>,
}

impl Credentials {
    /// From [`TOKEN_ENV`] and [`CA_ENV`].
    pub fn from_env() -> Result<Credentials, String> {
        let ca =
            match std::env::var_os(CA_ENV) {
                Some(path) => Some(std::fs::read(&path).map_err(|e| {
                    format!("{CA_ENV}: cannot read {}: {e}", path.to_string_lossy())
                })?),
                None => None,
            };
        Ok(Credentials {
            token: std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()),
            ca,
        })
    }
}

/// How long one call may take before the server counts as unavailable.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub connect: Duration,
    pub call: Duration,
}

/// A client connected on first use and shared for the rest of the run. A server that could
/// not be reached, or that a caller found unusable ([`LazyClient::give_up`]), stays given up
/// for the run: one warning, then everything goes on without it.
pub struct LazyClient {
    address: Address,
    credentials: Credentials,
    deadlines: Deadlines,
    client: std::sync::Mutex<Option<Client>>,
    given_up: std::sync::atomic::AtomicBool,
}

impl LazyClient {
    pub fn new(address: Address, credentials: Credentials, deadlines: Deadlines) -> LazyClient {
        LazyClient {
            address,
            credentials,
            deadlines,
            client: std::sync::Mutex::new(None),
            given_up: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The client, connecting on the first call. `Err(Some(e))`: this call failed to
    /// connect and gave the server up (the caller warns); `Err(None)`: given up already.
    pub fn get(&self, runtime: &tokio::runtime::Runtime) -> Result<Client, Option<RemoteError>> {
        if self.has_given_up() {
            return Err(None);
        }
        let mut slot = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = &*slot {
            return Ok(client.clone());
        }
        match runtime.block_on(Client::connect(
            &self.address,
            &self.credentials,
            self.deadlines,
        )) {
            Ok(client) => {
                *slot = Some(client.clone());
                Ok(client)
            }
            Err(e) => Err(self.give_up().then_some(e)),
        }
    }

    /// Gives the server up for the rest of the run; true the first time (when to warn).
    pub fn give_up(&self) -> bool {
        !self
            .given_up
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    pub fn has_given_up(&self) -> bool {
        self.given_up.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot reach {0}")]
    Connect(String, #[source] tonic::transport::Error),
    #[error("{call}: {status}")]
    Call {
        call: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("the server does not offer SHA-256 digests")]
    NoSha256,
    #[error("{0}")]
    Protocol(String),
}

impl RemoteError {
    /// The server is overloaded or briefly unavailable: the same call may work later.
    pub fn is_transient(&self) -> bool {
        matches!(self, RemoteError::Call { status, .. }
            if matches!(status.code(), tonic::Code::ResourceExhausted | tonic::Code::Unavailable))
    }

    fn call(call: &'static str) -> impl FnOnce(tonic::Status) -> RemoteError {
        move |status| RemoteError::Call {
            call,
            status: Box::new(status),
        }
    }
}

/// A connected client.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    instance: String,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    /// The largest batch the server accepts; bigger blobs go through ByteStream.
    pub max_batch: usize,
    pub update_enabled: bool,
}

const SHA256: i32 = digest_function::Value::Sha256 as i32;
const CHUNK: usize = 1 << 20;

impl Client {
    /// Connects and asks for the server's capabilities.
    pub async fn connect(
        address: &Address,
        credentials: &Credentials,
        deadlines: Deadlines,
    ) -> Result<Client, RemoteError> {
        let (token, ca_pem) = (credentials.token.as_deref(), credentials.ca.as_deref());
        let scheme = if address.tls { "https" } else { "http" };
        let url = format!("{scheme}://{}", address.authority);
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| RemoteError::Connect(url.clone(), e))?
            .connect_timeout(deadlines.connect)
            .timeout(deadlines.call);
        if address.tls {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(pem) = ca_pem {
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| RemoteError::Connect(url.clone(), e))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| RemoteError::Connect(url.clone(), e))?;
        let token = match token {
            Some(token) => Some(format!("Bearer {token}").parse().map_err(|_| {
                RemoteError::Protocol("VT_REMOTE_CACHE_TOKEN is not a valid header value".into())
            })?),
            None => None,
        };
        let mut client = Client {
            channel,
            instance: address.instance.clone(),
            token,
            max_batch: 4 << 20,
            update_enabled: false,
        };
        let capabilities = CapabilitiesClient::new(client.channel.clone())
            .get_capabilities(client.request(GetCapabilitiesRequest {
                instance_name: client.instance.clone(),
            }))
            .await
            .map_err(RemoteError::call("GetCapabilities"))?
            .into_inner();
        let cache = capabilities.cache_capabilities.unwrap_or_default();
        if !cache.digest_functions.is_empty() && !cache.digest_functions.contains(&SHA256) {
            return Err(RemoteError::NoSha256);
        }
        if cache.max_batch_total_size_bytes > 0 {
            client.max_batch = cache.max_batch_total_size_bytes as usize;
        }
        client.update_enabled = cache
            .action_cache_update_capabilities
            .is_none_or(|c| c.update_enabled);
        Ok(client)
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        request
    }

    /// The ActionResult under `action`, `None` when there is none.
    pub async fn get_action_result(
        &self,
        action: &Digest,
    ) -> Result<Option<ActionResult>, RemoteError> {
        let response = ActionCacheClient::new(self.channel.clone())
            .get_action_result(self.request(GetActionResultRequest {
                instance_name: self.instance.clone(),
                action_digest: Some(action.clone()),
                digest_function: SHA256,
                ..GetActionResultRequest::default()
            }))
            .await;
        match response {
            Ok(result) => Ok(Some(result.into_inner())),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(RemoteError::call("GetActionResult")(status)),
        }
    }

    pub async fn update_action_result(
        &self,
        action: &Digest,
        result: ActionResult,
    ) -> Result<(), RemoteError> {
        ActionCacheClient::new(self.channel.clone())
            .update_action_result(self.request(UpdateActionResultRequest {
                instance_name: self.instance.clone(),
                action_digest: Some(action.clone()),
                action_result: Some(result),
                digest_function: SHA256,
                ..UpdateActionResultRequest::default()
            }))
            .await
            .map_err(RemoteError::call("UpdateActionResult"))?;
        Ok(())
    }

    /// Uploads the blobs the server does not have yet.
    pub async fn upload(&self, blobs: Vec<(Digest, Vec<u8>)>) -> Result<(), RemoteError> {
        let mut cas = ContentAddressableStorageClient::new(self.channel.clone());
        let missing = cas
            .find_missing_blobs(self.request(FindMissingBlobsRequest {
                instance_name: self.instance.clone(),
                blob_digests: blobs.iter().map(|(d, _)| d.clone()).collect(),
                digest_function: SHA256,
            }))
            .await
            .map_err(RemoteError::call("FindMissingBlobs"))?
            .into_inner()
            .missing_blob_digests;
        let mut batch: Vec<batch_update_blobs_request::Request> = Vec::new();
        let mut batch_size = 0;
        for (digest, data) in blobs.into_iter().filter(|(d, _)| missing.contains(d)) {
            if data.len() + 1024 > self.max_batch {
                self.write_stream(&digest, data).await?;
                continue;
            }
            if batch_size + data.len() + 1024 > self.max_batch {
                self.batch_update(std::mem::take(&mut batch)).await?;
                batch_size = 0;
            }
            batch_size += data.len() + 1024;
            batch.push(batch_update_blobs_request::Request {
                digest: Some(digest),
                data,
                compressor: 0,
            });
        }
        if !batch.is_empty() {
            self.batch_update(batch).await?;
        }
        Ok(())
    }

    async fn batch_update(
        &self,
        requests: Vec<batch_update_blobs_request::Request>,
    ) -> Result<(), RemoteError> {
        let responses = ContentAddressableStorageClient::new(self.channel.clone())
            .batch_update_blobs(self.request(BatchUpdateBlobsRequest {
                instance_name: self.instance.clone(),
                requests,
                digest_function: SHA256,
            }))
            .await
            .map_err(RemoteError::call("BatchUpdateBlobs"))?
            .into_inner()
            .responses;
        for response in responses {
            if let Some(status) = response.status.filter(|s| s.code != 0) {
                return Err(RemoteError::Protocol(format!(
                    "the server refused blob {}: {}",
                    response.digest.map(|d| d.hash).unwrap_or_default(),
                    status.message
                )));
            }
        }
        Ok(())
    }

    async fn write_stream(&self, digest: &Digest, data: Vec<u8>) -> Result<(), RemoteError> {
        let upload = blake3::hash(
            format!(
                "{}-{}-{:?}",
                std::process::id(),
                digest.hash,
                std::time::SystemTime::now()
            )
            .as_bytes(),
        )
        .to_hex();
        let resource = format!(
            "{}uploads/{}-{}-{}-{}-{}/blobs/{}/{}",
            self.prefix(),
            &upload[0..8],
            &upload[8..12],
            &upload[12..16],
            &upload[16..20],
            &upload[20..32],
            digest.hash,
            digest.size_bytes
        );
        let total = data.len();
        let chunks: Vec<WriteRequest> = if total == 0 {
            vec![WriteRequest {
                resource_name: resource,
                write_offset: 0,
                finish_write: true,
                data: Vec::new(),
            }]
        } else {
            data.chunks(CHUNK)
                .enumerate()
                .map(|(i, chunk)| WriteRequest {
                    resource_name: if i == 0 {
                        resource.clone()
                    } else {
                        String::new()
                    },
                    write_offset: (i * CHUNK) as i64,
                    finish_write: i * CHUNK + chunk.len() == total,
                    data: chunk.to_vec(),
                })
                .collect()
        };
        let committed = ByteStreamClient::new(self.channel.clone())
            .write(self.request(tokio_stream_iter(chunks)))
            .await
            .map_err(RemoteError::call("ByteStream.Write"))?
            .into_inner()
            .committed_size;
        if committed != total as i64 {
            return Err(RemoteError::Protocol(format!(
                "ByteStream.Write committed {committed} of {total} bytes"
            )));
        }
        Ok(())
    }

    fn prefix(&self) -> String {
        if self.instance.is_empty() {
            String::new()
        } else {
            format!("{}/", self.instance)
        }
    }

    /// Downloads `digests`; a blob the server does not have is `None`. The caller verifies.
    pub async fn download(&self, digests: &[Digest]) -> Result<Vec<Option<Vec<u8>>>, RemoteError> {
        let mut out: Vec<Option<Vec<u8>>> = vec![None; digests.len()];
        let mut small: Vec<usize> = Vec::new();
        for (i, digest) in digests.iter().enumerate() {
            if digest.size_bytes as usize + 1024 > self.max_batch {
                out[i] = self.read_stream(digest).await?;
            } else {
                small.push(i);
            }
        }
        let mut start = 0;
        while start < small.len() {
            let mut size = 0;
            let mut end = start;
            while end < small.len() {
                let next = digests[small[end]].size_bytes as usize + 1024;
                if end > start && size + next > self.max_batch {
                    break;
                }
                size += next;
                end += 1;
            }
            let wanted: Vec<Digest> = small[start..end]
                .iter()
                .map(|&i| digests[i].clone())
                .collect();
            let responses = ContentAddressableStorageClient::new(self.channel.clone())
                .batch_read_blobs(self.request(BatchReadBlobsRequest {
                    instance_name: self.instance.clone(),
                    digests: wanted,
                    acceptable_compressors: Vec::new(),
                    digest_function: SHA256,
                }))
                .await
                .map_err(RemoteError::call("BatchReadBlobs"))?
                .into_inner()
                .responses;
            for response in responses {
                let ok = response.status.as_ref().is_none_or(|s| s.code == 0);
                let Some(digest) = response.digest else {
                    continue;
                };
                if let Some(&i) = small[start..end].iter().find(|&&i| digests[i] == digest)
                    && ok
                {
                    out[i] = Some(response.data);
                }
            }
            start = end;
        }
        Ok(out)
    }

    async fn read_stream(&self, digest: &Digest) -> Result<Option<Vec<u8>>, RemoteError> {
        let resource = format!(
            "{}blobs/{}/{}",
            self.prefix(),
            digest.hash,
            digest.size_bytes
        );
        let response = ByteStreamClient::new(self.channel.clone())
            .read(self.request(ReadRequest {
                resource_name: resource,
                read_offset: 0,
                read_limit: 0,
            }))
            .await;
        let mut stream = match response {
            Ok(stream) => stream.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => return Ok(None),
            Err(status) => return Err(RemoteError::call("ByteStream.Read")(status)),
        };
        let mut data = Vec::with_capacity(digest.size_bytes.max(0) as usize);
        loop {
            match stream.message().await {
                Ok(Some(chunk)) => data.extend_from_slice(&chunk.data),
                Ok(None) => break,
                Err(status) if status.code() == tonic::Code::NotFound => return Ok(None),
                Err(status) => return Err(RemoteError::call("ByteStream.Read")(status)),
            }
        }
        Ok(Some(data))
    }
}

/// Runs `call` again (up to 8 times, backing off from 50 ms to 2 s) while the server says
/// it is overloaded (`RESOURCE_EXHAUSTED`, e.g. BuildGrid's concurrent-RPC limit) or
/// briefly unavailable.
pub async fn retrying<T, F, Fut>(mut call: F) -> Result<T, RemoteError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RemoteError>>,
{
    let mut delay = Duration::from_millis(50);
    for _ in 0..8 {
        match call().await {
            Err(e) if e.is_transient() => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
    call().await
}

/// A finite stream of messages for a client-streaming call.
fn tokio_stream_iter<T: Send + 'static>(
    items: Vec<T>,
) -> impl tonic::codegen::tokio_stream::Stream<Item = T> + Send + 'static {
    tonic::codegen::tokio_stream::iter(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_and_without_instance() {
        assert_eq!(
            Address::parse("grpc://127.0.0.1:50071"),
            Ok(Address {
                tls: false,
                authority: "127.0.0.1:50071".into(),
                instance: String::new()
            })
        );
        assert_eq!(
            Address::parse("grpcs://cache.example.com:443/main/"),
            Ok(Address {
                tls: true,
                authority: "cache.example.com:443".into(),
                instance: "main".into()
            })
        );
        assert!(Address::parse("http://x:1").is_err());
        assert!(Address::parse("grpc:///x").is_err());
        assert!(Address::parse("grpc://hostonly").is_err());
    }
}

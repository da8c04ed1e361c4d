//! Remote execution on a REAPI engine (docs/architecture.md, "Around the line"): `vt run --remote-exec` submits
//! tasks ([`client`]), `vt worker` runs them ([`worker`]). What crosses between them
//! besides the standard messages is in [`report`].

pub mod client;
pub mod input_root;
pub mod materialize;
pub mod report;
pub mod worker;

use std::time::Duration;

use crate::cache::Cache;
use crate::cache::remote::URL_ENV;
use bazel_remote_apis::build::bazel::remote::execution::v2::Digest;

use crate::cache::remote::mapping;
use crate::reapi::{self, Address, Client, Credentials, Deadlines, LazyClient};
use crate::run::offload::{Offload, Offloaded};
use crate::run::plan::Plan;

/// `VT_REMOTE_EXEC=grpc[s]://host:port[/instance]`; defaults to `VT_REMOTE_CACHE`.
pub const EXEC_URL_ENV: &str = "VT_REMOTE_EXEC";
/// How long one remote task may take, in seconds (default 3600).
pub const EXEC_TIMEOUT_ENV: &str = "VT_REMOTE_EXEC_TIMEOUT_S";

/// Downloads `digests` (retrying an overloaded server) and checks each; a missing or
/// mismatching blob is an error naming it.
pub async fn fetch_all(client: &Client, digests: &[Digest]) -> Result<Vec<Vec<u8>>, String> {
    let blobs = reapi::retrying(|| client.download(digests))
        .await
        .map_err(|e| e.to_string())?;
    mapping::verified(digests, blobs)
}

/// The engine of this run, connected on first use.
pub struct RemoteExec {
    url: String,
    wait: Duration,
    runtime: tokio::runtime::Runtime,
    /// Given up when the engine could not be reached: the rest of the run is local.
    client: LazyClient,
}

impl RemoteExec {
    /// The engine `--remote-exec` asks for.
    pub fn from_env() -> anyhow::Result<RemoteExec> {
        let url = [EXEC_URL_ENV, URL_ENV]
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|u| !u.is_empty()))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--remote-exec needs an engine: set {EXEC_URL_ENV} (or {URL_ENV}) to \
                     grpc://host:port[/instance]"
                )
            })?;
        let address = Address::parse(&url).map_err(|e| anyhow::anyhow!("{EXEC_URL_ENV}: {e}"))?;
        let credentials = Credentials::from_env().map_err(anyhow::Error::msg)?;
        let wait = std::env::var(EXEC_TIMEOUT_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(Duration::from_secs(3600), Duration::from_secs);
        let deadlines = Deadlines {
            connect: Duration::from_secs(5),
            call: wait,
        };
        Ok(RemoteExec {
            url,
            wait,
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?,
            client: LazyClient::new(address, credentials, deadlines),
        })
    }

    pub fn describe(&self) -> &str {
        &self.url
    }

    fn client(&self) -> Result<Client, String> {
        self.client.get(&self.runtime).map_err(|failed| {
            if let Some(e) = failed {
                crate::say!(
                    "vt: warning: remote execution at {} is unavailable ({e}); running tasks \
                     locally",
                    self.url
                );
            }
            "no engine (see the warning above)".into()
        })
    }
}

/// The runner reaches remote execution only through this.
impl Offload for RemoteExec {
    /// Why `plan` cannot run remotely, if it cannot.
    fn refuses(&self, plan: &Plan) -> Option<String> {
        if self.client.has_given_up() {
            return Some("no engine (see the warning above)".into());
        }
        if plan.sandbox.as_ref().is_some_and(|s| s.network) {
            return Some("it needs the network, which workers do not give".into());
        }
        None
    }

    /// Runs `plan` on a worker; `Err` says why it must run locally instead.
    fn run(&self, plan: &Plan, cache: &Cache) -> Result<Offloaded, String> {
        let client = self.client()?;
        self.runtime
            .block_on(client::run(&client, plan, cache, self.wait))
    }
}

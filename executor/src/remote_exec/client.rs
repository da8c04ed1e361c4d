//! `vt run --remote-exec`: a task that missed the cache runs on a worker of the REAPI
//! engine instead of here.
//!
//! 1. The input root is the task's package (without `node_modules` and dot-directories),
//!    the outputs of its dependencies' runs, and every workspace path its last stored path
//!    set observed, all as they are now.
//! 2. The action is `sh -c COMMAND` in the package directory with the task's environment
//!    (the workspace path abstracted, [`super::report::ROOT_PLACEHOLDER`]).
//! 3. The worker reports its traced path set with the values it saw. Each is observed
//!    here too: only if the worker saw exactly this workspace (and this machine's tools) is
//!    the result used. A workspace path it saw differently (a dependency's output that was
//!    not in the input root, say) is added to the input root and the action submitted
//!    again, up to [`ATTEMPTS`] times; anything else runs the task locally, with a reason.
//! 4. The outputs are restored and the run is stored in the local cache like a local one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    Action, Command, Digest, command::EnvironmentVariable,
};
use prost::Message;

use super::input_root::Listing;
use super::report::{self, RemoteRun};
use crate::cache::Cache;
use crate::cache::archive;
use crate::cache::path_set::{CachePath, ObsKind};
use crate::cache::remote::mapping::digest;
use crate::reapi::{Client, retrying};
use crate::run::offload::Offloaded;
use crate::run::plan::Plan;

/// The action cache namespace of this vt's actions.
const SALT: &str = concat!("vt-remote-exec/v1 ", env!("CARGO_PKG_VERSION"));

/// Submissions per task before it runs locally.
pub const ATTEMPTS: usize = 3;

/// Runs `plan` remotely. `Err` says why the task must run locally instead.
pub async fn run(
    client: &Client,
    plan: &Plan,
    cache: &Cache,
    wait: Duration,
) -> Result<Offloaded, String> {
    let root = cache.root();
    let working = plan
        .cwd
        .strip_prefix(root)
        .map_err(|_| "the task's directory is outside the workspace".to_owned())?
        .to_path_buf();
    let mut extra: BTreeSet<PathBuf> = BTreeSet::new();
    if let Ok(Some((_, observations))) = cache.last_run(&plan.label) {
        extra.extend(
            observations
                .iter()
                .filter(|o| o.kind != ObsKind::Env && o.inside_workspace())
                .map(|o| PathBuf::from(o.path.display())),
        );
    }
    // What the task's dependencies produced in this run: the likeliest inputs of a task
    // that has not run before.
    for (name, value) in &plan.pre.parts {
        if let Some(dep) = name.strip_prefix("dependency ")
            && !value.starts_with("uncached-")
            && let Ok(Some((entry, _))) = cache.last_run(dep)
        {
            extra.extend(
                entry
                    .outputs
                    .iter()
                    .map(|o| o.path())
                    .filter(|p| p.inside_workspace())
                    .map(|p| PathBuf::from(p.display())),
            );
        }
    }
    let started = Instant::now();
    for attempt in 1..=ATTEMPTS {
        let listing = listing(root, &working, cache.dir(), &extra)
            .map_err(|e| format!("cannot read the workspace for the input root: {e}"))?;
        let action = submit(client, plan, root, &working, &listing, wait).await?;
        // The worker enforces the action's timeout; the engine gets a minute more to say so.
        let response = retrying(|| client.execute(&action, wait + Duration::from_secs(60)))
            .await
            .map_err(|e| format!("the engine failed: {e}"))?;
        if let Some(status) = response
            .status
            .as_ref()
            .filter(|s| s.code == tonic::Code::DeadlineExceeded as i32)
        {
            return Err(format!("it timed out on the worker: {}", status.message));
        }
        if let Some(status) = response.status.as_ref().filter(|s| s.code != 0) {
            return Err(format!(
                "the engine failed the action: {} (code {})",
                status.message, status.code
            ));
        }
        let result = response.result.ok_or("the engine sent no result")?;
        let run_digest = report::referenced(&result).ok_or(
            "the result has no vt run report (was it executed by a vt worker?)".to_owned(),
        )?;
        let bytes = fetch_one(client, &run_digest, "the run report").await?;
        let mut run = RemoteRun::decode(&bytes).map_err(|e| format!("the run report is {e}"))?;
        // Without a complete path set (a tracing gap, a tool's getEnv answered from the
        // worker's environment) the result cannot be checked: run here instead.
        if let Some(reason) = &run.uncacheable {
            return Err(format!("the worker's run cannot be checked: {reason}"));
        }
        if run.values.len() != run.observations.len() {
            return Err(format!(
                "the run report is inconsistent ({} observations, {} values)",
                run.observations.len(),
                run.values.len()
            ));
        }
        // What the task's `input` rule does not count is neither checked nor stored.
        let (observations, values) = std::mem::take(&mut run.observations)
            .into_iter()
            .zip(std::mem::take(&mut run.values))
            .filter(|(o, _)| plan.counts(o))
            .unzip();
        run.observations = observations;
        run.values = values;
        let here = cache.observe_all(&run.observations, &plan.observation_env());
        let mut differ = Vec::new();
        for ((observation, theirs), ours) in run.observations.iter().zip(&run.values).zip(&here) {
            // Env values come from the action's own environment, which is this task's.
            if observation.kind == ObsKind::Env || theirs == ours {
                continue;
            }
            if !observation.inside_workspace() {
                return Err(format!(
                    "the worker's {} differs from this machine's (another toolchain?)",
                    observation.display_path()
                ));
            }
            differ.push(observation);
        }
        if !differ.is_empty() {
            let names: Vec<String> = differ.iter().map(|o| o.path.display()).collect();
            if attempt == ATTEMPTS {
                return Err(format!(
                    "the worker still saw the workspace differently after {ATTEMPTS} attempts: {}",
                    names.join(", ")
                ));
            }
            crate::run::progress::print(|| {
                crate::say!(
                    "vt: {}: the worker saw {} differently; resubmitting with {}",
                    plan.label,
                    names.join(", "),
                    if names.len() == 1 { "it" } else { "them" }
                )
            });
            extra.extend(differ.iter().map(|o| PathBuf::from(o.path.display())));
            continue;
        }
        let log = fetch_one(client, &run.log.digest(), "the task's output").await?;
        restore(client, root, &run).await?;
        let outputs = run
            .outputs
            .iter()
            .map(|o| o.path().absolute(root))
            .collect();
        return Ok(Offloaded {
            worker: run.worker,
            exit_code: result.exit_code,
            output: log,
            duration: started.elapsed(),
            observations: run.observations,
            values: here,
            outputs,
            attempts: attempt,
        });
    }
    Err("no attempt left".into())
}

/// The package's files plus `extra` (each with its entries when it is a directory).
fn listing(
    root: &Path,
    working: &Path,
    cache_dir: &Path,
    extra: &BTreeSet<PathBuf>,
) -> std::io::Result<Listing> {
    let mut listing = Listing::default();
    let skip = |rel: &Path| {
        let name = rel.file_name().map(|n| n.to_string_lossy());
        name.is_some_and(|n| n == "node_modules" || n.starts_with('.'))
            || root.join(rel).starts_with(cache_dir)
    };
    if working.as_os_str().is_empty() {
        for entry in std::fs::read_dir(root)? {
            let rel = PathBuf::from(entry?.file_name());
            if !skip(&rel) {
                listing.add_tree(root, &rel, &skip)?;
            }
        }
    } else {
        listing.add_tree(root, working, &skip)?;
    }
    for rel in extra {
        if !root.join(rel).starts_with(cache_dir) {
            listing.add_with_entries(root, rel)?;
        }
    }
    Ok(listing)
}

/// Uploads the input root, command and action; returns the action's digest.
async fn submit(
    client: &Client,
    plan: &Plan,
    root: &Path,
    working: &Path,
    listing: &Listing,
    timeout: Duration,
) -> Result<Digest, String> {
    let tree = listing.tree();
    let root_text = root.to_string_lossy();
    let command = Command {
        arguments: vec!["sh".into(), "-c".into(), plan.command.clone()],
        environment_variables: plan
            .env
            .iter()
            .map(|(name, value)| EnvironmentVariable {
                name: name.clone(),
                value: report::abstract_root(value, &root_text),
            })
            .collect(),
        working_directory: working.to_string_lossy().into_owned(),
        ..Command::default()
    };
    let command_bytes = command.encode_to_vec();
    let command_digest = digest(&command_bytes);
    let action = Action {
        command_digest: Some(command_digest.clone()),
        input_root_digest: Some(tree.root.clone()),
        timeout: Some(bazel_remote_apis::google::protobuf::Duration {
            seconds: timeout.as_secs().min(i64::MAX as u64) as i64,
            nanos: 0,
        }),
        // Results of other vt versions (whose run reports may differ) live apart in the
        // engine's action cache.
        salt: SALT.as_bytes().to_vec(),
        ..Action::default()
    };
    let action_bytes = action.encode_to_vec();
    let action_digest = digest(&action_bytes);
    let mut blobs = tree.blobs;
    blobs.push((command_digest, command_bytes));
    blobs.push((action_digest.clone(), action_bytes));
    retrying(|| client.upload(blobs.clone()))
        .await
        .map_err(|e| format!("cannot upload the input root: {e}"))?;
    Ok(action_digest)
}

async fn fetch_one(client: &Client, digest: &Digest, what: &str) -> Result<Vec<u8>, String> {
    let mut blobs = super::fetch_all(client, std::slice::from_ref(digest))
        .await
        .map_err(|e| format!("cannot download {what}: {e}"))?;
    blobs.pop().ok_or(format!("{what} is not in the CAS"))
}

/// Downloads every output file, checks it against both its SHA-256 digest and the blake3
/// key the worker archived it under, and only then writes anything.
async fn restore(client: &Client, root: &Path, run: &RemoteRun) -> Result<(), String> {
    use crate::cache::entry::Output;
    for output in &run.outputs {
        let path: &CachePath = output.path();
        if !path.inside_workspace() || !super::input_root::is_plain(Path::new(&path.display())) {
            return Err(format!(
                "the worker reported an output outside the workspace: {}",
                path.display()
            ));
        }
    }
    let wanted: Vec<Digest> = run.blobs.iter().map(|(_, b)| b.digest()).collect();
    let downloaded = super::fetch_all(client, &wanted)
        .await
        .map_err(|e| format!("cannot download the outputs: {e}"))?;
    let mut contents = std::collections::BTreeMap::new();
    for ((key, blob), bytes) in run.blobs.iter().zip(downloaded) {
        // The worker archived it under this blake3 key; the SHA-256 digest alone is the
        // CAS's name for it.
        if crate::cache::key::content(&bytes) != *key {
            return Err(format!(
                "output blob {} does not match its content key",
                blob.hash
            ));
        }
        contents.insert(*key, bytes);
    }
    let mut blobs = Vec::new();
    for output in &run.outputs {
        blobs.push(match output {
            Output::File { blob, path, .. } => Some(
                contents
                    .get(blob)
                    .cloned()
                    .ok_or(format!("no content for the output {}", path.display()))?,
            ),
            _ => None,
        });
    }
    archive::restore(root, &run.outputs, blobs).map_err(|e| e.to_string())
}

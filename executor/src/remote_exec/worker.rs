//! `vt worker`: a bot of a REAPI engine (Remote Workers API). It long-polls its session for
//! leases; each lease's action runs under vt's tracer (and sandbox), and the bot reports
//! the `ActionResult` with the outputs, stdout/stderr and vt's run report in the CAS.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use bazel_remote_apis::build::bazel::remote::execution::v2::{
    Action, ActionResult, Command, Digest, ExecutedActionMetadata, OutputFile,
};
use bazel_remote_apis::google::rpc::Status;
use prost::Message;

use super::fetch_all;
use super::materialize::{fetch_tree, write_tree};
use super::report::{self, BlobRef, RemoteRun};
use crate::cache::PreRun;
use crate::cache::archive;
use crate::cache::entry::Output;
use crate::cache::observe::{RunCheck, StatMemo, observe_run};
use crate::cache::remote::mapping::digest;
use crate::cache::store::Store;
use crate::reapi::bots::{BotSession, BotStatus, Lease, LeaseState, Property, Worker, pack};
use crate::reapi::{Address, Client, Credentials, Deadlines, retrying};
use crate::run::execute::execute;
use crate::run::output::{Console, LogMode, STDERR, STDOUT, chunks};
use crate::run::plan::{Plan, SandboxPlan, quote};
use crate::run::traced::path_set;

pub struct Options {
    pub server: String,
    pub work_dir: PathBuf,
    pub bot_id: String,
    /// Run actions in vt's sandbox (the default; `--no-sandbox` for hosts without user
    /// namespaces).
    pub sandbox: bool,
    /// Stop after this many leases (for tests and benchmarks).
    pub max_leases: Option<usize>,
    /// How many actions run at once.
    pub jobs: usize,
    /// How often a worker busy with an action tells the engine it is alive (the engine
    /// requeues the actions of a bot it has not heard from: BuildGrid after its
    /// `bot-session-keepalive-timeout`, 600 s by default).
    pub keepalive: Duration,
}

/// How long one UpdateBotSession may wait for work.
const POLL: Duration = Duration::from_secs(30);

/// A lease's outcome, from the thread that ran it.
type Finished = (String, Result<ActionResult, LeaseError>, Duration);

/// Why a lease produced no result, as the status reported for it.
#[derive(Debug)]
struct LeaseError {
    code: tonic::Code,
    message: String,
}

impl From<String> for LeaseError {
    /// FAILED_PRECONDITION: the action itself is unusable; the engine does not retry it.
    fn from(message: String) -> LeaseError {
        LeaseError {
            code: tonic::Code::FailedPrecondition,
            message,
        }
    }
}

pub fn run(options: Options) -> anyhow::Result<()> {
    let address = Address::parse(&options.server).map_err(|e| anyhow::anyhow!("--server: {e}"))?;
    std::fs::create_dir_all(&options.work_dir)
        .with_context(|| format!("cannot create {}", options.work_dir.display()))?;
    // The stat memo makes observing the same toolchain files across leases cheap.
    let (memo_store, _) = Store::open(options.work_dir.join("memo")).with_context(|| {
        format!(
            "cannot open the worker's store in {} (is another worker using it?)",
            options.work_dir.display()
        )
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let credentials = Credentials::from_env().map_err(anyhow::Error::msg)?;
    let deadlines = Deadlines {
        connect: Duration::from_secs(5),
        call: Duration::from_secs(600),
    };
    let mut backoff = Duration::from_millis(200);
    let mut bot = Bot {
        options: &options,
        memo_store: &memo_store,
        runtime: &runtime,
        done: 0,
    };
    loop {
        let connected = runtime.block_on(Client::connect(&address, &credentials, deadlines));
        let client = match connected {
            Ok(client) => client,
            Err(e) => {
                crate::say!(
                    "vt worker: {}: {e}; retrying in {backoff:?}",
                    options.server
                );
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        let fresh = BotSession {
            bot_id: options.bot_id.clone(),
            status: BotStatus::Ok as i32,
            worker: Some(Worker {
                // BuildGrid leases up to this many actions at once to the bot.
                configs: vec![Property {
                    key: "capacity".into(),
                    value: options.jobs.to_string(),
                }],
                ..Worker::default()
            }),
            ..BotSession::default()
        };
        let session = match runtime.block_on(client.create_bot_session(fresh, POLL)) {
            Ok(session) => session,
            Err(e) => {
                crate::say!("vt worker: cannot open a bot session: {e}");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        crate::say!(
            "vt worker: {} serving {} as {} ({} at a time)",
            options.bot_id,
            options.server,
            session.name,
            options.jobs
        );
        match bot.serve(&client, session) {
            Ok(()) => return Ok(()),
            Err(e) => crate::say!("vt worker: the session broke ({e}); opening a new one"),
        }
    }
}

/// A worker and what it has done so far.
struct Bot<'a> {
    options: &'a Options,
    memo_store: &'a Store,
    runtime: &'a tokio::runtime::Runtime,
    done: usize,
}

impl Bot<'_> {
    /// Runs leases `jobs` at a time, each on its own thread, until the session breaks
    /// (`Err`) or `--max-leases` are done (`Ok`). The session is reported whenever a lease
    /// finishes; between, it long-polls for work while there is room, or reports every
    /// `--keepalive` when there is not.
    fn serve(&mut self, client: &Client, mut session: BotSession) -> Result<(), String> {
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Finished>();
        let mut started: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut running = 0usize;
        std::thread::scope(|scope| {
            loop {
                for lease in &session.leases {
                    if lease.state != LeaseState::Active as i32 || !started.insert(lease.id.clone())
                    {
                        continue;
                    }
                    running += 1;
                    let (sender, lease) = (sender.clone(), lease.clone());
                    let (runtime, options, store) = (self.runtime, self.options, self.memo_store);
                    scope.spawn(move || {
                        let clock = Instant::now();
                        let outcome = run_lease(runtime, client, options, store, &lease);
                        let _ = sender.send((lease.id, outcome, clock.elapsed()));
                    });
                }
                while let Ok(finished) = receiver.try_recv() {
                    running -= 1;
                    self.complete(&mut session, finished);
                }
                let max = self.options.max_leases;
                if running == 0 && max.is_some_and(|max| self.done >= max) {
                    // Report the last results without waiting for more work.
                    session.status = BotStatus::BotTerminating as i32;
                    let _ = self.runtime.block_on(
                        client.update_bot_session(session.clone(), Duration::from_secs(10)),
                    );
                    return Ok(());
                }
                // Room for more: long-poll, but a lease finishing ends the wait (the poll
                // is cancelled; BuildGrid sends any lease it assigned meanwhile again).
                // At capacity: wait for a lease to finish, reporting every --keepalive.
                let at_capacity = running >= self.options.jobs;
                let answer = self.runtime.block_on(async {
                    let poll = async {
                        if at_capacity {
                            tokio::time::sleep(self.options.keepalive).await;
                        }
                        client.update_bot_session(session.clone(), POLL).await
                    };
                    tokio::select! {
                        answer = poll => Some(answer),
                        finished = receiver.recv(), if running > 0 => {
                            if let Some(finished) = finished {
                                running -= 1;
                                self.complete(&mut session, finished);
                            }
                            None
                        }
                    }
                });
                match answer {
                    None => {}
                    Some(Ok(next)) => session = acknowledged(next),
                    Some(Err(e)) if is_deadline(&e) => {}
                    Some(Err(e)) => return Err(e.to_string()),
                }
            }
        })
    }

    /// Marks a finished lease completed in the session, with its result.
    fn complete(&mut self, session: &mut BotSession, (id, outcome, took): Finished) {
        self.done += 1;
        let mut lease = session
            .leases
            .iter()
            .find(|l| l.id == id)
            .cloned()
            .unwrap_or_else(|| Lease {
                id: id.clone(),
                ..Lease::default()
            });
        lease.state = LeaseState::Completed as i32;
        match outcome {
            Ok(result) => {
                crate::say!(
                    "vt worker: lease {id} done: exit {} in {:.2} s",
                    result.exit_code,
                    took.as_secs_f64()
                );
                lease.status = Some(Status::default());
                lease.result = Some(pack(
                    "build.bazel.remote.execution.v2.ActionResult",
                    &result,
                ));
            }
            Err(LeaseError { code, message }) => {
                crate::say!("vt worker: lease {id} failed: {message}");
                lease.status = Some(Status {
                    code: code as i32,
                    message,
                    details: Vec::new(),
                });
                lease.result = None;
            }
        }
        session.leases.retain(|l| l.id != id);
        session.leases.push(lease);
    }
}

/// The server's answer as the session to report next: it has acknowledged the completions
/// of the request it answers (those of a cancelled poll stay in ours and are sent again),
/// and a lease it no longer lists is done or cancelled.
fn acknowledged(mut theirs: BotSession) -> BotSession {
    theirs
        .leases
        .retain(|l| l.state == LeaseState::Active as i32 || l.state == LeaseState::Pending as i32);
    theirs
}

fn is_deadline(error: &crate::reapi::RemoteError) -> bool {
    matches!(error, crate::reapi::RemoteError::Call { status, .. }
        if matches!(status.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled))
}

/// Runs one lease: fetch, materialize, execute traced, upload.
fn run_lease(
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    options: &Options,
    memo_store: &Store,
    lease: &Lease,
) -> Result<ActionResult, LeaseError> {
    let (command, exec_root, timeout) = runtime.block_on(prepare(client, options, lease))?;
    let result = run_action(options, memo_store, &command, &exec_root, timeout);
    let result = match result {
        Ok((result, blobs)) => runtime
            .block_on(retrying(|| client.upload(blobs.clone())))
            .map(|()| result)
            .map_err(|e| LeaseError::from(format!("cannot upload the results: {e}"))),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&exec_root);
    result
}

/// Fetches the lease's action and command and writes its input root.
async fn prepare(
    client: &Client,
    options: &Options,
    lease: &Lease,
) -> Result<(Command, PathBuf, Option<Duration>), String> {
    let payload = lease.payload.as_ref().ok_or("the lease has no payload")?;
    let action = if payload
        .type_url
        .ends_with("build.bazel.remote.execution.v2.Action")
    {
        Action::decode(payload.value.as_slice()).map_err(|e| format!("a malformed Action: {e}"))?
    } else if payload
        .type_url
        .ends_with("build.bazel.remote.execution.v2.Digest")
    {
        let digest = Digest::decode(payload.value.as_slice())
            .map_err(|e| format!("a malformed Digest: {e}"))?;
        let bytes = fetch_all(client, &[digest]).await?.remove(0);
        Action::decode(bytes.as_slice()).map_err(|e| format!("a malformed Action: {e}"))?
    } else {
        return Err(format!("cannot run a lease of type {}", payload.type_url));
    };
    let command_digest = action
        .command_digest
        .clone()
        .ok_or("the action has no command")?;
    let command_bytes = fetch_all(client, &[command_digest]).await?.remove(0);
    let command = Command::decode(command_bytes.as_slice())
        .map_err(|e| format!("a malformed Command: {e}"))?;
    let root_digest = action
        .input_root_digest
        .clone()
        .ok_or("the action has no input root")?;
    let tree = fetch_tree(client, &root_digest).await?;
    let exec_root = options.work_dir.join("runs").join(sanitize(&lease.id));
    if exec_root.exists() {
        std::fs::remove_dir_all(&exec_root)
            .map_err(|e| format!("cannot clear {}: {e}", exec_root.display()))?;
    }
    write_tree(client, &tree, &exec_root).await?;
    // A zero or absent timeout is no limit (REAPI leaves the default to the server).
    let timeout = action
        .timeout
        .filter(|t| t.seconds > 0 || t.nanos > 0)
        .map(|t| Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32));
    Ok((command, exec_root, timeout))
}

/// A lease id as a directory name.
fn sanitize(id: &str) -> String {
    let name: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let hash = blake3::hash(id.as_bytes()).to_hex();
    format!("{}-{}", &name[name.len().saturating_sub(40)..], &hash[..12])
}

/// The shell command for an argv: vt's own actions are `sh -c SCRIPT`; anything else is
/// quoted and exec'd.
fn script_of(arguments: &[String]) -> Result<String, String> {
    match arguments {
        [] => Err("the command has no arguments".into()),
        [sh, c, script] if (sh == "sh" || sh == "/bin/sh") && c == "-c" => Ok(script.clone()),
        argv => Ok(format!(
            "exec {}",
            argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
        )),
    }
}

/// Blobs to upload, by digest.
type Blobs = Vec<(Digest, Vec<u8>)>;

/// Executes the command in `exec_root` and builds the result and the blobs to upload.
fn run_action(
    options: &Options,
    memo_store: &Store,
    command: &Command,
    exec_root: &Path,
    timeout: Option<Duration>,
) -> Result<(ActionResult, Blobs), LeaseError> {
    let root_text = exec_root.to_string_lossy().into_owned();
    let env: BTreeMap<String, String> = command
        .environment_variables
        .iter()
        .map(|v| (v.name.clone(), report::concrete_root(&v.value, &root_text)))
        .collect();
    let working = Path::new(&command.working_directory);
    if !command.working_directory.is_empty() && !super::input_root::is_plain(working) {
        return Err(format!(
            "the working directory {:?} is not inside the input root",
            command.working_directory
        )
        .into());
    }
    let cwd = exec_root.join(working);
    std::fs::create_dir_all(&cwd).map_err(|e| format!("cannot create {}: {e}", cwd.display()))?;
    let plan = Plan {
        label: format!("remote action in {}", command.working_directory),
        command: script_of(&command.arguments)?,
        cwd: cwd.clone(),
        env: env.clone(),
        pre: PreRun::default(),
        cacheable: true,
        uncached_because: "",
        input_auto: true,
        declared: None,
        input_exclude: globset::GlobSet::empty(),
        output_exclude: globset::GlobSet::empty(),
        output_include: Vec::new(),
        timeout,
        stdin: false,
        root: exec_root.to_path_buf(),
        watched: false,
        inputs_changed_at: 0,
        sandbox: options.sandbox.then(|| SandboxPlan {
            workspace: exec_root.to_path_buf(),
            linked: Vec::new(),
            writable: vec![exec_root.to_path_buf()],
            layered: None,
            network: false,
        }),
    };
    // What the action found through its PATH and its variables that name paths is
    // observed against those (`ObsKind::Which`, `Base::Var`), as the client's own runs
    // are against the task's.
    let mut observed_env = env.clone();
    plan.add_task_locations(&mut observed_env);
    // The output is shown on the client; the worker keeps its console quiet.
    let mut console = Console::new(LogMode::Quiet, &plan.label);
    // The input root (and the working directory) were written before the action starts,
    // not while it runs: the guard's boundary must come after them.
    crate::cache::guard::settled();
    let execution = execute(&plan, &mut console, true, None).map_err(|e| format!("{e:#}"))?;
    if execution.timed_out {
        return Err(LeaseError {
            code: tonic::Code::DeadlineExceeded,
            message: format!(
                "the action ran past its timeout of {} s and was killed",
                timeout.unwrap_or_default().as_secs()
            ),
        });
    }
    let exit_code = execution.exit_code();
    let mut blobs: Vec<(Digest, Vec<u8>)> = Vec::new();
    let mut add_blob = |bytes: Vec<u8>| {
        let d = digest(&bytes);
        blobs.push((d.clone(), bytes));
        d
    };
    // The path set, observed here (relative paths inside the execution root).
    // The worker's own files (its store) are not the action's; the execution root, which
    // is under the work directory too, is.
    let traced = path_set(&execution, &plan, exec_root, memo_store.path());
    let (traced, uncacheable) = match traced {
        Ok(traced) => (Some(traced), None),
        Err(reason) => (None, Some(reason.to_string())),
    };
    let mut uncacheable = uncacheable.or_else(|| {
        (!execution.ipc.tracked_env.is_empty() || !execution.ipc.tracked_globs.is_empty()).then(
            || {
                "a tool read variables through vt's IPC, which a worker cannot answer from the \
                 client's environment"
                    .to_owned()
            },
        )
    });
    // What the action saw: a path that changed while it ran (a toolchain updated on the
    // worker, say) makes the run uncheckable, as it would locally.
    let memo = StatMemo::new(memo_store);
    let (observations, mut changed, values) = match traced {
        Some(traced) => {
            let check = RunCheck {
                window: &execution.window,
                own: &traced.own,
            };
            match observe_run(
                &traced.observations,
                exec_root,
                &observed_env,
                &memo,
                &check,
            ) {
                Ok(values) => (traced.observations, traced.outputs, values),
                Err(moved) => {
                    uncacheable.get_or_insert(moved.to_string());
                    (Vec::new(), traced.outputs, Vec::new())
                }
            }
        }
        None => (Vec::new(), BTreeSet::new(), Vec::new()),
    };
    memo.flush();
    // Declared output paths count even when the tracer saw no write (a tool that renamed
    // a whole directory into place, say).
    for declared in &command.output_paths {
        let path = cwd.join(declared);
        if path.starts_with(exec_root) && path.exists() {
            changed.extend(crate::run::plan::files_matching(
                exec_root,
                &path,
                &everything(),
            ));
            changed.insert(path);
        }
    }
    let (outputs, by_key) = archive::archive_blobs(exec_root, &changed, Some(&execution.window))
        .map_err(|e| format!("cannot read the outputs: {e}"))?;
    let mut run_blobs = Vec::new();
    let mut output_files = Vec::new();
    for output in &outputs {
        if let Output::File {
            path, mode, blob, ..
        } = output
        {
            let bytes = by_key.get(blob.0.as_slice()).cloned().unwrap_or_default();
            let d = add_blob(bytes);
            run_blobs.push((*blob, BlobRef::of(&d)));
            // The standard list, for other REAPI clients: paths under the working directory.
            let absolute = path.absolute(exec_root);
            if let Ok(rel) = absolute.strip_prefix(&cwd) {
                output_files.push(OutputFile {
                    path: rel.to_string_lossy().into_owned(),
                    digest: Some(d),
                    is_executable: mode & 0o111 != 0,
                    ..OutputFile::default()
                });
            }
        }
    }
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for (stream, bytes) in chunks(&execution.output).unwrap_or_default() {
        match stream {
            STDERR => stderr.extend_from_slice(bytes),
            STDOUT => stdout.extend_from_slice(bytes),
            _ => {}
        }
    }
    let log = add_blob(execution.output.clone());
    let run = RemoteRun {
        worker: options.bot_id.clone(),
        tracer: execution.log.tracer.clone(),
        uncacheable,
        observations,
        values,
        outputs,
        blobs: run_blobs,
        log: BlobRef::of(&log),
        duration_ms: execution.duration.as_millis() as u64,
    };
    let run_digest = add_blob(run.encode());
    let stdout_digest = add_blob(stdout);
    let stderr_digest = add_blob(stderr);
    let result = ActionResult {
        output_files,
        exit_code,
        stdout_digest: Some(stdout_digest),
        stderr_digest: Some(stderr_digest),
        execution_metadata: Some(ExecutedActionMetadata {
            worker: options.bot_id.clone(),
            auxiliary_metadata: vec![report::reference(&run_digest)],
            ..ExecutedActionMetadata::default()
        }),
        ..ActionResult::default()
    };
    blobs.sort_by(|a, b| a.0.hash.cmp(&b.0.hash));
    blobs.dedup_by(|a, b| a.0 == b.0);
    Ok((result, blobs))
}

fn everything() -> globset::GlobSet {
    let mut builder = globset::GlobSetBuilder::new();
    if let Ok(glob) = globset::Glob::new("**") {
        builder.add(glob);
    }
    builder
        .build()
        .unwrap_or_else(|_| globset::GlobSet::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vt_actions_run_their_script_and_others_are_quoted() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            script_of(&args(&["sh", "-c", "node build.js && echo ok"])).as_deref(),
            Ok("node build.js && echo ok")
        );
        assert_eq!(
            script_of(&args(&["gcc", "-c", "a b.c"])).as_deref(),
            Ok("exec gcc -c 'a b.c'")
        );
        assert!(script_of(&[]).is_err());
    }

    #[test]
    fn lease_ids_become_safe_directory_names() {
        let name = sanitize("instance/operations/../x y");
        assert!(!name.contains('/') && !name.contains(' ') && !name.contains(".."));
        assert_ne!(sanitize("a/b"), sanitize("a_b"));
    }
}

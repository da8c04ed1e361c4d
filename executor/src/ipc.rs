//! The IPC server every task gets (docs/architecture.md, "Around the line"): a SEQPACKET
//! socketpair whose task end the task inherits as `VT_IPC_FD`, served while the task runs
//! on the runtime thread all of the process's tasks share. What tools say (tracked env,
//! ignored paths, "do not cache") is collected into a [`Report`] that the cache applies
//! when it stores the run.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, OnceLock};

use wire::server::{Handler, Peer, ProtocolError, Server};
use wire::{Request, Response, WireError};

/// What the task's tools told vt.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Tracked `getEnv` names and the values vt answered (None: unset).
    pub tracked_env: BTreeMap<String, Option<String>>,
    /// Tracked `getEnvs` globs.
    pub tracked_globs: Vec<String>,
    pub ignored_inputs: Vec<PathBuf>,
    pub ignored_outputs: Vec<PathBuf>,
    /// "TOOL (pid N)" of the first `disableCache()`.
    pub disabled_by: Option<String>,
    /// Messages vt could not serve as the tool meant; any makes the run uncacheable.
    pub errors: Vec<String>,
}

/// vt's own environment: what `getEnv` answers from (tools get undeclared variables only
/// this way, since tasks are not passed them).
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

struct Collector(Mutex<Report>);

impl Collector {
    fn with<T>(&self, f: impl FnOnce(&mut Report) -> T) -> T {
        let mut report = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut report)
    }
}

/// `path` as the tool meant it: relative paths are relative to the caller's cwd.
fn absolute(peer: &Peer, path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        return path;
    }
    match std::fs::read_link(format!("/proc/{}/cwd", peer.pid)) {
        Ok(cwd) => cwd.join(path),
        Err(_) => path,
    }
}

fn command_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_owned())
        .unwrap_or_else(|_| "a tool".into())
}

impl Handler for Collector {
    fn handle(&self, peer: &Peer, request: Request) -> Response {
        match request {
            Request::GetEnv { name, tracked } => {
                let value = std::env::var_os(&name);
                if tracked {
                    let key = name.to_string_lossy().into_owned();
                    let shown = value.as_ref().map(|v| v.to_string_lossy().into_owned());
                    self.with(|r| r.tracked_env.insert(key, shown));
                }
                Response::Env(value)
            }
            Request::GetEnvs { glob, tracked } => {
                match wire::env_glob::matching(&glob, std::env::vars_os()) {
                    Ok(pairs) => {
                        if tracked {
                            self.with(|r| r.tracked_globs.push(glob));
                        }
                        Response::Envs(pairs)
                    }
                    Err(e) => Response::Error(e),
                }
            }
            Request::IgnoreInput { path } => {
                let path = absolute(peer, path);
                self.with(|r| r.ignored_inputs.push(path));
                Response::Done
            }
            Request::IgnoreOutput { path } => {
                let path = absolute(peer, path);
                self.with(|r| r.ignored_outputs.push(path));
                Response::Done
            }
            Request::DisableCache => {
                let who = format!("{} (pid {})", command_name(peer.pid), peer.pid);
                self.with(|r| {
                    r.disabled_by.get_or_insert(who);
                });
                Response::Done
            }
        }
    }

    fn protocol_error(&self, peer: Option<&Peer>, error: &ProtocolError) {
        let from = peer.map_or(String::new(), |p| format!(" from pid {}", p.pid));
        self.with(|r| r.errors.push(format!("{error}{from}")));
    }
}

/// A task's server, running.
pub struct TaskIpc {
    collector: Arc<Collector>,
    /// Told when the server is done (every copy of the task end closed); dropped unsent if
    /// it panicked.
    done: Receiver<()>,
    task_end: Option<OwnedFd>,
}

/// The runtime every task's server runs on: one thread for the whole process, started by
/// the first task. A thread and a runtime of each task's own cost every task ~0.1 ms to
/// start and to join (`fixed_cost.py`), most of it for tasks whose tools never say a word.
fn runtime() -> std::io::Result<&'static tokio::runtime::Handle> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Handle, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(|e| e.to_string())?;
            let handle = runtime.handle().clone();
            // Serves until the process exits: spawned servers run while this thread is
            // in `block_on`.
            std::thread::Builder::new()
                .name("vt-ipc".into())
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .map_err(|e| e.to_string())?;
            Ok(handle)
        })
        .as_ref()
        .map_err(|e| std::io::Error::other(format!("cannot start the IPC server thread: {e}")))
}

/// Starts the server's thread now, for a thread that works ahead of the first task.
pub fn warm() {
    let _ = runtime();
}

impl TaskIpc {
    /// Creates the socketpair and starts serving the runner end.
    pub fn start() -> std::io::Result<TaskIpc> {
        let (runner_end, task_end) = wire::server::endpoints()?;
        let collector = Arc::new(Collector(Mutex::new(Report::default())));
        let handler = Arc::clone(&collector);
        let (finished, done) = std::sync::mpsc::sync_channel(1);
        runtime()?.spawn(async move {
            match Server::new(runner_end) {
                Ok(server) => server.serve(handler).await,
                Err(e) => handler.protocol_error(None, &ProtocolError::Io(e)),
            }
            let _ = finished.send(());
        });
        Ok(TaskIpc {
            collector,
            done,
            task_end: Some(task_end),
        })
    }

    /// Makes the task inherit the task end as `VT_IPC_FD`.
    pub fn attach(&self, launch: &mut sandbox::trace::launch::Launch) {
        let Some(task_end) = &self.task_end else {
            return;
        };
        let raw: RawFd = task_end.as_raw_fd();
        launch
            .env
            .insert(wire::IPC_FD_ENV.into(), raw.to_string().into());
        // Close-on-exec is cleared in the task's process only, so that no other task's
        // child inherits this task's end.
        launch.inherit.push(raw);
    }

    /// Closes vt's copy of the task end (after spawning), so the server sees end-of-stream
    /// when the task tree is gone.
    pub fn spawned(&mut self) {
        self.task_end = None;
    }

    /// Waits for the server to finish (every copy of the task end closed) and returns what
    /// the tools said.
    pub fn finish(mut self) -> Report {
        self.task_end = None;
        if self.done.recv().is_err() {
            self.collector
                .with(|r| r.errors.push("the task's IPC server panicked".into()));
        }
        self.collector.with(|r| r.clone())
    }
}

/// A `getEnvs` glob as an observation name (`=` cannot appear in an env name).
pub fn glob_observation_name(glob: &str) -> String {
    format!("=glob {glob}")
}

/// The value of a glob observation: every matching `name=value`, sorted.
pub fn glob_value(glob: &str, env: &BTreeMap<String, String>) -> String {
    let vars = env
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
    match wire::env_glob::matching(glob, vars) {
        Ok(pairs) => {
            let mut out = String::from("set:");
            for (k, v) in pairs {
                out.push_str(&String::from_utf8_lossy(&k.into_vec()));
                out.push('=');
                out.push_str(&String::from_utf8_lossy(&v.into_vec()));
                out.push('\n');
            }
            out
        }
        Err(WireError { message, .. }) => format!("bad glob: {message}"),
    }
}

/// Whether `path` is `prefix` or below it.
pub fn is_under(path: &Path, prefixes: &[PathBuf]) -> bool {
    prefixes.iter().any(|p| path.starts_with(p))
}

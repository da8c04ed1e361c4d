//! Running one task: `sh -c COMMAND` in its cwd with its environment, traced, output
//! captured.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::Context;
use sandbox::trace::launch::Launch;
use sandbox::{AccessKind, AccessLog};

use super::output::{Console, capture};
use super::plan::{Plan, SandboxPlan};
use crate::signals;
use sandbox::jail::{Jail, LayerDirs, Spec};

pub struct Execution {
    /// What the task's tools said over IPC.
    pub ipc: crate::ipc::Report,
    pub status: ExitStatus,
    pub log: AccessLog,
    /// Captured stdout/stderr chunks.
    pub output: Vec<u8>,
    pub duration: Duration,
    /// Killed for running past `Plan::timeout`.
    pub timed_out: bool,
    /// When it ran, for the store-time check that nothing it saw changed meanwhile.
    pub window: crate::cache::guard::Window,
}

impl Execution {
    /// The exit code, or 128 + the signal that killed the task (as a shell reports it).
    pub fn exit_code(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        self.status
            .code()
            .unwrap_or_else(|| 128 + self.status.signal().unwrap_or(0))
    }
}

/// Runs the task. `stored`: its result may be stored, so the concurrent-change guard's
/// window must be exact (which can wait up to one timestamp tick before the start).
/// `cache_dir`: vt's own files, which its threads write while the task runs.
pub fn execute(
    plan: &Plan,
    console: &mut Console,
    stored: bool,
    cache_dir: Option<&std::path::Path>,
) -> anyhow::Result<Execution> {
    if let Some(execution) = attempt(plan, console, stored, cache_dir)? {
        return Ok(execution);
    }
    // The host refused the task's copy-on-write layer before anything ran (noted, so this
    // attempt binds the directory writable instead).
    attempt(plan, console, stored, cache_dir)?.with_context(|| {
        format!(
            "{}: the sandbox refused a copy-on-write layer it had not tried",
            plan.label
        )
    })
}

/// One start of the task: `None` if its sandbox failed at the copy-on-write layer, which
/// this host refuses (noted in [`sandbox::jail::layer::refused`]; the task did not run).
fn attempt(
    plan: &Plan,
    console: &mut Console,
    stored: bool,
    cache_dir: Option<&std::path::Path>,
) -> anyhow::Result<Option<Execution>> {
    let started = Instant::now();
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    // The shell is looked up here, not by the traced child (one notified `execve` per
    // `PATH` directory); the lookups are given to the log as the task's. A sandbox shows
    // every absolute `PATH` directory that exists at its own path with the host's content
    // (`jail_for` binds each one, or the workspace bind holds it), and `find` gives up on
    // relative entries: the search inside would find the same file after the same misses.
    let shell = sandbox::trace::program::find(
        std::ffi::OsStr::new("sh"),
        plan.env.get("PATH").map(std::ffi::OsStr::new),
    )
    .map(|found| (found, sandbox::access::monotonic_ns()));
    let env: std::collections::BTreeMap<OsString, OsString> = plan
        .task_env()
        .into_iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
    let stdin = if plan.stdin {
        None
    } else {
        Some(OwnedFd::from(
            std::fs::File::open("/dev/null").context("cannot open /dev/null")?,
        ))
    };
    let mut launch = Launch {
        // A shell vt did not find itself is looked for by the child (`Command`'s search).
        program: shell
            .as_ref()
            .map_or_else(|| "sh".into(), |(found, _)| found.path.clone()),
        // `$0` stays `sh`, as with the search in the child.
        arg0: "sh".into(),
        args: vec!["-c".into(), OsString::from(&plan.command)],
        env,
        cwd: plan.cwd.clone(),
        stdin,
        stdout: out_write,
        stderr: err_write,
        inherit: Vec::new(),
    };
    let mut ipc = sandbox::timings::time("spawn: IPC server", crate::ipc::TaskIpc::start)
        .with_context(|| format!("{}: cannot start the task's IPC server", plan.label))?;
    ipc.attach(&mut launch);
    // Starting consumes the launch: our copies of the write ends close with it, so the
    // reader sees EOF when the task tree closes its last copy.
    let layer = plan
        .sandbox
        .as_ref()
        .and_then(|s| s.layered.as_deref())
        .map(|dir| sandbox::timings::time("sandbox: layer", || layer_for(plan, dir, cache_dir)))
        .transpose()?
        .flatten();
    let jail = plan
        .sandbox
        .as_ref()
        .map(|s| {
            sandbox::timings::time("sandbox: jail spec", || {
                jail_for(plan, s, layer.as_ref().map(|(dirs, _)| dirs))
            })
        })
        .transpose()?;
    // Just before the task starts: whatever changes from here on may be newer than what
    // the task saw.
    let mut window = if stored {
        sandbox::timings::time("guard window", || {
            crate::cache::guard::Window::open_after(plan.inputs_changed_at)
        })
    } else {
        crate::cache::guard::Window::unchecked()
    };
    let spawning = sandbox::timings::phase("spawn");
    // With the shell's path known, the task starts without a fork of vt
    // (`sandbox::trace::launch`; in a sandbox, `sandbox::jail::apply::chain`).
    let spawned = match (&jail, &shell) {
        (None, Some(_)) => sandbox::trace::spawn_launch(launch),
        (Some(jail), Some(_)) => sandbox::trace::spawn_jailed_launch(launch, jail),
        _ => sandbox::trace::spawn_jailed(launch.into_command(), jail.as_ref()),
    };
    if let (Err(sandbox::trace::TraceError::Jail(e)), Some((dirs, base))) = (&spawned, &layer)
        && let Some(why) = e.layer_refusal()
    {
        sandbox::jail::layer::note_refused(base, &dirs.layer().path, why);
        return Ok(None);
    }
    let mut child = spawned
        .with_context(|| format!("{}: cannot start `sh -c {}`", plan.label, plan.command))?;
    if let Some((found, at_ns)) = shell {
        child.looked_up(found.missing, at_ns);
    }
    if let Some(dir) = cache_dir {
        child.not_the_tasks(dir);
    }
    if let Some((_, base)) = &layer {
        // overlayfs's own writes into the layer are not the task's.
        child.not_the_tasks(base);
    }
    ipc.spawned();
    spawning.end();
    let pid = child.id();
    signals::register_tree(pid);
    let foreground = plan
        .stdin
        .then(|| super::terminal::Foreground::give(pid))
        .flatten();
    let watchdog = plan.timeout.map(|limit| watchdog(pid, limit));
    let output = sandbox::timings::time("task output until EOF", || {
        capture(out_read, err_read, console)
    });
    let waited = sandbox::timings::time("wait", || child.wait());
    drop(foreground);
    // The tree (and with it the overlay) is gone: a task that succeeded gets its changes
    // applied, before the window ends, as if it had written them itself; a failed one
    // leaves the package as it was.
    let succeeded = waited.as_ref().is_ok_and(|(status, _)| status.success());
    let applied = match layer {
        Some((dirs, _)) if succeeded => {
            sandbox::timings::time("sandbox: apply the layer", || apply_layer(plan, dirs))
        }
        Some((dirs, _)) => {
            if let Some(full) = dirs.out_of_space() {
                crate::say!(
                    "vt: {}: the sandbox's copy-on-write layer has no space left ({} is on a \
                     full file system): the task's writes in its package go there, so they \
                     likely failed for that\n  hint: layers are made next to the cache, or in \
                     TMPDIR when the cache is inside the package: set VT_CACHE_DIR outside the \
                     package, or TMPDIR to a file system with room",
                    plan.label,
                    full.display()
                );
            }
            Ok(())
        }
        None => Ok(()),
    };
    // Everything the task wrote was written by now (its dependents' windows open after the
    // moment the run loop notes this task's end).
    window.end();
    signals::unregister_tree(pid);
    let timed_out = watchdog.is_some_and(|(done, thread)| {
        drop(done);
        thread.join().unwrap_or(false)
    });
    if signals::received().is_some() {
        signals::wait_for_shutdown();
    }
    applied?;
    let (status, log) = waited.with_context(|| format!("{}: tracing failed", plan.label))?;
    let ipc = sandbox::timings::time("end: IPC server", || ipc.finish());
    Ok(Some(Execution {
        ipc,
        status,
        log,
        output,
        duration: started.elapsed(),
        timed_out,
        window,
    }))
}

/// Kills the task's process group once `limit` has passed, unless the returned sender is
/// dropped first; the thread says whether it killed. (A sandboxed task's whole pid
/// namespace goes with its outer process; an unsandboxed daemon in a session of its own
/// outlives the kill.)
fn watchdog(
    pid: u32,
    limit: Duration,
) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<bool>) {
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let expired =
            finished.recv_timeout(limit) == Err(std::sync::mpsc::RecvTimeoutError::Timeout);
        if expired {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        expired
    });
    (done, thread)
}

/// A fresh layer for `dir`, and the directory its layers are made in: next to the cache
/// (the same file system as the workspace, usually, so applying it is renames), or in the
/// temp directory when the cache is inside `dir` (overlayfs refuses a layer inside the
/// directory it covers: the root package, with the default cache in its node_modules).
/// `None` where this host was found to refuse one (said once): the directory is then bound
/// writable, so the task still works, but a failed task's writes stay.
fn layer_for(
    plan: &Plan,
    dir: &std::path::Path,
    cache_dir: Option<&std::path::Path>,
) -> anyhow::Result<Option<(LayerDirs, std::path::PathBuf)>> {
    // Next to the cache, or this user's own directory in the temp directory: a shared
    // `/tmp/vt-layers` belonged to whoever ran vt there first, and another user's sandbox
    // then failed (`Permission denied`), or, as root, made its layers in their directory.
    let base = match cache_dir
        .map(|c| c.join("layers"))
        .filter(|b| !b.starts_with(dir))
    {
        Some(base) => base,
        None => sandbox::trace::temp_user_dir("vt-layers").with_context(|| {
            format!(
                "{}: no private directory for the sandbox's copy-on-write layer in {} \
                 (vt-layers-UID: someone else's, a symlink, or open to others)\n  hint: set \
                 VT_CACHE_DIR outside the package, or remove that directory",
                plan.label,
                std::env::temp_dir().display()
            )
        })?,
    };
    if let Some(why) = sandbox::jail::layer::refused(&base, dir) {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            crate::say!(
                "vt: sandbox: no copy-on-write layer on this host ({why}); a task without \
                 declared outputs writes its package directly, and a failed one's writes stay\n  \
                 hint: declare the task's outputs (\"output\": [\"dist/**\"]) to keep the rest of \
                 the package read-only"
            );
        });
        return Ok(None);
    }
    // overlayfs shows one file system: a mount below the package would be the empty
    // directory beneath it. The package is then bound whole instead (binds keep mounts).
    if let Some(point) = sandbox::jail::mount_point_below(dir) {
        static SAID: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());
        let mut said = SAID
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !said.iter().any(|d| d == dir) {
            said.push(dir.to_path_buf());
            crate::say!(
                "vt: sandbox: no copy-on-write layer for {}: {} is a mount point in it, which \
                 the layer would show as the empty directory beneath; its tasks without \
                 declared outputs write the package directly, and a failed one's writes stay\n  \
                 hint: declare the task's outputs (\"output\": [\"dist/**\"]) to keep the rest \
                 of the package read-only",
                dir.display(),
                point.display()
            );
        }
        return Ok(None);
    }
    let dirs = LayerDirs::create(&base, dir).with_context(|| {
        format!(
            "{}: cannot create the sandbox's copy-on-write layer in {}",
            plan.label,
            base.display()
        )
    })?;
    Ok(Some((dirs, base)))
}

/// Applies what a sandboxed task changed in its layer to the package. On failure the layer
/// is kept, so nothing the task made is lost, and the error says where it is.
fn apply_layer(plan: &Plan, dirs: LayerDirs) -> anyhow::Result<()> {
    if let Err(e) = dirs.apply() {
        let kept = dirs.keep();
        anyhow::bail!(
            "{}: cannot apply the sandbox's changes to {}: {e}\n  hint: what the task wrote \
             is kept in {}; free the space or fix the permissions and run it again",
            plan.label,
            plan.cwd.display(),
            kept.display()
        );
    }
    Ok(())
}

/// The sandbox for a task: the workspace and the tool directories on its PATH read-only,
/// the directories of its outputs writable (or, with none declared, its package through a
/// copy-on-write layer).
fn jail_for(plan: &Plan, sandbox: &SandboxPlan, layer: Option<&LayerDirs>) -> anyhow::Result<Jail> {
    let mut read_only = vec![sandbox.workspace.clone()];
    read_only.extend(sandbox.linked.iter().cloned());
    // The task's PATH directories are shown where they are directories. One that is not
    // (missing, a file, a dangling link) is not shown, and the task will not find a program
    // there: that absence is part of what it saw, or a tool installed there later would
    // change the task without changing its cache key.
    let mut not_shown = Vec::new();
    if let Some(path) = plan.env.get("PATH") {
        for dir in std::env::split_paths(path)
            .filter(|dir| dir.is_absolute() && !dir.starts_with(&sandbox.workspace))
        {
            match std::fs::metadata(&dir) {
                Ok(meta) if meta.is_dir() => read_only.push(dir),
                _ if std::fs::symlink_metadata(&dir).is_err() => {
                    not_shown.push((dir, AccessKind::Missing))
                }
                _ => not_shown.push((dir, AccessKind::Stat)),
            }
        }
    }
    let mut writable = sandbox.writable.clone();
    if let (Some(dir), None) = (&sandbox.layered, layer) {
        writable.push(dir.clone());
    }
    Jail::new(Spec {
        read_only,
        writable,
        layered: layer.map(|l| l.layer().clone()).into_iter().collect(),
        cwd: plan.cwd.clone(),
        network: sandbox.network,
        not_shown,
    })
    .with_context(|| format!("{}: cannot prepare the sandbox", plan.label))
}

fn pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")
}

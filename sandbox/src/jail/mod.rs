//! The hermetic sandbox (docs/architecture.md, "Trace and jail"): a task that sees only the system directories, the
//! workspace (read-only) and its declared outputs (writable), in its own user, mount, pid,
//! ipc, uts and (unless asked otherwise) network namespaces, with no capabilities, landlock
//! rules mirroring the mounts and a seccomp deny-list.
//!
//! - [`plan`]: what the sandbox looks like, as data ([`Plan`]).
//! - [`deny`]: the seccomp deny-list, as a BPF program.
//! - [`landlock`]: the rights for the kernel's Landlock ABI.
//! - [`network`]: the network namespace, made on a thread while the task is prepared.
//! - [`etc_tree`]: the parts of `/etc` every sandbox shows, mounted once per process on a
//!   detached tree each sandbox copies.
//! - [`system`]: what the system paths every sandbox shows are on this host, kept per
//!   process.
//! - [`overlay`]: a layer's overlay mount, made on a thread while the sandbox starts.
//! - [`layer`]: the copy-on-write layer of a task without declared outputs, and applying
//!   its changes to the host.
//! - [`mount_table`]: the mount points of vt's namespace, for a package a layer cannot
//!   show whole.
//! - `apply`: the syscalls between fork and exec.
//!
//! A sandboxed task is always traced too: [`crate::trace::spawn_jailed`] composes the two.

pub(crate) mod apply;
pub mod deny;
pub mod etc_tree;
pub mod landlock;
pub mod layer;
pub mod mount_table;
pub mod network;
pub mod overlay;
pub mod plan;
pub mod system;

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use layer::{Applied, LayerDirs};
pub use mount_table::mount_point_below;
pub use plan::{HostPath, Layer, Mount, Plan, PlanError, Spec};

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("cannot plan the sandbox")]
    Plan(#[from] PlanError),
    #[error("cannot prepare the sandbox: {0}")]
    Prepare(String),
    #[error("the sandbox could not be set up: {step} failed: {cause}\n  hint: {hint}")]
    Setup {
        step: String,
        cause: std::io::Error,
        hint: String,
        /// The step made or mounted a copy-on-write layer and the host refused it: nothing
        /// ran, and the task can run with its directory bound writable instead.
        layer_refused: bool,
    },
}

impl JailError {
    /// Why the host refused a copy-on-write layer, if that is what failed (see
    /// [`layer::refused`]).
    pub fn layer_refusal(&self) -> Option<String> {
        match self {
            JailError::Setup {
                step,
                cause,
                layer_refused: true,
                ..
            } => Some(format!("{step} failed: {cause}")),
            _ => None,
        }
    }
}

/// A sandbox ready to be installed into commands.
#[derive(Debug, Clone)]
pub struct Jail {
    spec: Spec,
    rights: landlock::Rights,
    /// What checking the spec found each path to be on the host: [`Jail::install`] plans
    /// the same paths again (with vt's own directories added) a moment later, and looking
    /// each of the ~40 system paths up twice cost every sandboxed task ~0.1 ms.
    host: HashMap<PathBuf, HostPath>,
    /// The layer's overlay, being made while the sandbox starts ([`overlay`]).
    overlay: Option<std::sync::Arc<overlay::Ahead>>,
}

impl Jail {
    /// Checks `spec`. Its writable directories are the mount points of the writable binds,
    /// so the caller creates them first (vt does before the cache lookup: `run::task`).
    pub fn new(spec: Spec) -> Result<Jail, JailError> {
        let host = std::cell::RefCell::new(HashMap::new());
        let fixed = crate::timings::time("sandbox: system paths", system::fixed_paths);
        etc_tree::make_ahead();
        let plan = Plan::new(&spec, |path| {
            let found = fixed
                .get(path)
                .cloned()
                .unwrap_or_else(|| HostPath::probe(path));
            host.borrow_mut().insert(path.to_path_buf(), found.clone());
            found
        })?;
        if !spec.network {
            network::make_ahead();
        }
        // The plan's own layer (its paths normalized), for `prepare` to find.
        let mut layers = plan.mounts.iter().filter_map(|m| match m {
            Mount::Overlay(layer) => Some(layer.clone()),
            _ => None,
        });
        let overlay = match (layers.next(), layers.next()) {
            (Some(layer), None) => overlay::Ahead::start(layer).map(std::sync::Arc::new),
            _ => None,
        };
        Ok(Jail {
            overlay,
            spec,
            rights: landlock::Rights::for_abi(landlock::kernel_abi()),
            host: host.into_inner(),
        })
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// One line for humans: what isolates the task.
    pub fn describe(&self) -> String {
        format!(
            "user, mount, pid, ipc, uts{} namespaces; {}; seccomp deny-list; no capabilities",
            if self.spec.network { "" } else { ", network" },
            self.rights.describe()
        )
    }

    /// Registers the sandbox's pre-exec on `command`, with vt's own directories (`extra`:
    /// path and whether the task writes it) visible too. Call before any other `pre_exec`
    /// that must run inside the sandbox (the tracer's).
    pub fn install(
        &self,
        command: &mut Command,
        extra: &[(&Path, bool)],
    ) -> Result<Installed, JailError> {
        let (installed, mut prepared) = self.prepare(extra)?;
        // SAFETY: `enter` only makes async-signal-safe syscalls on memory prepared above.
        unsafe { command.pre_exec(move || prepared.enter()) };
        Ok(installed)
    }

    /// The plan with vt's own directories (`extra`) added, and what the sandbox's
    /// processes need of it: for [`Jail::install`], and for a sandbox started without a
    /// fork (`apply::Prepared::start`, [`Installed::adopt`]).
    pub(crate) fn prepare(
        &self,
        extra: &[(&Path, bool)],
    ) -> Result<(Installed, apply::Prepared), JailError> {
        let mut spec = self.spec.clone();
        for (path, writable) in extra {
            let list = if *writable {
                &mut spec.writable
            } else {
                &mut spec.read_only
            };
            list.push(path.to_path_buf());
        }
        let plan = Plan::new(&spec, |path| match self.host.get(path) {
            Some(found) => found.clone(),
            None => HostPath::probe(path),
        })?;
        let ruleset = landlock::create_ruleset(&self.rights)
            .map_err(|e| JailError::Prepare(format!("cannot create the landlock ruleset: {e}")))?;
        let capabilities = supported_capabilities().to_vec();
        let (report_read, report_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| JailError::Prepare(format!("cannot create a pipe: {e}")))?;
        let network = if spec.network {
            None
        } else {
            crate::timings::time("spawn: network namespace", network::take)
        };
        // Kept until the task's end, to be given back then (`Installed::release_network`).
        let network_held = network.as_ref().and_then(|fd| fd.try_clone().ok());
        // After the task's change guard opened (see `etc_tree`): the host as it is now.
        let etc_tree = etc_tree::in_use()
            .then(|| plan::etc_part(&plan.mounts))
            .flatten()
            .and_then(|part| {
                crate::timings::time("spawn: /etc tree", || {
                    etc_tree::take(&system::fixed_paths(), &part)
                })
            });
        let prepared = apply::Prepared::new(
            &plan,
            |path| match self.host.get(path) {
                Some(HostPath::File) => true,
                Some(HostPath::Dir) => false,
                _ => !path.is_dir(),
            },
            apply::MadeAhead {
                network,
                etc_tree,
                overlay: self.overlay.as_ref().and_then(|ahead| ahead.take()),
            },
            (&self.rights, ruleset),
            capabilities,
            deny::deny_program().to_vec(),
            report_write,
        );
        Ok((
            Installed {
                plan,
                report: report_read,
                mounts: None,
                network: network_held,
                init: None,
                init_reaped: false,
            },
            prepared,
        ))
    }
}

/// The capabilities this kernel knows (what a sandboxed task's process drops), asked once
/// per process: the kernel's list does not change, and asking is a `prctl` per capability
/// (~40 per sandboxed task).
fn supported_capabilities() -> &'static [u32] {
    static SUPPORTED: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    SUPPORTED.get_or_init(|| {
        caps::runtime::thread_all_supported()
            .iter()
            .map(|c| u32::from(c.index()))
            .collect()
    })
}

/// What isolates a sandboxed task on this host (the landlock ABI is the kernel's).
pub fn describe_host() -> String {
    let rights = landlock::Rights::for_abi(landlock::kernel_abi());
    format!(
        "user, mount, pid, ipc, uts and (unless --network) network namespaces; {}; seccomp \
         deny-list; no capabilities",
        rights.describe()
    )
}

/// Checks once that this host can build a sandbox, by running `/bin/true` in one. Failing
/// here names the step and how to allow it, before any task runs.
pub fn probe() -> Result<(), JailError> {
    static RESULT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let result = RESULT.get_or_init(|| {
        run_true(Spec {
            cwd: "/usr".into(),
            ..Spec::default()
        })
    });
    result.clone().map_err(JailError::Prepare)
}

/// Runs `/bin/true` in a sandbox of `spec`; the error names the failing step and what the
/// user can do about it.
fn run_true(spec: Spec) -> Result<(), String> {
    let jail = Jail::new(spec).map_err(|e| e.to_string())?;
    let mut command = Command::new("/bin/true");
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let installed = jail.install(&mut command, &[]).map_err(|e| e.to_string())?;
    let failed = |why: String| match installed.setup_error() {
        Some(e) => e.to_string(),
        None => why,
    };
    let (_child, status) = crate::reaper::spawn(&mut command)
        .map_err(|e| failed(format!("cannot start a sandboxed /bin/true: {e}")))?;
    match status.recv() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(failed(format!("a sandboxed /bin/true failed ({status})"))),
        Err(_) => Err("the reaper stopped".into()),
    }
}

/// A sandbox installed into a command that has been (or is being) spawned.
pub struct Installed {
    plan: Plan,
    report: OwnedFd,
    /// The sandbox's mount namespace, held from its start until the task has ended
    /// ([`Installed::hold_mounts`]).
    mounts: Option<OwnedFd>,
    /// The network namespace made ahead that the sandbox entered, if any, until
    /// [`Installed::release_network`] gives it back.
    network: Option<OwnedFd>,
    /// A sandbox started without a fork (`Installed::adopt`): its init's stack, kept until
    /// the init is reaped, and the pipe it writes the task's status to.
    init: Option<(apply::Stack, OwnedFd)>,
    /// Whether that init has been reaped ([`Installed::relayed_status`]).
    init_reaped: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        // An init not known to be gone may still run on its stack: unmapped, the range
        // could be mapped again for vt's own data, which the init would then write. Left
        // mapped instead (a path that drops a started sandbox without waiting for it).
        if !self.init_reaped
            && let Some((stack, _)) = self.init.take()
        {
            std::mem::forget(stack);
        }
    }
}

impl Installed {
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Holds the sandbox's mount namespace, taken from its outer process `pid` (which made
    /// it), so that the namespace outlives the sandbox's processes.
    ///
    /// Why: the last process of a mount namespace unmounts its whole tree as it exits and
    /// waits for an RCU grace period before its parent hears of the exit. That process is
    /// the sandbox's outer one, whose exit is the task's end for vt: 0.8–1.4 ms of every
    /// sandboxed task on this project's machine. Held here, the namespace goes when
    /// [`Installed::release_mounts`] hands it to the [`crate::janitor`], where nobody
    /// waits. If the sandbox is already gone (a task that ended at once), there is nothing
    /// to hold and its end pays as before.
    pub fn hold_mounts(&mut self, pid: u32) {
        self.mounts = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
            .ok()
            .map(OwnedFd::from);
    }

    /// Lets the held namespace go, where nobody waits for its unmounting. Call it once the
    /// task has ended. The copy-on-write layer's overlay is still mounted in it for a
    /// moment while vt applies and removes the layer's directories: no process is left
    /// that could see the overlay, and changing an overlay's directories from outside it
    /// only leaves what the overlay shows undefined (the kernel's
    /// `Documentation/filesystems/overlayfs.rst`), never the host's files.
    pub fn release_mounts(&mut self) {
        if let Some(mounts) = self.mounts.take() {
            crate::janitor::release(mounts);
        }
    }

    /// Gives the sandbox's network namespace back for the next sandbox of this process
    /// ([`network::give_back`], which checks that nothing of the task is left in it). Call
    /// it once every process of the sandbox is gone; dropped instead, the namespace goes.
    pub fn release_network(&mut self) {
        if let Some(namespace) = self.network.take() {
            network::give_back(namespace);
        }
    }

    /// Keeps what a sandbox started without a fork needs until its init is reaped.
    pub(crate) fn adopt(&mut self, started: apply::Started) -> u32 {
        self.init = Some((started.init_stack, started.status));
        started.pid
    }

    /// The task's wait status as the sandbox's init relayed it (a sandbox started with
    /// `Installed::adopt`); `None` if it relayed none (it was killed) or the sandbox was
    /// forked. Call it once the init has been reaped: its stack may then go.
    pub fn relayed_status(&mut self) -> Option<std::process::ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        self.init_reaped = true;
        let (_, status) = self.init.as_ref()?;
        let mut raw = [0u8; 4];
        // SAFETY: reads into a stack buffer from our own non-blocking pipe.
        let n = unsafe { libc::read(status.as_raw_fd(), raw.as_mut_ptr().cast(), 4) };
        (n == 4).then(|| std::process::ExitStatus::from_raw(i32::from_ne_bytes(raw)))
    }

    /// Why spawning failed, if the sandbox's setup is the reason.
    pub fn setup_error(&self) -> Option<JailError> {
        let (step, errno) = apply::read_report(&self.report)?;
        let source = std::io::Error::from_raw_os_error(errno);
        Some(JailError::Setup {
            step: step.describe(&self.plan),
            hint: hint(step, errno),
            cause: source,
            layer_refused: step.is_layer(&self.plan) && errno != libc::ENOENT,
        })
    }
}

fn hint(step: apply::Step, errno: i32) -> String {
    use apply::Step;
    match (step, errno) {
        (Step::Unshare, libc::EPERM | libc::ENOSPC | libc::EINVAL | libc::EACCES) => {
            "this host does not let vt create a user namespace. Inside Docker, the default \
             seccomp profile refuses it: run the container with \
             `--security-opt seccomp=docker/seccomp.json` (see docker/README.md) or use \
             rootless podman; elsewhere check `sysctl kernel.unprivileged_userns_clone` and \
             `user.max_user_namespaces`. Without --sandbox, tracing and caching still work."
                .into()
        }
        (Step::Attach(_), libc::EPERM) => {
            "the kernel refuses a fresh /proc while parts of the host's /proc are covered \
             (Docker masks /proc/kcore and others): run the container with \
             `--security-opt systempaths=unconfined` as well (see docker/README.md)"
                .into()
        }
        (Step::Capture(_), libc::ENOENT) => {
            "a directory the sandbox shows disappeared while it was being set up".into()
        }
        (Step::Capture(_) | Step::Staging | Step::Pivot, libc::ENOSYS) => {
            "the kernel is too old for the sandbox (it needs open_tree/mount_setattr, Linux \
             5.12 or later)"
                .into()
        }
        _ => "run without --sandbox to check that the task itself works, and report this \
              with `vt --version` and `uname -r`"
            .into(),
    }
}

/// The paths a task's output globs make writable: each glob's directory part (the
/// components before the first one with a wildcard), under `package_dir`. Negated globs
/// (`!…`) only narrow what is an output, so they add nothing.
pub fn output_dirs(package_dir: &Path, globs: &[String]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for glob in globs.iter().filter(|g| !g.starts_with('!')) {
        let mut dir = package_dir.to_path_buf();
        let components: Vec<&str> = glob.split('/').filter(|c| !c.is_empty()).collect();
        let literal = components
            .iter()
            .take_while(|c| !c.contains(['*', '?', '[', '{']))
            .count();
        // A glob without a wildcard names a file: its directory is what must be writable
        // (the file is created by rename or replaced).
        let take = if literal == components.len() {
            literal.saturating_sub(1)
        } else {
            literal
        };
        for component in &components[..take] {
            dir.push(component);
        }
        if !dirs.iter().any(|d| dir.starts_with(d)) {
            dirs.retain(|d| !d.starts_with(&dir));
            dirs.push(dir);
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_globs_become_their_directories() {
        let pkg = Path::new("/ws/app");
        let globs = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            output_dirs(pkg, &globs(&["dist/**", "!dist/cache/**", "build/*.js"])),
            vec![
                PathBuf::from("/ws/app/dist"),
                PathBuf::from("/ws/app/build")
            ]
        );
        assert_eq!(
            output_dirs(pkg, &globs(&["out/bundle.js", "out/deep/**"])),
            vec![PathBuf::from("/ws/app/out")]
        );
        // `*.tsbuildinfo` at the package root: the package directory is writable.
        assert_eq!(
            output_dirs(pkg, &globs(&["*.tsbuildinfo"])),
            vec![PathBuf::from("/ws/app")]
        );
        assert!(output_dirs(pkg, &[]).is_empty());
    }
}

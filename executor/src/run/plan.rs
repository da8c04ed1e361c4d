//! Plan: for one task, everything decided before it runs — its command line, cwd,
//! environment, and the parts of its pre-run key (docs/architecture.md, "Plan").

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::cache::PreRun;
use crate::cache::key::KeyHasher;
use crate::config::Workspace;
use crate::config::tasks::PathRules;
use crate::graph::Node;

/// Passed to every task but not part of its key: where things are, not what they are.
/// What a task finds through `PATH`, and through a variable that names a path, is
/// observed against the task's own (`ObsKind::Which`, `Base::Var` in
/// `crate::cache::path_set`).
const PASS_THROUGH: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TMPDIR",
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    "FORCE_COLOR",
];
/// Passed and part of the key by default: they change what programs print.
const TRACKED_BY_DEFAULT: &[&str] = &["LANG", "LANGUAGE", "LC_*", "TZ"];

#[derive(Debug, Clone)]
pub struct Plan {
    pub label: String,
    pub command: String,
    pub cwd: PathBuf,
    /// The task's whole environment (vt's minus what is not passed).
    pub env: BTreeMap<String, String>,
    pub pre: PreRun,
    pub cacheable: bool,
    /// Why not, if not cacheable.
    pub uncached_because: &'static str,
    /// Whether traced observations are inputs (`input` omitted or with `{"auto": true}`);
    /// otherwise only the declared files, the command and env decide a hit.
    pub input_auto: bool,
    /// The files the task's `input` globs name; their contents are in `pre`.
    pub declared: Option<DeclaredInputs>,
    pub input_exclude: GlobSet,
    pub output_exclude: GlobSet,
    /// Output globs (relative to the workspace) archived in addition to traced writes.
    pub output_include: Vec<String>,
    /// The sandbox to run in, if the task asks for one.
    pub sandbox: Option<SandboxPlan>,
    /// Killed (its process group) after this long. Only a worker sets it, from the
    /// action's timeout.
    pub timeout: Option<std::time::Duration>,
    /// The task gets vt's stdin (and, on a terminal, the foreground): a persistent task
    /// run alone, such as a dev server that reads keys. Everything else gets /dev/null.
    pub stdin: bool,
    /// The workspace root the task's paths are relative to.
    pub root: PathBuf,
    /// Under `--watch`: the run keeps what it saw, cached or not (see `run::seen`).
    pub watched: bool,
    /// When the task's dependencies ended in this vt (fine clock, ns; 0: none did): the
    /// concurrent-change guard's window opens after it (`cache::guard`).
    pub inputs_changed_at: i64,
}

impl Plan {
    /// Whether an observation of the run is one of its inputs: with `input` naming files
    /// only (no `{"auto": true}`), what the task read does not count; tracked env does.
    pub fn counts(&self, observation: &crate::cache::path_set::Observation) -> bool {
        self.input_auto || observation.kind == crate::cache::path_set::ObsKind::Env
    }

    /// What the cache observes this task's environment observations against: vt's own
    /// environment (what tools' `getEnv` is answered from), with the task's `PATH` and its
    /// variables that name paths added ([`Plan::add_task_locations`]).
    pub fn observation_env(&self) -> BTreeMap<String, String> {
        let mut env = crate::ipc::process_env();
        self.add_task_locations(&mut env);
        env
    }

    /// Adds to `env` the task's `PATH` ([`crate::cache::path_set::TASK_PATH`], for the
    /// programs it found there) and the variables whose values are paths
    /// ([`crate::cache::path_set::task_var`], for what it saw there), as the task got them.
    pub fn add_task_locations(&self, env: &mut BTreeMap<String, String>) {
        use crate::cache::path_set::{TASK_PATH, task_var};
        if let Some(path) = self.env.get("PATH") {
            env.insert(TASK_PATH.into(), path.clone());
        }
        for (name, value) in self.located_by() {
            env.insert(task_var(name), value.to_string_lossy().into_owned());
        }
    }

    /// The environment the task gets: [`Plan::env`], and in a sandbox its scratch as `HOME`
    /// and `TMPDIR` ([`SANDBOX_SCRATCH`]).
    pub fn task_env(&self) -> BTreeMap<&str, &str> {
        let mut env: BTreeMap<&str, &str> = self
            .env
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        if self.sandbox.is_some() {
            env.insert("HOME", SANDBOX_SCRATCH);
            env.insert("TMPDIR", SANDBOX_SCRATCH);
        }
        env
    }

    /// The task's variables whose values are absolute paths (`HOME`, `TMPDIR`, `SHELL`, a
    /// variable passed with `untrackedEnv`), as the task got them ([`Plan::task_env`]).
    /// `PATH` is a list, observed its own way (`ObsKind::Which`).
    pub fn located_by(&self) -> Vec<(&str, &Path)> {
        self.task_env()
            .into_iter()
            .filter(|&(name, _)| name != "PATH")
            .map(|(name, value)| (name, Path::new(value)))
            .filter(|(_, value)| value.is_absolute())
            .collect()
    }
}

/// A sandboxed task's `HOME` and `TMPDIR`. The host's home and temp directories are not in
/// the sandbox: tools that keep a cache under `$HOME` or write to `$TMPDIR` get the
/// sandbox's scratch instead (thrown away with it), rather than failing on a path that
/// does not exist.
pub const SANDBOX_SCRATCH: &str = "/tmp";

/// What a sandboxed task sees and may change.
#[derive(Debug, Clone)]
pub struct SandboxPlan {
    pub workspace: PathBuf,
    /// Directories outside the workspace that its `node_modules` link to (a shared store,
    /// `npm link`): read-only, or the task's dependencies would vanish in the sandbox.
    pub linked: Vec<PathBuf>,
    /// The directories of the task's output globs: the only writable part of the workspace.
    pub writable: Vec<PathBuf>,
    /// No outputs declared: this directory (the package's) is writable copy-on-write, and
    /// what the task changed in it is applied after it succeeded.
    pub layered: Option<PathBuf>,
    pub network: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{label}: {message}")]
pub struct PlanError {
    label: String,
    message: String,
}

fn globs(label: &str, package_rel: &Path, patterns: &[String]) -> Result<GlobSet, PlanError> {
    let anchored = patterns
        .iter()
        .map(|p| anchor(label, package_rel, p))
        .collect::<Result<Vec<_>, _>>()?;
    glob_set(label, &anchored)
}

/// `anchored`: workspace-relative patterns (see [`anchor`]).
fn glob_set(label: &str, anchored: &[String]) -> Result<GlobSet, PlanError> {
    let mut builder = GlobSetBuilder::new();
    for pattern in anchored {
        let glob = Glob::new(pattern).map_err(|e| PlanError {
            label: label.to_owned(),
            message: format!("bad glob {pattern:?}: {e}"),
        })?;
        builder.add(glob);
    }
    builder.build().map_err(|e| PlanError {
        label: label.to_owned(),
        message: e.to_string(),
    })
}

/// A pattern relative to the package, made relative to the workspace root (paths are
/// matched that way): `../shared/**` in `packages/app` is `packages/shared/**`.
fn anchor(label: &str, package_rel: &Path, pattern: &str) -> Result<String, PlanError> {
    let mut parts: Vec<String> = package_rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(PlanError {
                        label: label.to_owned(),
                        message: format!(
                            "glob {pattern:?} reaches outside the workspace\n  hint: inputs and outputs are paths in the workspace"
                        ),
                    });
                }
            }
            part => parts.push(part.to_owned()),
        }
    }
    Ok(parts.join("/"))
}

/// The directories to walk for workspace-relative `patterns`: each one's literal prefix.
fn walk_bases(root: &Path, patterns: &[String]) -> Vec<PathBuf> {
    let mut bases: Vec<PathBuf> = patterns
        .iter()
        .map(|pattern| {
            let literal: Vec<&str> = pattern
                .split('/')
                .take_while(|part| !part.contains(['*', '?', '[', '{', '\\']))
                .collect();
            // A pattern without wildcards names one file: walk its directory.
            let literal = if literal.len() == pattern.split('/').count() {
                &literal[..literal.len().saturating_sub(1)]
            } else {
                &literal[..]
            };
            root.join(literal.join("/"))
        })
        .collect();
    bases.sort();
    bases.dedup();
    // A base inside another is walked with it.
    let all = bases.clone();
    bases.retain(|b| !all.iter().any(|other| other != b && b.starts_with(other)));
    bases
}

/// The files a task's `input` globs declare (`!globs` removed), found before it runs and
/// again when it is stored.
#[derive(Debug, Clone)]
pub struct DeclaredInputs {
    include: GlobSet,
    exclude: GlobSet,
    bases: Vec<PathBuf>,
    /// What was found before the run (its hashes are in the pre-run key).
    pub found: Vec<DeclaredFile>,
}

/// One declared file: its workspace-relative path, content hash and ctime.
#[derive(Debug, Clone)]
pub struct DeclaredFile {
    pub rel: PathBuf,
    pub hash: String,
    pub ctime: Option<(i64, i64)>,
}

impl DeclaredInputs {
    /// The declared files as they are now.
    pub fn files(&self, root: &Path) -> Vec<DeclaredFile> {
        let mut files = Vec::new();
        for base in &self.bases {
            for file in files_matching(root, base, &self.include) {
                let rel = file.strip_prefix(root).unwrap_or(&file).to_path_buf();
                if self.exclude.is_match(&rel) {
                    continue;
                }
                let ctime = std::fs::symlink_metadata(&file).ok().map(|m| {
                    use std::os::unix::fs::MetadataExt;
                    (m.ctime(), m.ctime_nsec())
                });
                let hash = match std::fs::read(&file) {
                    Ok(bytes) => KeyHasher::new("input").field(&bytes).finish().hex(),
                    Err(e) => format!("unreadable: {e}"),
                };
                files.push(DeclaredFile { rel, hash, ctime });
            }
        }
        files.sort_by(|a, b| a.rel.cmp(&b.rel));
        files.dedup_by(|a, b| a.rel == b.rel);
        files
    }
}

fn matches_any(patterns: &[&str], name: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => *p == name,
    })
}

/// Plans `node`. `dep_keys` are the finished dependencies' keys, `args` the extra
/// arguments after `--`.
pub fn plan(
    workspace: &Workspace,
    node: &Node,
    dep_keys: &[(String, String)],
    args: &[OsString],
) -> Result<Plan, PlanError> {
    let package = &workspace.packages[node.id.package];
    let config = &node.config;
    let error = |message: String| PlanError {
        label: node.label.clone(),
        message,
    };
    let cwd = match &config.cwd {
        Some(dir) => package.dir.join(dir),
        None => package.dir.clone(),
    };
    if !cwd.is_dir() {
        return Err(error(format!("cwd {} is not a directory", cwd.display())));
    }
    let mut command = node.command.clone();
    // Extra arguments go to the requested task's (last step's) command only.
    let args = if node.extra_args { args } else { &[] };
    for arg in args {
        command.push(' ');
        command.push_str(&quote(&arg.to_string_lossy()));
    }

    let tracked: Vec<&str> = TRACKED_BY_DEFAULT
        .iter()
        .copied()
        .chain(config.env.iter().map(String::as_str))
        .collect();
    let untracked: Vec<&str> = PASS_THROUGH
        .iter()
        .copied()
        .chain(config.untracked_env.iter().map(String::as_str))
        .collect();
    let loose = config.env_mode == Some(crate::config::tasks::EnvMode::Loose);
    let mut env = BTreeMap::new();
    let mut pre = PreRun::default();
    pre.add("vt", env!("CARGO_PKG_VERSION"));
    pre.add(
        "platform",
        format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
    );
    pre.add("package", package.rel.to_string_lossy());
    pre.add("task", node.id.task.clone());
    pre.add("command", command.clone());
    if loose {
        pre.add("envMode", "loose");
    }
    pre.add(
        "cwd",
        cwd.strip_prefix(&workspace.root)
            .unwrap_or(&cwd)
            .to_string_lossy(),
    );
    let mut tracked_values = BTreeMap::new();
    for (name, value) in std::env::vars_os() {
        let (Ok(name), Ok(value)) = (name.into_string(), value.into_string()) else {
            continue; // non-UTF-8 names or values are not passed (they cannot be declared)
        };
        if matches_any(&tracked, &name) {
            tracked_values.insert(name.clone(), value.clone());
            env.insert(name, value);
        } else if loose || matches_any(&untracked, &name) {
            env.insert(name, value);
        }
    }
    // Declared names that are unset are part of the key too ("unset" → "set" is a change).
    for name in config.env.iter().filter(|n| !n.ends_with('*')) {
        tracked_values
            .entry(name.clone())
            .or_insert_with(|| "(unset)".into());
    }
    for (name, value) in &tracked_values {
        pre.add(format!("env {name}"), value.clone());
    }
    // npm puts the package's and the workspace's node_modules/.bin on PATH.
    let mut path = vec![
        package.dir.join("node_modules/.bin"),
        workspace.root.join("node_modules/.bin"),
    ];
    if let Some(existing) = env.get("PATH") {
        path.extend(std::env::split_paths(existing));
    }
    if let Ok(joined) = std::env::join_paths(path) {
        env.insert("PATH".into(), joined.to_string_lossy().into_owned());
    }

    let input = PathRules::from_specs(config.input.as_deref());
    let output = PathRules::from_specs(config.output.as_deref());
    let input_exclude = globs(&node.label, &package.rel, &input.exclude)?;
    // Declared input files: their contents join the pre-run key.
    let declared = if input.include.is_empty() {
        None
    } else {
        let anchored = input
            .include
            .iter()
            .map(|p| anchor(&node.label, &package.rel, p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut declared = DeclaredInputs {
            include: glob_set(&node.label, &anchored)?,
            exclude: input_exclude.clone(),
            bases: walk_bases(&workspace.root, &anchored),
            found: Vec::new(),
        };
        declared.found = declared.files(&workspace.root);
        for file in &declared.found {
            pre.add(format!("input {}", file.rel.display()), file.hash.clone());
        }
        Some(declared)
    };
    if !input.auto {
        // What the task reads no longer counts: a different rule, a different key.
        pre.add("input", "declared only");
    }
    for (label, key) in dep_keys {
        pre.add(format!("dependency {label}"), key.clone());
    }
    let sandbox = (config.sandbox == Some(true)).then(|| SandboxPlan {
        workspace: workspace.root.clone(),
        linked: sandbox::timings::time("plan: node_modules links", || {
            super::linked::linked_outside(&workspace.root, &[&workspace.root, &package.dir])
        }),
        writable: sandbox::jail::output_dirs(&package.dir, &output.include),
        // vt traces writes, so it needs no output globs to know the outputs; without them
        // the whole package is writable through a layer (writes elsewhere still fail).
        layered: output.include.is_empty().then(|| package.dir.clone()),
        network: config.network == Some(true),
    });
    if let Some(sandbox) = &sandbox {
        // What a task could reach is part of what it did.
        let reach = if sandbox.network {
            "network"
        } else {
            "isolated"
        };
        if sandbox.layered.is_some() {
            pre.add("sandbox", format!("{reach}, package copy-on-write"));
        } else {
            pre.add("sandbox", reach);
        }
    }
    let output_include = output
        .include
        .iter()
        .map(|p| package.rel.join(p).to_string_lossy().into_owned())
        .collect();
    Ok(Plan {
        label: node.label.clone(),
        command,
        cwd,
        env,
        pre,
        cacheable: node.cache,
        uncached_because: node.uncached_because,
        input_auto: input.auto,
        declared,
        input_exclude,
        output_exclude: globs(&node.label, &package.rel, &output.exclude)?,
        output_include,
        sandbox,
        timeout: None,
        stdin: false,
        root: workspace.root.clone(),
        watched: false,
        inputs_changed_at: 0,
    })
}

/// Files below `dir` (skipping node_modules and dot-directories) whose workspace-relative
/// path matches `set`.
pub fn files_matching(root: &Path, dir: &Path, set: &GlobSet) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if name != "node_modules" && !name.to_string_lossy().starts_with('.') {
                    stack.push(path);
                }
            } else if path.strip_prefix(root).is_ok_and(|rel| set.is_match(rel)) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

pub fn quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_for_sh() {
        assert_eq!(quote("--mode=prod"), "--mode=prod");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn globs_are_anchored_at_the_package_and_may_climb_to_siblings() {
        let rel = Path::new("packages/app");
        assert_eq!(
            anchor("t", rel, "src/**").expect("ok"),
            "packages/app/src/**"
        );
        assert_eq!(anchor("t", rel, "./src/").expect("ok"), "packages/app/src");
        assert_eq!(
            anchor("t", rel, "../shared/**").expect("ok"),
            "packages/shared/**"
        );
        assert!(anchor("t", rel, "../../../x").is_err());
        let root = Path::new("/w");
        assert_eq!(
            walk_bases(
                root,
                &[
                    "packages/app/src/**".into(),
                    "packages/app/src/a/*.ts".into(),
                    "packages/app/package.json".into()
                ]
            ),
            [PathBuf::from("/w/packages/app")]
        );
    }

    #[test]
    fn env_patterns() {
        assert!(matches_any(&["VITE_*"], "VITE_X"));
        assert!(!matches_any(&["VITE_*"], "VIT"));
        assert!(matches_any(&["CI"], "CI"));
        assert!(!matches_any(&["CI"], "CIX"));
    }
}

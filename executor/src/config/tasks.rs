//! `vt.json` (or `vite-task.json`, same schema): per-package task configuration, JSONC.
//!
//! ```jsonc
//! { "tasks": { "build": { "command": "vite build", "dependsOn": ["^build"],
//!   "env": ["NODE_ENV", "VITE_*"], "untrackedEnv": ["CI"],
//!   "input": [{ "auto": true }, "!docs/**"], "output": [{ "auto": true }] } } }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, parse_jsonc, read};

pub const FILE_NAMES: [&str; 2] = ["vt.json", "vite-task.json"];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TaskFile {
    #[serde(default, rename = "$schema")]
    _schema: Option<String>,
    #[serde(default)]
    tasks: BTreeMap<String, TaskConfig>,
    /// Workspace-wide caching (root file only): `true`, `false` or `{scripts, tasks}`.
    cache: Option<GlobalCache>,
    /// Run `preX` / `postX` scripts around script `X` (root file only).
    enable_pre_post_scripts: Option<bool>,
    /// How big the cache may grow (root file only): `"5GiB"`, bytes, `0` for no limit.
    cache_max_size: Option<SizeSetting>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum SizeSetting {
    Bytes(u64),
    Text(String),
}

/// The root file's `cache` key, as vite-task reads it.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum GlobalCache {
    Bool(bool),
    Detailed(DetailedCache),
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DetailedCache {
    /// Cache package.json scripts that have no entry in `tasks`.
    pub scripts: Option<bool>,
    /// `false` turns caching off for every task, whatever its own `cache` says.
    pub tasks: Option<bool>,
}

/// What the root file says for the whole workspace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RootSettings {
    pub cache: Option<GlobalCache>,
    pub enable_pre_post_scripts: Option<bool>,
    /// `cacheMaxSize` in bytes (0: no limit).
    pub cache_max_size: Option<u64>,
}

/// One package's task file, read.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub path: Option<PathBuf>,
    pub tasks: BTreeMap<String, TaskConfig>,
    pub root_settings: RootSettings,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskConfig {
    /// Shell command; defaults to the package.json script of the same name.
    pub command: Option<String>,
    /// Working directory relative to the package.
    pub cwd: Option<String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// `false` turns the cache off for this task.
    pub cache: Option<bool>,
    /// Environment variables (names or globs) passed to the task and part of its key.
    #[serde(default)]
    pub env: Vec<String>,
    /// Passed to the task but not part of its key.
    #[serde(default)]
    pub untracked_env: Vec<String>,
    /// `strict` (the default): the task gets only the base set and declared variables; tools
    /// read others through `getEnv`. `loose`: the task gets vt's whole environment, and
    /// undeclared variables are *not* part of the key (they can change output unnoticed).
    pub env_mode: Option<EnvMode>,
    /// Inputs beyond (or instead of) what tracing sees; `!glob` excludes.
    pub input: Option<Vec<PathSpec>>,
    /// Outputs beyond (or instead of) what tracing sees; `!glob` excludes.
    pub output: Option<Vec<PathSpec>>,
    /// Run in the hermetic sandbox: the workspace read-only except the directories of the
    /// `output` globs, fresh namespaces, no network (README, "The sandbox").
    pub sandbox: Option<bool>,
    /// With `sandbox`: keep the host's network instead of loopback only.
    pub network: Option<bool>,
    /// A task that runs until stopped (a dev server, a watcher): never cached, started once
    /// what it depends on finished, beside everything else and outside the `-j` limit;
    /// nothing may depend on it.
    pub persistent: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EnvMode {
    #[default]
    Strict,
    Loose,
}

/// One entry of `input` / `output`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PathSpec {
    /// `{ "auto": true }`: what tracing observes.
    Auto {
        auto: bool,
    },
    Glob(String),
}

/// What a package's `input`/`output` list means (vite-task's rules):
/// - omitted: what tracing observes (`auto`), nothing else;
/// - a list: only what it names. `{"auto": true}` brings tracing back; globs add the files
///   they match; `!glob` removes files from both. So `[]`, a list of globs and
///   `[{"auto": false}]` turn traced inputs off: only declared files (and the command, env)
///   decide a hit.
/// - `dir/` means every file under `dir` (`dir/**`); a bare `dir` matches a file of that
///   name only, as a glob does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PathRules {
    /// Whether traced observations count.
    pub auto: bool,
    /// Globs (relative to the package) that add files.
    pub include: Vec<String>,
    /// Globs (relative to the package) that exclude observations and declared files.
    pub exclude: Vec<String>,
}

impl PathRules {
    pub fn from_specs(specs: Option<&[PathSpec]>) -> PathRules {
        let Some(specs) = specs else {
            return PathRules {
                auto: true,
                ..PathRules::default()
            };
        };
        let mut rules = PathRules::default();
        for spec in specs {
            match spec {
                PathSpec::Auto { auto } => rules.auto |= *auto,
                PathSpec::Glob(glob) => match glob.strip_prefix('!') {
                    Some(negated) => rules.exclude.push(directory_glob(negated)),
                    None => rules.include.push(directory_glob(glob)),
                },
            }
        }
        rules
    }
}

/// `src/` is shorthand for every file under `src`.
fn directory_glob(pattern: &str) -> String {
    if pattern.ends_with('/') {
        format!("{pattern}**")
    } else {
        pattern.to_owned()
    }
}

/// Loads the package's task file, if any.
pub fn load(dir: &Path) -> Result<Loaded, ConfigError> {
    let present: Vec<PathBuf> = FILE_NAMES
        .iter()
        .map(|name| dir.join(name))
        .filter(|path| path.is_file())
        .collect();
    match present.as_slice() {
        [] => Ok(Loaded::default()),
        [path] => {
            let file: TaskFile = parse_jsonc(path, &read(path)?)?;
            Ok(Loaded {
                path: Some(path.clone()),
                tasks: file.tasks,
                root_settings: RootSettings {
                    cache: file.cache,
                    enable_pre_post_scripts: file.enable_pre_post_scripts,
                    cache_max_size: match file.cache_max_size {
                        None => None,
                        Some(SizeSetting::Bytes(bytes)) => Some(bytes),
                        Some(SizeSetting::Text(text)) => {
                            Some(crate::cache::limit::parse_size(&text).map_err(|message| {
                                ConfigError::Invalid {
                                    path: path.clone(),
                                    message: format!("cacheMaxSize: {message}"),
                                }
                            })?)
                        }
                    },
                },
            })
        }
        [first, second, ..] => Err(ConfigError::TwoConfigs {
            first: first.clone(),
            second: second.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TaskFile, ConfigError> {
        parse_jsonc(Path::new("vt.json"), text)
    }

    #[test]
    fn the_issue_example_parses() {
        let file = parse(
            r#"{ "tasks": { "build": { "command": "vite build", "cwd": ".",
                "dependsOn": ["^build", "pkg#task", "lint"], "cache": true,
                "env": ["NODE_ENV", "VITE_*"], "untrackedEnv": ["CI"],
                // comments and trailing commas are fine
                "input": [{"auto": true}, "!docs/**"], "output": [{"auto": true}, "!dist/stats.html"], } } }"#,
        )
        .expect("valid");
        let build = &file.tasks["build"];
        assert_eq!(build.depends_on, ["^build", "pkg#task", "lint"]);
        let input = PathRules::from_specs(build.input.as_deref());
        assert!(input.auto);
        assert_eq!(input.exclude, ["docs/**"]);
    }

    #[test]
    fn unknown_fields_and_type_errors_name_line_and_column() {
        let err = parse("{\n  \"tasks\": {\n    \"build\": { \"comand\": \"x\" }\n  }\n}")
            .expect_err("unknown field");
        let text = err.to_string();
        assert!(text.starts_with("vt.json:3:"), "{text}");
        assert!(text.contains("unknown field `comand`"), "{text}");
        let err = parse("{ \"tasks\": { \"build\": { \"cache\": \"yes\" } } }").expect_err("type");
        assert!(err.to_string().contains("expected a boolean"), "{err}");
    }
}

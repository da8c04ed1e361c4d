//! One package: its `package.json` (name, scripts, dependencies) and its task config.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, TaskConfig, parse_jsonc, read, tasks};

#[derive(Debug, Clone)]
pub struct Package {
    pub name: String,
    /// Absolute directory.
    pub dir: PathBuf,
    /// Directory relative to the workspace root ("" for the root package).
    pub rel: PathBuf,
    pub scripts: BTreeMap<String, String>,
    /// Names of every package this one depends on (filtered to workspace packages later).
    pub dependencies: BTreeSet<String>,
    /// Tasks from `vt.json` / `vite-task.json`.
    pub tasks: BTreeMap<String, TaskConfig>,
    /// Which file the tasks came from, for messages.
    pub task_file: Option<PathBuf>,
    /// Workspace-wide keys of that file (only the root's may have them).
    pub root_settings: tasks::RootSettings,
}

#[derive(Deserialize)]
struct PackageJson {
    name: Option<String>,
    #[serde(default)]
    scripts: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    dependencies: BTreeMap<String, serde_json::Value>,
    #[serde(default, rename = "devDependencies")]
    dev_dependencies: BTreeMap<String, serde_json::Value>,
    #[serde(default, rename = "peerDependencies")]
    peer_dependencies: BTreeMap<String, serde_json::Value>,
    #[serde(default, rename = "optionalDependencies")]
    optional_dependencies: BTreeMap<String, serde_json::Value>,
}

impl Package {
    pub fn load(root: &Path, dir: &Path) -> Result<Package, ConfigError> {
        let manifest = dir.join("package.json");
        Package::from_manifest(root, dir, &read(&manifest)?)
    }

    /// [`Package::load`] for a directory that may not be a package: `None` when it has no
    /// `package.json` (one open that fails, where a check first and a read after took two
    /// calls for every directory a workspace pattern matches).
    pub fn load_if_present(root: &Path, dir: &Path) -> Result<Option<Package>, ConfigError> {
        let manifest = dir.join("package.json");
        let text = match std::fs::read_to_string(&manifest) {
            Ok(text) => text,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EISDIR)) => {
                return Ok(None);
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: manifest,
                    source,
                });
            }
        };
        Package::from_manifest(root, dir, &text).map(Some)
    }

    fn from_manifest(root: &Path, dir: &Path, text: &str) -> Result<Package, ConfigError> {
        let manifest = dir.join("package.json");
        let json: PackageJson = parse_jsonc(&manifest, text)?;
        let mut scripts = BTreeMap::new();
        for (name, value) in json.scripts {
            match value {
                serde_json::Value::String(command) => {
                    scripts.insert(name, command);
                }
                other => {
                    return Err(ConfigError::Invalid {
                        path: manifest,
                        message: format!("script {name:?} must be a string, found {other}"),
                    });
                }
            }
        }
        let dependencies = [
            json.dependencies,
            json.dev_dependencies,
            json.peer_dependencies,
            json.optional_dependencies,
        ]
        .into_iter()
        .flat_map(|deps| deps.into_keys())
        .collect();
        let rel = dir
            .strip_prefix(root)
            .unwrap_or(Path::new(""))
            .to_path_buf();
        let name = json.name.unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "root".into())
        });
        let loaded = tasks::load(dir)?;
        Ok(Package {
            name,
            dir: dir.to_path_buf(),
            rel,
            scripts,
            dependencies,
            tasks: loaded.tasks,
            task_file: loaded.path,
            root_settings: loaded.root_settings,
        })
    }

    /// Every task name this package defines (scripts and config).
    pub fn task_names(&self) -> BTreeSet<&str> {
        self.scripts
            .keys()
            .chain(self.tasks.keys())
            .map(String::as_str)
            .collect()
    }

    pub fn has_task(&self, task: &str) -> bool {
        self.scripts.contains_key(task) || self.tasks.contains_key(task)
    }

    /// A package.json script with no entry in the task file (vite-task caches those only
    /// when the root's `cache.scripts` says so).
    pub fn is_plain_script(&self, task: &str) -> bool {
        self.scripts.contains_key(task) && !self.tasks.contains_key(task)
    }
}

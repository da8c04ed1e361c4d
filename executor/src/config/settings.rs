//! Workspace-wide settings: the root task file's `cache` and `enablePrePostScripts`, read
//! with vite-task's meaning, and the defaults that apply when it says nothing.
//!
//! vt and vite-task differ in two defaults. vite-task caches package.json scripts only
//! when asked (`"cache": {"scripts": true}`) and runs `preX`/`postX` around script `X`;
//! vt caches scripts (its trace makes that safe) and runs hooks only when asked. A
//! workspace whose task files are all `vite-task.json` gets vite-task's defaults, so a
//! project moving from `vp run` behaves the same without edits; any `vt.json` (or no task
//! file at all) gets vt's.

use super::tasks::{DetailedCache, GlobalCache};
use super::{ConfigError, Package};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Whether package.json scripts without a task entry are cached.
    pub cache_scripts: bool,
    /// `false`: no task is cached, whatever its own `cache` says.
    pub cache_tasks: bool,
    /// Run `preX` / `postX` scripts around script `X`.
    pub pre_post_scripts: bool,
    /// Whose defaults applied (for `--dry-run` and the docs).
    pub defaults: Defaults,
    /// `cacheMaxSize`, bytes (0: no limit); see `cache::limit`.
    pub cache_max_size: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defaults {
    Vt,
    ViteTask,
}

impl Settings {
    /// `packages[0]` is the root. Only the root's file may set workspace-wide keys.
    pub fn resolve(packages: &[Package]) -> Result<Settings, ConfigError> {
        for package in packages.iter().skip(1) {
            let settings = package.root_settings;
            let key = if settings.cache.is_some() {
                "cache"
            } else if settings.enable_pre_post_scripts.is_some() {
                "enablePrePostScripts"
            } else if settings.cache_max_size.is_some() {
                "cacheMaxSize"
            } else {
                continue;
            };
            return Err(ConfigError::Invalid {
                path: package
                    .task_file
                    .clone()
                    .unwrap_or_else(|| package.dir.clone()),
                message: format!(
                    "{key:?} applies to the whole workspace and is read only from the workspace root's file\n  hint: move it to the root's vt.json or vite-task.json"
                ),
            });
        }
        let files: Vec<&std::path::Path> = packages
            .iter()
            .filter_map(|p| p.task_file.as_deref())
            .collect();
        let vite_task = !files.is_empty()
            && files
                .iter()
                .all(|f| f.file_name().is_some_and(|n| n == "vite-task.json"));
        let defaults = if vite_task {
            Defaults::ViteTask
        } else {
            Defaults::Vt
        };
        let root = packages
            .first()
            .map(|p| p.root_settings)
            .unwrap_or_default();
        let default_scripts = defaults == Defaults::Vt;
        let (cache_scripts, cache_tasks) = match root.cache {
            None => (default_scripts, true),
            Some(GlobalCache::Bool(on)) => (on, on),
            Some(GlobalCache::Detailed(DetailedCache { scripts, tasks })) => {
                (scripts.unwrap_or(default_scripts), tasks.unwrap_or(true))
            }
        };
        Ok(Settings {
            cache_scripts,
            cache_tasks,
            pre_post_scripts: root
                .enable_pre_post_scripts
                .unwrap_or(defaults == Defaults::ViteTask),
            defaults,
            cache_max_size: root.cache_max_size,
        })
    }
}

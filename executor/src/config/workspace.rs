//! Finding the workspace from the cwd upward, and its packages.
//!
//! The root is the nearest directory above the cwd with `pnpm-workspace.yaml` or a
//! `package.json` that has `workspaces` (npm, yarn); without either, the nearest
//! `package.json` is a lone package. The root package is always a package too.

use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSetBuilder};
use serde::Deserialize;

use super::settings::Settings;
use super::{ConfigError, Package, parse_jsonc, read};

#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    /// The root package first, then the others sorted by directory (with
    /// [`Scope::Holding`], only those holding its directory).
    pub packages: Vec<Package>,
    /// Workspace-wide settings from the root's task file.
    pub settings: Settings,
}

/// Which of a workspace's packages are read.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every package: what a task graph is built from.
    All,
    /// The root and the packages whose directories hold this one: enough for an ad-hoc
    /// command run there, which names no other package. Reading a 100-package workspace
    /// was ~1.3 ms of every `vt exec -- …`. The settings come from the root's file, as
    /// always; only `Settings::defaults` (whether every task file is a `vite-task.json`)
    /// is judged from the packages read, and it does not apply to an ad-hoc command.
    Holding(&'a Path),
}

#[derive(Deserialize)]
struct RootManifest {
    workspaces: Option<Workspaces>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Workspaces {
    List(Vec<String>),
    Object { packages: Vec<String> },
}

#[derive(Deserialize)]
struct PnpmWorkspace {
    #[serde(default)]
    packages: Vec<String>,
}

impl Workspace {
    pub fn find(cwd: &Path) -> Result<Workspace, ConfigError> {
        Workspace::find_scoped(cwd, Scope::All)
    }

    /// The workspace around `cwd`, with the packages `scope` names.
    pub fn find_scoped(cwd: &Path, scope: Scope<'_>) -> Result<Workspace, ConfigError> {
        Workspace::find_scoped_then(cwd, scope, |_| {})
    }

    /// [`Workspace::find_scoped`], telling `root_found` the root as soon as it is known,
    /// before the packages are read (what depends only on the root can start meanwhile).
    pub fn find_scoped_then(
        cwd: &Path,
        scope: Scope<'_>,
        root_found: impl FnOnce(&Path),
    ) -> Result<Workspace, ConfigError> {
        let mut nearest_package = None;
        for dir in cwd.ancestors() {
            let pnpm = dir.join("pnpm-workspace.yaml");
            if pnpm.is_file() {
                let text = read(&pnpm)?;
                let parsed: PnpmWorkspace = if text.trim().is_empty() {
                    PnpmWorkspace { packages: vec![] }
                } else {
                    serde_yaml_ng::from_str(&text).map_err(|e| {
                        let (line, column) =
                            e.location().map_or((1, 1), |l| (l.line(), l.column()));
                        ConfigError::Syntax {
                            path: pnpm.clone(),
                            line,
                            column,
                            message: e.to_string(),
                        }
                    })?
                };
                root_found(dir);
                return Workspace::load(dir, &parsed.packages, scope);
            }
            let manifest = dir.join("package.json");
            if manifest.is_file() {
                let root: RootManifest = parse_jsonc(&manifest, &read(&manifest)?)?;
                match root.workspaces {
                    Some(Workspaces::List(globs))
                    | Some(Workspaces::Object { packages: globs }) => {
                        root_found(dir);
                        return Workspace::load(dir, &globs, scope);
                    }
                    None => {
                        nearest_package.get_or_insert_with(|| dir.to_path_buf());
                    }
                }
            }
        }
        match nearest_package {
            Some(dir) => {
                root_found(&dir);
                Workspace::load(&dir, &[], scope)
            }
            None => Err(ConfigError::NoPackage(cwd.to_path_buf())),
        }
    }

    /// Loads the root package and every directory matching `globs` that has a package.json
    /// (of those `scope` names).
    fn load(root: &Path, globs: &[String], scope: Scope<'_>) -> Result<Workspace, ConfigError> {
        let mut include = GlobSetBuilder::new();
        let mut exclude = GlobSetBuilder::new();
        let manifest = root.join(if root.join("pnpm-workspace.yaml").is_file() {
            "pnpm-workspace.yaml"
        } else {
            "package.json"
        });
        // The deepest directory an include pattern can match: the walk stops there.
        let mut depth = Some(0);
        for pattern in globs {
            let (set, pattern, included) = match pattern.strip_prefix('!') {
                Some(p) => (&mut exclude, p, false),
                None => (&mut include, pattern.as_str(), true),
            };
            let pattern = pattern.trim_start_matches("./").trim_end_matches('/');
            if included {
                depth = depth.zip(pattern_depth(pattern)).map(|(a, b)| a.max(b));
            }
            // As npm and pnpm read them: `*` stays within one directory, `**` crosses them.
            let glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| ConfigError::Invalid {
                    path: manifest.clone(),
                    message: format!("bad workspace pattern {pattern:?}: {e}"),
                })?;
            set.add(glob);
        }
        let invalid = |e: globset::Error| ConfigError::Invalid {
            path: manifest.clone(),
            message: e.to_string(),
        };
        let include = include.build().map_err(invalid)?;
        let exclude = exclude.build().map_err(invalid)?;
        let mut dirs = Vec::new();
        let mut visit = |rel: &Path, dir: &Path| {
            if include.is_match(rel) && !exclude.is_match(rel) {
                dirs.push(dir.to_path_buf());
            }
        };
        // Whether each has a package.json is found out by reading it (`load_packages`).
        match scope {
            _ if include.is_empty() => {}
            Scope::All => collect_dirs(root, root, depth, &mut visit),
            Scope::Holding(dir) => holders(root, dir, &mut visit),
        }
        dirs.sort();
        let mut packages = vec![Package::load(root, root)?];
        packages.extend(load_packages(root, &dirs)?);
        for (i, a) in packages.iter().enumerate() {
            if let Some(b) = packages[i + 1..].iter().find(|b| b.name == a.name) {
                return Err(ConfigError::DuplicateName {
                    name: a.name.clone(),
                    first: a.dir.clone(),
                    second: b.dir.clone(),
                });
            }
        }
        let settings = Settings::resolve(&packages)?;
        Ok(Workspace {
            root: root.to_path_buf(),
            packages,
            settings,
        })
    }

    /// The package whose directory contains `dir` most closely.
    pub fn package_at(&self, dir: &Path) -> Option<usize> {
        self.packages
            .iter()
            .enumerate()
            .filter(|(_, p)| dir.starts_with(&p.dir))
            .max_by_key(|(_, p)| p.dir.components().count())
            .map(|(i, _)| i)
    }

    pub fn package_named(&self, name: &str) -> Option<usize> {
        self.packages.iter().position(|p| p.name == name)
    }
}

/// The packages among `dirs` (those with a package.json), in order, read on up to four
/// threads: each is a few small reads (its package.json, the task files looked for), which
/// for a 100-package workspace were ~2 ms of system calls on one thread at every vt start.
/// The error is the first package's in `dirs` order, as a sequential load would give.
fn load_packages(root: &Path, dirs: &[PathBuf]) -> Result<Vec<Package>, ConfigError> {
    const PER_THREAD: usize = 16;
    let threads = sandbox::cpus()
        .clamp(1, 4)
        .min(dirs.len() / PER_THREAD)
        .max(1);
    let load_part = |part: &[PathBuf]| -> Result<Vec<Package>, ConfigError> {
        let mut packages = Vec::with_capacity(part.len());
        for dir in part {
            packages.extend(Package::load_if_present(root, dir)?);
        }
        Ok(packages)
    };
    if threads == 1 {
        return load_part(dirs);
    }
    let chunk = dirs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = dirs
            .chunks(chunk)
            .map(|part| scope.spawn(move || load_part(part)))
            .collect();
        let mut packages = Vec::with_capacity(dirs.len());
        for part in parts {
            match part.join() {
                Ok(loaded) => packages.extend(loaded?),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(packages)
    })
}

/// How many directories deep `pattern` matches (`packages/*`: 2); `None` for any depth
/// (`**`).
fn pattern_depth(pattern: &str) -> Option<usize> {
    let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    (!parts.contains(&"**")).then_some(parts.len())
}

/// Calls `visit(relative, absolute)` for every directory below `dir` down to `depth`
/// levels (`None`: all), skipping `node_modules` and hidden directories. Bounded, a
/// workspace of `packages/*` lists its packages, not every source tree in them.
fn collect_dirs(
    root: &Path,
    dir: &Path,
    depth: Option<usize>,
    visit: &mut dyn FnMut(&Path, &Path),
) {
    if depth == Some(0) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if never_a_package(&entry.file_name()) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        if let Ok(rel) = path.strip_prefix(root) {
            visit(rel, &path);
        }
        collect_dirs(root, &path, depth.map(|d| d - 1), visit);
    }
}

/// A directory no package walk enters or counts: `node_modules` (dependencies, not
/// workspace packages) and hidden ones.
fn never_a_package(name: &std::ffi::OsStr) -> bool {
    name == "node_modules" || name.to_string_lossy().starts_with('.')
}

/// Calls `visit(relative, absolute)` for every directory from `dir` up to (not including)
/// `root` that [`collect_dirs`] would visit: none below `node_modules` or a hidden
/// directory. (Its depth bound only stops the walk where no pattern can match.)
fn holders(root: &Path, dir: &Path, visit: &mut dyn FnMut(&Path, &Path)) {
    for holder in dir.ancestors() {
        let Ok(rel) = holder.strip_prefix(root) else {
            return;
        };
        if rel.as_os_str().is_empty() {
            return;
        }
        if !rel.components().any(|c| never_a_package(c.as_os_str())) {
            visit(rel, holder);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    /// Enough packages to be read on several threads: they come back in directory order,
    /// and a broken one is named as a one-thread load would name it (the first in order).
    #[test]
    fn many_packages_load_in_order_and_the_first_broken_one_is_named() {
        let temp = tempfile::tempdir().expect("tempdir");
        let root = temp.path();
        write(
            &root.join("package.json"),
            r#"{"name":"root","workspaces":["p/*"]}"#,
        );
        for i in 0..70 {
            write(
                &root.join(format!("p/{i:03}/package.json")),
                &format!(r#"{{"name":"n{i:03}"}}"#),
            );
        }
        // Matched by the pattern but not packages: no package.json, or a directory by
        // that name.
        write(&root.join("p/010-notes/README.md"), "not a package");
        std::fs::create_dir_all(root.join("p/040-odd/package.json")).expect("mkdir");
        let workspace = Workspace::find(root).expect("loads");
        let names: Vec<&str> = workspace.packages.iter().map(|p| p.name.as_str()).collect();
        let expected: Vec<String> = std::iter::once("root".to_owned())
            .chain((0..70).map(|i| format!("n{i:03}")))
            .collect();
        assert_eq!(names, expected);

        for broken in ["p/055", "p/020"] {
            write(&root.join(broken).join("package.json"), "{ not json");
        }
        let error = Workspace::find(root).expect_err("a broken package.json");
        assert!(
            error.to_string().contains("p/020") || format!("{error:?}").contains("p/020"),
            "{error:?}"
        );
    }

    #[test]
    fn a_patterns_depth_is_its_directories_unless_it_has_a_double_star() {
        assert_eq!(pattern_depth("packages/*"), Some(2));
        assert_eq!(pattern_depth("apps/web"), Some(2));
        assert_eq!(pattern_depth("*"), Some(1));
        assert_eq!(pattern_depth("packages/**"), None);
        assert_eq!(pattern_depth("**/pkg"), None);
    }

    #[test]
    fn pnpm_npm_and_lone_packages_are_found_from_below() {
        let temp = tempfile::tempdir().expect("tempdir");
        let root = temp.path();
        write(
            &root.join("pnpm-workspace.yaml"),
            "packages:\n  - 'packages/*'\n  - '!packages/skip'\n",
        );
        write(
            &root.join("package.json"),
            r#"{"name":"root","scripts":{"build":"echo root"}}"#,
        );
        write(
            &root.join("packages/a/package.json"),
            r#"{"name":"a","dependencies":{"b":"workspace:*"}}"#,
        );
        write(&root.join("packages/b/package.json"), r#"{"name":"b"}"#);
        write(
            &root.join("packages/skip/package.json"),
            r#"{"name":"skip"}"#,
        );
        let ws = Workspace::find(&root.join("packages/a")).expect("workspace");
        let names: Vec<_> = ws.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["root", "a", "b"]);
        assert_eq!(ws.package_at(&root.join("packages/a/src")), Some(1));

        let npm = tempfile::tempdir().expect("tempdir");
        write(
            &npm.path().join("package.json"),
            r#"{"workspaces":["libs/*"]}"#,
        );
        write(&npm.path().join("libs/x/package.json"), r#"{"name":"x"}"#);
        let ws = Workspace::find(&npm.path().join("libs/x")).expect("workspace");
        assert_eq!(ws.packages.len(), 2);

        // `*` stays within a directory (as in npm and pnpm): a fixture's package.json
        // below a package is not a workspace package; `**` reaches it.
        let nested = tempfile::tempdir().expect("tempdir");
        write(
            &nested.path().join("package.json"),
            r#"{"workspaces":["libs/*"]}"#,
        );
        write(
            &nested.path().join("libs/x/package.json"),
            r#"{"name":"x"}"#,
        );
        write(
            &nested.path().join("libs/x/test/fixture/package.json"),
            r#"{"name":"fixture"}"#,
        );
        let names = |ws: &Workspace| -> Vec<String> {
            ws.packages.iter().map(|p| p.name.clone()).collect()
        };
        let ws = Workspace::find(nested.path()).expect("workspace");
        assert!(names(&ws).contains(&"x".into()), "{:?}", names(&ws));
        assert!(!names(&ws).contains(&"fixture".into()), "{:?}", names(&ws));
        write(
            &nested.path().join("package.json"),
            r#"{"workspaces":["libs/**"]}"#,
        );
        let ws = Workspace::find(nested.path()).expect("workspace");
        assert!(names(&ws).contains(&"fixture".into()), "{:?}", names(&ws));
        let lone = tempfile::tempdir().expect("tempdir");
        write(&lone.path().join("package.json"), r#"{"name":"solo"}"#);
        let ws = Workspace::find(lone.path()).expect("workspace");
        assert_eq!(ws.packages[0].name, "solo");
    }

    /// An ad-hoc command's scope reads the root and the packages holding its directory, the
    /// same ones a full read finds there (not below `node_modules`, not hidden, not
    /// excluded), and none of the others, whose broken files then do not matter.
    #[test]
    fn the_holding_scope_reads_the_root_and_the_packages_around_the_directory() {
        let temp = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(temp.path()).expect("canonical");
        write(
            &root.join("package.json"),
            r#"{"name":"root","workspaces":["packages/**","!packages/skipped"]}"#,
        );
        write(&root.join("packages/a/package.json"), r#"{"name":"a"}"#);
        write(
            &root.join("packages/a/inner/package.json"),
            r#"{"name":"inner"}"#,
        );
        write(&root.join("packages/b/package.json"), "{ broken");
        write(
            &root.join("packages/skipped/package.json"),
            r#"{"name":"s"}"#,
        );
        write(
            &root.join("packages/a/node_modules/dep/package.json"),
            r#"{"name":"dep"}"#,
        );
        write(
            &root.join("packages/a/.hidden/package.json"),
            r#"{"name":"h"}"#,
        );
        let names = |dir: &Path| -> Vec<String> {
            let ws = Workspace::find_scoped(dir, Scope::Holding(dir)).expect("workspace");
            assert_eq!(ws.root, root);
            let here = ws.package_at(dir).map(|p| ws.packages[p].name.clone());
            let mut names: Vec<String> = ws.packages.iter().map(|p| p.name.clone()).collect();
            names.extend(here.map(|h| format!("here: {h}")));
            names
        };
        let src = root.join("packages/a/inner/src");
        std::fs::create_dir_all(&src).expect("mkdir");
        assert_eq!(names(&src), ["root", "a", "inner", "here: inner"]);
        assert_eq!(names(&root.join("packages/a")), ["root", "a", "here: a"]);
        let dep = root.join("packages/a/node_modules/dep");
        assert_eq!(names(&dep), ["root", "a", "here: a"]);
        let hidden = root.join("packages/a/.hidden");
        assert_eq!(names(&hidden), ["root", "a", "here: a"]);
        let skipped = root.join("packages/skipped");
        assert_eq!(names(&skipped), ["root", "here: root"]);
        assert_eq!(names(&root), ["root", "here: root"]);
        // The whole workspace is read for a graph: the broken package stops it.
        assert!(Workspace::find(&src).is_err());
    }
}

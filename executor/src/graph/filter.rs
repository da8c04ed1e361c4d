//! `--filter`, in pnpm's grammar (which turbo and vite-task accept too):
//!
//! | filter | packages |
//! |---|---|
//! | `name`, `@scope/*` | by name glob (a bare name also finds the one `@any/name`) |
//! | `name...` / `name^...` | and their dependencies / only their dependencies |
//! | `...name` / `...^name` | and their dependents / only their dependents |
//! | `./dir`, `../dir`, `{dir}` | in that directory or below it, relative to the cwd |
//! | `[ref]` | with files changed since the git ref (committed or not, or untracked) |
//! | `!filter` | not these |
//!
//! The parts combine (`...{apps/*}[main]`: apps changed since main, and their dependents).
//! Several filters select the union of the inclusions minus the union of the exclusions;
//! only exclusions start from every package. Parsing is plain data ([`Filter`]); the
//! selection ([`resolve`]) walks the package graph, and only `[ref]` runs git.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use super::GraphError;
use crate::config::Workspace;

/// One `--filter` value, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    /// `!…`: these packages are taken out.
    pub exclude: bool,
    /// The packages the selector names count themselves (not with `^`).
    pub with_self: bool,
    /// `…...`: and what they depend on, transitively.
    pub dependencies: bool,
    /// `...…`: and what depends on them, transitively.
    pub dependents: bool,
    /// A package-name glob.
    pub name: Option<String>,
    /// A directory (or directory glob), as written, relative to the cwd.
    pub dir: Option<String>,
    /// `[ref]`: changed since this git ref.
    pub since: Option<String>,
}

/// Parses one filter as pnpm's `parsePackageSelector` does.
pub fn parse(text: &str) -> Result<Filter, String> {
    let mut filter = Filter {
        with_self: true,
        ..Filter::default()
    };
    let mut rest = text;
    if let Some(r) = rest.strip_prefix('!') {
        filter.exclude = true;
        rest = r;
    }
    if let Some(r) = rest.strip_suffix("...") {
        filter.dependencies = true;
        rest = r;
        if let Some(r) = rest.strip_suffix('^') {
            filter.with_self = false;
            rest = r;
        }
    }
    if let Some(r) = rest.strip_prefix("...") {
        filter.dependents = true;
        rest = r;
        if let Some(r) = rest.strip_prefix('^') {
            filter.with_self = false;
            rest = r;
        }
    }
    if rest.is_empty() {
        return Err("it names no package (a name, ./dir, {dir} or [ref])".into());
    }
    if by_location(rest) {
        filter.dir = Some(rest.to_owned());
        return Ok(filter);
    }
    // name? {dir}? [ref]?, in that order.
    let (before_ref, since) = match rest.strip_suffix(']').and_then(|r| r.rsplit_once('[')) {
        Some((before, since)) if !since.is_empty() => (before, Some(since)),
        _ => (rest, None),
    };
    let (name, dir) = match before_ref
        .strip_suffix('}')
        .and_then(|r| r.rsplit_once('{'))
    {
        Some((name, dir)) if !dir.is_empty() => (name, Some(dir)),
        _ => (before_ref, None),
    };
    if name.contains(['{', '}', '[', ']']) {
        return Err(
            "expected NAME, {DIR} and [REF] in that order, each at most once (pnpm's grammar)"
                .into(),
        );
    }
    filter.name = (!name.is_empty()).then(|| name.to_owned());
    filter.dir = dir.map(str::to_owned);
    filter.since = since.map(str::to_owned);
    Ok(filter)
}

/// `.`, `..`, `./…`, `../…`: a directory, not a name (pnpm's `isSelectorByLocation`).
fn by_location(text: &str) -> bool {
    text == "." || text == ".." || text.starts_with("./") || text.starts_with("../")
}

/// Where filters are resolved: the cwd (for directories) and how to ask git what changed.
pub struct Context<'a> {
    pub workspace: &'a Workspace,
    /// The cwd, absolute.
    pub cwd: &'a Path,
}

/// The packages `filters` select, and warnings for inclusions that matched nothing
/// (when others did; when none matched, the selection is empty and that is an error).
pub fn resolve(
    context: &Context<'_>,
    filters: &[String],
) -> Result<(BTreeSet<usize>, Vec<String>), GraphError> {
    let workspace = context.workspace;
    let bad = |filter: &str, message: String| GraphError::BadFilter {
        filter: filter.to_owned(),
        message,
    };
    let mut included = BTreeSet::new();
    let mut excluded = BTreeSet::new();
    let mut any_inclusion = false;
    let mut unmatched = Vec::new();
    for text in filters {
        let filter = parse(text).map_err(|m| bad(text, m))?;
        let picked = select(context, &filter).map_err(|m| bad(text, m))?;
        if filter.exclude {
            excluded.extend(picked);
        } else {
            any_inclusion = true;
            if picked.is_empty() {
                unmatched.push(text.clone());
            }
            included.extend(picked);
        }
    }
    if !any_inclusion {
        included = (0..workspace.packages.len()).collect();
    }
    let chosen: BTreeSet<usize> = included.difference(&excluded).copied().collect();
    let described = |text: &String| {
        let close = close_names(workspace, text);
        if close.is_empty() {
            format!("--filter {text:?} matches no package")
        } else {
            format!(
                "--filter {text:?} matches no package (close: {})",
                close.join(", ")
            )
        }
    };
    if chosen.is_empty() {
        let what = if unmatched.is_empty() {
            "the filters leave no package".to_owned()
        } else {
            unmatched
                .iter()
                .map(described)
                .collect::<Vec<_>>()
                .join("; ")
        };
        return Err(GraphError::NothingSelected(what));
    }
    Ok((chosen, unmatched.iter().map(described).collect()))
}

/// The packages one filter names, before `!` is applied.
fn select(context: &Context<'_>, filter: &Filter) -> Result<BTreeSet<usize>, String> {
    let workspace = context.workspace;
    let mut named: BTreeSet<usize> = (0..workspace.packages.len()).collect();
    if let Some(name) = &filter.name {
        named = by_name(workspace, name)?;
    }
    if let Some(dir) = &filter.dir {
        let in_dir = by_dir(context, dir)?;
        named.retain(|p| in_dir.contains(p));
    }
    if let Some(since) = &filter.since {
        let changed = changed_since(workspace, since)?;
        named.retain(|p| changed.contains(p));
    }
    let mut picked = BTreeSet::new();
    if filter.with_self {
        picked.extend(named.iter().copied());
    }
    if filter.dependencies {
        for &p in &named {
            picked.extend(reach(workspace, p, Direction::Dependencies));
        }
    }
    if filter.dependents {
        for &p in &named {
            picked.extend(reach(workspace, p, Direction::Dependents));
        }
    }
    Ok(picked)
}

/// By name glob; a bare name with no match finds a scoped package of that name, if only
/// one has it (pnpm's rule: `-F button` is `@ui/button`).
fn by_name(workspace: &Workspace, pattern: &str) -> Result<BTreeSet<usize>, String> {
    let matches = |pattern: &str| -> Result<BTreeSet<usize>, String> {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(false)
            .build()
            .map_err(|e| e.to_string())?
            .compile_matcher();
        Ok(workspace
            .packages
            .iter()
            .enumerate()
            .filter(|(_, p)| glob.is_match(&p.name))
            .map(|(i, _)| i)
            .collect())
    };
    let found = matches(pattern)?;
    if found.is_empty() && !pattern.contains('/') {
        let scoped = matches(&format!("@*/{pattern}"))?;
        if scoped.len() == 1 {
            return Ok(scoped);
        }
    }
    Ok(found)
}

/// The packages in `dir` or below it (a directory glob: the packages whose directory
/// matches it), relative to the cwd.
fn by_dir(context: &Context<'_>, dir: &str) -> Result<BTreeSet<usize>, String> {
    let workspace = context.workspace;
    let joined = lexical(&context.cwd.join(dir.trim_end_matches('/')));
    let rel = joined
        .strip_prefix(&workspace.root)
        .map_err(|_| format!("{} is outside the workspace", joined.display()))?
        .to_path_buf();
    let is_glob = dir.contains(['*', '?', '[', '{']);
    let glob = if is_glob {
        Some(
            globset::GlobBuilder::new(&rel.to_string_lossy())
                .literal_separator(true)
                .build()
                .map_err(|e| e.to_string())?
                .compile_matcher(),
        )
    } else {
        None
    };
    Ok(workspace
        .packages
        .iter()
        .enumerate()
        .filter(|(_, p)| match &glob {
            Some(glob) => glob.is_match(&p.rel),
            None => p.rel.starts_with(&rel),
        })
        .map(|(i, _)| i)
        .collect())
}

/// `.` and `..` resolved without touching the file system.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Direction {
    Dependencies,
    Dependents,
}

/// Every workspace package `package` depends on, transitively (itself excluded).
pub fn dependencies_of(workspace: &Workspace, package: usize) -> BTreeSet<usize> {
    reach(workspace, package, Direction::Dependencies)
}

/// Every package reachable from `start` (itself excluded) along workspace dependencies.
fn reach(workspace: &Workspace, start: usize, direction: Direction) -> BTreeSet<usize> {
    let depends_on = |from: usize, to: usize| {
        workspace.packages[from]
            .dependencies
            .contains(&workspace.packages[to].name)
    };
    let mut seen = BTreeSet::new();
    let mut stack = vec![start];
    while let Some(p) = stack.pop() {
        for next in 0..workspace.packages.len() {
            let edge = match direction {
                Direction::Dependencies => depends_on(p, next),
                Direction::Dependents => depends_on(next, p),
            };
            if edge && next != start && seen.insert(next) {
                stack.push(next);
            }
        }
    }
    seen
}

/// Packages with a file changed since `since`: committed since, changed in the work tree,
/// or untracked (not ignored). A file belongs to the deepest package holding it.
pub fn changed_since(workspace: &Workspace, since: &str) -> Result<BTreeSet<usize>, String> {
    // `--no-renames`: a file moved between packages changes both.
    let diff = git(
        &workspace.root,
        &[
            "diff",
            "--name-only",
            "--no-renames",
            "--relative",
            since,
            "--",
        ],
    )
    .map_err(|e| format!("cannot list the files changed since {since:?}: {e}"))?;
    let untracked = git(
        &workspace.root,
        &["ls-files", "--others", "--exclude-standard"],
    )
    .map_err(|e| format!("cannot list untracked files: {e}"))?;
    let mut changed = BTreeSet::new();
    for file in diff.lines().chain(untracked.lines()) {
        if let Some(p) = owner(workspace, Path::new(file)) {
            changed.insert(p);
        }
    }
    Ok(changed)
}

/// The deepest package whose directory holds `file` (relative to the workspace root).
fn owner(workspace: &Workspace, file: &Path) -> Option<usize> {
    workspace
        .packages
        .iter()
        .enumerate()
        .filter(|(_, p)| file.starts_with(&p.rel))
        .max_by_key(|(_, p)| p.rel.components().count())
        .map(|(i, _)| i)
}

/// `--affected`'s base: `VT_AFFECTED_BASE`, else where HEAD left the default branch
/// (`origin/HEAD`, else `main`, else `master`), as turbo does.
pub fn affected_base(workspace: &Workspace) -> Result<String, GraphError> {
    if let Some(base) = std::env::var("VT_AFFECTED_BASE")
        .ok()
        .filter(|b| !b.is_empty())
    {
        return Ok(base);
    }
    let root = &workspace.root;
    let branch = [
        "origin/HEAD",
        "main",
        "master",
        "origin/main",
        "origin/master",
    ]
    .into_iter()
    .find(|b| git(root, &["rev-parse", "--verify", "--quiet", b]).is_ok())
    .ok_or_else(|| GraphError::BadFilter {
        filter: "--affected".into(),
        message: "no default branch found (origin/HEAD, main or master); \
                      set VT_AFFECTED_BASE to the ref to compare with"
            .into(),
    })?;
    git(root, &["merge-base", "HEAD", branch])
        .map(|base| base.trim().to_owned())
        .map_err(|e| GraphError::BadFilter {
            filter: "--affected".into(),
            message: format!("cannot find where HEAD left {branch}: {e}"),
        })
}

fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run git ({e}); hint: install git"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("git failed")
            .trim()
            .to_owned());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Package names like `filter`'s name part, for "did you mean".
fn close_names(workspace: &Workspace, filter: &str) -> Vec<String> {
    let Ok(parsed) = parse(filter) else {
        return Vec::new();
    };
    let Some(name) = parsed.name else {
        return Vec::new();
    };
    let mut scored: Vec<(f64, &str)> = workspace
        .packages
        .iter()
        .map(|p| {
            let bare = p.name.rsplit('/').next().unwrap_or(&p.name);
            let score = strsim::jaro_winkler(&name, &p.name).max(strsim::jaro_winkler(&name, bare));
            (score, p.name.as_str())
        })
        .filter(|(score, name)| *score >= 0.8 && !name.is_empty())
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .into_iter()
        .take(3)
        .map(|(_, n)| n.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Filter {
        parse(text).expect("parses")
    }

    #[test]
    fn the_selector_forms_of_pnpm_s_documentation() {
        let name = |n: &str| Some(n.to_owned());
        assert_eq!(
            parsed("foo"),
            Filter {
                with_self: true,
                name: name("foo"),
                ..Filter::default()
            }
        );
        let f = parsed("foo...");
        assert!(f.dependencies && f.with_self && !f.dependents);
        let f = parsed("foo^...");
        assert!(f.dependencies && !f.with_self);
        let f = parsed("...foo");
        assert!(f.dependents && f.with_self && !f.dependencies);
        let f = parsed("...^foo");
        assert!(f.dependents && !f.with_self);
        let f = parsed("...foo...");
        assert!(f.dependents && f.dependencies && f.with_self);
        let f = parsed("@babel/*");
        assert_eq!(f.name, name("@babel/*"));
        let f = parsed("./packages/core");
        assert_eq!((f.name, f.dir), (None, name("./packages/core")));
        let f = parsed("{packages/**}");
        assert_eq!((f.name, f.dir), (None, name("packages/**")));
        let f = parsed("...[origin/main]");
        assert_eq!((f.since, f.dependents), (name("origin/main"), true));
        let f = parsed("@babel/*{components/**}[HEAD~2]...");
        assert_eq!(f.name, name("@babel/*"));
        assert_eq!(f.dir, name("components/**"));
        assert_eq!(f.since, name("HEAD~2"));
        assert!(f.dependencies);
        let f = parsed("!foo...");
        assert!(f.exclude && f.dependencies);
        let f = parsed("!./apps");
        assert!(f.exclude);
        assert_eq!(f.dir, name("./apps"));
    }

    #[test]
    fn malformed_filters_say_what_is_wrong() {
        assert!(parse("...").is_err());
        assert!(parse("!").is_err());
        assert!(parse("[main]{dir}").is_err());
    }
}

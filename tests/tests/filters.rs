//! `--filter` in pnpm's grammar and `--affected` (issue 23), each form against the result
//! pnpm documents for it (https://pnpm.io/filtering), on one package graph:
//!
//! ```text
//! apps/web  → @acme/ui, utils        packages/core
//! apps/docs → @acme/ui               packages/utils → core
//! tools/lint                         packages/ui (@acme/ui) → utils
//! ```
//!
//! The workspace is a real git repository for `[ref]` and `--affected`. What is selected
//! is read from `--dry-run` (which runs nothing).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use vt_tests::{vt_binary, workdir, write};

fn package(root: &Path, dir: &str, name: &str, deps: &[&str]) {
    let deps: Vec<String> = deps.iter().map(|d| format!("\"{d}\":\"*\"")).collect();
    write(
        root,
        &format!("{dir}/package.json"),
        &format!(
            r#"{{"name":"{name}","dependencies":{{{}}},"scripts":{{"build":"echo {name}"}}}}"#,
            deps.join(",")
        ),
    );
    write(root, &format!("{dir}/src.txt"), "v1\n");
}

fn git(root: &Path, args: &[&str]) {
    let status = Command::new("git")
        .current_dir(root)
        .args(["-c", "user.name=vt", "-c", "user.email=vt@example.com"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

fn workspace() -> (tempfile::TempDir, std::path::PathBuf) {
    let (temp, root) = workdir();
    write(
        &root,
        "package.json",
        r#"{"name":"root","private":true,"workspaces":["packages/*","apps/*","tools/*"]}"#,
    );
    package(&root, "packages/core", "core", &[]);
    package(&root, "packages/utils", "utils", &["core"]);
    package(&root, "packages/ui", "@acme/ui", &["utils"]);
    package(&root, "apps/web", "web", &["@acme/ui", "utils"]);
    package(&root, "apps/docs", "docs", &["@acme/ui"]);
    package(&root, "tools/lint", "lint", &[]);
    write(&root, ".gitignore", "node_modules/\n");
    git(&root, &["init", "-q", "-b", "main"]);
    git(&root, &["add", "-A"]);
    git(&root, &["commit", "-q", "-m", "initial"]);
    (temp, root)
}

fn vt_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(vt_binary())
        .current_dir(dir)
        .env("VT_CACHE_DIR", dir.join(".vt-cache-unused"))
        .env_remove("VT_AFFECTED_BASE")
        .args(["run", "build", "--dry-run"])
        .args(args)
        .output()
        .expect("vt runs")
}

/// The packages whose build `vt run build --dry-run ARGS` (in `dir`) would run.
fn selected_in(dir: &Path, args: &[&str]) -> BTreeSet<String> {
    let output = vt_in(dir, args);
    assert!(
        output.status.success(),
        "vt run build {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once("#build:").map(|(p, _)| p.to_owned()))
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[test]
fn each_selector_form_selects_what_pnpm_documents() {
    let (_temp, root) = workspace();
    let cases: &[(&[&str], &[&str])] = &[
        (&["-F", "utils"], &["utils"]),
        // A bare name finds the one scoped package of that name.
        (&["-F", "ui"], &["@acme/ui"]),
        (&["-F", "@acme/*"], &["@acme/ui"]),
        (&["-F", "utils..."], &["utils", "core"]),
        (&["-F", "utils^..."], &["core"]),
        (&["-F", "...utils"], &["utils", "@acme/ui", "web", "docs"]),
        (&["-F", "...^utils"], &["@acme/ui", "web", "docs"]),
        (
            &["-F", "...docs..."],
            &["docs", "@acme/ui", "utils", "core"],
        ),
        (&["-F", "./apps"], &["web", "docs"]),
        (&["-F", "{apps/*}"], &["web", "docs"]),
        (&["-F", "./packages/ui"], &["@acme/ui"]),
        (&["-F", "{packages/*}..."], &["core", "utils", "@acme/ui"]),
        // Exclusions alone start from every package (the root has no build).
        (&["-F", "!./apps"], &["core", "utils", "@acme/ui", "lint"]),
        (&["-F", "...ui", "-F", "!docs"], &["@acme/ui", "web"]),
        (&["-F", "!...utils"], &["core", "lint"]),
        (&["-F", "web", "-F", "lint"], &["web", "lint"]),
        // One value may hold several filters (vite-task's form).
        (&["-F", "web lint"], &["web", "lint"]),
        (
            &["-F", "*"],
            &["core", "utils", "@acme/ui", "web", "docs", "lint"],
        ),
        // Filters choose the packages; -r beside them adds nothing.
        (&["-r", "-F", "core"], &["core"]),
    ];
    for (args, expected) in cases {
        assert_eq!(selected_in(&root, args), set(expected), "{args:?}");
    }
}

#[test]
fn directories_are_relative_to_the_cwd() {
    let (_temp, root) = workspace();
    let apps = root.join("apps");
    assert_eq!(selected_in(&apps, &["-F", "./web"]), set(&["web"]));
    assert_eq!(selected_in(&apps, &["-F", "."]), set(&["web", "docs"]));
    assert_eq!(
        selected_in(&apps, &["-F", "../packages/core"]),
        set(&["core"])
    );
    assert_eq!(selected_in(&apps, &["-F", "{../tools/*}"]), set(&["lint"]));
    let outside = vt_in(&apps, &["-F", "../../.."]);
    assert!(!outside.status.success());
    assert!(
        String::from_utf8_lossy(&outside.stderr).contains("outside the workspace"),
        "{}",
        String::from_utf8_lossy(&outside.stderr)
    );
}

#[test]
fn changed_since_a_ref_counts_commits_the_work_tree_and_untracked_files() {
    let (_temp, root) = workspace();
    // The control: nothing changed since HEAD.
    let nothing = vt_in(&root, &["-F", "[HEAD]"]);
    assert!(!nothing.status.success(), "an empty selection is an error");
    // A commit changing core, then an uncommitted edit to ui and an untracked file in lint.
    write(&root, "packages/core/src.txt", "v2\n");
    git(&root, &["commit", "-qam", "core v2"]);
    assert_eq!(selected_in(&root, &["-F", "[HEAD~1]"]), set(&["core"]));
    assert_eq!(
        selected_in(&root, &["-F", "...[HEAD~1]"]),
        set(&["core", "utils", "@acme/ui", "web", "docs"])
    );
    write(&root, "packages/ui/src.txt", "v2\n");
    write(&root, "tools/lint/new.txt", "new\n");
    assert_eq!(
        selected_in(&root, &["-F", "[HEAD]"]),
        set(&["@acme/ui", "lint"])
    );
    assert_eq!(
        selected_in(&root, &["-F", "[HEAD~1]"]),
        set(&["core", "@acme/ui", "lint"])
    );
    // Combined with a directory: only the changed packages in it.
    assert_eq!(
        selected_in(&root, &["-F", "{packages/*}[HEAD]"]),
        set(&["@acme/ui"])
    );
    // A file moved between packages changes both.
    git(&root, &["add", "-A"]);
    git(&root, &["commit", "-qm", "ui v2, lint new"]);
    git(&root, &["mv", "apps/docs/src.txt", "apps/web/moved.txt"]);
    assert_eq!(selected_in(&root, &["-F", "[HEAD]"]), set(&["web", "docs"]));
    // A ref git does not know is named.
    let bad = vt_in(&root, &["-F", "[no-such-ref]"]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("no-such-ref"), "{stderr}");
}

#[test]
fn affected_is_what_changed_since_the_default_branch_and_its_dependents() {
    let (_temp, root) = workspace();
    git(&root, &["checkout", "-q", "-b", "feature"]);
    write(&root, "packages/utils/src.txt", "v2\n");
    git(&root, &["commit", "-qam", "utils v2"]);
    // main moves on after the branch point: its changes are not the branch's.
    git(&root, &["checkout", "-q", "main"]);
    write(&root, "tools/lint/src.txt", "v2\n");
    git(&root, &["commit", "-qam", "lint v2"]);
    git(&root, &["checkout", "-q", "feature"]);
    assert_eq!(
        selected_in(&root, &["--affected"]),
        set(&["utils", "@acme/ui", "web", "docs"])
    );
    // VT_AFFECTED_BASE overrides the base.
    let output = Command::new(vt_binary())
        .current_dir(&root)
        .env("VT_AFFECTED_BASE", "main")
        .args(["run", "build", "--dry-run", "--affected"])
        .output()
        .expect("vt");
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(listed.contains("lint#build"), "{listed}");
    // With a filter, the two combine as a union, as filters do.
    assert_eq!(
        selected_in(&root, &["--affected", "-F", "lint"]),
        set(&["utils", "@acme/ui", "web", "docs", "lint"])
    );
}

#[test]
fn a_filter_matching_nothing_names_it_and_close_package_names() {
    let (_temp, root) = workspace();
    let output = vt_in(&root, &["-F", "utlis"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\"utlis\" matches no package"), "{stderr}");
    assert!(stderr.contains("close: utils"), "{stderr}");
    // Beside a filter that matches, it is a warning and the rest runs.
    let output = vt_in(&root, &["-F", "web", "-F", "utlis"]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("warning"));
    // A malformed filter says what is wrong.
    let output = vt_in(&root, &["-F", "[main]{apps}"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("in that order"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_graph_prints_as_a_tree_and_as_dot_and_runs_nothing() {
    let (_temp, root) = workspace();
    let graph = |format: &str| {
        let output = Command::new(vt_binary())
            .current_dir(&root)
            .env("VT_CACHE_DIR", root.join(".vt-cache-unused"))
            .args(["run", "build", "-F", "docs...", format])
            .output()
            .expect("vt");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(
        graph("--graph"),
        "docs#build\n└── @acme/ui#build\n    └── utils#build\n        └── core#build\n"
    );
    let dot = graph("--graph=dot");
    assert!(dot.starts_with("digraph vt {"), "{dot}");
    assert!(
        dot.contains(r#""@acme/ui#build" -> "utils#build" [label="package.json dependency"];"#),
        "{dot}"
    );
    assert!(!root.join(".vt-cache-unused").exists(), "nothing ran");
}

//! vite-task parity, in vite-task's own test style: each directory under
//! `tests/fixtures/vite-task/` is a small workspace with a `cases.toml` of cases, each a
//! list of shell steps (`vt run …`, edits). A case runs in a fresh copy of its workspace,
//! and everything the steps print (vt's lines, the tasks' output, exit codes) is compared
//! with the reviewed snapshot in the fixture's `snapshots/`. Every case that must miss has
//! its control beside it (the edit that must still hit).
//!
//! To review a change: `INSTA_UPDATE=always cargo nextest run -p vt-tests --test
//! vite_task_fixtures`, then read `git diff tests/fixtures`. CI never writes snapshots.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(serde::Deserialize)]
struct Cases {
    case: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    /// Where the steps run, relative to the workspace.
    #[serde(default)]
    cwd: Option<String>,
    steps: Vec<String>,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vite-task")
}

/// Copies the fixture's workspace (not its cases or snapshots).
fn copy_workspace(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name == "cases.toml" || name == "snapshots" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_workspace(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Makes the transcript the same from run to run: the temp dir and timings.
fn normalize(text: &str, root: &Path) -> String {
    let text = text.replace(&root.display().to_string(), "<ws>");
    let mut out = String::with_capacity(text.len());
    // "(0.1 s)" and "0.0 s saved": a number followed by " s".
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        if i > start {
            let number = &text[start..i];
            if number.contains('.') && text[i..].starts_with(" s") {
                out.push_str("<t>");
            } else {
                out.push_str(number);
            }
            continue;
        }
        let c = text[i..].chars().next().expect("a char");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

fn run_case(fixture: &Path, case: &Case) -> String {
    let temp = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(temp.path()).expect("canonical");
    copy_workspace(fixture, &root);
    // `vt` on PATH, as a user types it.
    let bin = tempfile::tempdir().expect("bin dir");
    std::os::unix::fs::symlink(vt_tests::vt_binary(), bin.path().join("vt")).expect("symlink");
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cwd = match &case.cwd {
        Some(dir) => root.join(dir),
        None => root.clone(),
    };
    let mut transcript = String::new();
    for step in &case.steps {
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!("exec 2>&1; {step}"))
            .current_dir(&cwd)
            .env("PATH", &path)
            .env_remove("VT_CACHE_DIR")
            .env_remove("VT_REMOTE_CACHE")
            .env_remove("VT_REMOTE_EXEC")
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("sh runs");
        transcript.push_str(&format!("> {step}\n"));
        transcript.push_str(&normalize(&String::from_utf8_lossy(&output.stdout), &root));
        match output.status.code() {
            Some(0) => {}
            Some(code) => transcript.push_str(&format!("[exit {code}]\n")),
            None => transcript.push_str("[killed]\n"),
        }
    }
    transcript
}

/// A case's name as a file name: lower-case words joined by `_`.
fn snapshot_name(name: &str) -> String {
    let words: Vec<String> = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    words.join("_")
}

#[test]
fn vite_task_fixtures() {
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures/vite-task")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("cases.toml").is_file())
        .collect();
    fixtures.sort();
    assert!(!fixtures.is_empty(), "no fixtures found");
    for fixture in fixtures {
        let name = fixture
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(fixture.join("cases.toml")).expect("cases.toml");
        let cases: Cases =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{name}/cases.toml: {e}"));
        for case in &cases.case {
            let transcript = run_case(&fixture, case);
            insta::with_settings!({
                snapshot_path => fixture.join("snapshots"),
                prepend_module_to_snapshot => false,
                omit_expression => true,
                description => format!("{name}: {}", case.name),
            }, {
                insta::assert_snapshot!(snapshot_name(&case.name), transcript);
            });
        }
    }
}

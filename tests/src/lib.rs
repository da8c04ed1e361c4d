//! Helpers shared by vt's end-to-end suites (see `tests/tests/`).

pub mod buildgrid;
pub mod oracle;

use std::path::PathBuf;

/// The `vt` binary under test: `$VT` if set, else the one next to this test's target dir.
pub fn vt_binary() -> PathBuf {
    if let Some(explicit) = std::env::var_os("VT") {
        return PathBuf::from(explicit);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/<test> → target/debug/vt
    let candidate = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("vt"));
    match candidate {
        Some(path) if path.exists() => path,
        _ => panic!(
            "the vt binary is not built next to {}: run `cargo build -p vt-executor` first, or set VT=/path/to/vt",
            exe.display()
        ),
    }
}

/// Whether this test runs as root, which `needed_for` says it needs. CI always runs as root,
/// so there the answer must be yes (the test fails rather than skips); elsewhere a test
/// that gets no skips, saying so.
pub fn root_or_skip(needed_for: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs as root, and this test needs it: {needed_for}"
    );
    eprintln!("skipped: {needed_for}");
    false
}

/// `vt trace --json -o LOG -- COMMAND…`, not yet run: the caller adds the cwd, the
/// environment or inherited descriptors, runs it, and reads `LOG` with [`read_trace_log`].
pub fn trace_json_command<S: AsRef<std::ffi::OsStr>>(
    vt: &std::path::Path,
    log: &std::path::Path,
    command: &[S],
) -> std::process::Command {
    let mut trace = std::process::Command::new(vt);
    trace
        .args(["trace", "--json", "-o"])
        .arg(log)
        .arg("--")
        .args(command);
    trace
}

/// The access log `vt trace --json -o LOG` wrote.
#[track_caller]
pub fn read_trace_log(log: &std::path::Path) -> serde_json::Value {
    let bytes = std::fs::read(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: not JSON: {e}", log.display()))
}

/// The `--json` summary `vt run`/`vt exec` print on stdout after whatever the tasks printed
/// there (`Null` if there is none).
pub fn json_summary(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let start = if text.starts_with("{\n") {
        Some(0)
    } else {
        text.rfind("\n{\n").map(|i| i + 1)
    };
    start
        .and_then(|i| serde_json::from_str(&text[i..]).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Writes `text` to `root/rel`, creating the directories on the way.
pub fn write(root: &std::path::Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("a file has a parent")).expect("mkdir");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A temp dir and its canonical path (tracers report canonical paths).
pub fn workdir() -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(temp.path()).expect("canonical");
    (temp, root)
}

/// A finished `vt run --json` / `vt exec --json`: its summary and what it said on stderr.
#[derive(Debug)]
pub struct RunSummary {
    pub output: std::process::Output,
    pub json: serde_json::Value,
}

impl RunSummary {
    pub fn of(output: std::process::Output) -> RunSummary {
        let json = json_summary(&output.stdout);
        RunSummary { output, json }
    }

    /// The result of task `label` (`pkg#task`); panics, with vt's stderr, if there is none.
    pub fn task(&self, label: &str) -> &serde_json::Value {
        self.json["tasks"]
            .as_array()
            .and_then(|tasks| tasks.iter().find(|t| t["task"] == label))
            .unwrap_or_else(|| panic!("no result for {label}: {}", self.stderr()))
    }

    pub fn status(&self, label: &str) -> String {
        self.task(label)["status"].as_str().unwrap_or("").to_owned()
    }

    pub fn reason(&self, label: &str) -> String {
        self.task(label)["reason"].as_str().unwrap_or("").to_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

//! Runner-aware tools inside `vt run` tasks (issue 6, runner side): every call of the Rust
//! client, and what each does to caching.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// The helper tool, built next to this test's binaries.
fn tool_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    assert!(
        dir.join("vt-tool").exists(),
        "vt-tool is not built in {}",
        dir.display()
    );
    dir
}

struct Ws {
    _temp: tempfile::TempDir,
    root: PathBuf,
}

impl Ws {
    fn new(script: &str) -> Ws {
        let temp = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(temp.path()).expect("canonical");
        let manifest = serde_json::json!({"name": "app", "scripts": {"build": script}});
        std::fs::write(root.join("package.json"), manifest.to_string()).expect("write");
        Ws { _temp: temp, root }
    }

    fn run(&self, env: &[(&str, &str)]) -> (Output, Value) {
        let path = format!(
            "{}:{}",
            tool_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let output = Command::new(vt_tests::vt_binary())
            .args(["run", "--json", "build"])
            .current_dir(&self.root)
            .env_remove("LD_LIBRARY_PATH")
            .env("PATH", path)
            .env("VT_CACHE_DIR", self.root.join("node_modules/.cache/vt"))
            .envs(env.iter().copied())
            .output()
            .expect("vt runs");
        let json = vt_tests::json_summary(&output.stdout);
        (output, json)
    }

    fn status(&self, env: &[(&str, &str)]) -> (String, String) {
        let (output, json) = self.run(env);
        let task = &json["tasks"][0];
        assert!(
            task.is_object(),
            "no result: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        (
            task["status"].as_str().unwrap_or("").to_owned(),
            task["reason"].as_str().unwrap_or("").to_owned(),
        )
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root.join(rel)).unwrap_or_default()
    }
}

#[track_caller]
fn expect(actual: (String, String), status: &str, reason: &str) {
    assert_eq!(actual.0, status, "reason: {}", actual.1);
    assert!(
        actual.1.contains(reason),
        "expected {reason:?} in {:?}",
        actual.1
    );
}

#[test]
fn a_tracked_get_env_joins_the_key_and_undeclared_values_reach_the_tool() {
    let ws = Ws::new("vt-tool get-env SECRET_MODE > out.txt");
    expect(
        ws.status(&[("SECRET_MODE", "a")]),
        "stored",
        "no previous run",
    );
    assert_eq!(
        ws.read("out.txt"),
        "a\n",
        "the tool gets a variable the task was not passed"
    );
    expect(ws.status(&[("SECRET_MODE", "a")]), "hit", "");
    expect(
        ws.status(&[("SECRET_MODE", "b")]),
        "stored",
        "env SECRET_MODE: a → b",
    );
    expect(ws.status(&[]), "stored", "env SECRET_MODE: b → (unset)");
    assert_eq!(ws.read("out.txt"), "(unset)\n");
}

#[test]
fn an_untracked_get_env_does_not() {
    let ws = Ws::new("vt-tool get-env SECRET_MODE --untracked > out.txt");
    expect(ws.status(&[("SECRET_MODE", "a")]), "stored", "");
    expect(ws.status(&[("SECRET_MODE", "b")]), "hit", "");
}

#[test]
fn a_tracked_get_envs_glob_misses_when_a_match_appears() {
    let ws = Ws::new("vt-tool get-envs 'APPX_*' > out.txt");
    expect(ws.status(&[("APPX_ONE", "1")]), "stored", "");
    expect(ws.status(&[("APPX_ONE", "1")]), "hit", "");
    expect(
        ws.status(&[("APPX_ONE", "1"), ("APPX_TWO", "2")]),
        "stored",
        "env APPX_*: the matching variables changed",
    );
    assert_eq!(ws.read("out.txt"), "APPX_ONE=1\nAPPX_TWO=2\n");
}

#[test]
fn ignore_input_drops_reads_made_before_the_call() {
    let ws = Ws::new("cat data.txt > out.txt; vt-tool ignore-input data.txt");
    std::fs::write(ws.root.join("data.txt"), "one\n").expect("write");
    expect(ws.status(&[]), "stored", "");
    std::fs::write(ws.root.join("data.txt"), "two\n").expect("write");
    expect(ws.status(&[]), "hit", "");
}

#[test]
fn ignore_output_is_neither_archived_nor_restored() {
    let ws = Ws::new(
        "echo keep > out.txt; echo scratch > scratch.txt; vt-tool ignore-output scratch.txt",
    );
    expect(ws.status(&[]), "stored", "");
    std::fs::remove_file(ws.root.join("out.txt")).expect("rm");
    std::fs::remove_file(ws.root.join("scratch.txt")).expect("rm");
    expect(ws.status(&[]), "hit", "");
    assert_eq!(ws.read("out.txt"), "keep\n");
    assert!(!ws.root.join("scratch.txt").exists());
}

#[test]
fn disable_cache_names_the_tool_and_its_pid() {
    let ws = Ws::new("echo x > out.txt; vt-tool disable-cache");
    let (status, reason) = ws.status(&[]);
    assert_eq!(status, "not_cached");
    assert!(reason.starts_with("disabled by vt-tool (pid "), "{reason}");
}

#[test]
fn an_ipc_failure_still_runs_the_task_but_does_not_cache_it() {
    let ws = Ws::new("vt-tool garbage; echo ran > out.txt");
    let (status, reason) = ws.status(&[]);
    assert_eq!(status, "not_cached", "{reason}");
    assert!(reason.contains("IPC server could not serve it"), "{reason}");
    assert_eq!(ws.read("out.txt"), "ran\n");
}

#[test]
fn sixteen_concurrent_tools_in_one_task() {
    let script = (0..16)
        .map(|i| format!("vt-tool get-env SECRET_MODE > out{i}.txt &"))
        .collect::<Vec<_>>()
        .join(" ")
        + " wait";
    let ws = Ws::new(&script);
    expect(ws.status(&[("SECRET_MODE", "m")]), "stored", "");
    for i in 0..16 {
        assert_eq!(ws.read(&format!("out{i}.txt")), "m\n");
    }
    expect(ws.status(&[("SECRET_MODE", "m")]), "hit", "");
}

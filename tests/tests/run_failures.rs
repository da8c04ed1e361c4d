//! A failing task (issue 23): without `--continue` vt starts nothing new after it (running
//! tasks finish), as turbo and pnpm do; with `--continue` it runs every task that does not
//! depend on the failure. Either way the exit status is the first failure's and the summary
//! names the failed and the skipped tasks.
//!
//! The graph, run with `-j1` so the order is fixed: `p1` → `p2` (fails, exit 3) → `p3`;
//! `p4` (writes a marker) and `p5` (fails, exit 4) stand alone and come after `p2`.

use std::path::Path;
use std::process::{Command, Output};

use vt_tests::{RunSummary, vt_binary, workdir, write};

fn workspace() -> (tempfile::TempDir, std::path::PathBuf) {
    let (temp, root) = workdir();
    write(
        &root,
        "package.json",
        r#"{"name":"root","private":true,"workspaces":["packages/*"]}"#,
    );
    let packages: [(&str, &str, &str); 5] = [
        ("p1", "", "echo one"),
        ("p2", r#""p1":"*""#, "exit 3"),
        ("p3", r#""p2":"*""#, "echo three"),
        ("p4", "", "touch ../../p4-ran"),
        ("p5", "", "exit 4"),
    ];
    for (name, deps, command) in packages {
        write(
            &root,
            &format!("packages/{name}/package.json"),
            &format!(
                r#"{{"name":"{name}","dependencies":{{{deps}}},"scripts":{{"build":"{command}"}}}}"#
            ),
        );
    }
    (temp, root)
}

fn run(root: &Path, extra: &[&str]) -> Output {
    Command::new(vt_binary())
        .current_dir(root)
        .env("VT_CACHE_DIR", root.join("cache"))
        .args(["run", "build", "-r", "-j1", "--no-cache", "--json"])
        .args(extra)
        .output()
        .expect("vt runs")
}

fn statuses(summary: &RunSummary) -> Vec<String> {
    (1..=5)
        .map(|i| summary.status(&format!("p{i}#build")))
        .collect()
}

#[test]
fn without_continue_nothing_new_starts_after_a_failure() {
    let (_temp, root) = workspace();
    let output = run(&root, &[]);
    assert_eq!(output.status.code(), Some(3), "the failure's exit status");
    let summary = RunSummary::of(output);
    let stderr = summary.stderr();
    assert_eq!(
        statuses(&summary),
        ["not_cached", "failed", "skipped", "skipped", "skipped"],
        "{stderr}"
    );
    assert!(!root.join("p4-ran").exists(), "p4 never started");
    assert!(stderr.contains("--continue"), "the hint: {stderr}");
    assert!(stderr.contains("failed:  p2#build (exit 3)"), "{stderr}");
    assert!(
        stderr.contains("skipped: p4#build (p2#build failed)"),
        "{stderr}"
    );
}

#[test]
fn with_continue_every_task_that_does_not_depend_on_the_failure_runs() {
    let (_temp, root) = workspace();
    let output = run(&root, &["--continue"]);
    assert_eq!(
        output.status.code(),
        Some(3),
        "the first failure's exit status, not the last's"
    );
    let summary = RunSummary::of(output);
    let stderr = summary.stderr();
    assert_eq!(
        statuses(&summary),
        ["not_cached", "failed", "skipped", "not_cached", "failed"],
        "{stderr}"
    );
    assert!(root.join("p4-ran").exists(), "p4 ran");
    assert!(stderr.contains("failed:  p2#build (exit 3)"), "{stderr}");
    assert!(stderr.contains("failed:  p5#build (exit 4)"), "{stderr}");
    assert!(
        stderr.contains("skipped: p3#build (p2#build failed)"),
        "{stderr}"
    );
    assert!(summary.json["summary"]["failed"] == 2, "{}", summary.json);
}

#[test]
fn the_control_without_a_failure_runs_everything_and_succeeds() {
    let (_temp, root) = workspace();
    for p in ["p2", "p5"] {
        write(
            &root,
            &format!("packages/{p}/package.json"),
            &format!(
                r#"{{"name":"{p}","dependencies":{{"p1":"*"}},"scripts":{{"build":"echo ok"}}}}"#
            ),
        );
    }
    let output = run(&root, &[]);
    assert!(output.status.success());
    let summary = RunSummary::of(output);
    assert_eq!(
        statuses(&summary),
        ["not_cached"; 5],
        "{}",
        summary.stderr()
    );
    assert!(root.join("p4-ran").exists());
}

/// vt's exit status reaches a parent that waits for *any* child (`wait()`, not
/// `waitpid(vt)`) before anything else of vt's: the janitor (`sandbox/src/janitor.rs`) is
/// vt's sibling and closes what is slow to close after vt has gone, so it must leave only
/// after vt's exit was reported, or such a parent would read the janitor's status (0) as
/// vt's. Twenty rounds, since without the ordering it is a race.
#[test]
fn a_parent_waiting_for_any_child_gets_the_failure_from_vt_first() {
    let (_temp, root) = workdir();
    write(&root, "package.json", r#"{"name":"root","private":true}"#);
    let parent = r#"
import os, sys
vt, cwd = sys.argv[1], sys.argv[2]
wrong = []
for _ in range(20):
    pid = os.fork()
    if pid == 0:
        os.chdir(cwd)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.execv(vt, [vt, "exec", "--no-cache", "--", "sh", "-c", "exit 3"])
    got, status = os.wait()
    if got != pid or os.waitstatus_to_exitcode(status) != 3:
        wrong.append((got == pid, os.waitstatus_to_exitcode(status)))
    try:
        while True:
            os.wait()
    except ChildProcessError:
        pass
print(wrong)
"#;
    let output = Command::new("python3")
        .args(["-c", parent])
        .arg(vt_binary())
        .arg(&root)
        .env("VT_CACHE_DIR", root.join(".vt-cache"))
        .output()
        .expect("python3");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "[]",
        "rounds where the first child reaped was not vt, or not with vt's status"
    );
}

/// vt piped into `head` (its stderr closed while it runs): the run goes on to its end and
/// vt exits with the run's status. Each status line used to panic the thread that wrote it
/// (`eprintln!` on a closed pipe) and the run waited for that task forever.
#[test]
fn a_closed_stderr_neither_stops_nor_hangs_the_run() {
    let (_temp, root) = workspace();
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader); // every write to vt's stderr now fails (EPIPE; vt ignores SIGPIPE)
    let child = Command::new(vt_binary())
        .current_dir(&root)
        .env("VT_CACHE_DIR", root.join("cache"))
        .args(["run", "build", "-r", "-j1", "--continue", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(writer)
        .spawn()
        .expect("vt starts");
    // Waited for on a thread: a hang fails the test instead of holding the suite.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output = finished
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("vt exits with its stderr closed")
        .expect("vt's output");
    assert_eq!(output.status.code(), Some(3), "the first failure's status");
    assert!(
        root.join("p4-ran").exists(),
        "the tasks after the failure ran"
    );
    let summary = vt_tests::json_summary(&output.stdout);
    assert_eq!(summary["summary"]["failed"], 2, "{summary}");
    // The control: the same run with a stderr that is read says the same.
    std::fs::remove_file(root.join("p4-ran")).expect("marker");
    let control = run(&root, &["--continue"]);
    assert_eq!(control.status.code(), Some(3));
    assert!(root.join("p4-ran").exists());
}

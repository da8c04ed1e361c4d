//! Persistent tasks (issue 23): `"persistent": true` marks a task that runs until stopped
//! (a dev server, a watcher). It is never cached, starts once what it depends on finished,
//! runs beside everything else outside the `-j` limit, gets vt's stdin when it is the only
//! task, and nothing may depend on it. Synchronised with fifos: the test holds the dev task
//! open until the other task has provably run.

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use vt_tests::{RunSummary, vt_binary, workdir, write};

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success());
}

fn vt(root: &Path) -> Command {
    let mut command = Command::new(vt_binary());
    command
        .current_dir(root)
        .env("VT_CACHE_DIR", root.join("cache"))
        .env("VT_CACHE_MAX_SIZE", "0");
    command
}

/// `build` prints what it built: the test sees it on vt's stdout while the build runs.
fn one_package(root: &Path, tasks: &str) {
    write(
        root,
        "package.json",
        r#"{"name":"app","scripts":{"build":"cat src.txt | tee out.txt"}}"#,
    );
    write(root, "vt.json", tasks);
    write(root, "src.txt", "v1\n");
}

#[test]
fn a_dev_task_runs_beside_a_cached_build_outside_the_jobs_limit() {
    let (_temp, root) = workdir();
    let (_fifo_temp, fifos) = workdir();
    // dev waits on a fifo outside the workspace (one inside is a file it reads: fine for a
    // task that is not cached, but this keeps the workspace plain).
    one_package(
        &root,
        &format!(
            r#"{{"tasks":{{"dev":{{"command":"read line < {}","persistent":true}}}}}}"#,
            fifos.join("release.fifo").display()
        ),
    );
    mkfifo(&fifos.join("release.fifo"));
    // -j1: the build has the one slot while dev runs.
    let mut child = vt(&root)
        .args(["run", "dev", "build", "-j1", "--cache", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vt");
    // The build ran (its output is on vt's stdout) while dev still waits for its release.
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read");
    assert_eq!(line, "v1\n");
    std::fs::OpenOptions::new()
        .write(true)
        .open(fifos.join("release.fifo"))
        .expect("open release.fifo")
        .write_all(b"go\n")
        .expect("release dev");
    let mut rest = line;
    stdout.read_to_string(&mut rest).expect("read");
    let mut output: Output = child.wait_with_output().expect("vt ends");
    output.stdout = rest.into_bytes();
    let summary = RunSummary::of(output);
    assert!(summary.output.status.success(), "{}", summary.stderr());
    assert_eq!(
        summary.status("app#build"),
        "stored",
        "{}",
        summary.stderr()
    );
    assert_eq!(summary.status("app#dev"), "not_cached");
    assert!(
        summary.reason("app#dev").contains("persistent"),
        "{}",
        summary.reason("app#dev")
    );

    // The control: the build alone hits (it was stored while dev ran).
    std::fs::remove_file(root.join("out.txt")).expect("rm out");
    let again = vt(&root)
        .args(["run", "build", "--cache", "--json"])
        .output();
    let again = RunSummary::of(again.expect("vt"));
    assert_eq!(again.status("app#build"), "hit", "{}", again.stderr());
    assert_eq!(
        std::fs::read_to_string(root.join("out.txt")).expect("out"),
        "v1\n"
    );
}

#[test]
fn a_persistent_task_alone_gets_stdin_and_others_get_dev_null() {
    let (_temp, root) = workdir();
    one_package(
        &root,
        r#"{"tasks":{
            "dev":{"command":"read line; echo \"got $line\" > got.txt","persistent":true},
            "once":{"command":"read line; echo \"got $line\" > got-once.txt","cache":false}
        }}"#,
    );
    for task in ["dev", "once"] {
        let mut child = vt(&root)
            .args(["run", task])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vt");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"hello\n")
            .expect("write");
        let output = child.wait_with_output().expect("vt ends");
        assert!(
            output.status.success(),
            "{task}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(
        std::fs::read_to_string(root.join("got.txt")).expect("got"),
        "got hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("got-once.txt")).expect("got"),
        "got \n",
        "a task that is not persistent reads /dev/null"
    );
}

#[test]
fn depending_on_a_persistent_task_is_a_config_error_naming_both() {
    let (_temp, root) = workdir();
    one_package(
        &root,
        r#"{"tasks":{
            "dev":{"command":"true","persistent":true},
            "e2e":{"command":"true","dependsOn":["dev"]}
        }}"#,
    );
    let output = vt(&root).args(["run", "e2e"]).output().expect("vt");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("app#e2e depends on app#dev") && stderr.contains("persistent"),
        "{stderr}"
    );
    assert!(!root.join("cache").exists(), "nothing ran");
}

/// Found with the first version of these tests: a task that wrote into a fifo in the
/// workspace made vt hang, archiving the fifo as an output (an open that waits for a
/// writer). Now the run is not stored, with the reason, and the control still stores.
#[test]
fn a_task_that_writes_into_a_fifo_in_the_workspace_is_not_stored() {
    let (_temp, root) = workdir();
    one_package(&root, r#"{"tasks":{}}"#);
    write(
        &root,
        "package.json",
        r#"{"name":"app","scripts":{"build":"cat src.txt > built.fifo"}}"#,
    );
    mkfifo(&root.join("built.fifo"));
    let child = vt(&root)
        .args(["run", "build", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vt");
    let mut built = String::new();
    std::fs::File::open(root.join("built.fifo"))
        .expect("open built.fifo")
        .read_to_string(&mut built)
        .expect("read");
    let summary = RunSummary::of(child.wait_with_output().expect("vt ends"));
    assert!(summary.output.status.success(), "{}", summary.stderr());
    assert_eq!(
        summary.status("app#build"),
        "not_cached",
        "{}",
        summary.stderr()
    );
    assert!(
        summary.reason("app#build").contains("built.fifo"),
        "{}",
        summary.reason("app#build")
    );
    // The control: the same task writing a regular file is stored.
    std::fs::remove_file(root.join("built.fifo")).expect("rm fifo");
    let stored = RunSummary::of(
        vt(&root)
            .args(["run", "build", "--json"])
            .output()
            .expect("vt"),
    );
    assert_eq!(stored.status("app#build"), "stored", "{}", stored.stderr());
}

/// Ctrl-C (SIGINT to vt) is passed on to the task, which stops the way it stops by hand:
/// here it traps the signal and writes a file before it exits.
#[test]
fn a_signal_to_vt_reaches_the_task_so_it_can_clean_up() {
    let (_temp, root) = workdir();
    one_package(
        &root,
        r#"{"tasks":{"dev":{"command":"trap 'echo cleaned > cleaned.txt; exit 0' INT; sleep 1000 & echo ready; wait","persistent":true}}}"#,
    );
    let mut child = vt(&root)
        .args(["run", "dev"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vt");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read");
    assert_eq!(line, "ready\n");
    // SAFETY: kill on the pid of a child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let output = child.wait_with_output().expect("vt ends");
    assert_eq!(output.status.code(), Some(128 + 2));
    assert_eq!(
        std::fs::read_to_string(root.join("cleaned.txt")).expect("the task cleaned up"),
        "cleaned\n",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

//! Remote execution for real: BuildGrid 0.4.4 with its Execution and Bots services on a
//! PostgreSQL scheduler (both started here), two `vt worker` processes, and
//! `vt run --remote-exec` of a ten-package workspace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use serde_json::Value;
use vt_tests::buildgrid::{Server, bgd};
use vt_tests::{json_summary, vt_binary, workdir, write};

/// A `vt worker`, killed when dropped.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(url: &str, id: &str, dir: &Path) -> Worker {
        Worker::start_with(url, id, dir, &[])
    }

    fn start_with(url: &str, id: &str, dir: &Path, args: &[&str]) -> Worker {
        let log = dir.join(format!("{id}.log"));
        let file = std::fs::File::create(&log).expect("log");
        let child = Command::new(vt_binary())
            .args(["worker", "--server", url, "--bot-id", id, "--work-dir"])
            .arg(dir.join(id))
            .args(args)
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("vt worker");
        Worker { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// p0 is the base; p1..p8 read its output; p9 reads all of theirs.
const BUILD_JS: &str = r#"
const fs = require("node:fs");
const pkg = JSON.parse(fs.readFileSync("package.json", "utf8"));
let text = "";
for (const dep of Object.keys(pkg.dependencies ?? {}).sort()) {
  text += fs.readFileSync("../" + dep + "/dist/out.txt", "utf8");
}
text += pkg.name + ": " + fs.readFileSync("src/index.js", "utf8");
fs.mkdirSync("dist", { recursive: true });
fs.writeFileSync("dist/out.txt", text);
console.log("built " + pkg.name);
"#;

fn workspace() -> (tempfile::TempDir, PathBuf) {
    let (temp, root) = workdir();
    write(
        &root,
        "package.json",
        r#"{"name":"root","private":true,"workspaces":["packages/*"]}"#,
    );
    for i in 0..10 {
        let deps: Vec<String> = match i {
            0 => Vec::new(),
            9 => (1..9).map(|d| format!(r#""p{d}":"*""#)).collect(),
            _ => vec![r#""p0":"*""#.to_owned()],
        };
        let dir = format!("packages/p{i}");
        write(
            &root,
            &format!("{dir}/package.json"),
            &format!(
                r#"{{"name":"p{i}","scripts":{{"build":"node build.js"}},"dependencies":{{{}}}}}"#,
                deps.join(",")
            ),
        );
        write(
            &root,
            &format!("{dir}/vt.json"),
            r#"{ "tasks": { "build": { "dependsOn": ["^build"] } } }"#,
        );
        write(&root, &format!("{dir}/build.js"), BUILD_JS);
        write(&root, &format!("{dir}/src/index.js"), &format!("// p{i}\n"));
    }
    (temp, root)
}

fn vt(root: &Path, engine: &str, args: &[&str]) -> (Output, Value) {
    vt_with(root, engine, args, &[])
}

fn vt_with(root: &Path, engine: &str, args: &[&str], env: &[(&str, &str)]) -> (Output, Value) {
    let output = Command::new(vt_binary())
        .current_dir(root)
        .env("VT_CACHE_DIR", root.join(".local-cache"))
        .env("VT_REMOTE_EXEC", engine)
        .env_remove("VT_REMOTE_CACHE")
        .env_remove("CI")
        .envs(env.iter().copied())
        .args(["run", "--json", "-r", "build"])
        .args(args)
        .output()
        .expect("vt");
    let json = json_summary(&output.stdout);
    (output, json)
}

fn tasks(json: &Value) -> &Vec<Value> {
    json["tasks"].as_array().expect("a JSON summary")
}

fn outputs(root: &Path) -> Vec<(String, Vec<u8>)> {
    (0..10)
        .map(|i| {
            let rel = format!("packages/p{i}/dist/out.txt");
            let bytes = std::fs::read(root.join(&rel)).unwrap_or_default();
            (rel, bytes)
        })
        .collect()
}

#[test]
fn ten_packages_run_on_two_workers_then_hit() {
    let Some(bgd) = bgd() else { return };
    let engine = Server::engine(&bgd, 120);
    let (_dir, dir) = workdir();
    let workers = [
        Worker::start(&engine.url(), "w1", &dir),
        Worker::start(&engine.url(), "w2", &dir),
    ];
    let logs = || {
        format!(
            "{}\n{}\nBuildGrid:\n{}",
            workers[0].log(),
            workers[1].log(),
            engine.log()
        )
    };
    // What a local run produces, for comparison.
    let (_local, local) = workspace();
    let (out, _) = vt(&local, "grpc://127.0.0.1:1", &[]);
    assert!(out.status.success());

    let (_ws, root) = workspace();
    let (out, json) = vt(&root, &engine.url(), &["--remote-exec", "-j", "4"]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{text}\n{}", logs());
    for task in tasks(&json) {
        assert_eq!(task["status"], "stored", "{task}\n{text}");
        let worker = task["worker"].as_str().unwrap_or_default();
        assert!(
            worker == "w1" || worker == "w2",
            "{} ran on {worker:?}:\n{text}",
            task["task"]
        );
    }
    assert_eq!(json["summary"]["remote"], 10, "{text}");
    assert_eq!(outputs(&root), outputs(&local), "the same bytes as locally");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for i in 0..10 {
        assert!(
            stdout.contains(&format!("built p{i}\n")),
            "p{i}'s output shown"
        );
    }
    eprintln!(
        "leases: w1 {}, w2 {}",
        workers[0].log().matches("done: exit").count(),
        workers[1].log().matches("done: exit").count()
    );

    // Everything is in the local cache now.
    std::fs::remove_dir_all(root.join("packages/p5/dist")).expect("rm dist");
    let (out, json) = vt(&root, &engine.url(), &["--remote-exec"]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    for task in tasks(&json) {
        assert_eq!(task["status"], "hit", "{task}\n{text}");
        assert!(task.get("worker").is_none());
    }
    assert_eq!(outputs(&root), outputs(&local), "p5 restored");

    // An edit reruns everything that depends on it, remotely, and the last path sets make
    // every input root complete at the first submission.
    write(&root, "packages/p0/src/index.js", "// p0, edited\n");
    write(&local, "packages/p0/src/index.js", "// p0, edited\n");
    let (out, _) = vt(&local, "grpc://127.0.0.1:1", &[]);
    assert!(out.status.success());
    let (out, json) = vt(&root, &engine.url(), &["--remote-exec", "-j", "4"]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{text}\n{}", logs());
    assert!(!text.contains("resubmitting"), "{text}");
    for task in tasks(&json) {
        assert_eq!(task["status"], "stored", "{task}\n{text}");
        assert!(task["worker"].is_string(), "{task}");
    }
    assert_eq!(outputs(&root), outputs(&local));
}

#[test]
fn a_file_the_input_root_lacked_is_found_and_resubmitted() {
    let Some(bgd) = bgd() else { return };
    let engine = Server::engine(&bgd, 120);
    let (_dir, dir) = workdir();
    let _worker = Worker::start(&engine.url(), "w1", &dir);
    let (_ws, root) = workdir();
    write(
        &root,
        "package.json",
        r#"{"name":"root","private":true,"workspaces":["packages/*"]}"#,
    );
    write(
        &root,
        "packages/app/package.json",
        r#"{"name":"app","scripts":{"build":"mkdir -p dist && cat ../../config/banner.txt src/index.js > dist/out.txt"}}"#,
    );
    write(&root, "packages/app/src/index.js", "// app\n");
    write(&root, "config/banner.txt", "/* banner */\n");
    // No previous run, no dependency: the input root is the package alone. The worker's
    // trace shows the task looked for config/banner.txt; it exists here, so vt resubmits
    // with it.
    let (out, json) = vt(&root, &engine.url(), &["--remote-exec"]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("app#build: the worker saw config/banner.txt differently"),
        "{text}"
    );
    assert!(text.contains("(2 submissions)"), "{text}");
    assert_eq!(tasks(&json)[0]["status"], "stored");
    assert_eq!(
        std::fs::read_to_string(root.join("packages/app/dist/out.txt")).unwrap_or_default(),
        "/* banner */\n// app\n"
    );
    // The stored path set names it: an edit is a miss, and the next submission includes it
    // from the start.
    write(&root, "config/banner.txt", "/* new banner */\n");
    let (out, json) = vt(&root, &engine.url(), &["--remote-exec"]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        text.contains("config/banner.txt: content changed"),
        "{text}"
    );
    assert!(!text.contains("resubmitting"), "{text}");
    assert_eq!(tasks(&json)[0]["worker"], "w1");
    assert_eq!(
        std::fs::read_to_string(root.join("packages/app/dist/out.txt")).unwrap_or_default(),
        "/* new banner */\n// app\n"
    );
}

#[test]
fn a_worker_runs_actions_in_the_sandbox() {
    let Some(bgd) = bgd() else { return };
    let engine = Server::engine(&bgd, 120);
    let (_dir, dir) = workdir();
    let _worker = Worker::start(&engine.url(), "w1", &dir);
    let (_ws, root) = workdir();
    let target = format!("/root/vt-remote-escape-{}", std::process::id());
    write(
        &root,
        "package.json",
        &format!(r#"{{"name":"evil","scripts":{{"build":"echo pwned > {target}"}}}}"#),
    );
    let (out, json) = vt(&root, &engine.url(), &["--remote-exec"]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{text}");
    let task = &tasks(&json)[0];
    assert_eq!(task["status"], "failed", "{text}");
    assert_eq!(task["worker"], "w1");
    assert!(
        task["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("on worker w1"),
        "{task}"
    );
    assert!(!Path::new(&target).exists(), "the host was written");
}

#[test]
fn an_unavailable_engine_means_local_runs_and_one_warning() {
    let (_ws, root) = workspace();
    let (out, json) = vt(&root, "grpc://127.0.0.1:1", &["--remote-exec", "-F", "p1"]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("is unavailable").count(), 1, "{text}");
    for task in tasks(&json) {
        assert_eq!(task["status"], "stored", "{task}");
        assert!(task.get("worker").is_none());
    }
}

#[test]
fn remote_exec_without_an_engine_is_a_clear_error() {
    let (_ws, root) = workspace();
    let output = Command::new(vt_binary())
        .current_dir(&root)
        .env_remove("VT_REMOTE_EXEC")
        .env_remove("VT_REMOTE_CACHE")
        .args(["run", "-r", "build", "--remote-exec"])
        .output()
        .expect("vt");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(text.contains("--remote-exec needs an engine"), "{text}");
    assert!(!root.join("packages/p0/dist").exists(), "nothing ran");
}

#[test]
fn a_worker_busy_longer_than_the_keepalive_timeout_keeps_its_lease() {
    let Some(bgd) = bgd() else { return };
    // BuildGrid drops bots silent for 8 s (its expiry check runs every 10 s); the action
    // takes 15 s; the worker, at its capacity of one action, reports every 2 s.
    let engine = Server::engine(&bgd, 8);
    let (_dir, dir) = workdir();
    let worker = Worker::start_with(
        &engine.url(),
        "w1",
        &dir,
        &["--keepalive", "2", "--jobs", "1"],
    );
    let (_ws, root) = workdir();
    write(
        &root,
        "package.json",
        r#"{"name":"slow","scripts":{"build":"sleep 15 && echo done > out.txt"}}"#,
    );
    let (out, json) = vt(&root, &engine.url(), &["--remote-exec"]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{text}\n{}", worker.log());
    assert_eq!(tasks(&json)[0]["worker"], "w1", "{text}");
    assert_eq!(
        worker.log().matches("done: exit 0").count(),
        1,
        "ran once, not requeued:\n{}",
        worker.log()
    );
    assert!(
        !worker.log().contains("keepalive failed"),
        "{}",
        worker.log()
    );
    assert_eq!(
        std::fs::read_to_string(root.join("out.txt")).unwrap_or_default(),
        "done\n"
    );
}

#[test]
fn an_action_past_its_timeout_is_killed_on_the_worker_and_runs_locally() {
    let Some(bgd) = bgd() else { return };
    let engine = Server::engine(&bgd, 120);
    let (_dir, dir) = workdir();
    let worker = Worker::start(&engine.url(), "w1", &dir);
    let (_ws, root) = workdir();
    // Hangs only inside the worker's sandbox (whose hostname is vt-sandbox).
    write(
        &root,
        "package.json",
        r#"{"name":"slow","scripts":{"build":"if [ \"$(cat /proc/sys/kernel/hostname)\" = vt-sandbox ]; then sleep 60; fi; echo done > out.txt"}}"#,
    );
    let started = std::time::Instant::now();
    let (output, json) = vt_with(
        &root,
        &engine.url(),
        &["--remote-exec"],
        &[("VT_REMOTE_EXEC_TIMEOUT_S", "3")],
    );
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{text}\n{}", worker.log());
    assert!(
        text.contains("running locally: it timed out on the worker"),
        "{text}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(45),
        "the worker did not kill the action: {:?}",
        started.elapsed()
    );
    assert!(
        worker.log().contains("ran past its timeout of 3 s"),
        "{}",
        worker.log()
    );
    assert_eq!(tasks(&json)[0]["status"], "stored");
    assert!(tasks(&json)[0].get("worker").is_none());
}

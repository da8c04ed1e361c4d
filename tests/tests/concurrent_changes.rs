//! The world moving while a task runs (issue 20): an input edited, a missing file
//! appearing, a listed directory changing, an input deleted or renamed, another task of the
//! same run writing what this one read, and a task's own earlier state. Each must end with
//! nothing stored (or, for the prior state, a miss), and the next run must produce what a
//! fresh run produces now; the same workspace without the change must still hit.
//!
//! Every case runs under each tracer configuration: seccomp with and without the fast path,
//! ptrace, and seccomp in the sandbox. The task and the test meet on two fifos in `sync/`
//! (excluded from the task's inputs and outputs): the task writes `sync/ready` once it has
//! observed, which blocks until the test opens it; the test changes the workspace, then
//! writes `sync/go`, which the task is blocked reading. No sleeps.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use vt_tests::{json_summary, vt_binary, workdir};

/// How vt traces and confines the task.
#[derive(Debug, Clone, Copy)]
struct Config {
    name: &'static str,
    env: &'static [(&'static str, &'static str)],
    sandbox: bool,
}

const CONFIGS: [Config; 4] = [
    Config {
        name: "seccomp",
        env: &[("VT_TRACER", "seccomp")],
        sandbox: false,
    },
    Config {
        name: "seccomp, VT_PRELOAD=off",
        env: &[("VT_TRACER", "seccomp"), ("VT_PRELOAD", "off")],
        sandbox: false,
    },
    Config {
        name: "ptrace",
        env: &[("VT_TRACER", "ptrace")],
        sandbox: false,
    },
    Config {
        name: "seccomp --sandbox",
        env: &[("VT_TRACER", "seccomp")],
        sandbox: true,
    },
];

/// Blocks at the `pause` point while the fifos exist; without them it runs straight through.
const PAUSE: &str =
    "pause() { if [ -p sync/ready ]; then echo ready > sync/ready; read -r _ < sync/go; fi; }\n";

struct Ws {
    _temp: tempfile::TempDir,
    root: PathBuf,
    config: Config,
}

impl Ws {
    /// A workspace whose `build` task runs `script` (with `pause` defined) and writes into
    /// `out/`; more tasks as (name, script).
    fn new(config: Config, script: &str, more: &[(&str, &str)]) -> Ws {
        let (temp, root) = workdir();
        let ws = Ws {
            _temp: temp,
            root,
            config,
        };
        ws.write("package.json", r#"{"name":"app","private":true}"#);
        let mut tasks = vec![format!(
            r#""build": {{ "command": "sh build.sh", {} }}"#,
            rules("out")
        )];
        ws.write("build.sh", &format!("{PAUSE}{script}"));
        for (name, body) in more {
            ws.write(&format!("{name}.sh"), &format!("{PAUSE}{body}"));
            tasks.push(format!(
                r#""{name}": {{ "command": "sh {name}.sh", {} }}"#,
                rules(name)
            ));
        }
        ws.write(
            "vt.json",
            &format!(r#"{{ "tasks": {{ {} }} }}"#, tasks.join(", ")),
        );
        ws.write("src/in.txt", "v1\n");
        ws.write("src/other.txt", "other\n");
        std::fs::create_dir_all(ws.path("out")).expect("mkdir out");
        ws
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        vt_tests::write(&self.root, rel, text);
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    fn command(&self, tasks: &[&str]) -> Command {
        let mut command = Command::new(vt_binary());
        command
            .current_dir(&self.root)
            .env("VT_CACHE_DIR", self.root.join(".vt-cache"))
            .env_remove("VT_PRELOAD")
            .envs(self.config.env.iter().copied())
            .args(["run", "--json", "-j", "2"]);
        if self.config.sandbox {
            command.arg("--sandbox");
        }
        command
            .args(tasks)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs the tasks straight through (no fifos).
    fn run(&self, tasks: &[&str]) -> Run {
        self.remove_fifos();
        Run::of(self, self.command(tasks).output().expect("vt runs"))
    }

    /// Runs `build`, and while it is paused after observing, calls `change`.
    fn run_changing(&self, change: impl FnOnce(&Ws)) -> Run {
        self.make_fifos();
        let child = self.command(&["build"]).spawn().expect("vt starts");
        let child = Unblock::after_exit(child, self.path("sync"));
        let mut ready = String::new();
        std::fs::File::open(self.path("sync/ready"))
            .and_then(|mut f| f.read_to_string(&mut ready))
            .expect("read sync/ready");
        if ready.trim() != "ready" {
            let output = child.wait();
            panic!(
                "{}: the task ended before it paused: {}",
                self.config.name,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        change(self);
        std::fs::OpenOptions::new()
            .write(true)
            .open(self.path("sync/go"))
            .and_then(|mut f| f.write_all(b"go\n"))
            .expect("write sync/go");
        let output = child.wait();
        self.remove_fifos();
        Run::of(self, output)
    }

    /// Runs `tasks` with the fifos in place (the tasks synchronise among themselves).
    fn run_with_fifos(&self, tasks: &[&str]) -> Run {
        self.make_fifos();
        let output = self.command(tasks).output().expect("vt runs");
        self.remove_fifos();
        Run::of(self, output)
    }

    fn make_fifos(&self) {
        std::fs::create_dir_all(self.path("sync")).expect("mkdir sync");
        for name in ["ready", "go", "read", "written"] {
            let path = self.path(&format!("sync/{name}"));
            let _ = std::fs::remove_file(&path);
            let status = Command::new("mkfifo").arg(&path).status().expect("mkfifo");
            assert!(status.success(), "mkfifo {}", path.display());
        }
    }

    fn remove_fifos(&self) {
        let _ = std::fs::remove_dir_all(self.path("sync"));
    }
}

/// A task's globs: the fifos are neither inputs nor outputs; `dir/` holds its outputs (the
/// sandbox's writable directory), one per task so that no two declare the same files.
fn rules(dir: &str) -> String {
    format!(
        r#""input": [{{"auto": true}}, "!sync/**"], "output": [{{"auto": true}}, "{dir}/**", "!sync/**"]"#
    )
}

/// A running vt whose fifos are opened once it exits, so a test blocked on one of them
/// wakes up (and reports vt's output) instead of hanging when the task fails early.
struct Unblock {
    waiter: std::thread::JoinHandle<Output>,
}

impl Unblock {
    fn after_exit(child: Child, sync: PathBuf) -> Unblock {
        let waiter = std::thread::spawn(move || {
            let output = child.wait_with_output().expect("wait for vt");
            for name in ["ready", "go"] {
                // O_RDWR on a fifo never blocks, and completes the other side's open.
                let _ = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(sync.join(name));
            }
            output
        });
        Unblock { waiter }
    }

    fn wait(self) -> Output {
        self.waiter.join().expect("the waiter thread")
    }
}

/// A run's summary, named for the configuration it ran under.
struct Run {
    summary: vt_tests::RunSummary,
    config: &'static str,
}

impl Run {
    fn of(ws: &Ws, output: Output) -> Run {
        Run {
            summary: vt_tests::RunSummary::of(output),
            config: ws.config.name,
        }
    }

    fn status(&self, task: &str) -> String {
        self.summary.status(&format!("app#{task}"))
    }

    fn reason(&self, task: &str) -> String {
        self.summary.reason(&format!("app#{task}"))
    }

    fn stderr(&self) -> String {
        self.summary.stderr()
    }

    #[track_caller]
    fn assert_status(&self, task: &str, status: &str, reason: &str) {
        assert_eq!(
            (
                self.status(task).as_str(),
                self.reason(task).contains(reason)
            ),
            (status, true),
            "{}: app#{task}: expected {status} ({reason:?}), got {} ({:?})\n{}",
            self.config,
            self.status(task),
            self.reason(task),
            self.stderr()
        );
    }

    #[track_caller]
    fn assert_not_stored(&self, task: &str, reason: &str) {
        self.assert_status(task, "not_cached", reason);
        let line = format!("app#{task}: not cached: {reason}");
        assert!(
            self.stderr().contains(&line),
            "{}: no line {line:?} in:\n{}",
            self.config,
            self.stderr()
        );
    }

    #[track_caller]
    fn assert_stored(&self, task: &str) {
        self.assert_status(task, "stored", "");
    }

    #[track_caller]
    fn assert_hit(&self, task: &str) {
        self.assert_status(task, "hit", "");
    }
}

/// For every configuration: a run during which `change` happens is not stored with
/// `reason`; the next run executes and stores what a fresh run gives now (`expect` in
/// out/out.txt), and the one after hits. The control, the same run without the change, is
/// stored and then hits.
fn case(script: &str, change: fn(&Ws), reason: &str, expect: &str) {
    for config in CONFIGS {
        let ws = Ws::new(config, script, &[]);
        ws.run_changing(change).assert_not_stored("build", reason);
        let after = ws.run(&["build"]);
        after.assert_stored("build");
        assert_eq!(ws.read("out/out.txt"), expect, "{}", config.name);
        ws.run(&["build"]).assert_hit("build");

        let control = Ws::new(config, script, &[]);
        control.run_changing(|_| {}).assert_stored("build");
        control.run(&["build"]).assert_hit("build");
    }
}

const READS_IN: &str = "cat src/in.txt > out/out.txt\npause\n";

#[test]
fn c1_an_input_edited_while_the_task_runs_is_not_stored() {
    case(
        READS_IN,
        |ws| ws.write("src/in.txt", "v2\n"),
        "src/in.txt changed while the task ran",
        "v2\n",
    );
}

/// With `input` naming the files (traced reads off, vite-task's rule), the declared file
/// is hashed before the task starts: an edit while it runs must not be stored under the
/// old contents' key. The control, unchanged, is stored and hits.
#[test]
fn c1_a_declared_input_edited_while_the_task_runs_is_not_stored() {
    let declared = |ws: &Ws| {
        ws.write(
            "vt.json",
            r#"{ "tasks": { "build": { "command": "sh build.sh", "input": ["src/in.txt"], "output": [{"auto": true}, "out/**", "!sync/**"] } } }"#,
        )
    };
    for config in CONFIGS {
        let ws = Ws::new(config, READS_IN, &[]);
        declared(&ws);
        ws.run_changing(|ws| ws.write("src/in.txt", "v2\n"))
            .assert_not_stored(
                "build",
                "src/in.txt (a declared input) changed while the task ran",
            );
        ws.run(&["build"]).assert_stored("build");
        assert_eq!(ws.read("out/out.txt"), "v2\n", "{}", config.name);
        ws.run(&["build"]).assert_hit("build");

        let control = Ws::new(config, READS_IN, &[]);
        declared(&control);
        control.run_changing(|_| {}).assert_stored("build");
        control.run(&["build"]).assert_hit("build");
    }
}

#[test]
fn c1_a_same_size_edit_with_the_old_mtime_put_back_is_not_stored() {
    case(
        READS_IN,
        |ws| {
            let path = ws.path("src/in.txt");
            let before = std::fs::metadata(&path)
                .expect("stat")
                .modified()
                .expect("mtime");
            std::fs::write(&path, "v9\n").expect("edit");
            // `touch -d`: mtime back to what it was; only ctime tells.
            let file = std::fs::File::options()
                .write(true)
                .open(&path)
                .expect("open");
            file.set_modified(before).expect("set mtime");
        },
        "src/in.txt changed while the task ran",
        "v9\n",
    );
}

#[test]
fn c2_a_file_appearing_after_a_failed_lookup_is_not_stored() {
    case(
        "if [ -e src/opt.txt ]; then cat src/opt.txt; else echo none; fi > out/out.txt\npause\n",
        |ws| ws.write("src/opt.txt", "opt\n"),
        "src/opt.txt appeared while the task ran",
        "opt\n",
    );
}

#[test]
fn c3_a_listed_directory_gaining_an_entry_is_not_stored() {
    case(
        "ls src > out/out.txt\npause\n",
        |ws| ws.write("src/new.txt", "new\n"),
        "src had entries added or removed while the task ran",
        "in.txt\nnew.txt\nother.txt\n",
    );
}

#[test]
fn c3_a_listed_directory_losing_an_entry_is_not_stored() {
    case(
        "ls src > out/out.txt\npause\n",
        |ws| std::fs::remove_file(ws.path("src/other.txt")).expect("rm"),
        "src had entries added or removed while the task ran",
        "in.txt\n",
    );
}

const READS_IN_IF_THERE: &str =
    "cat src/in.txt 2>/dev/null > out/out.txt || echo gone > out/out.txt\npause\n";

#[test]
fn c4_an_input_deleted_while_the_task_runs_is_not_stored() {
    case(
        READS_IN_IF_THERE,
        |ws| std::fs::remove_file(ws.path("src/in.txt")).expect("rm"),
        "src/in.txt was deleted while the task ran",
        "gone\n",
    );
}

#[test]
fn c4_an_input_renamed_away_while_the_task_runs_is_not_stored() {
    case(
        READS_IN_IF_THERE,
        |ws| std::fs::rename(ws.path("src/in.txt"), ws.path("src/moved.txt")).expect("mv"),
        "src/in.txt was deleted while the task ran",
        "gone\n",
    );
}

/// A file rewritten right after vt hashed it, within the same second, with its size and
/// mtime as before: the stat memo must not vouch for the old hash (git's racy-clean rule),
/// so the next run hashes it again and misses.
#[test]
fn c6_a_file_rewritten_in_the_tick_it_was_hashed_in_is_hashed_again() {
    for config in CONFIGS {
        let ws = Ws::new(config, READS_IN, &[]);
        ws.run(&["build"]).assert_stored("build");
        let path = ws.path("src/in.txt");
        let before = std::fs::metadata(&path)
            .expect("stat")
            .modified()
            .expect("mtime");
        std::fs::write(&path, "v2\n").expect("rewrite");
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(before))
            .expect("touch -d");
        ws.run(&["build"])
            .assert_status("build", "stored", "src/in.txt: content changed");
        assert_eq!(ws.read("out/out.txt"), "v2\n", "{}", config.name);
        ws.run(&["build"]).assert_hit("build");
    }
}

/// Two tasks of one `vt run -j2` that do not depend on each other: `writer` rewrites
/// `writer/shared.txt` after `build` has read it (the tasks meet on fifos of their own).
#[test]
fn c5_a_file_another_task_of_the_run_wrote_after_it_was_read_is_not_stored() {
    let reader = "cat writer/shared.txt > out/out.txt\n\
                  if [ -p sync/read ]; then echo read > sync/read; read -r _ < sync/written; fi\n";
    let writer = "if [ -p sync/read ]; then read -r _ < sync/read; fi\n\
                  echo v2 > writer/shared.txt\n\
                  if [ -p sync/written ]; then echo written > sync/written; fi\n";
    for config in CONFIGS {
        let ws = Ws::new(config, reader, &[("writer", writer)]);
        ws.write("writer/shared.txt", "v1\n");
        if config.name == "ptrace" {
            // The ptrace tracer runs one task at a time: the two cannot overlap, so the
            // handshake would deadlock. Run them as they will run: one after the other.
            let run = ws.run(&["build", "writer"]);
            run.assert_stored("writer");
            let seen = ws.read("out/out.txt");
            assert!(seen == "v1\n" || seen == "v2\n", "ptrace: {seen:?}");
            continue;
        }
        let run = ws.run_with_fifos(&["build", "writer"]);
        run.assert_not_stored("build", "writer/shared.txt changed while the task ran");
        run.assert_stored("writer");
        assert_eq!(ws.read("out/out.txt"), "v1\n", "{}", config.name);
        // Next run: the writer's result is replayed (v2), the reader reads v2 and is stored.
        let next = ws.run(&["build"]);
        next.assert_stored("build");
        assert_eq!(ws.read("out/out.txt"), "v2\n", "{}", config.name);
        ws.run(&["build"]).assert_hit("build");

        // Control: the writer writes another file; both are stored, then both hit.
        let control = Ws::new(
            config,
            reader,
            &[(
                "writer",
                &writer.replace("writer/shared.txt", "writer/mine.txt"),
            )],
        );
        control.write("writer/shared.txt", "v1\n");
        let run = control.run_with_fifos(&["build", "writer"]);
        run.assert_stored("build");
        run.assert_stored("writer");
        let again = control.run(&["build", "writer"]);
        again.assert_hit("build");
        again.assert_hit("writer");
    }
}

/// A task that decides on the state of a path before it changes it itself.
#[test]
fn c7_the_state_a_task_found_before_changing_a_path_is_keyed() {
    let script = "if [ -e out/gen.txt ]; then echo old > out/out.txt; else echo new > out/out.txt; fi\n\
                  touch out/gen.txt\n";
    for config in CONFIGS {
        let ws = Ws::new(config, script, &[]);
        ws.run(&["build"]).assert_stored("build");
        assert_eq!(ws.read("out/out.txt"), "new\n");
        // gen.txt exists now: a fresh run says "old", so this must not replay "new".
        let second = ws.run(&["build"]);
        second.assert_status(
            "build",
            "stored",
            "out/gen.txt exists (it was missing before the cached run made it)",
        );
        assert_eq!(ws.read("out/out.txt"), "old\n", "{}", config.name);
        ws.run(&["build"]).assert_hit("build");
        assert_eq!(ws.read("out/out.txt"), "old\n", "{}", config.name);
        // Back to the first state: its entry hits and replays "new".
        std::fs::remove_file(ws.path("out/gen.txt")).expect("rm");
        ws.run(&["build"]).assert_hit("build");
        assert_eq!(ws.read("out/out.txt"), "new\n", "{}", config.name);
    }
}

/// What must not regress: a dependency's outputs written just before its dependent starts,
/// a file written just before vt starts, files a task writes and renames into place, and a
/// task's own `mkdir -p`: stored, then hit.
#[test]
fn ordinary_builds_written_just_before_or_by_the_task_still_hit() {
    for config in CONFIGS {
        let (_temp, root) = workdir();
        let write = |rel: &str, text: &str| vt_tests::write(&root, rel, text);
        write(
            "package.json",
            r#"{"name":"root","private":true,"workspaces":["packages/*"]}"#,
        );
        write(
            "packages/lib/package.json",
            r#"{"name":"lib","scripts":{"build":"mkdir -p out && cat src.txt > out/tmp && mv out/tmp out/lib.txt"}}"#,
        );
        write(
            "packages/lib/vt.json",
            r#"{ "tasks": { "build": { "output": [{"auto": true}, "out/**"] } } }"#,
        );
        write(
            "packages/app/package.json",
            r#"{"name":"app","dependencies":{"lib":"*"},"scripts":{"build":"mkdir -p out && cat ../lib/out/lib.txt src.txt > out/app.txt"}}"#,
        );
        write(
            "packages/app/vt.json",
            r#"{ "tasks": { "build": { "dependsOn": ["^build"], "output": [{"auto": true}, "out/**"] } } }"#,
        );
        write("packages/app/src.txt", "app\n");
        let run = || {
            let mut command = Command::new(vt_binary());
            command
                .current_dir(&root)
                .env("VT_CACHE_DIR", root.join(".vt-cache"))
                .env_remove("VT_PRELOAD")
                .envs(config.env.iter().copied())
                .args(["run", "--json", "-r", "build"]);
            if config.sandbox {
                command.arg("--sandbox");
            }
            let output = command.output().expect("vt runs");
            let json = json_summary(&output.stdout);
            let statuses: Vec<String> = ["lib#build", "app#build"]
                .iter()
                .map(|label| {
                    json["tasks"]
                        .as_array()
                        .and_then(|t| t.iter().find(|t| t["task"] == *label))
                        .map(|t| t["status"].as_str().unwrap_or("?").to_owned())
                        .unwrap_or_else(|| {
                            panic!(
                                "{}: {label}: {}",
                                config.name,
                                String::from_utf8_lossy(&output.stderr)
                            )
                        })
                })
                .collect();
            (
                statuses,
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        };
        // Written right before vt starts (within one timestamp tick, most of the time).
        write("packages/lib/src.txt", "lib\n");
        let (first, stderr) = run();
        assert_eq!(first, ["stored", "stored"], "{}: {stderr}", config.name);
        let (second, stderr) = run();
        assert_eq!(second, ["hit", "hit"], "{}: {stderr}", config.name);
        // An edit to lib: both rerun (app after lib's fresh outputs) and are stored again.
        write("packages/lib/src.txt", "lib 2\n");
        let (third, stderr) = run();
        assert_eq!(third, ["stored", "stored"], "{}: {stderr}", config.name);
        let (fourth, stderr) = run();
        assert_eq!(fourth, ["hit", "hit"], "{}: {stderr}", config.name);
        assert_eq!(
            std::fs::read_to_string(root.join("packages/app/out/app.txt")).expect("app output"),
            "lib 2\napp\n"
        );
    }
}

/// The ptrace fallback runs parallel independent tasks without hanging.
#[test]
fn ptrace_runs_three_independent_packages_with_j2() {
    let (_temp, root) = workdir();
    vt_tests::write(
        &root,
        "package.json",
        r#"{"name":"root","private":true,"workspaces":["packages/*"]}"#,
    );
    for name in ["a", "b", "c"] {
        vt_tests::write(
            &root,
            &format!("packages/{name}/package.json"),
            &format!(
                r#"{{"name":"{name}","scripts":{{"build":"sh -c 'cat in.txt > out.txt; ls >/dev/null'"}}}}"#
            ),
        );
        vt_tests::write(&root, &format!("packages/{name}/in.txt"), name);
    }
    let output = Command::new(vt_binary())
        .current_dir(&root)
        .env("VT_CACHE_DIR", root.join(".vt-cache"))
        .env("VT_TRACER", "ptrace")
        .args(["run", "--json", "-j", "2", "-r", "build"])
        .output()
        .expect("vt runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let json = json_summary(&output.stdout);
    let statuses: Vec<&str> = json["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["status"].as_str())
        .collect();
    assert_eq!(statuses, ["stored", "stored", "stored"], "{stderr}");
    assert_eq!(
        std::fs::read_to_string(root.join("packages/c/out.txt")).expect("out"),
        "c"
    );
}

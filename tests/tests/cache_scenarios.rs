//! The cache, end to end: real workspaces in temp dirs, real `node` and `sh` builds, each
//! mutation asserting hit or miss and the exact reason (issue 5's scenario list).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A throwaway workspace.
struct Ws {
    _temp: tempfile::TempDir,
    root: PathBuf,
}

/// A small node build: lists src/, bundles the .js files, honours an optional
/// src/banner.txt, reads MODE, writes dist/out.txt and prints to both streams.
const BUILD_JS: &str = r#"
const fs = require("node:fs");
const files = fs.readdirSync("src").filter((f) => f.endsWith(".js")).sort();
const banner = fs.existsSync("src/banner.txt") ? fs.readFileSync("src/banner.txt", "utf8") : "";
const body = files.map((f) => fs.readFileSync("src/" + f, "utf8")).join("");
fs.mkdirSync("dist", { recursive: true });
fs.writeFileSync("dist/out.txt", banner + body + "mode=" + (process.env.MODE ?? "none") + "\n");
process.stdout.write("bundled " + files.length + "\n");
process.stderr.write("warn: demo\n");
process.stdout.write("done\n");
"#;

impl Ws {
    fn new(files: &[(&str, &str)]) -> Ws {
        let temp = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(temp.path())
            .expect("canonical")
            .join("ws");
        let ws = Ws { _temp: temp, root };
        ws.write(
            "package.json",
            r#"{"name":"app","scripts":{"build":"node build.js"}}"#,
        );
        ws.write("build.js", BUILD_JS);
        ws.write("src/a.js", "const a = 1;\n");
        ws.write("src/b.js", "const b = 2;\n");
        for (path, text) in files {
            ws.write(path, text);
        }
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

    fn vt_in(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(vt_tests::vt_binary())
            .args(args)
            .current_dir(dir)
            .env_remove("LD_LIBRARY_PATH")
            .env_remove("MODE")
            .env_remove("CI")
            .env("VT_CACHE_DIR", self.root.join("node_modules/.cache/vt"))
            .envs(env.iter().copied())
            .output()
            .expect("vt runs")
    }

    /// `vt run TASK --json` at the root; the one requested task's result.
    fn run(&self, task: &str, env: &[(&str, &str)]) -> Result_ {
        self.run_args(&["run", task], env)
    }

    fn run_args(&self, args: &[&str], env: &[(&str, &str)]) -> Result_ {
        let mut all = args.to_vec();
        all.insert(1, "--json");
        let output = self.vt_in(&self.root, &all, env);
        Result_::parse(output)
    }
}

/// A run's summary (`vt_tests::RunSummary`) with the assertions these scenarios make.
#[derive(Debug)]
struct Result_(vt_tests::RunSummary);

impl std::ops::Deref for Result_ {
    type Target = vt_tests::RunSummary;
    fn deref(&self) -> &vt_tests::RunSummary {
        &self.0
    }
}

impl Result_ {
    fn parse(output: Output) -> Result_ {
        Result_(vt_tests::RunSummary::of(output))
    }

    #[track_caller]
    fn assert_hit(&self, label: &str) {
        assert_eq!(self.status(label), "hit", "{label}: {}", self.stderr());
    }

    #[track_caller]
    fn assert_miss(&self, label: &str, reason: &str) {
        assert_eq!(self.status(label), "stored", "{label}: {}", self.stderr());
        assert!(
            self.reason(label).contains(reason),
            "{label}: expected a miss because {reason:?}, got {:?}",
            self.reason(label)
        );
    }

    #[track_caller]
    fn assert_not_cached(&self, label: &str, reason: &str) {
        assert_eq!(
            self.status(label),
            "not_cached",
            "{label}: {}",
            self.stderr()
        );
        assert!(
            self.reason(label).contains(reason),
            "{label}: expected not cached because {reason:?}, got {:?}",
            self.reason(label)
        );
    }
}

const APP: &str = "app#build";

/// A workspace that has run `build` once (stored).
fn built(files: &[(&str, &str)]) -> Ws {
    let ws = Ws::new(files);
    let first = ws.run("build", &[]);
    first.assert_miss(APP, "no previous run");
    ws
}

#[test]
fn s01_an_unchanged_workspace_hits() {
    let ws = built(&[]);
    ws.run("build", &[]).assert_hit(APP);
}

#[test]
fn s02_a_content_edit_misses_naming_the_file() {
    let ws = built(&[]);
    ws.write("src/a.js", "const a = 10;\n");
    ws.run("build", &[])
        .assert_miss(APP, "src/a.js: content changed");
}

#[test]
fn s03_touch_without_change_hits() {
    let ws = built(&[]);
    let file = std::fs::File::options()
        .append(true)
        .open(ws.path("src/a.js"))
        .expect("open");
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .expect("touch");
    ws.run("build", &[]).assert_hit(APP);
}

#[test]
fn s04_a_new_file_where_a_lookup_failed_misses() {
    let ws = built(&[]);
    ws.write("src/banner.txt", "/* banner */\n");
    ws.run("build", &[]).assert_miss(
        APP,
        "src/banner.txt now exists (was missing when looked up)",
    );
}

#[test]
fn s05_a_deleted_input_misses() {
    let ws = built(&[]);
    std::fs::remove_file(ws.path("src/b.js")).expect("rm");
    let run = ws.run("build", &[]);
    run.assert_miss(APP, "src/b.js: deleted");
}

#[test]
fn s06_a_directory_entry_added_misses() {
    let ws = built(&[]);
    ws.write("src/notes.md", "not js\n");
    ws.run("build", &[])
        .assert_miss(APP, "src: directory entries changed");
}

#[test]
fn s07_a_tracked_env_change_misses_with_both_values() {
    let ws = built(&[("vt.json", r#"{"tasks":{"build":{"env":["MODE"]}}}"#)]);
    let dev = ws.run("build", &[("MODE", "development")]);
    dev.assert_miss(APP, "env MODE: (unset) → development");
    let prod = ws.run("build", &[("MODE", "production")]);
    prod.assert_miss(APP, "env MODE: development → production");
    assert!(ws.read("dist/out.txt").contains("mode=production"));
    ws.run("build", &[("MODE", "development")]).assert_hit(APP);
    assert!(
        ws.read("dist/out.txt").contains("mode=development"),
        "the hit restored dev output"
    );
}

#[test]
fn s08_an_untracked_env_change_hits() {
    let ws = built(&[("vt.json", r#"{"tasks":{"build":{"untrackedEnv":["CI"]}}}"#)]);
    ws.run("build", &[("CI", "true")]).assert_hit(APP);
}

#[test]
fn s09_an_undeclared_env_var_is_not_passed_so_it_cannot_matter() {
    let ws = built(&[]);
    let run = ws.run("build", &[("MODE", "production")]);
    run.assert_hit(APP);
    assert!(ws.read("dist/out.txt").contains("mode=none"));
}

fn two_packages() -> Ws {
    Ws::new(&[
        (
            "package.json",
            r#"{"name":"root","private":true,"workspaces":["packages/*"]}"#,
        ),
        (
            "packages/lib/package.json",
            r#"{"name":"lib","scripts":{"build":"mkdir -p dist && cp src/index.js dist/index.js"}}"#,
        ),
        ("packages/lib/src/index.js", "export const v = 1;\n"),
        (
            "packages/app/package.json",
            r#"{"name":"app","scripts":{"build":"cat ../lib/dist/index.js > out.js"},"dependencies":{"lib":"*"}}"#,
        ),
        (
            "packages/app/vt.json",
            r#"{"tasks":{"build":{"dependsOn":["^build"]}}}"#,
        ),
    ])
}

/// lib's build, `mkdir -p dist && cp src/index.js dist/index.js`: its copy step.
const LIB_COPY: &str = "lib#build (2/2)";

#[test]
fn s10_a_dependency_output_change_misses_downstream() {
    let ws = two_packages();
    let first = ws.run("app#build", &[]);
    // `mkdir -p dist && cp …` runs as two steps, each cached on its own.
    first.assert_miss("lib#build (1/2)", "no previous run");
    first.assert_miss(LIB_COPY, "no previous run");
    first.assert_miss(APP, "no previous run");
    // `cp` looks at its destination before writing it: lib's first run found
    // dist/index.js missing, and with it in place now a fresh run is a different run (the
    // state a task found before changing a path is keyed). It runs once more, then hits.
    let second = ws.run("app#build", &[]);
    second.assert_hit("lib#build (1/2)");
    second.assert_miss(
        LIB_COPY,
        "packages/lib/dist/index.js exists (it was missing before the cached run made it)",
    );
    second.assert_hit(APP);
    let third = ws.run("app#build", &[]);
    third.assert_hit(LIB_COPY);
    third.assert_hit(APP);
    ws.write("packages/lib/src/index.js", "export const v = 2;\n");
    let third = ws.run("app#build", &[]);
    third.assert_hit("lib#build (1/2)");
    third.assert_miss(LIB_COPY, "packages/lib/src/index.js: content changed");
    third.assert_miss(APP, "dependency lib#build (2/2) changed");
    assert_eq!(ws.read("packages/app/out.js"), "export const v = 2;\n");
}

#[test]
fn s11_a_replaced_toolchain_binary_misses() {
    let ws = Ws::new(&[(
        "package.json",
        r#"{"name":"app","scripts":{"build":"mytool > out.txt"}}"#,
    )]);
    let tools = ws.root.parent().expect("parent").join("toolchain");
    std::fs::create_dir_all(&tools).expect("mkdir");
    let tool = tools.join("mytool");
    std::fs::write(&tool, "#!/bin/sh\necho v1\n").expect("write");
    Command::new("chmod")
        .arg("755")
        .arg(&tool)
        .status()
        .expect("chmod");
    let path = path_starting_with(&tools);
    ws.run("build", &[("PATH", &path)])
        .assert_miss(APP, "no previous run");
    ws.run("build", &[("PATH", &path)]).assert_hit(APP);
    std::fs::write(&tool, "#!/bin/sh\necho v2\n").expect("write");
    ws.run("build", &[("PATH", &path)])
        .assert_miss(APP, &format!("{}: content changed", tool.display()));
    assert_eq!(ws.read("out.txt"), "v2\n");
}

/// `dir`, then this process's `PATH`.
fn path_starting_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// vt looks the task's shell up on `PATH` itself (no traced `execve` per directory); the
/// directories where it was missing are still the task's inputs.
#[test]
fn s11b_a_shell_that_appears_earlier_on_path_misses() {
    let ws = Ws::new(&[(
        "package.json",
        r#"{"name":"app","scripts":{"build":"echo built > out.txt"}}"#,
    )]);
    let tools = ws.root.parent().expect("parent").join("early-bin");
    std::fs::create_dir_all(&tools).expect("mkdir");
    let path = path_starting_with(&tools);
    ws.run("build", &[("PATH", &path)])
        .assert_miss(APP, "no previous run");
    // The control: nothing changed on PATH, a hit.
    ws.run("build", &[("PATH", &path)]).assert_hit(APP);
    let shell = tools.join("sh");
    let script = "#!/bin/sh\necho wrapped >> wrapped.txt\nexec /bin/sh \"$@\"\n";
    std::fs::write(&shell, script).expect("write");
    Command::new("chmod")
        .arg("755")
        .arg(&shell)
        .status()
        .expect("chmod");
    ws.run("build", &[("PATH", &path)])
        .assert_miss(APP, &shell.display().to_string());
    assert_eq!(
        ws.read("wrapped.txt"),
        "wrapped\n",
        "the new shell ran the task"
    );
}

#[test]
fn s12_a_retargeted_symlink_misses() {
    let ws = Ws::new(&[
        (
            "package.json",
            r#"{"name":"app","scripts":{"build":"cat current > out.txt"}}"#,
        ),
        ("one.txt", "one\n"),
        ("two.txt", "two\n"),
    ]);
    std::os::unix::fs::symlink("one.txt", ws.path("current")).expect("symlink");
    ws.run("build", &[]).assert_miss(APP, "no previous run");
    std::fs::remove_file(ws.path("current")).expect("rm");
    std::os::unix::fs::symlink("two.txt", ws.path("current")).expect("symlink");
    ws.run("build", &[])
        .assert_miss(APP, "current: content changed");
    assert_eq!(ws.read("out.txt"), "two\n");
}

#[test]
fn s13_a_moved_workspace_still_hits() {
    let ws = built(&[]);
    let moved = ws.root.parent().expect("parent").join("moved");
    std::fs::rename(&ws.root, &moved).expect("mv");
    let output = Command::new(vt_tests::vt_binary())
        .args(["run", "build", "--json"])
        .current_dir(&moved)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("MODE")
        .env("VT_CACHE_DIR", moved.join("node_modules/.cache/vt"))
        .output()
        .expect("vt runs");
    Result_::parse(output).assert_hit(APP);
}

#[test]
fn s14_two_branches_alternating_hit_on_both() {
    let ws = built(&[]);
    ws.write("src/a.js", "const a = 'branch';\n");
    ws.run("build", &[])
        .assert_miss(APP, "src/a.js: content changed");
    ws.write("src/a.js", "const a = 1;\n");
    ws.run("build", &[]).assert_hit(APP);
    ws.write("src/a.js", "const a = 'branch';\n");
    ws.run("build", &[]).assert_hit(APP);
    assert!(ws.read("dist/out.txt").contains("branch"));
}

#[test]
fn s15_an_output_deleted_by_the_user_is_restored() {
    let ws = built(&[]);
    let before = ws.read("dist/out.txt");
    std::fs::remove_dir_all(ws.path("dist")).expect("rm");
    ws.run("build", &[]).assert_hit(APP);
    assert_eq!(ws.read("dist/out.txt"), before);
}

#[test]
fn s16_a_failing_task_is_not_cached() {
    let ws = Ws::new(&[(
        "package.json",
        r#"{"name":"app","scripts":{"build":"echo trying; exit 3"}}"#,
    )]);
    let run = ws.run("build", &[]);
    assert_eq!(run.status(APP), "failed");
    assert_eq!(
        run.output.status.code(),
        Some(3),
        "vt exits with the task's status"
    );
    let again = ws.run("build", &[]);
    assert_eq!(
        again.status(APP),
        "failed",
        "ran again: failures are never cached"
    );
}

#[test]
fn s17_read_then_written_is_not_cached_and_names_the_file() {
    let ws = Ws::new(&[
        (
            "package.json",
            r#"{"name":"app","scripts":{"build":"cat counter.txt > /dev/null; echo x >> counter.txt"}}"#,
        ),
        ("counter.txt", "0\n"),
    ]);
    ws.run("build", &[])
        .assert_not_cached(APP, "counter.txt was read and then written");
}

#[test]
fn s18_an_output_changed_by_the_user_is_put_back() {
    let ws = built(&[]);
    let before = ws.read("dist/out.txt");
    ws.write("dist/out.txt", "scribbled\n");
    ws.run("build", &[]).assert_hit(APP);
    assert_eq!(ws.read("dist/out.txt"), before);
}

#[test]
fn s19_stdout_and_stderr_are_replayed_byte_for_byte() {
    let ws = Ws::new(&[(
        "package.json",
        r#"{"name":"app","scripts":{"build":"printf 'o1\\n'; printf 'e1\\n' >&2; printf 'o2 \\001\\n'; printf 'e2' >&2"}}"#,
    )]);
    let first = ws.run("build", &[]);
    let second = ws.run("build", &[]);
    second.assert_hit(APP);
    let stdout = |r: &Result_| {
        // --json prints the summary after the task output.
        let text = String::from_utf8_lossy(&r.output.stdout).into_owned();
        text[..text.find("{\n").unwrap_or(text.len())].to_owned()
    };
    assert_eq!(stdout(&first), "o1\no2 \u{1}\n");
    assert_eq!(stdout(&second), stdout(&first));
    // The task's bytes, then vt's summary (which follows "e2" on the same line).
    let task_stderr = |r: &Result_| {
        let text = r.stderr();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("vt: app#build"))
            .collect();
        let joined = lines.join("\n");
        joined[..joined.find("vt: 1 task").unwrap_or(joined.len())].to_owned()
    };
    assert_eq!(task_stderr(&first), "e1\ne2");
    assert_eq!(task_stderr(&second), task_stderr(&first));
}

#[test]
fn s20_a_changed_command_misses() {
    let ws = built(&[]);
    ws.write(
        "package.json",
        r#"{"name":"app","scripts":{"build":"node build.js --fast"}}"#,
    );
    ws.run("build", &[]).assert_miss(APP, "command changed");
}

#[test]
fn s21_extra_arguments_are_part_of_the_key() {
    let ws = built(&[]);
    ws.run_args(&["run", "build", "--", "--verbose"], &[])
        .assert_miss(APP, "command changed");
    ws.run_args(&["run", "build", "--", "--verbose"], &[])
        .assert_hit(APP);
}

#[test]
fn s22_cache_false_is_not_cached() {
    let ws = Ws::new(&[("vt.json", r#"{"tasks":{"build":{"cache":false}}}"#)]);
    ws.run("build", &[]).assert_not_cached(APP, "cache: false");
}

#[test]
fn s23_a_corrupt_entry_is_a_miss_with_a_reason() {
    let ws = built(&[]);
    let dir = ws.path("node_modules/.cache/vt");
    {
        let (store, _) = executor::cache::store::Store::open(&dir).expect("open");
        let mut batch = executor::cache::store::Batch::default();
        for (key, _) in store
            .scan_prefix(executor::cache::store::Family::Entries, b"")
            .expect("scan")
        {
            batch.put(
                executor::cache::store::Family::Entries,
                key,
                b"\x01garbage".to_vec(),
            );
        }
        store.write(batch).expect("write");
    }
    let run = ws.run("build", &[]);
    run.assert_miss(APP, "corrupt");
    ws.run("build", &[]).assert_hit(APP);
}

#[test]
fn s24_a_vt_that_must_wait_for_the_cache_names_the_holder_and_goes_on() {
    use std::io::BufRead;
    let ws = Ws::new(&[(
        "package.json",
        r#"{"name":"app","scripts":{"build":"echo built > out.txt"},"private":true}"#,
    )]);
    let cache = ws.path("node_modules/.cache/vt");
    // This test holds the cache as another vt would while it writes; a vt alone with its
    // cache never waits (and two at once take turns: tests/tests/cache_concurrency.rs).
    let held = executor::cache::lease::DirLock::acquire(&cache).expect("lock");
    let mut waiting = Command::new(vt_tests::vt_binary())
        .args(["run", "build"])
        .current_dir(&ws.root)
        .env("VT_CACHE_DIR", &cache)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("vt");
    let mut stderr = std::io::BufReader::new(waiting.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("read");
    assert!(
        line.contains(&format!(
            "waiting for the cache at {}: vt (pid {}) is writing to it",
            cache.display(),
            std::process::id()
        )),
        "{line}"
    );
    drop(held);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).expect("read");
    assert!(waiting.wait().expect("vt").success(), "{rest}");
    assert!(rest.contains("cache miss: no previous run"), "{rest}");
    ws.run("build", &[]).assert_hit(APP);
}

#[test]
fn s25_a_deletion_is_an_output_and_is_replayed() {
    let ws = Ws::new(&[
        (
            "package.json",
            r#"{"name":"app","scripts":{"build":"rm -f stale.txt; cat src/a.js > out.txt"}}"#,
        ),
        ("stale.txt", "old\n"),
    ]);
    ws.run("build", &[]).assert_miss(APP, "no previous run");
    ws.write("stale.txt", "old\n");
    ws.run("build", &[]).assert_hit(APP);
    assert!(
        !ws.path("stale.txt").exists(),
        "the replay deleted it again"
    );
}

#[test]
fn s26_a_cycle_is_reported_before_anything_runs() {
    let ws = Ws::new(&[(
        "vt.json",
        r#"{"tasks":{"build":{"dependsOn":["lint"]},"lint":{"command":"touch ran","dependsOn":["build"]}}}"#,
    )]);
    let out = ws.vt_in(&ws.root, &["run", "build"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("app#build → app#lint → app#build"), "{err}");
    assert!(!ws.path("ran").exists());
}

#[test]
fn s27_a_config_error_names_file_line_and_column() {
    let ws = Ws::new(&[(
        "vt.json",
        "{\n  \"tasks\": {\n    \"build\": { \"comand\": \"x\" }\n  }\n}\n",
    )]);
    let out = ws.vt_in(&ws.root, &["run", "build"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("vt.json:3:") && err.contains("unknown field `comand`"),
        "{err}"
    );
    assert!(!ws.path("dist").exists(), "nothing ran");
}

#[test]
fn s28_a_missing_tool_fails_clearly() {
    let ws = Ws::new(&[(
        "package.json",
        r#"{"name":"app","scripts":{"build":"no-such-tool-xyz --build"}}"#,
    )]);
    let run = ws.run("build", &[]);
    assert_eq!(run.status(APP), "failed");
    assert!(
        run.stderr().contains("no-such-tool-xyz"),
        "{}",
        run.stderr()
    );
    assert_eq!(run.output.status.code(), Some(127));
}

#[test]
fn s29_exec_caches_an_ad_hoc_command() {
    let ws = Ws::new(&[("input.txt", "in\n")]);
    let exec = |ws: &Ws| {
        Result_::parse(ws.vt_in(
            &ws.root,
            &[
                "exec",
                "--json",
                "--",
                "sh",
                "-c",
                "cat input.txt > copy.txt",
            ],
            &[],
        ))
    };
    let label = "exec: sh -c 'cat input.txt > copy.txt'";
    assert_eq!(exec(&ws).status(label), "stored");
    assert_eq!(exec(&ws).status(label), "hit");
    ws.write("input.txt", "changed\n");
    let third = exec(&ws);
    third.assert_miss(label, "input.txt: content changed");
    assert_eq!(ws.read("copy.txt"), "changed\n");
}

#[test]
fn s30_a_declared_input_glob_counts_even_if_unread() {
    let ws = built(&[
        (
            "vt.json",
            r#"{"tasks":{"build":{"input":[{"auto":true},"docs/*.md"]}}}"#,
        ),
        ("docs/guide.md", "v1\n"),
    ]);
    ws.write("docs/guide.md", "v2\n");
    ws.run("build", &[])
        .assert_miss(APP, "docs/guide.md: content changed");
}

#[test]
fn s31_a_negative_input_glob_ignores_what_the_task_read() {
    let ws = Ws::new(&[
        (
            "package.json",
            r#"{"name":"app","scripts":{"build":"cat src/a.js docs/readme.md > out.txt"}}"#,
        ),
        (
            "vt.json",
            r#"{"tasks":{"build":{"input":[{"auto":true},"!docs/**"]}}}"#,
        ),
        ("docs/readme.md", "v1\n"),
    ]);
    ws.run("build", &[]).assert_miss(APP, "no previous run");
    ws.write("docs/readme.md", "v2\n");
    ws.run("build", &[]).assert_hit(APP);
}

#[test]
fn s32_a_negative_output_glob_is_not_archived() {
    let ws = Ws::new(&[
        (
            "package.json",
            r#"{"name":"app","scripts":{"build":"mkdir -p dist && cat src/a.js > dist/main.js && echo stats > dist/stats.html"}}"#,
        ),
        (
            "vt.json",
            r#"{"tasks":{"build":{"output":[{"auto":true},"!dist/stats.html"]}}}"#,
        ),
    ]);
    ws.run("build", &[]).assert_miss(APP, "no previous run");
    std::fs::remove_dir_all(ws.path("dist")).expect("rm");
    ws.run("build", &[]).assert_hit(APP);
    assert!(ws.path("dist/main.js").exists());
    assert!(!ws.path("dist/stats.html").exists());
}

#[test]
fn s33_dependents_of_a_failed_task_do_not_run() {
    let ws = two_packages();
    ws.write(
        "packages/lib/package.json",
        r#"{"name":"lib","scripts":{"build":"exit 1"}}"#,
    );
    let run = ws.run("app#build", &[]);
    assert_eq!(run.status("lib#build"), "failed");
    assert_eq!(run.status(APP), "skipped");
    assert!(!ws.path("packages/app/out.js").exists());
}

#[test]
fn s34_no_cache_runs_anyway() {
    let ws = built(&[]);
    let run = ws.run_args(&["run", "build", "--no-cache"], &[]);
    run.assert_not_cached(APP, "--no-cache");
}

#[test]
fn s35_an_unrelated_new_file_hits() {
    let ws = built(&[]);
    ws.write("notes/todo.md", "later\n");
    ws.run("build", &[]).assert_hit(APP);
}

#[test]
fn s36_content_changed_and_changed_back_hits() {
    let ws = built(&[]);
    ws.write("src/a.js", "const a = 99;\n");
    ws.write("src/a.js", "const a = 1;\n");
    ws.run("build", &[]).assert_hit(APP);
}

#[test]
fn s37_a_dependency_in_node_modules_is_an_input() {
    let ws = Ws::new(&[
        (
            "package.json",
            r#"{"name":"app","scripts":{"build":"node -e \"require('fs').writeFileSync('out.txt', String(require('dep')))\""}}"#,
        ),
        (
            "node_modules/dep/package.json",
            r#"{"name":"dep","main":"index.js"}"#,
        ),
        ("node_modules/dep/index.js", "module.exports = 1;\n"),
    ]);
    ws.run("build", &[]).assert_miss(APP, "no previous run");
    ws.run("build", &[]).assert_hit(APP);
    ws.write("node_modules/dep/index.js", "module.exports = 2;\n");
    ws.run("build", &[])
        .assert_miss(APP, "node_modules/dep/index.js: content changed");
    assert_eq!(ws.read("out.txt"), "2");
}

#[test]
fn s38_module_resolution_misses_when_a_closer_candidate_appears() {
    // node looked for ./lib.js before ./lib/index.js: creating lib.js changes the result.
    let ws = Ws::new(&[
        (
            "package.json",
            r#"{"name":"app","scripts":{"build":"node -e \"require('fs').writeFileSync('out.txt', String(require('./lib')))\""}}"#,
        ),
        ("lib/index.js", "module.exports = 'dir';\n"),
    ]);
    ws.run("build", &[]).assert_miss(APP, "no previous run");
    ws.write("lib.js", "module.exports = 'file';\n");
    ws.run("build", &[])
        .assert_miss(APP, "lib.js now exists (was missing when looked up)");
    assert_eq!(ws.read("out.txt"), "file");
}

#[test]
fn s39_a_tracing_gap_is_not_cached() {
    // A relative lookup from a deleted directory cannot be named: a gap.
    let ws = Ws::new(&[(
        "package.json",
        r#"{"name":"app","scripts":{"build":"mkdir -p gone && cd gone && rmdir ../gone && cat x 2>/dev/null; true"}}"#,
    )]);
    ws.run("build", &[]).assert_not_cached(APP, "tracing gap");
}

#[test]
fn s40_writing_outside_the_workspace_is_not_cached() {
    let ws = Ws::new(&[]);
    let outside = ws.root.parent().expect("parent").join("elsewhere.txt");
    ws.write(
        "package.json",
        &format!(
            r#"{{"name":"app","scripts":{{"build":"echo hi > {}"}}}}"#,
            outside.display()
        ),
    );
    ws.run("build", &[])
        .assert_not_cached(APP, "outside the workspace");
}

#[test]
fn s41_temporary_files_outside_the_workspace_are_fine() {
    let ws = Ws::new(&[(
        "package.json",
        r#"{"name":"app","scripts":{"build":"t=$(mktemp) && cat src/a.js > $t && cp $t out.txt && rm $t"}}"#,
    )]);
    ws.run("build", &[]).assert_miss(APP, "no previous run");
    // `cp` looked at out.txt before writing it (see s10): one more run, then hits.
    ws.run("build", &[]).assert_miss(
        APP,
        "out.txt exists (it was missing before the cached run made it)",
    );
    ws.run("build", &[]).assert_hit(APP);
    // The temporary file is not an input, and out.txt deleted by the user is restored.
    std::fs::remove_file(ws.path("out.txt")).expect("rm");
    ws.run("build", &[]).assert_hit(APP);
    assert_eq!(ws.read("out.txt"), "const a = 1;\n");
}

#[test]
fn s41b_a_scratch_directory_outside_the_workspace_removed_again_is_fine() {
    // vitest writes `/tmp/XXXX/ssr/HASH` by rename from a temp name, then removes the
    // directory: a path whose first change is a rename cannot be called created by the
    // task, but a path under a directory the task created can (issue 26).
    let ws = Ws::new(&[(
        "package.json",
        r#"{"name":"app","scripts":{"build":"d=$(mktemp -d) && cat src/a.js > $d/.tmp && mv $d/.tmp $d/f && cat $d/f > out.txt && rm -r $d"}}"#,
    )]);
    ws.run("build", &[]).assert_miss(APP, "no previous run");
    // The control: the directory left behind is a change outside the workspace.
    ws.write(
        "package.json",
        r#"{"name":"app","scripts":{"build":"d=$(mktemp -d) && cat src/a.js > $d/.tmp && mv $d/.tmp $d/f && cat $d/f > out.txt && rm $d/f"}}"#,
    );
    ws.run("build", &[])
        .assert_not_cached(APP, "outside the workspace");
}

#[test]
fn s42_explain_says_what_changed() {
    let ws = built(&[]);
    ws.write("src/b.js", "const b = 3;\n");
    let out = ws.vt_in(&ws.root, &["cache", "explain", "build"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("app#build: cache miss: src/b.js: content changed"),
        "{text}"
    );
    let verify = ws.vt_in(&ws.root, &["cache", "verify"], &[]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn s43_a_declared_env_that_becomes_set_misses() {
    let ws = built(&[("vt.json", r#"{"tasks":{"build":{"env":["MODE"]}}}"#)]);
    ws.run("build", &[("MODE", "x")])
        .assert_miss(APP, "env MODE: (unset) → x");
}

#[test]
fn s44_sigterm_stops_the_task_tree_and_leaves_the_cache_consistent() {
    let marker = format!("vt-s44-{}", std::process::id());
    let ws = Ws::new(&[(
        "package.json",
        &format!(
            r#"{{"name":"app","scripts":{{"build":"echo started > started.txt; sleep 30 # {marker}\n echo late > late.txt"}}}}"#
        ),
    )]);
    let mut vt = Command::new(vt_tests::vt_binary())
        .args(["run", "build"])
        .current_dir(&ws.root)
        .env("VT_CACHE_DIR", ws.path("node_modules/.cache/vt"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("vt");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ws.path("started.txt").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the task never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: signalling the vt we started.
    unsafe { libc::kill(vt.id() as i32, libc::SIGTERM) };
    let status = vt.wait().expect("vt exits");
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    let survivors = Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .expect("pgrep");
    assert!(
        survivors.stdout.is_empty(),
        "left running: {}",
        String::from_utf8_lossy(&survivors.stdout)
    );
    assert!(!ws.path("late.txt").exists());
    let verify = ws.vt_in(&ws.root, &["cache", "verify"], &[]);
    assert!(verify.status.success());
    // The interrupted run was not stored.
    ws.write(
        "package.json",
        r#"{"name":"app","scripts":{"build":"echo ok"}}"#,
    );
    ws.run("build", &[]).assert_miss(APP, "no previous run");
}

#[test]
fn s45_deleting_the_output_directory_after_a_rebuild_still_hits() {
    // The stored run found dist/ already there (mkdir -p only looked it up).
    let ws = built(&[]);
    ws.write("src/a.js", "const a = 5;\n");
    ws.run("build", &[])
        .assert_miss(APP, "src/a.js: content changed");
    std::fs::remove_dir_all(ws.path("dist")).expect("rm");
    ws.run("build", &[]).assert_hit(APP);
    assert!(ws.read("dist/out.txt").contains("const a = 5;"));
}

#[test]
fn s46_env_mode_loose_passes_everything_but_keys_only_declared_names() {
    let ws = built(&[]);
    ws.write("vt.json", r#"{"tasks":{"build":{"envMode":"loose"}}}"#);
    let run = ws.run("build", &[("MODE", "seen")]);
    run.assert_miss(APP, "envMode changed");
    assert!(
        ws.read("dist/out.txt").contains("mode=seen"),
        "loose passes undeclared variables"
    );
    // …and, as documented, does not key them: the cost of loose mode.
    ws.run("build", &[("MODE", "other")]).assert_hit(APP);
}

fn three_packages() -> Ws {
    Ws::new(&[
        (
            "package.json",
            r#"{"name":"root","private":true,"workspaces":["packages/*"]}"#,
        ),
        (
            "packages/a/package.json",
            r#"{"name":"@s/a","scripts":{"build":"echo a1; echo a2"}}"#,
        ),
        (
            "packages/b/package.json",
            r#"{"name":"@s/b","scripts":{"build":"echo b1; echo b2"}}"#,
        ),
        (
            "packages/c/package.json",
            r#"{"name":"other","scripts":{"build":"echo c1"}}"#,
        ),
    ])
}

#[test]
fn s47_recursive_filters_and_dry_run_select_packages() {
    let ws = three_packages();
    let run = ws.run_args(&["run", "build", "-r"], &[]);
    let mut tasks: Vec<String> = run.json["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["task"].as_str().unwrap_or("").to_owned())
        .collect();
    tasks.sort();
    assert_eq!(tasks, ["@s/a#build", "@s/b#build", "other#build"]);
    let filtered = ws.run_args(&["run", "build", "-F", "@s/*"], &[]);
    assert_eq!(filtered.json["tasks"].as_array().expect("tasks").len(), 2);
    let dir = ws.run_args(&["run", "build", "-F", "./packages/c"], &[]);
    assert_eq!(dir.json["tasks"][0]["task"], "other#build");
    let dry = ws.vt_in(&ws.root, &["run", "build", "-r", "--dry-run"], &[]);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(text.contains("@s/a#build: echo a1; echo a2"), "{text}");
}

#[test]
fn s48_log_modes_label_and_group_task_output() {
    let ws = three_packages();
    let labeled = ws.vt_in(
        &ws.root,
        &["run", "build", "-r", "--no-cache", "--log", "labeled"],
        &[],
    );
    let text = String::from_utf8_lossy(&labeled.stdout);
    for line in [
        "[@s/a#build] a1",
        "[@s/a#build] a2",
        "[@s/b#build] b2",
        "[other#build] c1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in {text}"
        );
    }
    let grouped = ws.vt_in(
        &ws.root,
        &[
            "run",
            "build",
            "-r",
            "--no-cache",
            "--log",
            "grouped",
            "-j",
            "3",
        ],
        &[],
    );
    let text = String::from_utf8_lossy(&grouped.stdout);
    // Each task's lines stay together even though the tasks ran at once.
    let a1 = text.find("a1\n").expect("a1");
    assert_eq!(&text[a1..a1 + 6], "a1\na2\n", "{text}");
    let b1 = text.find("b1\n").expect("b1");
    assert_eq!(&text[b1..b1 + 6], "b1\nb2\n", "{text}");
}

#[test]
fn s49_a_task_listing_its_own_output_dir_hits_after_the_dir_is_deleted() {
    let ws = Ws::new(&[(
        "vt.json",
        r#"{ "tasks": { "build": { "command": "mkdir -p dist && ls dist > /dev/null && cat src/a.js > dist/a.js" } } }"#,
    )]);
    // dist/ is there (empty) when the stored run lists it.
    std::fs::create_dir_all(ws.path("dist")).expect("dist");
    let first = ws.run("build", &[]);
    assert_eq!(first.status(APP), "stored", "{}", first.stderr());
    ws.run("build", &[]).assert_hit(APP);
    std::fs::remove_dir_all(ws.path("dist")).expect("rm dist");
    ws.run("build", &[]).assert_hit(APP);
    assert_eq!(ws.read("dist/a.js"), "const a = 1;\n");
    // A foreign file in the output dir is something the listing sees: a miss.
    ws.write("dist/foreign.txt", "left by someone else\n");
    ws.run("build", &[])
        .assert_miss(APP, "dist: directory entries changed");
}

#[test]
fn s50_a_sandboxed_task_is_stored_and_replayed() {
    let ws = built(&[(
        "vt.json",
        r#"{ "tasks": { "build": { "command": "node build.js", "output": ["dist/**"], "sandbox": true } } }"#,
    )]);
    let first_output = ws.read("dist/out.txt");
    ws.run("build", &[]).assert_hit(APP);
    std::fs::remove_dir_all(ws.path("dist")).expect("rm dist");
    ws.run("build", &[]).assert_hit(APP);
    assert_eq!(ws.read("dist/out.txt"), first_output);
    ws.write("src/a.js", "const a = 3;\n");
    ws.run("build", &[])
        .assert_miss(APP, "src/a.js: content changed");
    // The sandbox is part of the key: the same task unsandboxed is a different entry.
    ws.write(
        "vt.json",
        r#"{ "tasks": { "build": { "command": "node build.js", "output": ["dist/**"] } } }"#,
    );
    let plain = ws.run("build", &[]);
    assert_eq!(plain.status(APP), "stored", "{}", plain.stderr());
}

#[test]
fn s51_a_miss_is_explained_against_the_run_under_the_same_config() {
    // Issue 26: after a config flip, a miss named the flip ("sandbox changed: …") rather
    // than what the task saw change. With a run stored under the same key, vt compares
    // against that one.
    let sandboxed = r#"{ "tasks": { "build": { "command": "node build.js", "output": ["dist/**"], "sandbox": true } } }"#;
    let plain =
        r#"{ "tasks": { "build": { "command": "node build.js", "output": ["dist/**"] } } }"#;
    let ws = built(&[("vt.json", sandboxed)]);
    ws.write("vt.json", plain);
    ws.run("build", &[])
        .assert_miss(APP, r#"sandbox changed: "isolated" → (none)"#);
    ws.write("vt.json", sandboxed);
    // The control: back under the first config with nothing changed, a hit.
    ws.run("build", &[]).assert_hit(APP);
    ws.write("src/a.js", "const a = 5;\n");
    let run = ws.run("build", &[]);
    run.assert_miss(APP, "src/a.js: content changed");
    assert!(
        !run.stderr().contains("sandbox changed"),
        "the miss names the older config difference: {}",
        run.stderr()
    );
}

/// A `node` that is not node: it writes `dist/out.txt` saying so.
fn node_shim(path: &Path) {
    std::fs::write(path, "#!/bin/sh\nmkdir -p dist\necho shim > dist/out.txt\n").expect("shim");
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
}

/// The run that missed ran the shim, and the next one hits on that run.
#[track_caller]
fn ran_the_shim(ws: &Ws, env: &[(&str, &str)]) {
    assert_eq!(
        ws.read("dist/out.txt"),
        "shim\n",
        "the task ran the new program"
    );
    ws.run("build", env).assert_hit(APP);
}

#[test]
fn s55_a_program_installed_later_on_a_sandboxed_task_path_misses() {
    // A PATH directory that did not exist was left out of the sandbox, and with it the
    // task's failed lookups there (they fell on the sandbox's scratch /tmp): installing a
    // program there later was a cache hit, although the task would now run that program.
    let sandboxed = r#"{ "tasks": { "build": { "command": "node build.js", "output": ["dist/**"], "sandbox": true } } }"#;
    let tools = tempfile::tempdir().expect("tempdir");
    let bin = std::fs::canonicalize(tools.path())
        .expect("canonical")
        .join("bin");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [("PATH", path.as_str())];
    let ws = Ws::new(&[("vt.json", sandboxed)]);
    ws.run("build", &env).assert_miss(APP, "no previous run");
    // The control: nothing changed, a hit.
    ws.run("build", &env).assert_hit(APP);
    std::fs::create_dir(&bin).expect("mkdir");
    let shim = bin.join("node");
    node_shim(&shim);
    ws.run("build", &env)
        .assert_miss(APP, &format!("{} now exists", bin.display()));
    ran_the_shim(&ws, &env);
}

#[test]
fn s56_a_program_put_in_front_of_the_one_a_task_ran_misses_a_path_that_finds_the_same_hits() {
    // PATH is passed, not keyed: it differs from machine to machine. But a directory put in
    // front of the one `node` came from, holding a `node` of its own, changes what the
    // task runs, and the task never looked there: without an observation of what `node`
    // finds on the task's PATH, that was a cache hit.
    let scratch = tempfile::tempdir().expect("tempdir");
    let scratch = std::fs::canonicalize(scratch.path()).expect("canonical");
    let (front, other) = (scratch.join("front"), scratch.join("other"));
    std::fs::create_dir(&front).expect("mkdir");
    std::fs::create_dir(&other).expect("mkdir");
    let system = std::env::var("PATH").unwrap_or_default();
    let path = format!("{}:{system}", front.display());
    let env = [("PATH", path.as_str())];
    let ws = Ws::new(&[]);
    ws.run("build", &env).assert_miss(APP, "no previous run");
    ws.run("build", &env).assert_hit(APP);
    // The control: another PATH on which every program the task ran is found where it was
    // (one more directory, empty) is still a hit.
    let longer = format!("{}:{}:{system}", other.display(), front.display());
    ws.run("build", &[("PATH", longer.as_str())])
        .assert_hit(APP);
    let shim = front.join("node");
    node_shim(&shim);
    ws.run("build", &env)
        .assert_miss(APP, &format!("`node` on PATH finds {} now", shim.display()));
    ran_the_shim(&ws, &env);
}

#[test]
fn s57_a_file_read_through_home_is_observed_under_the_home_of_the_run_that_looks() {
    // HOME is passed, not keyed. A tool reads `$HOME/conf` (an `.npmrc`, a `.gitconfig`,
    // Python's user site-packages); under another HOME it reads another file, which no
    // observation named: the run made with the first HOME was replayed.
    let reads_home = r#"{ "tasks": { "build": { "command": "mkdir -p dist && cat \"$HOME/conf\" > dist/out.txt" } } }"#;
    let homes = tempfile::tempdir().expect("tempdir");
    let homes = std::fs::canonicalize(homes.path()).expect("canonical");
    let home = |name: &str, conf: &str| {
        let dir = homes.join(name);
        vt_tests::write(&dir, "conf", conf);
        dir.display().to_string()
    };
    let (first, same, other) = (home("a", "one\n"), home("b", "one\n"), home("c", "two\n"));
    let ws = Ws::new(&[("vt.json", reads_home)]);
    // The control in it: another HOME whose file is the same still hits (users and
    // machines with other home directories share entries).
    three_values_of_a_passed_variable(
        &ws,
        "HOME",
        [&first, &same, &other],
        "~/conf: content changed",
        "the task read the other HOME's file",
    );
    // The absolute observation stays beside its twin: the first HOME's file changing is
    // still a miss for the run with that HOME.
    vt_tests::write(&homes.join("a"), "conf", "three\n");
    ws.run("build", &[("HOME", &first)])
        .assert_miss(APP, "content changed");
    assert_eq!(ws.read("dist/out.txt"), "three\n");
}

#[test]
fn s58_a_program_a_passed_variable_names_is_observed_as_the_looking_runs_variable_names_it() {
    // SHELL is passed, not keyed, like HOME: a task that runs `$SHELL` runs whichever
    // program the variable names. The run made with one SHELL must not be replayed for a
    // SHELL naming another program; a SHELL naming the same file hits.
    let runs_shell = r#"{ "tasks": { "build": { "command": "mkdir -p dist && \"$SHELL\" -c 'echo ran' > dist/out.txt" } } }"#;
    let scratch = tempfile::tempdir().expect("tempdir");
    let scratch = std::fs::canonicalize(scratch.path()).expect("canonical");
    let shell = |name: &str, says: &str| {
        let path = scratch.join(name);
        std::fs::write(&path, format!("#!/bin/sh\necho {says}\n")).expect("shell");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        path.display().to_string()
    };
    let (first, same, other) = (shell("a", "one"), shell("b", "one"), shell("c", "two"));
    let ws = Ws::new(&[("vt.json", runs_shell)]);
    // The control in it: another path to a file with the same content still hits.
    three_values_of_a_passed_variable(
        &ws,
        "SHELL",
        [&first, &same, &other],
        "$SHELL: content changed",
        "the task ran the other program",
    );
}

/// The runs both passed-variable scenarios make with `variable` set to `first` (a miss,
/// then a hit), to `same`, naming a file equal to `first`'s (the control: a hit), to
/// `other`, naming a file that differs (a miss for `reason`, and the task's output is
/// what that file gave: `"two\n"`, else `saw` is the failure), then `other` again (a hit).
fn three_values_of_a_passed_variable(
    ws: &Ws,
    variable: &str,
    [first, same, other]: [&str; 3],
    reason: &str,
    saw: &str,
) {
    ws.run("build", &[(variable, first)])
        .assert_miss(APP, "no previous run");
    ws.run("build", &[(variable, first)]).assert_hit(APP);
    ws.run("build", &[(variable, same)]).assert_hit(APP);
    ws.run("build", &[(variable, other)])
        .assert_miss(APP, reason);
    assert_eq!(ws.read("dist/out.txt"), "two\n", "{saw}");
    ws.run("build", &[(variable, other)]).assert_hit(APP);
}

#[test]
fn s52_a_newly_tracked_env_name_is_said_so() {
    let ws = built(&[]);
    ws.write("vt.json", r#"{"tasks":{"build":{"env":["MODE"]}}}"#);
    ws.run("build", &[])
        .assert_miss(APP, "env MODE is now part of the key (value: (unset))");
    // The control: the same config again hits.
    ws.run("build", &[]).assert_hit(APP);
    // Untracked again: the first run's key, and its entry, are back.
    ws.write("vt.json", r#"{"tasks":{"build":{}}}"#);
    ws.run("build", &[("MODE", "x")]).assert_hit(APP);
}

#[test]
fn s53_a_new_file_in_a_listed_package_root_reruns_the_lister_but_not_its_dependents() {
    // Issue 26: `NOTES.md` added to a package whose build lists the package root (vitest
    // crawling for test files, `ls`, a glob from the root). The lister must run again (what
    // it printed or chose can depend on the listing); its dependents depend on what it left
    // in the workspace, which is the same, so they hit.
    let ws = Ws::new(&[
        (
            "package.json",
            r#"{"name":"root","private":true,"workspaces":["packages/*"]}"#,
        ),
        (
            "packages/lib/package.json",
            r#"{"name":"lib","scripts":{"build":"node -e \"require('fs').readdirSync('.'); require('fs').mkdirSync('esm',{recursive:true}); require('fs').copyFileSync('src/index.js','esm/index.js')\""}}"#,
        ),
        ("packages/lib/src/index.js", "export const v = 1;\n"),
        (
            "packages/app/package.json",
            r#"{"name":"app","scripts":{"build":"cat ../lib/esm/index.js > out.js"},"dependencies":{"lib":"*"}}"#,
        ),
    ]);
    ws.run_args(&["run", "build", "-r"], &[]);
    let warm = ws.run_args(&["run", "build", "-r"], &[]);
    warm.assert_hit("lib#build");
    warm.assert_hit(APP);
    ws.write("packages/lib/NOTES.md", "unrelated\n");
    let after = ws.run_args(&["run", "build", "-r"], &[]);
    after.assert_miss("lib#build", "packages/lib: directory entries changed");
    after.assert_hit(APP);
}

/// The database's own files (tables, logs, MANIFEST, OPTIONS), without its info logs and
/// vt's lock and deferred files.
fn database_files(ws: &Ws) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(ws.path("node_modules/.cache/vt"))
        .expect("cache dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("LOG") && !name.starts_with("vt."))
        .collect();
    names.sort();
    names
}

/// Sets `rel`'s mtime to `when` (as `touch -d`).
fn set_mtime(ws: &Ws, rel: &str, when: std::time::SystemTime) {
    std::fs::File::options()
        .append(true)
        .open(ws.path(rel))
        .and_then(|f| f.set_modified(when))
        .expect("touch -d");
}

#[test]
fn s54_a_fully_cached_run_opens_the_database_read_only_and_its_deferred_memos_never_vouch_for_a_change()
 {
    let ws = built(&[]);
    ws.run("build", &[]).assert_hit(APP);
    // Touched, not changed: hashed again, and that memo (with the hit's time of use) waits in
    // the deferred file, since a run of hits opens the database read-only.
    let touched = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    set_mtime(&ws, "src/a.js", touched);
    let before = database_files(&ws);
    ws.run("build", &[]).assert_hit(APP);
    assert_eq!(
        database_files(&ws),
        before,
        "a run of hits wrote no table, log or manifest"
    );
    let deferred = ws.path("node_modules/.cache/vt/vt.deferred");
    assert!(deferred.exists(), "the memo and the time of use wait there");
    // The control: hits again, with that memo read back from the deferred file.
    ws.run("build", &[]).assert_hit(APP);

    // Same size, same mtime, other content: the deferred memo's stamp (ctime) no longer
    // matches, so the file is hashed and the change seen.
    ws.write("src/a.js", "const a = 7;\n");
    set_mtime(&ws, "src/a.js", touched);
    ws.run("build", &[])
        .assert_miss(APP, "src/a.js: content changed");
    assert!(ws.read("dist/out.txt").contains("const a = 7;"));
    // That store opened the database read-write and folded the deferred file in.
    assert!(!deferred.exists());
    ws.run("build", &[]).assert_hit(APP);

    // A damaged deferred file is read up to the damage, never past it.
    set_mtime(&ws, "src/a.js", touched + std::time::Duration::from_secs(5));
    ws.run("build", &[]).assert_hit(APP);
    let mut bytes = std::fs::read(&deferred).expect("deferred");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&deferred, &bytes).expect("damage");
    ws.run("build", &[]).assert_hit(APP);
    ws.write("src/a.js", "const a = 8;\n");
    set_mtime(&ws, "src/a.js", touched + std::time::Duration::from_secs(5));
    ws.run("build", &[])
        .assert_miss(APP, "src/a.js: content changed");
}

/// vt's own cache directory in a directory a task lists changes while the task runs (the
/// store opens it read-write after a read-only lookup): that is not the world moving. A
/// task that lists its package and overwrites an output there, with `VT_CACHE_DIR` beside
/// it, misses on a foreign new entry and is stored (it was "not cached: . had entries
/// added or changed while the task ran", and so on every run after); the control hits.
#[test]
fn s55_a_cache_inside_a_listed_directory_does_not_keep_its_lister_from_being_stored() {
    let ws = Ws::new(&[(
        "package.json",
        r#"{"name":"app","scripts":{"build":"ls > /dev/null && echo x > out.txt"}}"#,
    )]);
    let cache = ws.path(".vt-cache");
    let env = [("VT_CACHE_DIR", cache.to_str().expect("utf-8"))];
    ws.run("build", &env).assert_miss(APP, "no previous run");
    ws.run("build", &env).assert_hit(APP);
    ws.write("new.txt", "someone else's\n");
    ws.run("build", &env)
        .assert_miss(APP, ".: directory entries changed");
    ws.run("build", &env).assert_hit(APP);
}

//! vt's tracer against strace on real programs: the same command under `strace -f` and under
//! `vt trace` must name the same paths with the same outcome (found / missing / listed),
//! apart from the exclusions documented in `vt_tests::oracle::excluded`.
//!
//! Each workload runs once bare first so caches it fills (e.g. `__pycache__`) are settled, and
//! `prepare` resets its outputs before every run.

use std::path::Path;
use std::process::Command;

use vt_tests::oracle::{self, Observed};

struct Workload<'a> {
    name: &'a str,
    /// Files to create: (relative path, contents).
    files: &'a [(&'a str, &'a str)],
    /// Shell commands run once after writing the files (e.g. compiling a helper).
    setup: &'a [&'a str],
    /// Shell command run before every run to reset outputs.
    prepare: &'a str,
    /// Program name (looked up in PATH) or `./relative` path, then arguments.
    command: &'a [&'a str],
    env: &'a [(&'a str, &'a str)],
}

fn which(program: &str, cwd: &Path) -> String {
    if program.contains('/') {
        return cwd.join(program).to_string_lossy().into_owned();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate.to_string_lossy().into_owned();
        }
    }
    panic!("{program} is not installed (bash .ci/test installs the test workloads' tools)");
}

fn sh(script: &str, cwd: &Path) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .status()
        .expect("sh");
    assert!(status.success(), "`{script}` failed: {status}");
}

fn show(set: &Observed) -> String {
    let mut lines: Vec<String> = set
        .iter()
        .take(60)
        .map(|(o, p)| format!("  {o:?} {}", p.display()))
        .collect();
    if set.len() > 60 {
        lines.push(format!("  … and {} more", set.len() - 60));
    }
    lines.join("\n")
}

fn compare(workload: Workload<'_>) {
    let vt = vt_tests::vt_binary();
    let temp = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(temp.path()).expect("canonical tempdir");
    let work = root.join("work");
    let scratch = root.join("scratch");
    std::fs::create_dir_all(&work).expect("mkdir");
    std::fs::create_dir_all(&scratch).expect("mkdir");
    for (path, contents) in workload.files {
        let path = work.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, contents).expect("write fixture");
    }
    for step in workload.setup {
        sh(step, &work);
    }
    let (program, args) = workload.command.split_first().expect("a command");
    let mut command = vec![which(program, &work)];
    command.extend(args.iter().map(|a| a.to_string()));

    sh(workload.prepare, &work);
    let warm = Command::new(&command[0])
        .args(&command[1..])
        .current_dir(&work)
        .envs(workload.env.iter().copied())
        .status();
    assert!(
        warm.expect("warm-up run").success(),
        "{}: the bare warm-up run failed",
        workload.name
    );

    sh(workload.prepare, &work);
    let strace = oracle::normalize(oracle::strace(&command, &work, workload.env, &scratch));
    assert!(
        strace.len() > 5,
        "{}: suspiciously few accesses ({})",
        workload.name,
        strace.len()
    );

    // Both backends must agree with strace, whichever one this machine would pick, and so
    // must seccomp alone, without the LD_PRELOAD fast path taking most calls off it.
    for (backend, preload) in [("seccomp", "on"), ("ptrace", "on"), ("seccomp", "off")] {
        sh(workload.prepare, &work);
        let mut env = workload.env.to_vec();
        env.push(("VT_TRACER", backend));
        if preload == "off" {
            env.push(("VT_PRELOAD", "off"));
        }
        let backend = format!("{backend}, preload {preload}");
        let (vt_seen, gaps) = oracle::vt_trace(&vt, &command, &work, &env, &scratch);
        let vt_seen = oracle::normalize(vt_seen);
        let name = format!("{} ({backend})", workload.name);
        assert_eq!(gaps, 0, "{name}: vt reported tracing gaps");
        let vt_only: Observed = vt_seen.difference(&strace).cloned().collect();
        let strace_only: Observed = strace.difference(&vt_seen).cloned().collect();
        assert!(
            vt_only.is_empty() && strace_only.is_empty(),
            "{name}: vt and strace disagree\nonly vt saw:\n{}\nonly strace saw:\n{}",
            show(&vt_only),
            show(&strace_only)
        );
        // Paths inside the workload directory prove the comparison is not only about /usr.
        assert!(
            vt_seen.iter().any(|(_, p)| p.starts_with(&work)),
            "{name}: nothing seen inside {}",
            work.display()
        );
    }
}

const C_MAIN: &str = "#include \"h.h\"\nint main(void) { return a() + b() - 3; }\n";
const C_A: &str = "#include \"h.h\"\nint a(void) { return 1; }\n";
const C_B: &str = "#include \"h.h\"\nint b(void) { return 2; }\n";
const C_H: &str = "int a(void);\nint b(void);\n";

#[test]
fn gcc_compiles_three_files() {
    compare(Workload {
        name: "gcc",
        files: &[("main.c", C_MAIN), ("a.c", C_A), ("b.c", C_B), ("h.h", C_H)],
        setup: &[],
        prepare: "rm -f prog",
        command: &["gcc", "-o", "prog", "main.c", "a.c", "b.c"],
        env: &[],
    });
}

#[test]
fn make_with_two_jobs() {
    compare(Workload {
        name: "make -j2",
        files: &[
            ("main.c", C_MAIN),
            ("a.c", C_A),
            ("b.c", C_B),
            ("h.h", C_H),
            (
                "Makefile",
                "prog: main.o a.o b.o\n\tgcc -o $@ $^\n%.o: %.c h.h\n\tgcc -c -o $@ $<\n",
            ),
        ],
        setup: &[],
        prepare: "rm -f prog *.o",
        command: &["make", "-s", "-j2"],
        env: &[],
    });
}

#[test]
fn node_requires_a_module_tree_with_a_missing_optional_module() {
    compare(Workload {
        name: "node",
        files: &[
            (
                "index.js",
                "const a = require('./lib/a');\nlet opt; try { opt = require('./lib/optional'); } catch {}\nconsole.log(a(), opt === undefined);\n",
            ),
            (
                "lib/a.js",
                "const b = require('./b');\nmodule.exports = () => b + require('fs').readdirSync(__dirname).length;\n",
            ),
            ("lib/b.json", "40"),
            ("lib/b/index.js", "module.exports = 0;\n"),
        ],
        setup: &[],
        prepare: "true",
        command: &["node", "index.js"],
        // libuv would move file I/O to io_uring, which strace cannot see (vt refuses it).
        env: &[("UV_USE_IO_URING", "0")],
    });
}

#[test]
fn python_imports_json_and_email() {
    // The pyenv shim is a bash script; trace the real interpreter.
    let real = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    let real = String::from_utf8_lossy(&real.stdout).trim().to_owned();
    let script = "import json, email\nimport email.message\n";
    compare(Workload {
        name: "python3",
        files: &[("imports.py", script)],
        setup: &[],
        prepare: "true",
        command: &[&real, "imports.py"],
        env: &[("PYTHONDONTWRITEBYTECODE", "1")],
    });
}

#[test]
fn tar_creates_an_archive() {
    compare(Workload {
        name: "tar c",
        files: &[
            ("src/a.txt", "a"),
            ("src/sub/b.txt", "b"),
            ("src/sub/c.txt", "c"),
        ],
        setup: &["ln -s a.txt src/link"],
        prepare: "rm -f out.tar",
        command: &["tar", "cf", "out.tar", "src"],
        env: &[],
    });
}

#[test]
fn cp_copies_a_tree() {
    compare(Workload {
        name: "cp -r",
        files: &[
            ("src/a.txt", "a"),
            ("src/sub/b.txt", "b"),
            ("src/sub/deeper/c.txt", "c"),
        ],
        setup: &[],
        prepare: "rm -rf dst",
        command: &["cp", "-r", "src", "dst"],
        env: &[],
    });
}

#[test]
fn find_walks_a_tree() {
    compare(Workload {
        name: "find",
        files: &[
            ("src/a.c", ""),
            ("src/sub/b.c", ""),
            ("src/sub/c.h", ""),
            ("docs/readme", ""),
        ],
        setup: &[],
        prepare: "true",
        command: &["find", ".", "-name", "*.c"],
        env: &[],
    });
}

#[test]
fn sh_with_redirections_mv_rm_and_symlinks() {
    compare(Workload {
        name: "sh",
        files: &[("input.txt", "hello\n")],
        setup: &[],
        prepare: "rm -rf out.txt log.txt moved.txt link.txt d",
        command: &[
            "sh",
            "-c",
            "cat < input.txt > out.txt; cat out.txt >> log.txt; mv out.txt moved.txt; ln -s moved.txt link.txt; \
             cat link.txt > /dev/null; rm moved.txt; cat link.txt 2>/dev/null || true; mkdir -p d/e; rmdir d/e; \
             test -e nothing-here || true",
        ],
        env: &[],
    });
}

const PROBE_C: &str = r#"#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct stat st;
    int fd = open("data/in.txt", O_RDONLY);
    if (fd < 0) return 1;
    close(fd);
    if (stat("data/absent.txt", &st) == 0) return 2;
    DIR *d = opendir("data");
    if (!d) return 3;
    while (readdir(d)) {}
    closedir(d);
    fd = open("out.bin", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return 4;
    close(fd);
    return 0;
}
"#;

#[test]
fn static_binary_is_traced_without_ld_preload() {
    compare(Workload {
        name: "static",
        files: &[
            ("probe.c", PROBE_C),
            ("data/in.txt", "x"),
            ("data/other.txt", "y"),
        ],
        setup: &[
            "gcc -static -O1 -o probe probe.c",
            "file probe | grep -q 'statically linked'",
        ],
        prepare: "rm -f out.bin",
        command: &["./probe"],
        env: &[],
    });
}

const THREADS_C: &str = r#"#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
static void *work(void *arg) {
    long i = (long)arg;
    char path[64];
    struct stat st;
    for (int round = 0; round < 20; round++) {
        snprintf(path, sizeof path, "data/t%ld.txt", i);
        int fd = open(path, O_RDONLY);
        if (fd >= 0) close(fd);
        snprintf(path, sizeof path, "data/missing-%ld", i);
        stat(path, &st);
    }
    return 0;
}
int main(void) {
    pthread_t threads[8];
    for (long i = 0; i < 8; i++) pthread_create(&threads[i], 0, work, (void *)i);
    for (int i = 0; i < 8; i++) pthread_join(threads[i], 0);
    return 0;
}
"#;

#[test]
fn eight_threads_open_files_concurrently() {
    compare(Workload {
        name: "threads",
        files: &[
            ("threads.c", THREADS_C),
            ("data/t0.txt", ""),
            ("data/t1.txt", ""),
            ("data/t2.txt", ""),
            ("data/t3.txt", ""),
            ("data/t4.txt", ""),
            ("data/t5.txt", ""),
            ("data/t6.txt", ""),
            ("data/t7.txt", ""),
        ],
        setup: &["gcc -O1 -pthread -o threads threads.c"],
        prepare: "true",
        command: &["./threads"],
        env: &[],
    });
}

#[test]
fn two_hundred_short_processes() {
    let files: Vec<(String, String)> = (0..10)
        .map(|i| (format!("f{i}.txt"), i.to_string()))
        .collect();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    compare(Workload {
        name: "200 processes",
        files: &files,
        setup: &[],
        prepare: "true",
        command: &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 200 ]; do cat f$((i % 10)).txt > /dev/null & i=$((i + 1)); done; wait",
        ],
        env: &[],
    });
}

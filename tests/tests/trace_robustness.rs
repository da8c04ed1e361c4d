//! The tracer under stress and abuse: whole trees (daemons included), odd paths, many
//! processes and threads, refused io_uring, exit statuses, and no orphans when vt is stopped.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Traced {
    output: Output,
    log: serde_json::Value,
    text: Vec<u8>,
}

impl Traced {
    fn paths(&self, kind: &str) -> Vec<String> {
        self.log["accesses"]
            .as_array()
            .expect("accesses")
            .iter()
            .filter(|a| a["kind"] == kind)
            .map(|a| a["path"].as_str().expect("path").to_owned())
            .collect()
    }

    fn gaps(&self) -> Vec<String> {
        self.log["gaps"]
            .as_array()
            .expect("gaps")
            .iter()
            .map(|g| g["reason"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    fn code(&self) -> Option<i32> {
        self.output.status.code()
    }
}

use vt_tests::workdir;

/// Runs `vt trace --json` once.
fn trace_json(cwd: &Path, command: &[&str]) -> Traced {
    let json_path = cwd.join(".vt-log.json");
    let output = vt_tests::trace_json_command(&vt_tests::vt_binary(), &json_path, command)
        .current_dir(cwd)
        .output()
        .expect("vt runs");
    Traced {
        output,
        log: vt_tests::read_trace_log(&json_path),
        text: Vec::new(),
    }
}

/// Runs `vt trace` twice over the same command: once for JSON, once for the raw text log.
fn trace(cwd: &Path, command: &[&str]) -> Traced {
    let Traced { output, log, .. } = trace_json(cwd, command);
    let vt = vt_tests::vt_binary();
    let text_path = cwd.join(".vt-log.txt");
    let status = Command::new(&vt)
        .args(["trace", "-o"])
        .arg(&text_path)
        .arg("--")
        .args(command)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("vt runs");
    assert_eq!(status.code(), output.status.code(), "both runs end alike");
    let text = std::fs::read(&text_path).expect("text log");
    Traced { output, log, text }
}

/// The real Python interpreter (not a pyenv shim script).
fn python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn compile(dir: &Path, name: &str, source: &str, flags: &[&str]) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).expect("write C source");
    let out = dir.join(name);
    let status = Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc");
    assert!(status.success(), "compiling {name}");
    out
}

#[test]
fn exit_status_and_signals_pass_through() {
    let (_t, dir) = workdir();
    assert_eq!(trace(&dir, &["sh", "-c", "exit 7"]).code(), Some(7));
    assert_eq!(
        trace(&dir, &["sh", "-c", "kill -9 $$"]).code(),
        Some(128 + 9)
    );
    let missing = Command::new(vt_tests::vt_binary())
        .args(["trace", "--", "/no/such/program"])
        .output()
        .expect("vt");
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("cannot start /no/such/program"), "{stderr}");
}

#[test]
fn daemonized_grandchildren_are_waited_for_and_recorded() {
    let (_t, dir) = workdir();
    std::fs::write(dir.join("late.txt"), "x").expect("write");
    let started = Instant::now();
    // The grandchild double-forks into a new session and reads a file after its parents exit.
    let traced = trace(
        &dir,
        &[
            "sh",
            "-c",
            "setsid sh -c 'sleep 0.5; cat late.txt > /dev/null' & exit 0",
        ],
    );
    assert_eq!(traced.code(), Some(0));
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "vt returned before the daemon finished"
    );
    let late = dir.join("late.txt").to_string_lossy().into_owned();
    assert!(
        traced.paths("read").contains(&late),
        "the daemon's read is in the log"
    );
}

#[test]
fn non_utf8_names_are_recorded_byte_for_byte() {
    let (_t, dir) = workdir();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    std::fs::write(dir.join(name), "x").expect("write a non-UTF-8 name");
    let traced = trace(&dir, &["sh", "-c", "cat caf*.txt > /dev/null"]);
    let mut expected = b"read        ".to_vec();
    expected.extend_from_slice(dir.join(name).as_os_str().as_bytes());
    expected.push(b'\n');
    assert!(
        traced
            .text
            .windows(expected.len())
            .any(|w| w == expected.as_slice()),
        "raw bytes in the text log"
    );
    assert!(traced.gaps().is_empty());
}

#[test]
fn paths_longer_than_path_max_are_reported_as_gaps() {
    let (_t, dir) = workdir();
    let long = format!("/{}", "a".repeat(5000));
    let traced = trace(
        &dir,
        &["sh", "-c", &format!("cat {long} 2>/dev/null; true")],
    );
    assert_eq!(traced.code(), Some(0));
    assert!(
        traced.gaps().iter().any(|g| g.contains("PATH_MAX")),
        "gaps: {:?}",
        traced.gaps()
    );

    // A cwd deeper than PATH_MAX: /proc cannot name it, so relative lookups become gaps.
    // (Python's chdir takes the relative name; dash's `cd` would pass an absolute path.)
    let script = "import os\nfor _ in range(25):\n    os.mkdir('d' * 200)\n    os.chdir('d' * 200)\ntry:\n    open('nothing')\nexcept OSError:\n    pass\n";
    let traced = trace_json(&dir, &[&python(), "-c", script]);
    assert_eq!(traced.code(), Some(0));
    assert!(
        traced.gaps().iter().any(|g| g.contains("cannot name")),
        "gaps: {:?}",
        traced.gaps()
    );
}

#[test]
fn lookups_in_a_deleted_cwd_are_gaps() {
    let (_t, dir) = workdir();
    let traced = trace(
        &dir,
        &[
            "sh",
            "-c",
            "mkdir gone && cd gone && rmdir ../gone && cat x 2>/dev/null; true",
        ],
    );
    assert_eq!(traced.code(), Some(0));
    assert!(
        traced
            .gaps()
            .iter()
            .any(|g| g.contains("deleted directory")),
        "gaps: {:?}",
        traced.gaps()
    );
}

#[test]
fn ten_thousand_short_lived_processes() {
    let (_t, dir) = workdir();
    std::fs::write(dir.join("input"), "x").expect("write");
    let traced = trace_json(
        &dir,
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 10000 ]; do /bin/cat input; i=$((i+1)); done > /dev/null",
        ],
    );
    assert_eq!(traced.code(), Some(0));
    // Each exec and open is either notified or recorded by the LD_PRELOAD fast path.
    let seen = traced.log["notifications"].as_u64().expect("count")
        + traced.log["fast_path_records"].as_u64().expect("count");
    assert!(seen >= 20_000, "every exec and open was seen: {seen}");
    assert!(traced.paths("exec").contains(&"/bin/cat".to_owned()));
    assert!(
        traced
            .paths("read")
            .contains(&dir.join("input").to_string_lossy().into_owned())
    );
    assert!(traced.gaps().is_empty(), "{:?}", traced.gaps());
}

const THREADS_64: &str = r#"#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
static void *work(void *arg) {
    char path[64];
    snprintf(path, sizeof path, "t/%ld", (long)arg);
    for (int i = 0; i < 50; i++) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) close(fd);
    }
    return 0;
}
int main(void) {
    pthread_t threads[64];
    for (long i = 0; i < 64; i++) pthread_create(&threads[i], 0, work, (void *)i);
    for (int i = 0; i < 64; i++) pthread_join(threads[i], 0);
    return 0;
}
"#;

#[test]
fn sixty_four_threads_opening_files_concurrently() {
    let (_t, dir) = workdir();
    std::fs::create_dir(dir.join("t")).expect("mkdir");
    let program = compile(&dir, "threads64", THREADS_64, &["-O1", "-pthread"]);
    let traced = trace(&dir, &[program.to_str().expect("utf-8 path")]);
    assert_eq!(traced.code(), Some(0));
    let touched: std::collections::BTreeSet<String> = traced
        .paths("create")
        .into_iter()
        .chain(traced.paths("write"))
        .collect();
    for i in 0..64 {
        let path = dir
            .join("t")
            .join(i.to_string())
            .to_string_lossy()
            .into_owned();
        assert!(
            touched.contains(&path),
            "thread {i}'s file is missing from the log"
        );
    }
    assert!(traced.gaps().is_empty(), "{:?}", traced.gaps());
}

const IO_URING_PROBE: &str = r#"#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    char params[120];
    memset(params, 0, sizeof params);
    long fd = syscall(SYS_io_uring_setup, 4, params);
    printf("%ld %d\n", fd, fd < 0 ? errno : 0);
    return 0;
}
"#;

#[test]
fn io_uring_is_refused_with_enosys_under_tracing() {
    let (_t, dir) = workdir();
    let program = compile(&dir, "uring", IO_URING_PROBE, &["-O1"]);
    let traced = trace(&dir, &[program.to_str().expect("utf-8 path")]);
    assert_eq!(
        String::from_utf8_lossy(&traced.output.stdout).trim(),
        format!("-1 {}", libc_enosys())
    );
    // Control: outside vt the call is not refused with ENOSYS (it succeeds, or fails for
    // another reason such as a sysctl), so the test cannot pass vacuously.
    let bare = Command::new(&program).output().expect("bare run");
    let bare = String::from_utf8_lossy(&bare.stdout);
    assert_ne!(
        bare.trim(),
        format!("-1 {}", libc_enosys()),
        "io_uring already unavailable here: {bare}"
    );
}

fn libc_enosys() -> i32 {
    38
}

#[test]
fn stopping_vt_stops_the_whole_tree() {
    let (_t, dir) = workdir();
    // Unique per run, so a leftover from an earlier run cannot confuse the count.
    let marker = format!("9{}.25", std::process::id() % 100_000);
    let marker = marker.as_str();
    let mut vt = Command::new(vt_tests::vt_binary())
        .args(["trace", "-o", "/dev/null", "--", "sh", "-c"])
        .arg(format!("setsid sleep {marker} & sleep {marker}"))
        .current_dir(&dir)
        .spawn()
        .expect("vt");
    let deadline = Instant::now() + Duration::from_secs(10);
    while sleepers(marker) < 2 {
        assert!(Instant::now() < deadline, "the sleepers never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix_kill(vt.id() as i32, 15);
    let status = vt.wait().expect("vt exits");
    assert_eq!(status.code(), Some(128 + 15));
    let deadline = Instant::now() + Duration::from_secs(5);
    while sleepers(marker) > 0 {
        assert!(
            Instant::now() < deadline,
            "{} task processes survived vt",
            sleepers(marker)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sleepers(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // Zombies are already dead; only running sleepers count.
            cmdline
                .split(|&b| b == 0)
                .any(|arg| arg == marker.as_bytes())
                && !stat.contains(") Z ")
        })
        .count()
}

fn nix_kill(pid: i32, signal: i32) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

#[test]
fn fanotify_catches_a_write_through_an_inherited_fd() {
    if !vt_tests::root_or_skip("fanotify needs CAP_SYS_ADMIN") {
        return;
    }
    let (_t, dir) = workdir();
    std::fs::write(dir.join("in.txt"), "x").expect("write");
    let inherited = std::fs::File::create(dir.join("inherited.txt")).expect("create");
    let json_path = dir.join(".vt-log.json");
    let mut command = vt_tests::trace_json_command(
        &vt_tests::vt_binary(),
        &json_path,
        &["sh", "-c", "cat in.txt > out.txt; echo more >&3"],
    );
    command.current_dir(&dir);
    let raw = std::os::fd::AsRawFd::as_raw_fd(&inherited);
    // SAFETY: dup2 is async-signal-safe; it places the test's file at fd 3 in the child.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            // dup2(3, 3) is a no-op that would keep close-on-exec: clear it explicitly.
            if (raw != 3 && libc::dup2(raw, 3) < 0) || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        })
    };
    let output = command.output().expect("vt");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let log = vt_tests::read_trace_log(&json_path);
    assert!(
        log["tracer"].as_str().unwrap_or("").contains("+fanotify"),
        "fanotify active: {}",
        log["tracer"]
    );
    let gaps: Vec<String> = log["gaps"]
        .as_array()
        .expect("gaps")
        .iter()
        .map(|g| g["reason"].to_string())
        .collect();
    assert_eq!(
        gaps.len(),
        1,
        "exactly the inherited-fd write is a gap: {gaps:?}"
    );
    assert!(gaps[0].contains("inherited.txt"), "{gaps:?}");
}

/// One fanotify group serves every task of a run. Each task's window still holds its own
/// write through an inherited descriptor (a gap: not cached), and a task that made none
/// gets no gap from the others' (their pids are not its), however the windows lie: one
/// after the other (`-j1`) or overlapping (`-j2`). The control: the clean tasks are hits
/// the second time, the writers miss again (and `all`, which depends on them).
#[test]
fn every_task_of_a_run_gets_its_own_fanotify_window() {
    if !vt_tests::root_or_skip("fanotify needs CAP_SYS_ADMIN") {
        return;
    }
    for jobs in ["-j1", "-j2"] {
        let (_t, dir) = workdir();
        std::fs::write(dir.join("package.json"), r#"{"name":"ws","private":true}"#)
            .expect("package.json");
        std::fs::write(
            dir.join("vt.json"),
            r#"{ "tasks": {
                "first": { "command": "echo first >&3" },
                "clean": { "command": "cat package.json > /dev/null" },
                "second": { "command": "echo second >&3" },
                "tidy": { "command": "cat vt.json > /dev/null" },
                "all": { "command": "true", "dependsOn": ["first", "clean", "second", "tidy"] }
            } }"#,
        )
        .expect("vt.json");
        let run = || {
            let inherited = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("inherited.txt"))
                .expect("create");
            let raw = std::os::fd::AsRawFd::as_raw_fd(&inherited);
            let mut command = Command::new(vt_tests::vt_binary());
            command
                .current_dir(&dir)
                .env("VT_CACHE_DIR", dir.join(".vt-cache"))
                .args(["run", "all", jobs]);
            // SAFETY: dup2/fcntl are async-signal-safe; the file goes to fd 3 in vt, and
            // from vt to its tasks.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                    if (raw != 3 && libc::dup2(raw, 3) < 0) || libc::fcntl(3, libc::F_SETFD, 0) < 0
                    {
                        Err(std::io::Error::last_os_error())
                    } else {
                        Ok(())
                    }
                })
            };
            let output = command.output().expect("vt");
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            assert!(output.status.success(), "{stderr}");
            stderr
        };
        let gap = |stderr: &str, task: &str| {
            stderr.lines().any(|l| {
                l.contains(&format!("ws#{task}: not cached: tracing gap"))
                    && l.contains("inherited.txt")
            })
        };
        let first = run();
        for task in ["first", "second"] {
            assert!(gap(&first, task), "{jobs}: {task} has no gap:\n{first}");
        }
        for task in ["clean", "tidy", "all"] {
            assert!(!gap(&first, task), "{jobs}: {task} got a gap:\n{first}");
        }
        let again = run();
        for task in ["clean", "tidy"] {
            assert!(
                again.contains(&format!("ws#{task}: cache hit")),
                "{jobs}: {task} is not a hit:\n{again}"
            );
        }
        for task in ["first", "second"] {
            assert!(gap(&again, task), "{jobs}: {task} has no gap:\n{again}");
        }
    }
}

#[test]
fn vt_finishes_while_another_process_keeps_writing_to_the_watched_file_system() {
    // `strace -f -o LOG vt …` writes a line to LOG for each of vt's syscalls, including
    // each read of fanotify's queue: every read queued the next event, and vt never
    // finished draining. Events are read until the queue is empty once, not until it stays
    // empty. (strace is also what the oracle suite needs.)
    let (_t, dir) = workdir();
    let mut strace = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(dir.join("strace.log"))
        .arg(vt_tests::vt_binary())
        .args(["trace", "-o", "/dev/null", "--", "/bin/true"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace runs (apt package strace)");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = strace.try_wait().expect("wait") {
            assert!(status.success(), "vt under strace: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = strace.kill();
            panic!("vt did not finish in 60 s while strace logged it to the same file system");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where the kernel ties speculation mitigations to seccomp (its `seccomp` mode, the
/// default before 5.16), a filter installed without `SECCOMP_FILTER_FLAG_SPEC_ALLOW` would
/// force them on for the whole task and make every traced build slower than bare. Both
/// tracers must leave the task exactly as a bare run has it. (On a kernel in `prctl` mode,
/// as here, both runs read the same either way; the test guards the hosts where it matters.)
#[test]
fn tracing_leaves_the_tasks_speculation_mitigations_as_they_were() {
    let (_dir, root) = workdir();
    let read = "grep '^Speculation' /proc/self/status";
    let bare = Command::new("sh")
        .args(["-c", read])
        .output()
        .expect("sh runs");
    let bare = String::from_utf8_lossy(&bare.stdout).into_owned();
    assert!(
        bare.contains("Speculation_Store_Bypass"),
        "this kernel reports speculation control in /proc/PID/status: {bare}"
    );
    for tracer in ["seccomp", "ptrace"] {
        let output = Command::new(vt_tests::vt_binary())
            .args(["trace", "-o"])
            .arg(root.join("log.txt"))
            .args(["--", "sh", "-c", read])
            .env("VT_TRACER", tracer)
            .current_dir(&root)
            .output()
            .expect("vt runs");
        assert!(output.status.success(), "{tracer}: {output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            bare,
            "{tracer}: a traced task has the mitigations of a bare one"
        );
    }
}

#[test]
fn the_buffers_of_a_killed_vt_are_removed_by_the_next_one() {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let (_t, dir) = workdir();
    let fifo = dir.join("up.fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    // The task says where its recorder writes, then waits to be killed with vt.
    let script = format!(
        "echo \"$VT_PRELOAD_DIR\" > {}; exec sleep 1000",
        fifo.display()
    );
    let mut vt = Command::new(vt_tests::vt_binary())
        .args(["trace", "-o", "/dev/null", "--", "sh", "-c", &script])
        .current_dir(&dir)
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vt runs");
    let mut said = String::new();
    std::fs::File::open(&fifo)
        .expect("open the fifo")
        .read_to_string(&mut said)
        .expect("read the fifo");
    let buffers = PathBuf::from(said.trim());
    assert!(
        buffers.is_dir() && (buffers.starts_with("/dev/shm") || buffers.starts_with("/tmp")),
        "{said:?}"
    );
    // SAFETY: kill with a negative pid signals the group vt leads (vt and its task).
    unsafe { libc::kill(-(vt.id() as i32), libc::SIGKILL) };
    vt.wait().expect("vt reaped");
    assert!(buffers.is_dir(), "a killed vt removes nothing");
    // As if the next vt came later: a sweep leaves alone what changed in the last seconds
    // (its owner may not have locked it yet).
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::open(&buffers)
        .and_then(|d| d.set_modified(hour_ago))
        .expect("age the buffers' directory");
    let next = trace_json(&dir, &["true"]);
    assert_eq!(
        next.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&next.output.stderr)
    );
    assert!(
        !buffers.exists(),
        "the killed vt's buffers are still in {}",
        buffers.display()
    );
}

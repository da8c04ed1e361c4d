//! The escape suite: each case is a real attempt (`tests/src/bin/escape.rs`) run with
//! `vt exec --sandbox`, which must be stopped, and the same attempt run without the sandbox
//! (traced as usual), which must succeed, so a case cannot pass vacuously.
//!
//! Several controls need root (reading /proc/1/root, loading BPF, ptrace of an unrelated
//! process); CI runs as root, and elsewhere those cases say they need it.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use vt_tests::{vt_binary, workdir};

struct Workspace {
    _temp: tempfile::TempDir,
    root: PathBuf,
    /// $HOME for the task: outside the workspace.
    home: tempfile::TempDir,
}

fn workspace() -> Workspace {
    let (temp, root) = workdir();
    std::fs::write(
        root.join("package.json"),
        r#"{"name":"escape","private":true}"#,
    )
    .expect("package.json");
    std::fs::write(
        root.join("vt.json"),
        r#"{ "tasks": { "escape": { "command": "./escape", "output": ["dist/**"] } } }"#,
    )
    .expect("vt.json");
    std::fs::create_dir_all(root.join("src")).expect("src");
    std::fs::write(root.join("src/main.js"), "original\n").expect("source");
    std::fs::copy(env!("CARGO_BIN_EXE_escape"), root.join("escape")).expect("escape binary");
    Workspace {
        _temp: temp,
        root,
        home: tempfile::tempdir().expect("home"),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Cases whose control run needs root: in CI (always root) they must run.
fn needs_root(case: &str) -> bool {
    !vt_tests::root_or_skip(&format!("{case}: the control run needs root"))
}

impl Workspace {
    fn vt(&self, sandbox: bool, attempt: &[&str]) -> Command {
        let mut command = Command::new(vt_binary());
        command
            .current_dir(&self.root)
            .env("HOME", self.home.path())
            .arg("exec")
            .arg("--no-cache");
        if sandbox {
            command.arg("--sandbox");
        }
        command.arg("escape").arg("--").args(attempt);
        command
    }

    fn run(&self, sandbox: bool, attempt: &[&str]) -> Output {
        self.vt(sandbox, attempt).output().expect("run vt")
    }

    /// The attempt is stopped in the sandbox and succeeds without it.
    fn assert_contained(&self, attempt: &[&str]) -> (Output, Output) {
        self.assert_contained_with(attempt, attempt)
    }

    /// Like [`Self::assert_contained`], when the control needs other arguments.
    fn assert_contained_with(&self, attempt: &[&str], control: &[&str]) -> (Output, Output) {
        let jailed = self.run(true, attempt);
        let text = |o: &Output| {
            format!(
                "stdout: {}\nstderr: {}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        };
        assert!(
            !jailed.status.success()
                && String::from_utf8_lossy(&jailed.stderr).contains("stopped:"),
            "{attempt:?} escaped the sandbox:\n{}",
            text(&jailed)
        );
        let control = self.run(false, control);
        assert!(
            control.status.success(),
            "{attempt:?} fails even without the sandbox, so the sandboxed run proves nothing:\n{}",
            text(&control)
        );
        (jailed, control)
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn cannot_write_the_workspace_sources() {
    let ws = workspace();
    let source = ws.root.join("src/main.js");
    let (jailed, _) = ws.assert_contained(&["write", &source.to_string_lossy()]);
    assert!(
        stderr(&jailed).contains("Read-only file system"),
        "{}",
        stderr(&jailed)
    );
    // The control appended; the sandboxed run left nothing.
    assert_eq!(
        std::fs::read_to_string(&source).expect("source"),
        "original\nescaped\n"
    );
}

#[test]
fn can_write_declared_outputs_only() {
    let ws = workspace();
    let out = ws.root.join("dist/out.txt");
    let jailed = ws.run(true, &["write", &out.to_string_lossy()]);
    assert!(jailed.status.success(), "{}", stderr(&jailed));
    assert_eq!(std::fs::read_to_string(&out).expect("output"), "escaped\n");
}

#[test]
fn home_and_tmpdir_are_scratch_inside_the_sandbox() {
    let ws = workspace();
    let output = Command::new(vt_binary())
        .current_dir(&ws.root)
        .env("HOME", ws.home.path())
        .env("TMPDIR", ws.home.path())
        .args(["exec", "--no-cache", "--sandbox", "--", "sh", "-c"])
        .arg("mkdir -p \"$HOME/.cache/tool\" && echo cached > \"$HOME/.cache/tool/x\" && mktemp && echo home=$HOME")
        .output()
        .expect("vt");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("home=/tmp"));
    // Nothing reached the host's home.
    assert!(!ws.home.path().join(".cache").exists());
}

#[test]
fn cannot_write_home() {
    let ws = workspace();
    let target = ws.home.path().join("pwned");
    ws.assert_contained(&["write", &target.to_string_lossy()]);
}

#[test]
fn cannot_write_etc() {
    let ws = workspace();
    if needs_root("cannot_write_etc") {
        return;
    }
    let target = format!("/etc/vt-escape-test-{}", std::process::id());
    let (jailed, _) = ws.assert_contained(&["write", &target]);
    let _ = std::fs::remove_file(&target);
    assert!(
        stderr(&jailed).contains("Read-only file system"),
        "{}",
        stderr(&jailed)
    );
}

#[test]
fn cannot_read_secrets_outside_the_allowed_directories() {
    let ws = workspace();
    let dir = tempfile::tempdir().expect("secret dir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "hunter2").expect("secret");
    ws.assert_contained(&["read", &secret.to_string_lossy()]);
    if is_root() {
        // Root's home, where real credentials live.
        let in_root = PathBuf::from(format!("/root/.vt-escape-secret-{}", std::process::id()));
        std::fs::write(&in_root, "hunter2").expect("secret in /root");
        let (jailed, _) = ws.assert_contained(&["read", &in_root.to_string_lossy()]);
        let _ = std::fs::remove_file(&in_root);
        assert!(
            stderr(&jailed).contains("No such file"),
            "{}",
            stderr(&jailed)
        );
    }
    // /etc/shadow stays hidden even though the task runs as the same uid.
    if is_root() {
        ws.assert_contained(&["read", "/etc/shadow"]);
    }
}

#[test]
fn cannot_reach_a_listener_on_the_host_loopback() {
    let ws = workspace();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port().to_string();
    ws.assert_contained(&["connect", &port]);
}

#[test]
fn network_opt_in_reaches_the_host() {
    let ws = workspace();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port().to_string();
    let output = Command::new(vt_binary())
        .current_dir(&ws.root)
        .args([
            "exec",
            "--no-cache",
            "--sandbox",
            "--network",
            "escape",
            "--",
        ])
        .args(["connect", &port])
        .output()
        .expect("vt");
    assert!(output.status.success(), "{}", stderr(&output));
}

/// A network namespace serves several sandboxes of one run, but what a task leaves in it
/// must not reach the next: here each `bind` follows a task that left its port in
/// TIME_WAIT (a server that closed first), and binds without `SO_REUSEADDR`, which fails in
/// a namespace where that connection is still counted. The control: the same `bind` after
/// a `time-wait` in one sandbox fails.
#[test]
fn a_port_left_in_time_wait_does_not_reach_the_next_sandboxed_task() {
    let ws = workspace();
    let port = "47391";
    let mut tasks = Vec::new();
    for i in 0..4 {
        let after = if i == 0 {
            String::new()
        } else {
            format!(r#", "dependsOn": ["bind{}"]"#, i - 1)
        };
        tasks.push(format!(
            r#""wait{i}": {{ "command": "./escape time-wait {port}"{after} }},
               "bind{i}": {{ "command": "./escape bind {port}", "dependsOn": ["wait{i}"] }}"#
        ));
    }
    std::fs::write(
        ws.root.join("vt.json"),
        format!(
            r#"{{ "tasks": {{ "escape": {{ "command": "./escape" }}, {} }} }}"#,
            tasks.join(",")
        ),
    )
    .expect("vt.json");
    let output = Command::new(vt_binary())
        .current_dir(&ws.root)
        .env("HOME", ws.home.path())
        .args(["run", "bind3", "--sandbox", "--no-cache", "-j1"])
        .output()
        .expect("vt");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout)
            .matches("escaped: bound")
            .count(),
        4,
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    let control = ws.run(true, &["time-wait", port]);
    assert!(control.status.success(), "{}", stderr(&control));
    let both = Command::new(vt_binary())
        .current_dir(&ws.root)
        .env("HOME", ws.home.path())
        .args(["exec", "--no-cache", "--sandbox", "--", "sh", "-c"])
        .arg(format!("./escape time-wait {port} && ./escape bind {port}"))
        .output()
        .expect("vt");
    assert!(
        !both.status.success() && stderr(&both).contains("Address already in use"),
        "the control's bind did not fail, so the test proves nothing: {}",
        stderr(&both)
    );
}

/// A host process the attempts aim at.
struct Victim(std::process::Child);

impl Victim {
    fn start() -> Victim {
        Victim(
            Command::new("sleep")
                .arg("60")
                .spawn()
                .expect("start sleep"),
        )
    }
    fn pid(&self) -> String {
        self.0.id().to_string()
    }
    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cannot_signal_a_host_process() {
    let ws = workspace();
    let mut victim = Victim::start();
    let (jailed, _) = ws.assert_contained(&["signal", &victim.pid()]);
    assert!(
        stderr(&jailed).contains("No such process"),
        "{}",
        stderr(&jailed)
    );
    assert!(victim.alive());
}

#[test]
fn cannot_ptrace_a_host_process() {
    let ws = workspace();
    if needs_root("cannot_ptrace_a_host_process") {
        return;
    }
    let mut victim = Victim::start();
    ws.assert_contained(&["ptrace", &victim.pid()]);
    assert!(victim.alive());
}

#[test]
fn cannot_inject_keystrokes_with_tiocsti() {
    let ws = workspace();
    if needs_root("cannot_inject_keystrokes_with_tiocsti") {
        return;
    }
    // A terminal the task inherits as fd 3 (the way a tool would find vt's terminal).
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two fds; the name/termios/winsize pointers may be null.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    let with_terminal = |sandbox: bool| {
        let mut command = ws.vt(sandbox, &["tiocsti", "3"]);
        // SAFETY: dup2 in the child before exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(slave, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command.stdin(Stdio::null()).output().expect("vt")
    };
    let jailed = with_terminal(true);
    assert!(
        !jailed.status.success() && stderr(&jailed).contains("Operation not permitted"),
        "TIOCSTI went through in the sandbox: {}",
        stderr(&jailed)
    );
    let control = with_terminal(false);
    assert!(control.status.success(), "control: {}", stderr(&control));
}

#[test]
fn cannot_remount_anything_read_write() {
    let ws = workspace();
    if needs_root("cannot_remount_anything_read_write") {
        return;
    }
    let (jailed, _) = ws.assert_contained(&["remount", &ws.root.to_string_lossy()]);
    assert!(
        stderr(&jailed).contains("Operation not permitted"),
        "{}",
        stderr(&jailed)
    );
}

#[test]
fn cannot_escape_through_a_symlink_planted_in_an_output_dir() {
    let ws = workspace();
    let outside = tempfile::tempdir().expect("outside");
    std::fs::create_dir_all(ws.root.join("dist")).expect("dist");
    std::os::unix::fs::symlink(outside.path(), ws.root.join("dist/link")).expect("plant");
    let (_, _) = ws.assert_contained(&["write", "dist/link/pwned"]);
    // Only the control run wrote there.
    assert_eq!(
        std::fs::read_to_string(outside.path().join("pwned")).expect("control wrote"),
        "escaped\n"
    );
}

#[test]
fn cannot_reach_the_host_through_proc() {
    let ws = workspace();
    if needs_root("cannot_reach_the_host_through_proc") {
        return;
    }
    let dir = tempfile::tempdir().expect("secret dir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "hunter2").expect("secret");
    // In the sandbox pid 1 is vt's init; its root and executable must lead nowhere. The
    // control aims at a host process vt may inspect (this host's own pid 1 may refuse even
    // root, as in a container).
    let victim = Victim::start();
    let secret = secret.to_string_lossy();
    ws.assert_contained_with(
        &["proc-root", "1", &secret],
        &["proc-root", &victim.pid(), &secret],
    );
    ws.assert_contained_with(&["proc-exe", "1"], &["proc-exe", &victim.pid()]);
}

#[test]
fn cannot_read_the_memory_of_the_sandboxs_init() {
    // pid 1 of a sandbox runs on vt's own memory until it exits (it is started without a
    // fork: sandbox/src/jail/apply/chain.rs); the task must not reach it through /proc.
    // The control reads a host process's memory, which vt's user may.
    let ws = workspace();
    if needs_root("cannot_read_the_memory_of_the_sandboxs_init") {
        return;
    }
    let victim = Victim::start();
    ws.assert_contained_with(&["proc-mem", "1"], &["proc-mem", &victim.pid()]);
    ws.assert_contained_with(&["ptrace", "1"], &["ptrace", &victim.pid()]);
}

#[test]
fn a_setuid_file_gains_nothing() {
    let ws = workspace();
    if needs_root("a_setuid_file_gains_nothing") {
        return;
    }
    ws.assert_contained(&["setuid", &ws.root.join("dist").to_string_lossy()]);
}

#[test]
fn cannot_load_a_bpf_program() {
    let ws = workspace();
    if needs_root("cannot_load_a_bpf_program") {
        return;
    }
    ws.assert_contained(&["bpf"]);
}

#[test]
fn leaves_no_process_behind() {
    let ws = workspace();
    let marker = |name: &str| ws.root.join("dist").join(name);
    std::fs::create_dir_all(ws.root.join("dist")).expect("dist");
    let jailed = ws.run(true, &["daemon", &marker("jailed").to_string_lossy()]);
    assert!(jailed.status.success(), "{}", stderr(&jailed));
    let control = ws.run(false, &["daemon", &marker("control").to_string_lossy()]);
    assert!(control.status.success(), "{}", stderr(&control));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // Without the sandbox the daemon outlives the task's main process (vt waits for it);
    // in the sandbox it dies with the task.
    assert!(marker("control").exists(), "the control daemon never wrote");
    assert!(
        !marker("jailed").exists(),
        "a process of the sandboxed task outlived it"
    );
}

#[test]
fn sandboxed_tasks_see_no_capabilities_and_their_own_pid_namespace() {
    let ws = workspace();
    let output = Command::new(vt_binary())
        .current_dir(&ws.root)
        .args(["exec", "--no-cache", "--sandbox", "--", "sh", "-c"])
        .arg("grep -E '^Cap(Eff|Prm|Bnd|Amb)' /proc/self/status; echo pid=$$; hostname; grep NoNewPrivs /proc/self/status")
        .output()
        .expect("vt");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", stderr(&output));
    for line in stdout.lines().filter(|l| l.starts_with("Cap")) {
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    let pid: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .expect("pid line");
    assert!(
        pid < 10,
        "the task should be near the top of its own pid namespace: {pid}"
    );
    assert!(stdout.contains("vt-sandbox"), "{stdout}");
    assert!(stdout.contains("NoNewPrivs:\t1"), "{stdout}");
}

#[test]
fn a_host_without_user_namespaces_fails_before_running_anything() {
    let ws = workspace();
    // What Docker's default profile does: unshare/clone with CLONE_NEWUSER → EPERM.
    use sandbox::trace::bpf;
    let newuser = libc::CLONE_NEWUSER as u32;
    let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let mut filter = vec![bpf::load(bpf::OFFSET_NR)];
    for nr in [libc::SYS_unshare, libc::SYS_clone] {
        filter.extend([
            bpf::jump_eq(nr as u32, 0, 4),
            bpf::load(bpf::offset_arg_low(0)),
            bpf::jump_set(newuser, 0, 1),
            bpf::ret(eperm),
            bpf::ret(libc::SECCOMP_RET_ALLOW),
        ]);
    }
    filter.push(bpf::jump_eq(libc::SYS_clone3 as u32, 0, 1));
    filter.push(bpf::ret(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    filter.push(bpf::ret(libc::SECCOMP_RET_ALLOW));
    let confined = |args: &[&str]| {
        let filter = filter.clone();
        let mut command = Command::new(vt_binary());
        command.current_dir(&ws.root).args(args);
        // SAFETY: prctl/seccomp in the child before exec, on a program built before fork.
        unsafe {
            command.pre_exec(move || {
                let fprog = libc::sock_fprog {
                    len: filter.len() as u16,
                    filter: filter.as_ptr().cast_mut(),
                };
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || libc::syscall(libc::SYS_seccomp, 1, 0, &fprog) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command.output().expect("vt")
    };
    let marker = ws.root.join("ran");
    let touch = ["--", "touch", "ran"];
    let jailed = confined(&[&["exec", "--no-cache", "--sandbox"][..], &touch].concat());
    let message = stderr(&jailed);
    assert!(!jailed.status.success());
    assert!(
        message.contains("user namespace") && message.contains("docker/seccomp.json"),
        "the error should say what is missing and how to allow it: {message}"
    );
    assert!(
        !marker.exists(),
        "the task ran although the sandbox could not be built"
    );
    // Tracing alone still works under the same restriction.
    let traced = confined(&[&["exec", "--no-cache"][..], &touch].concat());
    assert!(traced.status.success(), "{}", stderr(&traced));
    assert!(marker.exists());
}

/// When vt reports a sandboxed task's end, every process of the sandbox is gone, not merely
/// killed: one still exiting could still write what the task's outputs were taken from. A
/// daemon whose exit takes long (1 GiB to free before its descriptors close) holds a fifo
/// open for writing; right after vt returns, the fifo has no writer left. (Two things hold
/// it: vt waits for the sandbox's init, whose exit waits for every other process of its pid
/// namespace, and the tracer's log is complete only once no process under its filter is
/// left; with the first reordered so the init spoke before killing, the test still passed.)
#[test]
fn every_process_of_the_sandbox_is_gone_when_vt_reports_the_task_ended() {
    let ws = workspace();
    std::fs::create_dir_all(ws.root.join("dist")).expect("dist");
    let fifo = |name: &str| {
        let path = ws.root.join("dist").join(name);
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o666) }, 0, "mkfifo");
        // Opened for reading before the task runs, so the daemon's open does not block.
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .expect("open the fifo");
        (path, reader)
    };
    // What the fifo says now: the daemon's byte, then whether a writer is left.
    let writer_left = |reader: &mut std::fs::File| {
        let mut byte = [0u8; 1];
        assert_eq!(reader.read(&mut byte).expect("the daemon's byte"), 1);
        match reader.read(&mut byte) {
            Ok(0) => false,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            other => panic!("unexpected read of the fifo: {other:?}"),
        }
    };
    // Control: without vt the daemon outlives its parent, and the fifo shows it.
    let (path, mut reader) = fifo("control");
    let control = Command::new(ws.root.join("escape"))
        .args(["heavy-daemon", &path.to_string_lossy()])
        .output()
        .expect("escape");
    assert!(control.status.success(), "{}", stderr(&control));
    let daemon: i32 = String::from_utf8_lossy(&control.stdout)
        .trim()
        .trim_start_matches("escaped: daemon ")
        .parse()
        .expect("the daemon's pid");
    let alive = writer_left(&mut reader);
    // SAFETY: kill with plain integers.
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    assert!(alive, "the control daemon was not seen holding the fifo");
    for round in 0..3 {
        let (path, mut reader) = fifo(&format!("jailed-{round}"));
        let jailed = ws.run(true, &["heavy-daemon", &path.to_string_lossy()]);
        assert!(jailed.status.success(), "{}", stderr(&jailed));
        assert!(
            !writer_left(&mut reader),
            "a process of the sandboxed task was still there when vt reported its end"
        );
    }
}

#[test]
fn killing_vt_kills_the_sandboxed_tree() {
    let ws = workspace();
    let marker = ws.root.join("dist/survivor");
    std::fs::create_dir_all(ws.root.join("dist")).expect("dist");
    // A task whose background child would write the marker after vt is gone.
    let mut vt = Command::new(vt_binary())
        .current_dir(&ws.root)
        .args(["exec", "--no-cache", "--sandbox", "--", "sh", "-c"])
        .arg(format!(
            "(sleep 1; echo alive > {}) & sleep 30",
            marker.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vt");
    std::thread::sleep(std::time::Duration::from_millis(300));
    vt.kill().expect("SIGKILL vt");
    vt.wait().expect("reap vt");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        !marker.exists(),
        "a sandboxed process survived vt's SIGKILL and wrote {}",
        marker.display()
    );
}

#[test]
fn works_for_an_unprivileged_user_too() {
    if !is_root() {
        // Already unprivileged: every other case here is this case.
        return;
    }
    let ws = workspace();
    let nobody = "65534";
    let status = Command::new("chown")
        .args(["-R", &format!("{nobody}:{nobody}")])
        .arg(&ws.root)
        .status()
        .expect("chown");
    assert!(status.success());
    let output = Command::new("setpriv")
        .args(["--reuid", nobody, "--regid", nobody, "--clear-groups", "--"])
        .arg(vt_binary())
        .args(["exec", "--sandbox", "escape", "--", "write", "dist/out.txt"])
        .current_dir(&ws.root)
        .env("HOME", &ws.root)
        .output()
        .expect("setpriv (util-linux)");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        std::fs::read_to_string(ws.root.join("dist/out.txt")).expect("output"),
        "escaped\n"
    );
    let source = ws.root.join("src/main.js").to_string_lossy().into_owned();
    let output = Command::new("setpriv")
        .args(["--reuid", nobody, "--regid", nobody, "--clear-groups", "--"])
        .arg(vt_binary())
        .args([
            "exec",
            "--no-cache",
            "--sandbox",
            "escape",
            "--",
            "write",
            &source,
        ])
        .current_dir(&ws.root)
        .env("HOME", &ws.root)
        .output()
        .expect("setpriv");
    assert!(!output.status.success(), "wrote the sources as nobody");
    assert!(
        stderr(&output).contains("Read-only file system"),
        "{}",
        stderr(&output)
    );
}

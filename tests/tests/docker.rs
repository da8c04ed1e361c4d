//! vt in a container, for real: the test starts its own `dockerd` (Debian's docker.io, on a
//! private socket, data under /var/cache/vt-ci/docker so images survive between runs),
//! builds a Debian base from Debian's packages with `debootstrap` + `docker import` (images
//! cannot be pulled here), builds docker/Dockerfile's `prebuilt` stage around the vt under
//! test, and checks what docker/README.md promises:
//!
//! - under Docker's **default** seccomp profile: tracing and a cached `vt run` work, and
//!   `--sandbox` fails before the task runs, naming the missing user namespace and the fix;
//! - under **docker/seccomp.json** (+ `systempaths=unconfined`): `--sandbox` works, as the
//!   container's non-root user;
//! - under docker/seccomp.json alone: `--sandbox` fails naming `/proc` and the fix.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const STATE: &str = "/var/cache/vt-ci/docker";
const SOCKET: &str = "/run/vt-docker-test.sock";
const BASE: &str = "vt-debian-base:bookworm";
const IMAGE: &str = "vt-docker-test:latest";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Debian's docker.io client (what .ci/env.sh installs), not whatever `docker` is first on
/// PATH: a newer client without buildx cannot build with BuildKit against this daemon.
const DOCKER: &str = "/usr/bin/docker";

fn docker() -> Command {
    let mut command = Command::new(DOCKER);
    command.env("DOCKER_HOST", format!("unix://{SOCKET}"));
    command.env("DOCKER_BUILDKIT", "1");
    command
}

#[track_caller]
fn check(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Our own dockerd, stopped when the test ends (its data stays for the next run).
struct Daemon(Option<std::process::Child>);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            // SAFETY: SIGTERM to the daemon we started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

fn daemon_answers() -> bool {
    docker()
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts dockerd, or says why it cannot (then the test fails in CI and is skipped
/// elsewhere).
fn start_daemon() -> Result<Daemon, String> {
    if daemon_answers() {
        return Ok(Daemon(None));
    }
    let which = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    for tool in ["dockerd", DOCKER, "debootstrap"] {
        if !which(tool) {
            return Err(format!(
                "{tool} is not installed (.ci/env.sh installs docker.io and debootstrap)"
            ));
        }
    }
    std::fs::create_dir_all(STATE).map_err(|e| e.to_string())?;
    let log =
        std::fs::File::create(Path::new(STATE).join("dockerd.log")).map_err(|e| e.to_string())?;
    // No bridge and no iptables: the containers here need no network, and this host (itself
    // a container) may not allow them. vfs: no overlay-on-overlay surprises.
    let child = Command::new("dockerd")
        .args([
            "--data-root",
            &format!("{STATE}/root"),
            "--exec-root",
            "/run/vt-docker-test",
            "--pidfile",
            "/run/vt-docker-test.pid",
            "--host",
            &format!("unix://{SOCKET}"),
            "--storage-driver",
            "vfs",
            "--iptables=false",
            "--bridge=none",
        ])
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start dockerd: {e}"))?;
    let daemon = Daemon(Some(child));
    let started = Instant::now();
    while !daemon_answers() {
        if started.elapsed() > Duration::from_secs(30) {
            let log =
                std::fs::read_to_string(Path::new(STATE).join("dockerd.log")).unwrap_or_default();
            return Err(format!("dockerd did not come up in 30 s:\n{log}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(daemon)
}

/// The Debian base image, from Debian's packages (debootstrap, cached) via `docker import`.
fn ensure_base() {
    let present = docker()
        .args(["image", "inspect", BASE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return;
    }
    let rootfs = Path::new(STATE).join("rootfs");
    if !rootfs.join("etc/os-release").exists() {
        let _ = std::fs::remove_dir_all(&rootfs);
        check(
            Command::new("debootstrap")
                .args([
                    "--variant=minbase",
                    "--cache-dir=/var/cache/vt-ci/apt",
                    "bookworm",
                ])
                .arg(&rootfs)
                .arg("http://deb.debian.org/debian")
                .output()
                .expect("debootstrap"),
            "debootstrap",
        );
    }
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .expect("tar");
    let archive = tar.stdout.take().expect("tar stdout");
    check(
        docker()
            .args(["import", "-", BASE])
            .stdin(archive)
            .output()
            .expect("docker import"),
        "docker import",
    );
    assert!(
        tar.wait().is_ok_and(|s| s.success()),
        "tar of the rootfs failed"
    );
}

/// docker/Dockerfile's `prebuilt` stage around the vt under test (debug info stripped).
fn build_image() {
    let context = tempfile::tempdir().expect("context");
    check(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(vt_tests::vt_binary())
            .arg(context.path().join("vt"))
            .output()
            .expect("objcopy (binutils)"),
        "strip vt",
    );
    std::fs::copy(
        repo().join("docker/Dockerfile"),
        context.path().join("Dockerfile"),
    )
    .expect("Dockerfile");
    check(
        docker()
            .args([
                "build",
                "--quiet",
                "--network",
                "none",
                "--target",
                "prebuilt",
            ])
            .args(["--build-arg", &format!("DEBIAN={BASE}"), "-t", IMAGE])
            .arg(context.path())
            .output()
            .expect("docker build"),
        "docker build (docker/Dockerfile, prebuilt)",
    );
}

/// Runs `script` with `sh` in a fresh container of the image, as its user `vt`.
fn in_container(security: &[&str], script: &str) -> Output {
    let profile = repo().join("docker/seccomp.json");
    let mut command = docker();
    command.args(["run", "--rm", "--network", "none", "--entrypoint", "sh"]);
    for option in security {
        let option = option.replace("PROFILE", &profile.to_string_lossy());
        command.args(["--security-opt", &option]);
    }
    command.args([IMAGE, "-c", script]);
    command.output().expect("docker run")
}

/// A workspace inside the container and a cached task in it.
const SETUP: &str = r#"set -e
mkdir -p /work/app/src && cd /work/app
printf '{"name":"app"}' > package.json
printf '{ "tasks": { "build": { "command": "cat src/a.txt > dist/out.txt", "output": ["dist/**"] }, "touch-src": { "command": "echo x >> src/a.txt", "output": ["dist/**"] } } }' > vt.json
echo hello > src/a.txt
mkdir -p dist
"#;

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn vt_in_docker_under_the_default_profile_and_docker_seccomp_json() {
    let daemon = match start_daemon() {
        Ok(daemon) => daemon,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: {why}");
            return;
        }
        Err(why) => panic!("CI must run the docker tests: {why}"),
    };
    ensure_base();
    build_image();

    // Docker's default profile: tracing and caching work.
    let default = in_container(
        &[],
        &format!(
            "{SETUP}vt trace -- cat src/a.txt 2>&1 | tail -1\n\
             vt run build 2>&1\nrm -rf dist\nvt run build 2>&1\ncat dist/out.txt\n"
        ),
    );
    let out = check(default, "tracing and caching under the default profile");
    assert!(out.contains(" 0 gaps"), "tracing had gaps:\n{out}");
    assert!(
        out.contains("app#build: cache miss: no previous run"),
        "{out}"
    );
    assert!(out.contains("app#build: cache hit, replaying"), "{out}");
    assert!(out.ends_with("hello\n"), "{out}");

    // ... and --sandbox refuses before running anything, saying what to do.
    let refused = in_container(
        &[],
        &format!(
            "{SETUP}vt exec --no-cache --sandbox -- touch dist/ran || echo status=$?\n\
             if test -e dist/ran; then echo TASK-RAN; fi"
        ),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        stderr(&refused)
    );
    assert!(text.contains("status=2"), "{text}");
    assert!(text.contains("user namespace"), "{text}");
    assert!(text.contains("docker/seccomp.json"), "{text}");
    assert!(
        !text.contains("TASK-RAN"),
        "the task ran without its sandbox: {text}"
    );

    // docker/seccomp.json alone: /proc is still masked by Docker, and vt says so.
    let masked = in_container(
        &["seccomp=PROFILE"],
        &format!("{SETUP}vt exec --no-cache --sandbox -- true"),
    );
    assert!(!masked.status.success());
    assert!(
        stderr(&masked).contains("/proc") && stderr(&masked).contains("systempaths=unconfined"),
        "{}",
        stderr(&masked)
    );

    // docker/seccomp.json + systempaths=unconfined: the sandbox works, as a non-root user.
    let sandboxed = in_container(
        &["seccomp=PROFILE", "systempaths=unconfined"],
        &format!(
            "{SETUP}id -u\n\
             vt exec --sandbox build 2>&1\n\
             rm -rf dist && vt exec --sandbox build 2>&1 && cat dist/out.txt\n\
             if vt exec --no-cache --sandbox touch-src 2>&1; then echo WROTE; fi\n\
             vt exec --no-cache --sandbox -- sh -c 'mkdir -p gen && echo made > gen/x' 2>&1 && cat gen/x\n\
             cat src/a.txt\n"
        ),
    );
    let out = check(sandboxed, "--sandbox under docker/seccomp.json");
    assert!(
        out.starts_with("1000\n"),
        "not the image's non-root user: {out}"
    );
    assert!(out.contains("app#build: cache miss"), "{out}");
    assert!(out.contains("app#build: cache hit, replaying"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(!out.contains("WROTE"), "{out}");
    // A command with no declared outputs writes its package (issue 26): through a layer,
    // or, where the container's file systems allow none, a writable bind.
    assert!(out.contains("\nmade\n"), "{out}");
    // The replayed output, then the source, unchanged.
    assert_eq!(out.lines().filter(|l| *l == "hello").count(), 2, "{out}");
    assert!(out.ends_with("hello\n"), "{out}");

    // Keep /var/cache/vt-ci/docker from growing: old test images and build cache go.
    let _ = docker().args(["image", "prune", "--force"]).output();
    let _ = docker().args(["builder", "prune", "--force"]).output();
    drop(daemon);
}

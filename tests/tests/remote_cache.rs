//! The remote cache against a real REAPI server started here: BuildGrid 0.4.4 (PyPI, in a
//! venv outside the clone that `.ci/env.sh` installs), as an action cache + CAS on disk.
//!
//! Two "machines" are two workspace copies at different paths with their own local caches.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use vt_tests::buildgrid::{Server, bgd};
use vt_tests::{json_summary, vt_binary, workdir, write};

const BUILD_JS: &str = r#"
const fs = require("node:fs");
const src = fs.readFileSync("src/a.js", "utf8");
fs.mkdirSync("dist", { recursive: true });
fs.writeFileSync("dist/out.txt", "built from: " + src);
// Bigger than a batch (4 MiB): travels through ByteStream.
fs.writeFileSync("dist/big.bin", Buffer.alloc(5 * 1024 * 1024, src));
console.log("built " + src.length + " bytes");
"#;

/// A one-task workspace ("a machine"), with its own local cache.
fn machine() -> (tempfile::TempDir, PathBuf) {
    let (temp, root) = workdir();
    write(
        &root,
        "package.json",
        r#"{"name":"app","scripts":{"build":"node build.js"}}"#,
    );
    write(&root, "build.js", BUILD_JS);
    write(&root, "src/a.js", "export const a = 1;\n");
    (temp, root)
}

fn vt(root: &Path, url: &str, args: &[&str], env: &[(&str, &str)]) -> (Output, Value) {
    let output = Command::new(vt_binary())
        .current_dir(root)
        .env("VT_CACHE_DIR", root.join(".local-cache"))
        .env("VT_REMOTE_CACHE", url)
        .env_remove("CI")
        .envs(env.iter().copied())
        .args(["run", "--json", "build"])
        .args(args)
        .output()
        .expect("vt");
    let json = json_summary(&output.stdout);
    (output, json)
}

fn task(json: &Value) -> &Value {
    &json["tasks"][0]
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn machine_b_hits_what_machine_a_stored_and_restores_it_byte_for_byte() {
    let Some(bgd) = bgd() else { return };
    let server = Server::cache(&bgd);
    let (_a, a) = machine();
    let (_b, b) = machine();
    // A: CI, so read-write by default.
    let (out, json) = vt(&a, &server.url(), &[], &[("CI", "true")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(task(&json)["status"], "stored", "{}", stderr(&out));
    assert!(stderr(&out).contains("read-write"), "{}", stderr(&out));
    // B: an empty local cache, read-only by default.
    let (out, json) = vt(&b, &server.url(), &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(task(&json)["status"], "hit", "{}", stderr(&out));
    assert_eq!(task(&json)["remote"], true);
    assert!(stderr(&out).contains("cache hit (remote cache), replaying"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("built 20 bytes"),
        "log replayed"
    );
    for file in ["dist/out.txt", "dist/big.bin"] {
        assert_eq!(read(b.join(file)), read(a.join(file)), "{file}");
    }
    // Written back locally: B's next run is a local hit even without the server.
    let (out, json) = vt(&b, "grpc://127.0.0.1:1", &["--remote-cache", "off"], &[]);
    assert_eq!(task(&json)["status"], "hit", "{}", stderr(&out));
    assert_eq!(task(&json)["remote"], false);
    // An edit on B is a miss there (the remote has nothing for it).
    write(&b, "src/a.js", "export const a = 2;\n");
    let (out, json) = vt(&b, &server.url(), &[], &[]);
    assert_eq!(task(&json)["status"], "stored", "{}", stderr(&out));
}

#[test]
fn a_tampered_blob_is_a_miss_and_is_never_restored() {
    let Some(bgd) = bgd() else { return };
    let server = Server::cache(&bgd);
    let (_a, a) = machine();
    let (_b, b) = machine();
    let (out, _) = vt(&a, &server.url(), &["--remote-cache", "read-write"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Corrupt the stored dist/out.txt on the server's disk (same length, other bytes).
    let good = read(a.join("dist/out.txt"));
    let stored = server
        .stored_files()
        .into_iter()
        .find(|p| std::fs::read(p).is_ok_and(|bytes| bytes == good))
        .expect("the server stores dist/out.txt as a file");
    let mut evil = good.clone();
    evil[0] ^= 0x20;
    std::fs::write(&stored, &evil).expect("tamper");
    let (out, json) = vt(&b, &server.url(), &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(task(&json)["status"], "stored", "{}", stderr(&out));
    let reason = task(&json)["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains("does not match its digest") && reason.contains("nothing was restored"),
        "{reason}"
    );
    // B built it itself: the right bytes, not the tampered ones.
    assert_eq!(read(b.join("dist/out.txt")), good);
}

#[test]
fn read_only_mode_never_writes() {
    let Some(bgd) = bgd() else { return };
    let server = Server::cache(&bgd);
    let (_a, a) = machine();
    let (out, json) = vt(
        &a,
        &server.url(),
        &["--remote-cache", "read"],
        &[("CI", "true")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(task(&json)["status"], "stored");
    assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));
    assert!(
        server.stored_files().is_empty(),
        "read-only mode wrote {:?}",
        server.stored_files()
    );
    let (_b, b) = machine();
    let (_, json) = vt(&b, &server.url(), &[], &[]);
    assert_eq!(task(&json)["status"], "stored");
}

#[test]
fn a_server_that_dies_mid_run_never_fails_the_build() {
    let Some(bgd) = bgd() else { return };
    let mut server = Server::cache(&bgd);
    let (_ws, root) = workdir();
    // Three tasks in a chain; the second kills the server.
    write(
        &root,
        "package.json",
        r#"{"name":"root","private":true,"workspaces":["p/*"]}"#,
    );
    for (name, dep, command) in [
        ("one", "", "echo one > out.txt".to_owned()),
        (
            "two",
            r#","dependencies":{"one":"*"}"#,
            format!("kill -9 {} && echo two > out.txt", server.pid()),
        ),
        (
            "three",
            r#","dependencies":{"two":"*"}"#,
            "echo three > out.txt".to_owned(),
        ),
    ] {
        write(
            &root,
            &format!("p/{name}/package.json"),
            &format!(r#"{{"name":"{name}","scripts":{{"build":"{command}"}}{dep}}}"#),
        );
        write(
            &root,
            &format!("p/{name}/vt.json"),
            r#"{ "tasks": { "build": { "dependsOn": ["^build"] } } }"#,
        );
    }
    let output = Command::new(vt_binary())
        .current_dir(&root)
        .env("VT_CACHE_DIR", root.join(".local-cache"))
        .env("VT_REMOTE_CACHE", server.url())
        .args([
            "run",
            "-r",
            "--json",
            "--remote-cache",
            "read-write",
            "build",
        ])
        .output()
        .expect("vt");
    server.wait();
    let text = stderr(&output);
    assert!(output.status.success(), "{text}");
    assert_eq!(
        text.matches("is unavailable").count(),
        1,
        "one warning, then local only:\n{text}"
    );
    let json = json_summary(&output.stdout);
    let statuses: Vec<&str> = json["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["status"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(statuses, ["stored", "stored", "stored"], "{text}");
}

#[test]
fn a_server_that_never_answers_costs_a_bounded_wait() {
    // Accepts connections and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = silent.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let (_a, a) = machine();
    let started = Instant::now();
    let (out, json) = vt(
        &a,
        &format!("grpc://127.0.0.1:{port}"),
        &["--remote-cache", "read-write"],
        &[("VT_REMOTE_CACHE_TIMEOUT_MS", "500")],
    );
    let took = started.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(task(&json)["status"], "stored");
    assert!(stderr(&out).contains("is unavailable"), "{}", stderr(&out));
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn a_bad_address_is_a_clear_error_before_anything_runs() {
    let (_a, a) = machine();
    let (out, _) = vt(&a, "http://nope", &["--remote-cache", "read"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("VT_REMOTE_CACHE"), "{}", stderr(&out));
    assert!(!a.join("dist").exists(), "the task ran");
    let mut missing = Command::new(vt_binary());
    missing.current_dir(&a).env_remove("VT_REMOTE_CACHE").args([
        "run",
        "build",
        "--remote-cache",
        "read",
    ]);
    let out = missing.output().expect("vt");
    assert!(
        stderr(&out).contains("set VT_REMOTE_CACHE"),
        "{}",
        stderr(&out)
    );
}

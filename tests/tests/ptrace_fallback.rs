//! Linux without seccomp user notification: the same cached `vt run` sequence under the
//! ptrace fallback (`VT_TRACER=ptrace`) and under seccomp must give the same hits, misses and
//! reasons, step by step.

use std::process::Command;

use serde_json::Value;
use vt_tests::{json_summary, vt_binary, workdir, write};

const BUILD_JS: &str = r#"
const fs = require("node:fs");
const files = fs.readdirSync("src").filter((f) => f.endsWith(".js")).sort();
const banner = fs.existsSync("src/banner.txt") ? fs.readFileSync("src/banner.txt", "utf8") : "";
const body = files.map((f) => fs.readFileSync("src/" + f, "utf8")).join("");
fs.mkdirSync("dist", { recursive: true });
fs.writeFileSync("dist/out.txt", banner + body + (process.env.MODE ?? "none") + "\n");
"#;

/// Runs the sequence with `backend` and returns, per step, "status: reason" of each task.
fn sequence(backend: &str) -> Vec<String> {
    let (_temp, root) = workdir();
    write(
        &root,
        "package.json",
        r#"{"name":"root","private":true,"workspaces":["packages/*"]}"#,
    );
    for (name, deps) in [("lib", ""), ("app", r#","dependencies":{"lib":"*"}"#)] {
        let dir = format!("packages/{name}");
        write(
            &root,
            &format!("{dir}/package.json"),
            &format!(r#"{{"name":"{name}","scripts":{{"build":"node build.js"}}{deps}}}"#),
        );
        write(
            &root,
            &format!("{dir}/vt.json"),
            r#"{ "tasks": { "build": { "dependsOn": ["^build"], "env": ["MODE"] } } }"#,
        );
        write(&root, &format!("{dir}/build.js"), BUILD_JS);
        write(&root, &format!("{dir}/src/a.js"), &format!("// {name} a\n"));
    }
    let run = |env: &[(&str, &str)]| -> String {
        let output = Command::new(vt_binary())
            .current_dir(&root)
            .env("VT_TRACER", backend)
            .env("VT_CACHE_DIR", root.join(".cache"))
            .env_remove("MODE")
            .envs(env.iter().copied())
            .args(["run", "--json", "-r", "build"])
            .output()
            .expect("vt");
        let json: Value = json_summary(&output.stdout);
        let tasks = json["tasks"].as_array().unwrap_or_else(|| {
            panic!(
                "{backend}: no JSON summary: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        tasks
            .iter()
            .map(|t| {
                format!(
                    "{} {}: {}",
                    t["task"].as_str().unwrap_or(""),
                    t["status"].as_str().unwrap_or(""),
                    t["reason"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let mut steps = vec![run(&[]), run(&[])];
    std::fs::remove_dir_all(root.join("packages/app/dist")).expect("rm dist");
    steps.push(run(&[]));
    assert!(
        std::fs::read_to_string(root.join("packages/app/dist/out.txt"))
            .expect("restored")
            .contains("// app a"),
        "{backend}: dist/ was not restored"
    );
    write(&root, "packages/lib/src/a.js", "// lib a, edited\n");
    steps.push(run(&[]));
    write(&root, "packages/app/src/banner.txt", "/* banner */\n");
    steps.push(run(&[]));
    write(&root, "packages/app/src/b.js", "// app b\n");
    steps.push(run(&[]));
    steps.push(run(&[("MODE", "production")]));
    // A task that reads and then rewrites its input is never cached.
    write(
        &root,
        "packages/app/vt.json",
        r#"{ "tasks": { "build": { "command": "cat src/a.js > /dev/null && echo x >> src/a.js" } } }"#,
    );
    steps.push(run(&[]));
    steps
}

#[test]
fn the_ptrace_fallback_caches_exactly_like_seccomp() {
    let seccomp = sequence("seccomp");
    let ptrace = sequence("ptrace");
    let expected = [
        "stored: no previous run",
        "lib#build hit",
        "lib#build hit",
        "packages/lib/src/a.js: content changed",
        "packages/app/src/banner.txt now exists",
        "directory entries changed",
        "env MODE: (unset) → production",
        "read and then written",
    ];
    for (step, (want, got)) in expected.iter().zip(&seccomp).enumerate() {
        assert!(
            got.contains(want),
            "seccomp step {step}: expected {want:?} in {got:?}"
        );
    }
    eprintln!("{}", seccomp.join("\n"));
    assert_eq!(ptrace, seccomp, "ptrace and seccomp disagree");
}

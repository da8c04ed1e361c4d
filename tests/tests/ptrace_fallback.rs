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

/// Makes this process unable to create a seccomp listener, as on a kernel without user
/// notification (or under an outer filter that refuses it): `seccomp()` with
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER` fails with EINVAL. Other filters (the ptrace
/// backend's own) are still allowed. For `pre_exec`: syscalls only.
fn refuse_seccomp_listeners() -> std::io::Result<()> {
    use sandbox::trace::bpf::{OFFSET_NR, jump_eq, jump_set, load, offset_arg_low, ret};
    let program = [
        load(OFFSET_NR),
        jump_eq(libc::SYS_seccomp as u32, 0, 3),
        // The flags: seccomp's second argument.
        load(offset_arg_low(1)),
        jump_set(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as u32, 0, 1),
        ret(libc::SECCOMP_RET_ERRNO | libc::EINVAL as u32),
        ret(libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with integer arguments, then with a pointer to `fprog`, which points at
    // `program`; both outlive the calls (the kernel copies the program).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Which tracer a sequence runs under.
#[derive(Clone, Copy)]
enum Tracer {
    /// Chosen with `VT_TRACER`.
    Named(&'static str),
    /// Chosen by vt, on a system that refuses seccomp listeners.
    WithoutListeners,
}

/// Runs the sequence with `tracer` and returns, per step, "status: reason" of each task.
fn sequence(tracer: Tracer) -> Vec<String> {
    let backend = match tracer {
        Tracer::Named(name) => name,
        Tracer::WithoutListeners => "(no seccomp listeners)",
    };
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
        let mut command = Command::new(vt_binary());
        match tracer {
            Tracer::Named(name) => {
                command.env("VT_TRACER", name);
            }
            Tracer::WithoutListeners => {
                command.env_remove("VT_TRACER");
                // SAFETY: the closure makes syscalls only.
                unsafe {
                    std::os::unix::process::CommandExt::pre_exec(
                        &mut command,
                        refuse_seccomp_listeners,
                    )
                };
            }
        }
        let output = command
            .current_dir(&root)
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
    let seccomp = sequence(Tracer::Named("seccomp"));
    let ptrace = sequence(Tracer::Named("ptrace"));
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

/// Where seccomp listeners are refused, vt finds out (from its probe, or, when a task starts
/// before the probe has answered, from the task's own failed filter, before anything of the
/// task ran) and traces under ptrace: the same sequence, the same hits, misses and reasons.
#[test]
fn without_seccomp_listeners_vt_traces_with_ptrace_and_caches_the_same() {
    let seccomp = sequence(Tracer::Named("seccomp"));
    let fallback = sequence(Tracer::WithoutListeners);
    assert_eq!(
        fallback, seccomp,
        "the automatic fallback and seccomp disagree"
    );
}

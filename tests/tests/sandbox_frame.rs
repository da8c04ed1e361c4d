//! Sandboxes finished on a frame (`sandbox::jail::frame`): in a run of several sandboxed
//! tasks, vt starts the next sandbox's namespaces and the system part of its root while the
//! current task runs, and gives it the task's own mounts when the task comes. What the task
//! sees must be what a sandbox built whole shows (`VT_SANDBOX_FRAME=0`), and a frame must
//! never show the host as it was before a change.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vt_tests::{vt_binary, wait_until_settled, workdir};

fn workspace(tasks: &serde_json::Value) -> (tempfile::TempDir, PathBuf) {
    let (temp, root) = workdir();
    vt_tests::write(&root, "package.json", r#"{"name":"frame","private":true}"#);
    vt_tests::write(&root, "vt.json", &tasks.to_string());
    (temp, root)
}

/// `vt run TARGET -j1` with timings on; `frames`: whether sandboxes may use frames.
fn run(root: &Path, target: &str, frames: bool, path: Option<&str>) -> Output {
    let mut command = Command::new(vt_binary());
    command
        .current_dir(root)
        .env("VT_CACHE_DIR", root.join(".vt-cache"))
        .env("VT_TIMINGS", "1")
        .args(["run", target, "-j1"]);
    if !frames {
        command.env("VT_SANDBOX_FRAME", "0");
    }
    if let Some(path) = path {
        command.env("PATH", path);
    }
    let output = command.output().expect("vt runs");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    output
}

/// How many sandboxes of a run were finished on a frame (`VT_TIMINGS`' count of the phase).
fn on_frames(output: &Output) -> u32 {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .find_map(|line| line.strip_prefix("vt timing: sandbox: frame, go to exec "))
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// The tasks' output between `==> NAME` and the next marker, by name.
fn sections(output: &Output) -> std::collections::BTreeMap<String, String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut sections = std::collections::BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in stdout.lines() {
        if let Some(name) = line.strip_prefix("==> ") {
            sections.extend(current.take());
            current = Some((name.to_owned(), String::new()));
        } else if let Some((_, text)) = &mut current {
            text.push_str(line);
            text.push('\n');
        }
    }
    sections.extend(current);
    sections
}

#[test]
fn a_task_on_a_frame_sees_what_a_sandbox_built_whole_shows() {
    // The root's directories (names, types, modes, owners, sizes, link targets; not the link
    // counts: `/proc`'s is its count of processes, `sed`'s among them or not), what is mounted
    // where with which options (the random parts of vt's buffer and layer names aside), the
    // identity, the host name, the network interfaces, the capabilities, the descriptors
    // the task holds, and a write through the copy-on-write layer.
    let look = "find / /dev /etc /tmp -maxdepth 1 -printf '%p %y %m %U %G %s %l\\n' | sort; \
                awk '{print $5, $6, $9}' /proc/self/mountinfo \
                  | sed -E 's/vt-preload-[A-Za-z0-9]+//; s/layer-[A-Za-z0-9]+//g' | sort; \
                id; hostname; awk 'NR > 2 {print $1}' /proc/net/dev; \
                grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status; \
                ls /proc/self/fd | wc -l";
    let task = |name: &str, after: Option<&str>| {
        let mut task = serde_json::json!({
            "command": format!("echo '==> {name}'; {look}; echo {name} > made-by-{name}"),
            "sandbox": true,
            "cache": false,
        });
        if let Some(after) = after {
            task["dependsOn"] = serde_json::json!([after]);
        }
        task
    };
    let tasks = serde_json::json!({ "tasks": {
        "one": task("one", None),
        "two": task("two", Some("one")),
        "three": task("three", Some("two")),
    }});
    let (_temp, root) = workspace(&tasks);
    wait_until_settled();
    let framed = run(&root, "three", true, None);
    for name in ["one", "two", "three"] {
        let made = root.join(format!("made-by-{name}"));
        assert_eq!(
            std::fs::read_to_string(&made).expect("the layer was applied"),
            format!("{name}\n")
        );
        std::fs::remove_file(made).expect("rm");
    }
    let whole = run(&root, "three", false, None);
    assert!(
        on_frames(&framed) >= 2,
        "the tasks after the first were not finished on frames:\n{}",
        String::from_utf8_lossy(&framed.stderr)
    );
    assert_eq!(on_frames(&whole), 0, "VT_SANDBOX_FRAME=0 still used frames");
    let (framed, whole) = (sections(&framed), sections(&whole));
    for name in ["one", "two", "three"] {
        assert!(framed[name].contains("vt-sandbox"), "{}", framed[name]);
        assert_eq!(
            framed[name], whole[name],
            "{name}: a frame shows another sandbox"
        );
    }
    assert!(root.join("made-by-three").is_file());
}

#[test]
fn a_tool_directory_replaced_during_a_run_is_what_the_next_sandbox_sees() {
    // A directory of vt's PATH, outside the workspace: a frame binds it ahead of its task.
    let (_tools_temp, tools_root) = workdir();
    let tools = tools_root.join("tools");
    let tool = |dir: &Path, says: &str| {
        vt_tests::write(dir, "tool", &format!("#!/bin/sh\necho {says}\n"));
        let status = Command::new("chmod")
            .arg("+x")
            .arg(dir.join("tool"))
            .status()
            .expect("chmod");
        assert!(status.success());
    };
    tool(&tools, "old-tool");
    let fresh = tools_root.join("tools.new");
    tool(&fresh, "new-tool");
    let path = format!("{}:/usr/bin:/bin", tools.display());
    // `warm`, `first` and `second` are sandboxed, `replace` between them is not: `first` is
    // finished on a frame built while `warm` ran, the frame for `second` is built while
    // `first` runs, before `replace` swaps the directory (as a tool's installer may: the old
    // one moved away, the new one moved in).
    let replace = format!(
        "mv {tools} {old} && mv {fresh} {tools}",
        tools = tools.display(),
        old = tools_root.join("tools.old").display(),
        fresh = fresh.display()
    );
    let tasks = serde_json::json!({ "tasks": {
        "warm": { "command": "true", "sandbox": true, "cache": false },
        "first": { "command": "echo '==> first'; tool", "sandbox": true, "cache": false,
                   "dependsOn": ["warm"] },
        "replace": { "command": replace, "cache": false, "dependsOn": ["first"] },
        "second": { "command": "echo '==> second'; tool", "sandbox": true, "cache": false,
                    "dependsOn": ["replace"] },
    }});
    let (_temp, root) = workspace(&tasks);
    wait_until_settled();
    let output = run(&root, "second", true, Some(&path));
    let seen = sections(&output);
    assert!(
        on_frames(&output) >= 1,
        "no task was finished on a frame:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(seen["first"], "old-tool\n");
    assert_eq!(
        seen["second"], "new-tool\n",
        "a frame built before the directory was replaced showed the old one"
    );
}

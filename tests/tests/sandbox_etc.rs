//! What a sandboxed task sees of `/etc`. vt mounts the parts of `/etc` every sandbox shows
//! once per process on a detached tree that each sandbox copies (`sandbox::jail::etc_tree`,
//! as root on Linux ≥ 6.15); elsewhere, or with `VT_ETC_TREE=0`, each sandbox mounts them one
//! by one. Both must show the same, and a tree must never show a file the host has replaced.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use vt_tests::{vt_binary, workdir};

/// The two tests here, one at a time: one replaces a file of /etc the other reads.
static ETC: Mutex<()> = Mutex::new(());

/// Waits until `/`, `/etc` and `/dev` have not changed for vt's racy window (2 s,
/// `sandbox::stamp::RACY`). vt trusts what it saw of a directory, and so a tree made from it,
/// only once the directory is that old: a change within the window could hide in the same
/// timestamp. The rule under test is a clock's, so this waits for the clock; without it a
/// test that changed /etc a moment before (this file's other test, `sandbox_escape`'s
/// write to /etc) would leave every sandbox building its own /etc, and the tree untested.
fn wait_until_settled() {
    use std::os::unix::fs::MetadataExt;
    let racy = sandbox::stamp::RACY + std::time::Duration::from_millis(100);
    for dir in ["/", "/etc", "/dev"] {
        let meta = std::fs::metadata(dir).expect("stat");
        let changed = std::time::UNIX_EPOCH
            + std::time::Duration::new(meta.ctime() as u64, meta.ctime_nsec() as u32).max(
                std::time::Duration::new(meta.mtime() as u64, meta.mtime_nsec() as u32),
            );
        if let Ok(age) = std::time::SystemTime::now().duration_since(changed)
            && age < racy
        {
            std::thread::sleep(racy - age);
        }
    }
}

fn workspace(tasks: &str) -> (tempfile::TempDir, PathBuf) {
    let (temp, root) = workdir();
    vt_tests::write(&root, "package.json", r#"{"name":"etc","private":true}"#);
    vt_tests::write(&root, "vt.json", tasks);
    (temp, root)
}

fn vt(root: &Path, tree: bool, args: &[&str]) -> Output {
    let mut command = Command::new(vt_binary());
    command
        .current_dir(root)
        .env("VT_CACHE_DIR", root.join(".vt-cache"))
        .args(args);
    if !tree {
        command.env("VT_ETC_TREE", "0");
    }
    command.output().expect("vt runs")
}

/// Whether `/etc` is a mount of its own in the sandbox: the tree's copy.
const ETC_IS_A_MOUNT: &str = "echo \"etc mounts: $(grep -c ' /etc ' /proc/self/mountinfo)\"";

/// The tasks' output between `==> NAME` and the next marker, by name.
fn sections(stdout: &str) -> std::collections::BTreeMap<String, String> {
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
fn etc_looks_the_same_from_the_tree_and_mounted_one_by_one() {
    let _one_at_a_time = ETC.lock().unwrap_or_else(|p| p.into_inner());
    // Names, types, modes, sizes and owners (not times: the mount points are made anew),
    // every file's content, the symlinks' targets, and a write refused.
    let look = "cd /etc && ls -lAn --time-style=+ . && \
                find . -type f -exec md5sum {} + 2>&1 | sort && \
                find . -maxdepth 1 -type l -exec readlink {} + && \
                stat -c '%a %u %g %F' /etc && \
                { echo x > /etc/vt-new; echo \"write: $?\"; }";
    // In a run, a sandbox after the first uses the tree (the first may build its own).
    let command = |name: &str| format!("echo '==> {name}'; {look}; {ETC_IS_A_MOUNT}");
    let tasks = serde_json::json!({ "tasks": {
        "first": { "command": command("first"), "sandbox": true, "cache": false },
        "second": { "command": command("second"), "sandbox": true, "cache": false,
                    "dependsOn": ["first"] },
    }})
    .to_string();
    let (_temp, root) = workspace(&tasks);
    let run = |tree: bool| {
        let output = vt(&root, tree, &["run", "second", "-j1"]);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        sections(&stdout)
    };
    wait_until_settled();
    let with_tree = run(true);
    let without = run(false);
    let second = &with_tree["second"];
    assert!(
        second.contains("etc mounts: 1"),
        "the tree was not used:\n{second}"
    );
    assert!(second.contains("passwd"), "{second}");
    assert!(
        second.contains("write: ") && !second.contains("write: 0"),
        "/etc is writable:\n{second}"
    );
    let one_by_one = &without["second"];
    assert!(one_by_one.contains("etc mounts: 0"), "{one_by_one}");
    let look_of = |text: &str| {
        text.replace("etc mounts: 1", "")
            .replace("etc mounts: 0", "")
    };
    assert_eq!(
        look_of(second),
        look_of(one_by_one),
        "the tree shows another /etc"
    );
    assert_eq!(look_of(&without["first"]), look_of(one_by_one));
}

/// Puts a file of `/etc` back as it was when the test ends, however it ends: its copy
/// (kept outside /etc, which must not change before the run) renamed over it.
struct Restore {
    path: PathBuf,
    saved: Vec<u8>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let back = self
            .path
            .with_extension(format!("vt-back-{}", std::process::id()));
        if std::fs::write(&back, &self.saved).is_ok() {
            let _ = std::fs::rename(&back, &self.path);
        }
    }
}

#[test]
fn a_file_of_etc_replaced_during_a_run_is_what_the_next_sandbox_sees() {
    if !vt_tests::root_or_skip("replacing a file of /etc") {
        return;
    }
    let _one_at_a_time = ETC.lock().unwrap_or_else(|p| p.into_inner());
    // A file of /etc every sandbox shows that no other test reads; as package managers and
    // editors do, the new one is renamed over it.
    let Some(path) = ["/etc/timezone", "/etc/debian_version", "/etc/host.conf"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file() && !p.is_symlink())
    else {
        panic!("none of /etc/timezone, /etc/debian_version, /etc/host.conf is a file here");
    };
    let saved = std::fs::read(&path).expect("read");
    let before = String::from_utf8_lossy(&saved).into_owned();
    let _restore = Restore {
        path: path.clone(),
        saved,
    };
    let marker = format!("replaced by the test of vt {}\n", std::process::id());
    let new = path.with_extension(format!("vt-new-{}", std::process::id()));
    // `warm`, `first` and `second` are sandboxed, `replace` between them is not. `first`,
    // a sandbox after the first, sees /etc through the tree (made before the file is
    // replaced); `second` must see the new file.
    let show = format!("cat {}; {ETC_IS_A_MOUNT}", path.display());
    let tasks = serde_json::json!({ "tasks": {
        "warm": { "command": "true", "sandbox": true, "cache": false },
        "first": { "command": format!("echo '==> first'; {show}"), "sandbox": true,
                   "cache": false, "dependsOn": ["warm"] },
        "replace": { "command": format!("printf '{}' > {} && mv {} {}", marker.trim_end(),
                         new.display(), new.display(), path.display()),
                     "dependsOn": ["first"], "cache": false },
        "second": { "command": format!("echo '==> second'; {show}"), "sandbox": true,
                    "cache": false, "dependsOn": ["replace"] },
    }});
    let (_temp, root) = workspace(&tasks.to_string());
    wait_until_settled();
    let output = vt(&root, true, &["run", "second", "-j1"]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}\n{stdout}");
    let seen = sections(&stdout);
    assert!(
        seen["first"].contains(before.trim_end()) && seen["first"].contains("etc mounts: 1"),
        "the first task saw the old file through the tree:\n{stdout}\n{stderr}"
    );
    assert!(
        seen["second"].contains(marker.trim_end()),
        "the second task saw the new file:\n{stdout}\n{stderr}"
    );
}

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

#[test]
fn etc_looks_the_same_from_the_tree_and_mounted_one_by_one() {
    let _one_at_a_time = ETC.lock().unwrap_or_else(|p| p.into_inner());
    let (_temp, root) = workspace(r#"{ "tasks": {} }"#);
    // Names, types, modes, sizes and owners (not times: the mount points are made anew),
    // every file's content, the symlinks' targets, and a write refused.
    let look = "cd /etc && ls -lAn --time-style=+ . && \
                find . -type f -exec md5sum {} + 2>&1 | sort && \
                find . -maxdepth 1 -type l -exec readlink {} + && \
                stat -c '%a %u %g %F' /etc && \
                { echo x > /etc/vt-new; echo \"write: $?\"; }";
    let seen: Vec<String> = [true, false]
        .into_iter()
        .map(|tree| {
            let output = vt(
                &root,
                tree,
                &["exec", "--no-cache", "--sandbox", "--", "sh", "-c", look],
            );
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).into_owned()
        })
        .collect();
    assert!(seen[0].contains("passwd"), "{}", seen[0]);
    assert!(
        seen[0].contains("write: ") && !seen[0].contains("write: 0"),
        "/etc is writable:\n{}",
        seen[0]
    );
    assert_eq!(seen[0], seen[1], "the tree shows another /etc");
}

/// Puts a file of `/etc` back as it was when the test ends, however it ends.
struct Restore {
    path: PathBuf,
    saved: PathBuf,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::rename(&self.saved, &self.path);
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
    let saved = path.with_extension(format!("vt-saved-{}", std::process::id()));
    std::fs::copy(&path, &saved).expect("save the file");
    let _restore = Restore {
        path: path.clone(),
        saved,
    };
    let before = std::fs::read_to_string(&path).expect("read");
    let marker = format!("replaced by the test of vt {}\n", std::process::id());
    let new = path.with_extension(format!("vt-new-{}", std::process::id()));
    // `first` and `second` are sandboxed; `replace`, between them, is not.
    let tasks = format!(
        r#"{{ "tasks": {{
            "first": {{ "command": "cat {p}", "sandbox": true, "cache": false }},
            "replace": {{ "command": "printf '{m}' > {n} && mv {n} {p}", "dependsOn": ["first"], "cache": false }},
            "second": {{ "command": "cat {p}", "sandbox": true, "cache": false, "dependsOn": ["replace"] }}
        }} }}"#,
        p = path.display(),
        n = new.display(),
        m = marker.trim_end(),
    );
    let (_temp, root) = workspace(&tasks);
    let output = vt(&root, true, &["run", "second", "-j1"]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}\n{stdout}");
    let first = stdout.find(before.trim_end());
    let second = stdout.find(marker.trim_end());
    assert!(
        first.is_some() && second.is_some() && first < second,
        "the first task saw the old file, the second the new one:\n{stdout}\n{stderr}"
    );
}

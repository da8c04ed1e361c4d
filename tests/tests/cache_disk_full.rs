//! A cache on a full disk (issue 22): a store that fails for lack of space warns once, the
//! tasks' results stand, the database is not corrupt, and once there is room the next
//! runs store and hit. A cache on a read-only file system warns once and the build runs.
//! The cache lives on a small tmpfs mounted by the test (root only: root also writes
//! through file modes, so only a read-only mount makes a cache unwritable for it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vt_tests::{RunSummary, vt_binary, workdir, write};

/// A tmpfs of `size` at `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("mkdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn vt(root: &Path, cache: &Path) -> Output {
    let output = Command::new(vt_binary())
        .current_dir(root)
        .env("VT_CACHE_DIR", cache)
        // The size limit's own pruning is another test's subject.
        .env("VT_CACHE_MAX_SIZE", "0")
        .args(["run", "build", "-r", "--json"])
        .output()
        .expect("vt");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn statuses(output: &Output) -> Vec<String> {
    let summary = RunSummary::of(output.clone());
    summary.json["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["status"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// Whether this test can mount (root); CI always can.
fn can_mount() -> bool {
    vt_tests::root_or_skip("mounting a tmpfs needs root")
}

/// A workspace of packages under `root` whose cache is on a tmpfs of `size` at `disk`.
fn cache_on_tmpfs(root: &Path, disk: &Path, size: &str) -> (Tmpfs, PathBuf) {
    let Some(tmpfs) = Tmpfs::mount(disk, size) else {
        panic!("cannot mount a tmpfs at {}", disk.display());
    };
    write(
        root,
        "package.json",
        r#"{"name":"root","private":true,"workspaces":["packages/*"]}"#,
    );
    (tmpfs, disk.join("vt"))
}

#[test]
fn a_read_only_cache_warns_once_and_the_build_runs() {
    let (_temp, root) = workdir();
    if !can_mount() {
        return;
    }
    let disk = root.join("ro");
    let (_tmpfs, cache) = cache_on_tmpfs(&root, &disk, "16m");
    for p in ["a", "b"] {
        write(
            &root,
            &format!("packages/{p}/package.json"),
            r#"{"name":"P","scripts":{"build":"mkdir -p dist && cat in.txt > dist/out.txt"}}"#
                .replace('P', p)
                .as_str(),
        );
        write(&root, &format!("packages/{p}/in.txt"), "v1\n");
    }
    assert_eq!(statuses(&vt(&root, &cache)), vec!["stored", "stored"]);
    let remount = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&disk)
        .status()
        .expect("mount");
    assert!(remount.success(), "remount read-only");

    // A changed input: the build runs without the cache and makes the right bytes.
    for p in ["a", "b"] {
        write(&root, &format!("packages/{p}/in.txt"), "v2\n");
    }
    let run = vt(&root, &cache);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(
        stderr.matches("warning:").count(),
        1,
        "one warning for two tasks:\n{stderr}"
    );
    assert!(stderr.contains(&cache.display().to_string()), "{stderr}");
    assert!(stderr.contains("VT_CACHE_DIR"), "the hint: {stderr}");
    assert_eq!(statuses(&run), vec!["not_cached", "not_cached"], "{stderr}");
    for p in ["a", "b"] {
        assert_eq!(
            std::fs::read_to_string(root.join(format!("packages/{p}/dist/out.txt"))).expect("out"),
            "v2\n"
        );
    }
}

#[test]
fn a_full_disk_warns_once_and_the_results_stand() {
    let (_temp, root) = workdir();
    if !can_mount() {
        return;
    }
    let (_tmpfs, cache) = cache_on_tmpfs(&root, &root.join("small"), "4m");
    // Each build writes `lines` lines: 6 MB by default, more than the cache's disk.
    for p in ["a", "b"] {
        write(
            &root,
            &format!("packages/{p}/package.json"),
            &format!(
                r#"{{"name":"{p}","scripts":{{"build":"mkdir -p dist && seq 1 $(cat lines) > dist/out.txt"}}}}"#
            ),
        );
        write(&root, &format!("packages/{p}/lines"), "800000\n");
    }
    let expected = |lines: usize| -> String { (1..=lines).map(|i| format!("{i}\n")).collect() };

    let full = vt(&root, &cache);
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert_eq!(
        stderr
            .matches("warning: the disk holding the cache")
            .count(),
        1,
        "one warning for two tasks:\n{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");
    assert_eq!(
        statuses(&full),
        vec!["not_cached", "not_cached"],
        "{stderr}"
    );
    for p in ["a", "b"] {
        let out = std::fs::read_to_string(root.join(format!("packages/{p}/dist/out.txt")));
        assert_eq!(
            out.expect("out").len(),
            expected(800_000).len(),
            "{p}: the result stands"
        );
    }

    // Room again (smaller outputs): the database opens, stores, verifies and hits.
    for p in ["a", "b"] {
        write(&root, &format!("packages/{p}/lines"), "1000\n");
    }
    let stored = vt(&root, &cache);
    assert_eq!(
        statuses(&stored),
        vec!["stored", "stored"],
        "{}",
        String::from_utf8_lossy(&stored.stderr)
    );
    let verify = Command::new(vt_binary())
        .current_dir(&root)
        .env("VT_CACHE_DIR", &cache)
        .args(["cache", "verify"])
        .output()
        .expect("verify");
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    for p in ["a", "b"] {
        std::fs::remove_dir_all(root.join(format!("packages/{p}/dist"))).expect("rm dist");
    }
    let hit = vt(&root, &cache);
    assert_eq!(statuses(&hit), vec!["hit", "hit"]);
    for p in ["a", "b"] {
        assert_eq!(
            std::fs::read_to_string(root.join(format!("packages/{p}/dist/out.txt"))).expect("out"),
            expected(1000)
        );
    }
}

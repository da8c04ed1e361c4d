//! A damaged cache never stops a build (issue 22): with the database's files damaged, `vt
//! run` warns once, keeps the damaged copy aside for inspection (`vt cache verify` names it,
//! `vt cache clean` removes it), runs the tasks with a fresh cache and gets the right
//! result; the run after it hits. The control, the same
//! workspace undamaged, hits without a warning.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vt_tests::{vt_binary, workdir, write};

fn vt(root: &Path) -> Output {
    Command::new(vt_binary())
        .current_dir(root)
        .env("VT_CACHE_DIR", root.join("cache/vt"))
        .args(["run", "build"])
        .output()
        .expect("vt runs")
}

fn workspace() -> (tempfile::TempDir, PathBuf) {
    let (temp, root) = workdir();
    write(
        &root,
        "package.json",
        r#"{"name":"app","scripts":{"build":"cat in.txt > out.txt"}}"#,
    );
    write(&root, "in.txt", "v1\n");
    let first = vt(&root);
    assert!(first.status.success(), "{first:?}");
    (temp, root)
}

fn db_files(root: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(root.join("cache/vt"))
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect()
}

fn flip_bytes(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read");
    for i in (10..bytes.len()).step_by(7) {
        bytes[i] ^= 0xff;
    }
    std::fs::write(path, bytes).expect("write");
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// How vt found the damage.
#[derive(PartialEq)]
enum Found {
    /// Opening failed: the copy is moved aside and a fresh cache made.
    SetAside,
    /// RocksDB recovered what it could (a truncated MANIFEST tail is what a crash leaves),
    /// but vt's schema record is gone with it: the cache is emptied.
    Emptied,
}

/// After `damage`, the build runs right with one warning, a damaged copy is kept, and
/// the next run hits.
fn survives(what: &str, damage: fn(&Path), found: Found) {
    let (_temp, root) = workspace();
    damage(&root);
    write(&root, "in.txt", "v2\n");
    let run = vt(&root);
    let text = stderr(&run);
    assert!(run.status.success(), "{what}: the build failed:\n{text}");
    assert_eq!(
        std::fs::read_to_string(root.join("out.txt")).expect("out"),
        "v2\n",
        "{what}"
    );
    if found == Found::Emptied {
        assert_eq!(text.matches("it was emptied").count(), 1, "{what}: {text}");
        assert!(vt(&root).status.success(), "{what}: the run after it works");
        assert!(
            stderr(&vt(&root)).contains("app#build: cache hit"),
            "{what}"
        );
        return;
    }
    assert_eq!(text.matches("is damaged").count(), 1, "{what}: {text}");
    let aside: Vec<_> = std::fs::read_dir(root.join("cache"))
        .expect("cache parent")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vt.damaged-"))
        .collect();
    assert_eq!(
        aside.len(),
        1,
        "{what}: the damaged copy is kept: {aside:?}"
    );
    assert!(
        text.contains(&aside[0]),
        "{what}: the warning says where: {text}"
    );
    let again = vt(&root);
    assert!(
        stderr(&again).contains("app#build: cache hit"),
        "{what}: {}",
        stderr(&again)
    );
    assert!(!stderr(&again).contains("damaged"), "{what}");
    // `vt cache verify` names the copy (the cache itself is sound); `clean` removes it.
    let cache = |sub: &str| {
        Command::new(vt_binary())
            .current_dir(&root)
            .env("VT_CACHE_DIR", root.join("cache/vt"))
            .args(["cache", sub])
            .output()
            .expect("vt cache")
    };
    let verify = cache("verify");
    let listed = String::from_utf8_lossy(&verify.stdout).into_owned();
    assert!(verify.status.success(), "{what}: {listed}");
    assert!(
        listed.contains("set aside:") && listed.contains(&aside[0]),
        "{what}: {listed}"
    );
    assert!(cache("clean").status.success(), "{what}");
    assert!(
        !root.join("cache").join(&aside[0]).exists(),
        "{what}: clean removes the damaged copy"
    );
}

#[test]
fn flipped_bytes_in_the_manifest() {
    survives(
        "flipped MANIFEST",
        |root| {
            db_files(root, "MANIFEST-")
                .iter()
                .for_each(|p| flip_bytes(p))
        },
        Found::SetAside,
    );
}

#[test]
fn a_truncated_manifest() {
    survives(
        "truncated MANIFEST",
        |root| {
            for path in db_files(root, "MANIFEST-") {
                let len = std::fs::metadata(&path).expect("stat").len();
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .expect("open");
                file.set_len(len / 2).expect("truncate");
            }
        },
        Found::Emptied,
    );
}

#[test]
fn a_deleted_manifest() {
    survives(
        "deleted MANIFEST",
        |root| {
            for path in db_files(root, "MANIFEST-") {
                std::fs::remove_file(path).expect("rm");
            }
        },
        Found::SetAside,
    );
}

#[test]
fn the_undamaged_control_hits_without_a_warning() {
    let (_temp, root) = workspace();
    let run = vt(&root);
    assert!(
        stderr(&run).contains("app#build: cache hit"),
        "{}",
        stderr(&run)
    );
    assert!(!stderr(&run).contains("damaged"));
}

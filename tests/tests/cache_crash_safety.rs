//! `kill -9` at random moments must never leave the cache able to restore wrong output:
//! after 50 interrupted runs every entry verifies, and every hit restores exactly what the
//! build produces for the inputs at hand.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn vt(root: &Path) -> Command {
    let mut command = Command::new(vt_tests::vt_binary());
    command
        .current_dir(root)
        .env_remove("LD_LIBRARY_PATH")
        .env("VT_CACHE_DIR", root.join("node_modules/.cache/vt"));
    command
}

/// A tiny xorshift, so the test needs no crate and a failure can be replayed by seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn kill_9_at_random_moments_never_corrupts_the_cache() {
    let temp = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(temp.path()).expect("canonical");
    std::fs::write(
        root.join("package.json"),
        r#"{"name":"app","scripts":{"build":"mkdir -p dist && sleep 0.05 && cat src/in.txt > dist/a.txt && sleep 0.05 && cat src/in.txt src/in.txt > dist/b.txt && echo built"}}"#,
    )
    .expect("write");
    std::fs::create_dir_all(root.join("src")).expect("mkdir");
    let variants = ["alpha\n", "beta\n", "gamma\n"];
    let seed = std::env::var("VT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_u64);
    let mut rng = Rng(seed);
    for _ in 0..50 {
        let variant = variants[(rng.next() % 3) as usize];
        std::fs::write(root.join("src/in.txt"), variant).expect("write");
        let mut child = vt(&root)
            .args(["run", "build"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("vt");
        std::thread::sleep(Duration::from_millis(rng.next() % 300));
        // The whole group: vt and its task (a SIGKILLed vt cannot take its task with it).
        // SAFETY: signalling a process group we created.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(20));
    }
    let verify = vt(&root)
        .args(["cache", "verify"])
        .output()
        .expect("verify");
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    for variant in variants {
        std::fs::write(root.join("src/in.txt"), variant).expect("write");
        let _ = std::fs::remove_dir_all(root.join("dist"));
        let run = vt(&root).args(["run", "build"]).output().expect("vt");
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(root.join("dist/a.txt")).expect("a"),
            variant
        );
        assert_eq!(
            std::fs::read_to_string(root.join("dist/b.txt")).expect("b"),
            format!("{variant}{variant}")
        );
    }
}

/// Several vt at once on one cache, stores and prunes among them, one of them killed at a
/// random moment each round: afterwards every entry verifies and every hit restores what
/// the build makes of the sources at hand (issue 22).
#[test]
fn kill_9_during_concurrent_stores_and_prunes_never_corrupts_the_cache() {
    let temp = tempfile::tempdir().expect("tempdir");
    let base = std::fs::canonicalize(temp.path()).expect("canonical");
    let cache = base.join("cache");
    let roots: Vec<std::path::PathBuf> = (0..3).map(|i| base.join(format!("ws{i}"))).collect();
    for root in &roots {
        std::fs::create_dir_all(root.join("src")).expect("mkdir");
        std::fs::write(
            root.join("package.json"),
            r#"{"name":"app","scripts":{"build":"mkdir -p dist && cat src/in.txt > dist/a.txt && cat src/in.txt src/in.txt > dist/b.txt"}}"#,
        )
        .expect("write");
    }
    let variants: Vec<String> = (0..6).map(|i| format!("variant {i}\n")).collect();
    let shared = |command: &mut Command| {
        command
            .env("VT_CACHE_DIR", &cache)
            .env_remove("VT_CACHE_MAX_SIZE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
    };
    let mut rng = Rng(0x0c0f_fee5);
    for _ in 0..15 {
        let mut children = Vec::new();
        for root in &roots {
            let variant = &variants[(rng.next() % 6) as usize];
            std::fs::write(root.join("src/in.txt"), variant).expect("write");
            let mut command = vt(root);
            command.args(["run", "build"]);
            shared(&mut command);
            children.push(command.spawn().expect("vt run"));
        }
        let mut prune = vt(&roots[0]);
        prune.args(["cache", "prune", "--max-size", "1"]);
        shared(&mut prune);
        children.push(prune.spawn().expect("vt cache prune"));
        let victim = (rng.next() % children.len() as u64) as usize;
        std::thread::sleep(Duration::from_millis(rng.next() % 150));
        // SAFETY: signalling a process group we created.
        unsafe { libc::kill(-(children[victim].id() as i32), libc::SIGKILL) };
        for mut child in children {
            let _ = child.wait();
        }
    }
    let verify = vt(&roots[0])
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
    for root in &roots {
        for variant in &variants {
            std::fs::write(root.join("src/in.txt"), variant).expect("write");
            let _ = std::fs::remove_dir_all(root.join("dist"));
            let run = vt(root)
                .env("VT_CACHE_DIR", &cache)
                .args(["run", "build"])
                .output()
                .expect("vt");
            assert!(
                run.status.success(),
                "{}",
                String::from_utf8_lossy(&run.stderr)
            );
            assert_eq!(
                std::fs::read_to_string(root.join("dist/a.txt")).expect("a"),
                *variant
            );
            assert_eq!(
                std::fs::read_to_string(root.join("dist/b.txt")).expect("b"),
                format!("{variant}{variant}")
            );
        }
    }
}

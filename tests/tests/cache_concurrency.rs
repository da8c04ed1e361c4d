//! Many vt at once on one cache (issue 22): none waits for another's whole run, hits and
//! stores from all of them are right, and the cache verifies afterwards. And the cache
//! stays within its size limit, least recently used entries first.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use vt_tests::{RunSummary, vt_binary, workdir, write};

const PACKAGES: usize = 6;

fn vt(root: &Path, cache: &Path) -> Command {
    let mut command = Command::new(vt_binary());
    command
        .current_dir(root)
        .env("VT_CACHE_DIR", cache)
        .env_remove("VT_CACHE_MAX_SIZE");
    command
}

fn succeeded(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Packages p0..p5; `build` copies src.txt to dist/out.txt, `lint` counts its bytes into
/// lint.txt. p1 depends on p0, so dependents see their dependency's results.
fn workspace(root: &Path) {
    write(
        root,
        "package.json",
        r#"{"name":"root","private":true,"workspaces":["packages/*"]}"#,
    );
    for p in 0..PACKAGES {
        let deps = if p == 1 {
            r#","dependencies":{"p0":"*"}"#
        } else {
            ""
        };
        write(
            root,
            &format!("packages/p{p}/package.json"),
            &format!(
                r#"{{"name":"p{p}","scripts":{{"build":"mkdir -p dist && cat src.txt > dist/out.txt","lint":"wc -c < src.txt > lint.txt"}}{deps}}}"#
            ),
        );
    }
}

fn set_sources(root: &Path, variant: impl Fn(usize) -> String) {
    for p in 0..PACKAGES {
        write(root, &format!("packages/p{p}/src.txt"), &variant(p));
    }
}

/// Every output is what the task makes of the sources in place.
fn outputs_are_right(root: &Path) {
    for p in 0..PACKAGES {
        let dir = root.join(format!("packages/p{p}"));
        let src = std::fs::read_to_string(dir.join("src.txt")).expect("src");
        let out = std::fs::read_to_string(dir.join("dist/out.txt")).expect("out");
        assert_eq!(out, src, "{}: dist/out.txt", dir.display());
    }
}

fn verify(root: &Path, cache: &Path) {
    let output = vt(root, cache)
        .args(["cache", "verify"])
        .output()
        .expect("vt");
    succeeded(&output, "vt cache verify");
}

fn statuses(output: &Output) -> Vec<String> {
    let summary = RunSummary::of(output.clone());
    summary.json["tasks"]
        .as_array()
        .map(|tasks| {
            tasks
                .iter()
                .map(|t| t["status"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn eight_vt_on_eight_checkouts_share_one_cache() {
    let (_temp, base) = workdir();
    let cache = base.join("cache");
    let roots: Vec<PathBuf> = (0..8).map(|i| base.join(format!("ws{i}"))).collect();
    for root in &roots {
        workspace(root);
    }
    for round in 0..4 {
        // Checkouts share contents in pairs, so one's store is another's hit, and each
        // round brings contents nobody has stored yet.
        for (i, root) in roots.iter().enumerate() {
            set_sources(root, |p| format!("p{p} variant {}\n", (i / 2 + round) % 5));
            let _ = std::fs::remove_dir_all(root.join("packages/p3/dist"));
        }
        let children: Vec<Child> = roots
            .iter()
            .map(|root| {
                vt(root, &cache)
                    .args(["run", "build", "-r", "--json"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("vt")
            })
            .collect();
        for (child, root) in children.into_iter().zip(&roots) {
            let output = child.wait_with_output().expect("vt");
            succeeded(
                &output,
                &format!("round {round}: vt run in {}", root.display()),
            );
            outputs_are_right(root);
        }
    }
    verify(&roots[0], &cache);
    // Everything stored replays the right bytes: the last round's contents hit everywhere.
    for root in &roots {
        for p in 0..PACKAGES {
            let _ = std::fs::remove_dir_all(root.join(format!("packages/p{p}/dist")));
        }
        let output = vt(root, &cache)
            .args(["run", "build", "-r", "--json"])
            .output()
            .expect("vt");
        succeeded(&output, "the last run");
        assert_eq!(
            statuses(&output),
            vec!["hit"; PACKAGES],
            "{}",
            root.display()
        );
        outputs_are_right(root);
    }
}

#[test]
fn two_vt_in_one_workspace_run_side_by_side() {
    let (_temp, root) = workdir();
    let cache = root.join("node_modules/.cache/vt");
    workspace(&root);
    for round in 0..3 {
        set_sources(&root, |p| format!("p{p} round {round}\n"));
        let build = vt(&root, &cache)
            .args(["run", "build", "-r", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vt");
        let lint = vt(&root, &cache)
            .args(["run", "lint", "-r", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vt");
        let build = build.wait_with_output().expect("build");
        let lint = lint.wait_with_output().expect("lint");
        succeeded(&build, "build");
        succeeded(&lint, "lint");
        outputs_are_right(&root);
        // Both stored what they ran: the same again hits, both at once.
        let again: Vec<Output> = ["build", "lint"]
            .map(|task| {
                vt(&root, &cache)
                    .args(["run", task, "-r", "--json"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("vt")
            })
            .into_iter()
            .map(|c| c.wait_with_output().expect("vt"))
            .collect();
        for output in &again {
            succeeded(output, "the second run");
            assert_eq!(statuses(output), vec!["hit"; PACKAGES], "round {round}");
        }
    }
    verify(&root, &cache);
}

/// A fifo at `path`.
fn fifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

#[test]
fn a_long_running_task_does_not_make_another_vt_wait() {
    let (_temp, root) = workdir();
    let cache = root.join("node_modules/.cache/vt");
    workspace(&root);
    set_sources(&root, |p| format!("p{p}\n"));
    // `dev` says it started, then runs until the test releases it.
    fifo(&root.join("started"));
    fifo(&root.join("release"));
    write(
        &root,
        "vt.json",
        r#"{"tasks":{"dev":{"command":"echo up > started && read line < release","cache":false}}}"#,
    );
    let mut dev = vt(&root, &cache)
        .args(["run", "dev"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vt run dev");
    // Blocks until the dev task is running.
    let up = std::fs::read_to_string(root.join("started")).expect("started");
    assert_eq!(up, "up\n");

    for expected in ["stored", "hit"] {
        let output = vt(&root, &cache)
            .args(["run", "build", "-r", "--json"])
            .output()
            .expect("vt run build");
        succeeded(&output, "vt run build beside vt run dev");
        assert_eq!(statuses(&output), vec![expected; PACKAGES]);
        assert!(
            !String::from_utf8_lossy(&output.stderr).contains("waiting for the cache"),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The first vt is still running its task: the second did not wait for its end.
        assert!(
            dev.try_wait().expect("try_wait").is_none(),
            "dev ended early"
        );
        outputs_are_right(&root);
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(root.join("release"))
        .and_then(|mut f| f.write_all(b"go\n"))
        .expect("release dev");
    let dev = dev.wait_with_output().expect("dev");
    succeeded(&dev, "vt run dev");
    verify(&root, &cache);
}

fn stats(root: &Path, cache: &Path) -> String {
    stats_with(root, cache, None)
}

fn stats_with(root: &Path, cache: &Path, limit: Option<&str>) -> String {
    let mut command = vt(root, cache);
    if let Some(limit) = limit {
        command.env("VT_CACHE_MAX_SIZE", limit);
    }
    let output = command.args(["cache", "stats"]).output().expect("vt");
    succeeded(&output, "vt cache stats");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stat_line<'a>(stats: &'a str, name: &str) -> &'a str {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name:?} in\n{stats}"))
}

/// 64 KiB that differ with `seed` and do not compress.
fn noise(seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..65_536 / 16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{x:016x}")
        })
        .collect()
}

fn one_package(root: &Path) {
    write(
        root,
        "package.json",
        r#"{"name":"app","scripts":{"build":"mkdir -p dist && cat src.txt > dist/out.txt"}}"#,
    );
}

fn run_build(root: &Path, cache: &Path, limit: Option<&str>) -> Output {
    let mut command = vt(root, cache);
    if let Some(limit) = limit {
        command.env("VT_CACHE_MAX_SIZE", limit);
    }
    let output = command
        .args(["run", "build", "--json"])
        .output()
        .expect("vt");
    succeeded(&output, "vt run build");
    output
}

#[test]
fn prune_removes_the_least_recently_used_and_keeps_what_is_used() {
    let (_temp, root) = workdir();
    let cache = root.join("cache");
    one_package(&root);
    // 40 states of 64 KiB each: the cache holds ~5 MiB of outputs and logs.
    for seed in 0..40 {
        write(&root, "src.txt", &noise(seed));
        run_build(&root, &cache, None);
    }
    // State 0 used again: now it is the most recently used.
    write(&root, "src.txt", &noise(0));
    let _ = std::fs::remove_dir_all(root.join("dist"));
    assert_eq!(statuses(&run_build(&root, &cache, None)), vec!["hit"]);
    let before = stats(&root, &cache);
    assert_eq!(stat_line(&before, "entries:"), "40", "{before}");

    let pruned = vt(&root, &cache)
        .args(["cache", "prune", "--max-size", "1MiB"])
        .output()
        .expect("vt");
    succeeded(&pruned, "vt cache prune");
    let message = String::from_utf8_lossy(&pruned.stderr);
    assert!(message.contains("pruned"), "{message}");
    let size = cache_bytes(&cache);
    assert!(
        size <= 1 << 20,
        "{size} bytes after pruning to 1 MiB:\n{message}"
    );
    verify(&root, &cache);
    let after = stats(&root, &cache);
    let kept: usize = stat_line(&after, "entries:").parse().expect("count");
    assert!((1..40).contains(&kept), "{after}");

    // The most recently used states still hit, with the right bytes...
    for seed in [0, 39] {
        write(&root, "src.txt", &noise(seed));
        let _ = std::fs::remove_dir_all(root.join("dist"));
        assert_eq!(
            statuses(&run_build(&root, &cache, None)),
            vec!["hit"],
            "state {seed}"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("dist/out.txt")).expect("out"),
            noise(seed)
        );
    }
    // ...and the least recently used is gone: it runs again.
    write(&root, "src.txt", &noise(1));
    assert_eq!(statuses(&run_build(&root, &cache, None)), vec!["stored"]);
}

fn cache_bytes(cache: &Path) -> u64 {
    std::fs::read_dir(cache)
        .expect("cache dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[test]
fn a_configured_limit_is_kept_after_every_run() {
    let (_temp, root) = workdir();
    let cache = root.join("cache");
    one_package(&root);
    let limit = 2u64 << 20;
    let mut pruned_once = false;
    for seed in 0..60 {
        write(&root, "src.txt", &noise(seed));
        let output = run_build(&root, &cache, Some("2MiB"));
        pruned_once |= String::from_utf8_lossy(&output.stderr).contains("over its limit");
        let size = cache_bytes(&cache);
        assert!(
            size <= limit + limit / 10,
            "run {seed}: {size} bytes, limit {limit}"
        );
        // The latest state always hits.
        let _ = std::fs::remove_dir_all(root.join("dist"));
        assert_eq!(
            statuses(&run_build(&root, &cache, Some("2MiB"))),
            vec!["hit"]
        );
    }
    assert!(pruned_once, "60 × 64 KiB never went over 2 MiB?");
    verify(&root, &cache);
    // The control: without a limit (0), nothing is pruned.
    write(&root, "src.txt", &noise(1000));
    let output = run_build(&root, &cache, Some("0"));
    assert!(!String::from_utf8_lossy(&output.stderr).contains("over its limit"));
    let stats = stats_with(&root, &cache, Some("0"));
    assert!(stat_line(&stats, "limit:").starts_with("none"), "{stats}");
}

#[test]
fn a_cache_from_a_newer_vt_is_left_alone_and_the_build_runs() {
    let (_temp, root) = workdir();
    let cache = root.join("cache");
    one_package(&root);
    write(&root, "src.txt", "v1\n");
    run_build(&root, &cache, None);
    // What a later schema leaves: a column family this vt does not know.
    executor::cache::store::testing::add_column_family(&cache, "from_the_future");
    write(&root, "src.txt", "v2\n");
    let output = run_build(&root, &cache, None);
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("written by a newer vt"), "{text}");
    assert!(
        text.contains("running every task without the cache"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("dist/out.txt")).expect("out"),
        "v2\n"
    );
    assert_eq!(statuses(&output), vec!["not_cached"]);
    // Not wiped: the newer vt's data is still there.
    assert!(executor::cache::store::testing::has_column_family(
        &cache,
        "from_the_future"
    ));
}

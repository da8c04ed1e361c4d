//! Per-task sandbox setup + teardown for `/bin/true`, side by side in one run: bare
//! fork+exec, vt's jail (with and without a network namespace; with the declared output
//! dir bound writable, or with no outputs declared and the workspace a copy-on-write
//! overlay whose changes are applied after the run), and bubblewrap doing the equivalent. Rounds interleave the variants so machine noise hits them alike; medians
//! and 90th percentiles are printed as JSON for `bench/sandbox.py`.
//!
//! `cargo run --release -p vt-sandbox --example sandbox_setup -- [ROUNDS]`

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use sandbox::jail::{Jail, Spec};

fn quiet(mut command: Command) -> Command {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn time(mut command: Command) -> f64 {
    let started = Instant::now();
    let status = command
        .spawn()
        .and_then(|mut c| c.wait())
        .expect("spawn and wait");
    assert!(status.success(), "{command:?} failed: {status}");
    started.elapsed().as_secs_f64() * 1e3
}

/// bubblewrap with the same view as vt's jail: system dirs and /etc essentials read-only,
/// the workspace read-only with its output dir writable, fresh /dev, /proc and /tmp,
/// every namespace (network included), a new session, no capabilities.
fn bwrap(workspace: &Path, output: &Path) -> Command {
    let mut command = quiet(Command::new("bwrap"));
    command.args(["--unshare-all", "--die-with-parent", "--new-session"]);
    command.args(["--cap-drop", "ALL", "--hostname", "vt-sandbox"]);
    for dir in sandbox::jail::plan::SYSTEM_DIRS
        .iter()
        .chain(sandbox::jail::plan::ETC_ESSENTIALS)
    {
        let path = Path::new(dir);
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(path).expect("readlink");
                command.arg("--symlink").arg(target).arg(path);
            }
            Ok(_) => {
                command.arg("--ro-bind").arg(path).arg(path);
            }
            Err(_) => {}
        }
    }
    command.args(["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]);
    command.arg("--ro-bind").arg(workspace).arg(workspace);
    command.arg("--bind").arg(output).arg(output);
    command.arg("--chdir").arg(workspace);
    command.arg("/bin/true");
    command
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let workspace = tempfile::tempdir().expect("workspace");
    let workspace = std::fs::canonicalize(workspace.path()).expect("canonical");
    let output = workspace.join("dist");
    std::fs::create_dir_all(&output).expect("dist");
    let spec = |network: bool| Spec {
        read_only: vec![workspace.clone()],
        writable: vec![output.clone()],
        cwd: workspace.clone(),
        network,
        layered: vec![],
        not_shown: vec![],
    };
    let isolated = Jail::new(spec(false)).expect("jail");
    let networked = Jail::new(spec(true)).expect("jail");
    let jailed = |jail: &Jail| {
        let mut command = quiet(Command::new("/bin/true"));
        command.current_dir(&workspace);
        jail.install(&mut command, &[]).expect("install");
        command
    };
    let have_bwrap = Command::new("bwrap")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());

    let mut samples: Vec<(&str, Vec<f64>)> = vec![
        ("bare", Vec::new()),
        ("vt jail", Vec::new()),
        ("vt jail, host network", Vec::new()),
        ("vt jail, copy-on-write layer", Vec::new()),
    ];
    let layers = tempfile::tempdir().expect("layers");
    // The whole per-task cost of a layer: its directories, the overlay, applying the
    // (empty) changes and removing the directories.
    let layered = || {
        let started = Instant::now();
        let dirs = sandbox::jail::LayerDirs::create(layers.path(), &workspace).expect("layer");
        let jail = Jail::new(Spec {
            read_only: vec![workspace.clone()],
            writable: vec![],
            layered: vec![dirs.layer().clone()],
            cwd: workspace.clone(),
            network: false,
            not_shown: vec![],
        })
        .expect("jail");
        let status = jailed(&jail)
            .spawn()
            .and_then(|mut c| c.wait())
            .expect("spawn and wait");
        assert!(status.success(), "layered /bin/true failed: {status}");
        dirs.apply().expect("apply");
        drop(dirs);
        started.elapsed().as_secs_f64() * 1e3
    };
    if have_bwrap {
        samples.push(("bwrap", Vec::new()));
    }
    // Warm-up: page cache, first-touch of the binaries.
    for _ in 0..10 {
        time(quiet(Command::new("/bin/true")));
        time(jailed(&isolated));
        if have_bwrap {
            time(bwrap(&workspace, &output));
        }
    }
    for _ in 0..rounds {
        for (name, times) in samples.iter_mut() {
            if *name == "vt jail, copy-on-write layer" {
                times.push(layered());
                continue;
            }
            let command = match *name {
                "bare" => quiet(Command::new("/bin/true")),
                "vt jail" => jailed(&isolated),
                "vt jail, host network" => jailed(&networked),
                _ => bwrap(&workspace, &output),
            };
            times.push(time(command));
        }
    }
    let rows: Vec<String> = samples
        .iter_mut()
        .map(|(name, times)| {
            let median = percentile(times, 0.5);
            let p90 = percentile(times, 0.9);
            format!(r#"{{"variant": "{name}", "median_ms": {median:.3}, "p90_ms": {p90:.3}}}"#)
        })
        .collect();
    println!(
        r#"{{"rounds": {rounds}, "landlock": "{}", "bwrap": {have_bwrap}, "results": [{}]}}"#,
        isolated.describe(),
        rows.join(", ")
    );
}

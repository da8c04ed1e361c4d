//! Real builds under `--sandbox`: a `make` build of C files and a `vite build` produce the
//! same outputs as without the sandbox, and the sandboxed result is replayed from the cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vt_tests::{vt_binary, workdir};

/// `vt ARGS` in `root`, with its cache in `root/.vt-cache`.
fn vt(root: &Path, args: &[&str]) -> Output {
    vt_command(root, args).output().expect("vt runs")
}

/// The same with `TMPDIR` set: where a layer goes when the cache is inside the package.
fn vt_with_tmpdir(root: &Path, tmpdir: &Path, args: &[&str]) -> Output {
    vt_command(root, args)
        .env("TMPDIR", tmpdir)
        .output()
        .expect("vt runs")
}

fn vt_command(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(vt_binary());
    command
        .current_dir(root)
        .env("VT_CACHE_DIR", root.join(".vt-cache"))
        .args(args);
    command
}

#[track_caller]
fn succeed(output: Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "vt failed:\n{stderr}");
    stderr
}

/// Every file under `dir`, relative path → bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).expect("inside").to_path_buf();
                out.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn c_project() -> (tempfile::TempDir, PathBuf) {
    let (temp, root) = workdir();
    let write = |rel: &str, text: &str| vt_tests::write(&root, rel, text);
    write("package.json", r#"{"name":"cproj","private":true}"#);
    write(
        "vt.json",
        r#"{ "tasks": { "build": { "command": "make -j2", "output": ["build/**"] } } }"#,
    );
    write("src/util.h", "int twice(int x);\nint thrice(int x);\n");
    write(
        "src/twice.c",
        "#include \"util.h\"\nint twice(int x) { return 2 * x; }\n",
    );
    write(
        "src/thrice.c",
        "#include \"util.h\"\nint thrice(int x) { return 3 * x; }\n",
    );
    write(
        "src/main.c",
        "#include <stdio.h>\n#include \"util.h\"\nint main(void) { printf(\"%d\\n\", twice(thrice(7))); return 0; }\n",
    );
    write(
        "Makefile",
        "OBJ = build/main.o build/twice.o build/thrice.o\n\
         build/app: $(OBJ)\n\tcc -o $@ $(OBJ)\n\
         build/%.o: src/%.c src/util.h\n\tmkdir -p build\n\tcc -O2 -c -o $@ $<\n",
    );
    (temp, root)
}

#[test]
fn make_builds_the_same_outputs_in_the_sandbox_and_replays_them() {
    let (_temp, root) = c_project();
    succeed(vt(&root, &["exec", "--no-cache", "build"]));
    let plain = snapshot(&root.join("build"));
    assert_eq!(plain.len(), 4, "{:?}", plain.keys());
    std::fs::remove_dir_all(root.join("build")).expect("clean");

    let stderr = succeed(vt(&root, &["exec", "--sandbox", "build"]));
    assert!(stderr.contains("cache miss"), "{stderr}");
    assert_eq!(
        snapshot(&root.join("build")),
        plain,
        "sandboxed outputs differ"
    );
    let run = Command::new(root.join("build/app")).output().expect("app");
    assert_eq!(String::from_utf8_lossy(&run.stdout), "42\n");

    // Replayed from the cache: the whole output directory comes back byte for byte.
    std::fs::remove_dir_all(root.join("build")).expect("clean");
    let stderr = succeed(vt(&root, &["exec", "--sandbox", "build"]));
    assert!(stderr.contains("cache hit, replaying"), "{stderr}");
    assert_eq!(snapshot(&root.join("build")), plain);

    // An edited header is an input the sandboxed run saw: a miss, and a rebuild.
    std::fs::write(
        root.join("src/util.h"),
        "int twice(int x);\nint thrice(int x);\n/* edited */\n",
    )
    .expect("edit");
    let stderr = succeed(vt(&root, &["exec", "--sandbox", "build"]));
    assert!(stderr.contains("src/util.h: content changed"), "{stderr}");
}

/// vite from npm, installed once per machine outside the clone (as node-client's tests do).
fn vite_modules() -> PathBuf {
    let cache = std::env::var_os("VT_NPM_INSTALLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/vt-ci/npm-installs"))
        .join("vite");
    let modules = cache.join("node_modules");
    if !modules.join("vite/bin/vite.js").exists() {
        std::fs::create_dir_all(&cache).expect("npm cache dir");
        if !cache.join("package.json").exists() {
            std::fs::write(cache.join("package.json"), r#"{"private":true}"#).expect("pkg");
        }
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "vite@^8"])
            .current_dir(&cache)
            .status()
            .expect("npm is installed (.ci/env.sh installs it)");
        assert!(status.success(), "npm install vite failed");
    }
    modules
}

#[test]
fn vite_builds_the_same_bundle_in_the_sandbox_and_replays_it() {
    let (_temp, root) = workdir();
    let write = |rel: &str, text: &str| vt_tests::write(&root, rel, text);
    // node_modules links outside the workspace, as with a shared store: the sandbox shows
    // the link's target read-only.
    std::os::unix::fs::symlink(vite_modules(), root.join("node_modules")).expect("link");
    write(
        "package.json",
        r#"{"name":"vite-app","private":true,"type":"module"}"#,
    );
    write(
        "vt.json",
        r#"{ "tasks": { "build": { "command": "node node_modules/vite/bin/vite.js build", "output": ["dist/**"] } } }"#,
    );
    write(
        "index.html",
        "<!doctype html><html><body><div id=\"app\"></div><script type=\"module\" src=\"/src/main.js\"></script></body></html>\n",
    );
    write(
        "src/main.js",
        "import { greet } from './greet.js';\ndocument.querySelector('#app').textContent = greet('sandbox');\n",
    );
    write(
        "src/greet.js",
        "export const greet = (who) => `hello ${who} ${[1, 2, 3].map((x) => x * 2).join(',')}`;\n",
    );

    succeed(vt(&root, &["exec", "--no-cache", "build"]));
    let plain = snapshot(&root.join("dist"));
    assert!(plain.keys().any(|p| p.starts_with("assets")), "{plain:?}");
    std::fs::remove_dir_all(root.join("dist")).expect("clean");

    succeed(vt(&root, &["exec", "--sandbox", "build"]));
    assert_eq!(
        snapshot(&root.join("dist")),
        plain,
        "sandboxed bundle differs"
    );

    std::fs::remove_dir_all(root.join("dist")).expect("clean");
    let stderr = succeed(vt(&root, &["exec", "--sandbox", "build"]));
    assert!(stderr.contains("cache hit, replaying"), "{stderr}");
    assert_eq!(snapshot(&root.join("dist")), plain);

    write(
        "src/greet.js",
        "export const greet = (who) => `bye ${who}`;\n",
    );
    let stderr = succeed(vt(&root, &["exec", "--sandbox", "build"]));
    assert!(stderr.contains("src/greet.js: content changed"), "{stderr}");
    assert_ne!(snapshot(&root.join("dist")), plain);
}

/// Two packages with no vt config at all (issue 26): `lib` builds `esm/` and removes a stale
/// file there, `app` bundles lib's output into `dist/`, the root's `build` is the aggregate.
fn zero_config_workspace() -> (tempfile::TempDir, PathBuf) {
    let (temp, root) = workdir();
    let write = |rel: &str, text: &str| vt_tests::write(&root, rel, text);
    write(
        "package.json",
        r#"{"name":"root","private":true,"workspaces":["packages/*"],"scripts":{"build":"echo aggregate > aggregate.txt"}}"#,
    );
    write(
        "packages/lib/package.json",
        r#"{"name":"lib","scripts":{"build":"rm -rf esm && mkdir -p esm/deep && cat src/*.js > esm/index.js && echo deep > esm/deep/x.js && rm -f old.log"}}"#,
    );
    write("packages/lib/src/a.js", "export const a = 1;\n");
    // Removed by the build: `esm/` as a whole (overlayfs then marks the new `esm/` opaque)
    // and one file (a whiteout).
    write("packages/lib/esm/stale.js", "left by an old build\n");
    write("packages/lib/old.log", "an old log\n");
    write(
        "packages/app/package.json",
        r#"{"name":"app","dependencies":{"lib":"*"},"scripts":{"build":"mkdir -p dist && cat ../lib/esm/index.js src/main.js > dist/bundle.js"}}"#,
    );
    write("packages/app/src/main.js", "console.log(a);\n");
    (temp, root)
}

#[test]
fn a_zero_config_workspace_builds_in_the_sandbox_through_a_copy_on_write_layer() {
    let (_temp, root) = zero_config_workspace();
    let stderr = succeed(vt(&root, &["run", "build", "-r", "--sandbox"]));
    assert!(!stderr.contains("Read-only"), "{stderr}");
    assert!(!stderr.contains("no copy-on-write layer"), "{stderr}");
    let lib = root.join("packages/lib");
    let app = root.join("packages/app");
    assert_eq!(
        std::fs::read_to_string(lib.join("esm/index.js")).expect("esm"),
        "export const a = 1;\n"
    );
    assert_eq!(
        std::fs::read_to_string(lib.join("esm/deep/x.js")).expect("deep"),
        "deep\n"
    );
    assert!(
        !lib.join("esm/stale.js").exists(),
        "the task's rm -rf esm is applied (an opaque directory)"
    );
    assert!(
        !lib.join("old.log").exists(),
        "the task's rm is applied (a whiteout)"
    );
    assert_eq!(
        std::fs::read_to_string(app.join("dist/bundle.js")).expect("bundle"),
        "export const a = 1;\nconsole.log(a);\n",
        "app saw lib's output: lib's layer was applied before app ran"
    );
    assert!(
        !root.join("aggregate.txt").exists(),
        "-r leaves the root's aggregate build out"
    );
    let built = (snapshot(&lib.join("esm")), snapshot(&app.join("dist")));

    // The same as the unsandboxed build.
    for dir in [lib.join("esm"), app.join("dist")] {
        std::fs::remove_dir_all(dir).expect("clean");
    }
    // Unsandboxed, lib's rm has nothing to remove: put the stale files back for it.
    vt_tests::write(&root, "packages/lib/esm/stale.js", "left by an old build\n");
    vt_tests::write(&root, "packages/lib/old.log", "an old log\n");
    succeed(vt(&root, &["run", "build", "-r", "--no-cache"]));
    assert_eq!(
        (snapshot(&lib.join("esm")), snapshot(&app.join("dist"))),
        built
    );

    // All hits, and deleted outputs come back from the cache.
    for dir in [lib.join("esm"), app.join("dist")] {
        std::fs::remove_dir_all(dir).expect("clean");
    }
    let stderr = succeed(vt(&root, &["run", "build", "-r", "--sandbox"]));
    assert_eq!(
        stderr.matches("cache hit, replaying").count(),
        2,
        "{stderr}"
    );
    assert_eq!(
        (snapshot(&lib.join("esm")), snapshot(&app.join("dist"))),
        built
    );

    // The case that must miss: an edited source, read through the layer, reruns lib, and
    // app with it (lib's output changed); the new output lands.
    vt_tests::write(&root, "packages/lib/src/a.js", "export const a = 2;\n");
    let stderr = succeed(vt(&root, &["run", "build", "-r", "--sandbox"]));
    assert!(
        stderr.contains("lib#build: cache miss: packages/lib/src/a.js: content changed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("app#build: cache miss: dependency lib#build changed"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(app.join("dist/bundle.js")).expect("bundle"),
        "export const a = 2;\nconsole.log(a);\n"
    );

    // The root's own task runs with -w, sandboxed too (its layer cannot be in the cache
    // inside it: vt puts it in the temp directory).
    succeed(vt(&root, &["run", "build", "-w", "--sandbox"]));
    assert_eq!(
        std::fs::read_to_string(root.join("aggregate.txt")).expect("aggregate"),
        "aggregate\n"
    );
    // Each layer is removed once applied, by a thread of vt's: what it had not removed when
    // vt exited is left unlocked for the next vt's sweep, which the runs above did (one
    // run's leftovers at most: the last run had two layered tasks).
    let left: Vec<std::path::PathBuf> = std::fs::read_dir(root.join(".vt-cache/layers"))
        .expect("layers")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(left.len() <= 2, "layers pile up: {left:?}");
    for layer in &left {
        let name = layer
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with("layer-") || name.starts_with("trash-"),
            "{name}"
        );
        if let Ok(lock) = std::fs::File::open(layer.join("lock")) {
            // std's file locks are `flock`s on Linux, as vt's.
            assert!(
                lock.try_lock().is_ok(),
                "{name} is still locked after vt exited"
            );
        }
    }
}

/// A layer's overlay is volatile: its unmount at every sandboxed task's end does not sync
/// the workspace's whole file system (every dirty inode of the machine's other work on it,
/// and a flush of the disk's cache). What it wrote is still there, applied (above).
#[test]
fn a_layers_overlay_does_not_sync_the_file_system_at_its_end() {
    let (_temp, root) = zero_config_workspace();
    let output = vt(
        &root.join("packages/lib"),
        &[
            "exec",
            "--sandbox",
            "--no-cache",
            "--",
            "grep",
            " overlay ",
            "/proc/self/mountinfo",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    succeed(output);
    let overlay = stdout
        .lines()
        .find(|l| l.contains(" - overlay "))
        .unwrap_or_else(|| panic!("no overlay in the sandbox: {stdout}"));
    // Linux 5.10 shows `volatile`; later kernels `fsync=volatile`.
    assert!(overlay.contains("volatile"), "{overlay}");
}

#[test]
fn a_layered_task_cannot_write_outside_its_package_and_a_failure_changes_nothing() {
    let (_temp, root) = zero_config_workspace();
    let app = root.join("packages/app");
    vt_tests::write(
        &root,
        "packages/app/package.json",
        r#"{"name":"app","scripts":{"build":"mkdir -p dist && echo half > dist/half.js && echo bad > ../lib/src/evil.js"}}"#,
    );
    let output = vt(&root, &["run", "app#build", "--sandbox"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert!(!root.join("packages/lib/src/evil.js").exists());
    assert!(
        !app.join("dist").exists(),
        "a failed task's writes in its package are not applied"
    );
    // The control: the same task without the write outside succeeds and its output lands.
    vt_tests::write(
        &root,
        "packages/app/package.json",
        r#"{"name":"app","scripts":{"build":"mkdir -p dist && echo whole > dist/half.js"}}"#,
    );
    succeed(vt(&root, &["run", "app#build", "--sandbox"]));
    assert_eq!(
        std::fs::read_to_string(app.join("dist/half.js")).expect("out"),
        "whole\n"
    );
}

/// A file a layered task changed lands on the host as the task left it, without
/// overlayfs's bookkeeping: its copy-up marks the upper file with `user.overlay.origin`,
/// which a plain rename would carry onto the host file. An attribute the task set itself
/// lands (the control).
#[test]
fn a_file_a_layered_task_changed_lands_without_overlayfs_own_attributes() {
    let (_temp, root) = workdir();
    vt_tests::write(
        &root,
        "package.json",
        r#"{"name":"solo","scripts":{"t":"echo more >> f.txt && echo g > g.txt && /usr/bin/python3 -c \"import os; os.setxattr('g.txt', 'user.mine', b'1')\""}}"#,
    );
    vt_tests::write(&root, "f.txt", "old\n");
    succeed(vt(&root, &["run", "t", "--sandbox", "--no-cache"]));
    assert_eq!(
        std::fs::read_to_string(root.join("f.txt")).expect("f"),
        "old\nmore\n"
    );
    let names = |file: &str| xattr_names(&root.join(file));
    let changed = names("f.txt");
    assert!(
        changed.iter().all(|n| !n.contains(".overlay.")),
        "overlayfs's attributes on the host file: {changed:?}"
    );
    assert_eq!(names("g.txt"), ["user.mine"], "the task's own attribute");
}

/// The names of `path`'s extended attributes, sorted.
fn xattr_names(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = sandbox::jail::layer::xattr_names(path)
        .expect("llistxattr")
        .iter()
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect();
    names.sort();
    names
}

/// What a tree holds, to compare two: each path's type and mode, a file's bytes, a
/// symlink's target, its modification time (to the second; where the script decides it)
/// and its extended attributes' names.
type Described = BTreeMap<PathBuf, (u32, Option<Vec<u8>>, Option<PathBuf>, i64, Vec<String>)>;

fn describe(root: &Path) -> Described {
    fn walk(base: &Path, dir: &Path, out: &mut Described) {
        use std::os::unix::fs::MetadataExt;
        for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(base).expect("inside").to_path_buf();
            if rel.starts_with(".vt-cache") {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let kind = meta.file_type();
            let content = kind.is_file().then(|| std::fs::read(&path).expect("read"));
            let link = kind
                .is_symlink()
                .then(|| std::fs::read_link(&path).expect("readlink"));
            // Times are compared where the script sets them or leaves them alone: a
            // time it gives by writing is the moment of its run, which the two runs differ in.
            let timed = [
                "stamp.txt",
                "created.txt",
                "kept_time.txt",
                "ren_dst",
                "timed_dir",
                "nested/keep",
                "dir_dst",
                "dir_dst/sub",
                "dir_dst/sub/one",
            ];
            let mtime = if timed.iter().any(|t| rel == Path::new(t)) {
                meta.mtime()
            } else {
                0
            };
            out.insert(rel, (meta.mode(), content, link, mtime, xattr_names(&path)));
            if kind.is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A layered task's changes land on the host as they would have without the sandbox: the
/// same script run in two copies of a package, once sandboxed through its layer and once
/// not, leaves the same tree (types, modes, contents, symlinks, file times, attribute
/// names). Hard links are the documented exception (README: known limits). The layer is in
/// `tmpdir` (the cache is inside the package, so vt makes it in the temp directory): on the
/// package's own file system the changes are moved, on another they are copied.
fn layered_changes_land_as_without_the_sandbox(root: &Path, tmpdir: &Path) {
    let package = |dir: &Path| {
        let write = |rel: &str, text: &str| vt_tests::write(dir, rel, text);
        write(
            "package.json",
            r#"{"name":"fid","scripts":{"t":"sh ./s.sh"}}"#,
        );
        write(
            "s.sh",
            "set -e\n\
             stat -c %a . > root_mode.txt\n\
             chmod +x mode.txt\n\
             touch -d '2001-01-01 00:00' stamp.txt\n\
             echo new > created.txt && touch -d '2002-02-02 00:00' created.txt\n\
             cp -p stamp.txt kept_time.txt\n\
             mkdir newdir && mkdir -p deep/a/b && echo x > deep/a/b/f\n\
             rmdir emptydir\n\
             mv ren_src ren_dst && mv dir_src dir_dst\n\
             ln -s target.txt newlink\n\
             rm -f relink && ln -s other relink\n\
             mkfifo pipe\n\
             echo new > was_dir.tmp && rm -rf was_dir && mv was_dir.tmp was_dir\n\
             rm was_file && mkdir was_file && echo in > was_file/in\n\
             echo appended >> nested/keep/file\n\
             rm nested/gone\n\
             mkdir -p timed_dir/in && echo t > timed_dir/in/t && touch -d '2004-04-04 00:00' timed_dir\n\
             echo more >> copied_up.txt\n\
             /usr/bin/python3 -c \"import os; os.setxattr('copied_up.txt', 'user.mine', b'1'); os.setxattr('created.txt', 'user.mine', b'2')\"\n\
             chmod 0770 .\n",
        );
        for (rel, text) in [
            ("mode.txt", "m\n"),
            ("stamp.txt", "s\n"),
            ("ren_src", "r\n"),
            ("dir_src/sub/one", "one\n"),
            ("was_dir/q", "q\n"),
            ("was_file", "f\n"),
            ("nested/keep/file", "k\n"),
            ("nested/gone", "g\n"),
            ("copied_up.txt", "c\n"),
        ] {
            write(rel, text);
        }
        std::fs::create_dir(dir.join("emptydir")).expect("mkdir");
        std::os::unix::fs::symlink("old", dir.join("relink")).expect("symlink");
        // Paths whose times the script leaves alone (it changes files below them, or
        // moves them), set to one moment in both copies.
        let long_ago =
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        for rel in [
            "ren_src",
            "nested/keep",
            "dir_src",
            "dir_src/sub",
            "dir_src/sub/one",
        ] {
            std::fs::File::open(dir.join(rel))
                .and_then(|d| d.set_modified(long_ago))
                .expect("set_modified");
        }
        // The package directory's own mode, which the task looks at (`root_mode.txt`) and
        // changes.
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o750))
            .expect("chmod");
    };
    let (plain, layered) = (root.join("plain"), root.join("layered"));
    package(&plain);
    package(&layered);
    let ran = Command::new("sh")
        .arg("./s.sh")
        .current_dir(&plain)
        .status()
        .expect("sh runs");
    assert!(ran.success(), "the script fails without vt");
    let stderr = succeed(vt_with_tmpdir(
        &layered,
        tmpdir,
        &["run", "t", "--sandbox", "--no-cache"],
    ));
    assert!(!stderr.contains("no copy-on-write layer"), "{stderr}");
    assert!(
        std::fs::read_dir(tmpdir)
            .expect("the temp directory")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("vt-layers-")),
        "the layer was not made in {}",
        tmpdir.display()
    );
    let (want, got) = (describe(&plain), describe(&layered));
    for path in want.keys().chain(got.keys()) {
        assert_eq!(
            want.get(path),
            got.get(path),
            "{} differs: without the sandbox, then through the layer",
            path.display()
        );
    }
    let mode = |dir: &Path| {
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir).expect("stat").permissions(),
        ) & 0o7777
    };
    assert_eq!(mode(&layered), mode(&plain), "the package directory's mode");
    assert_eq!(
        std::fs::read_to_string(layered.join("root_mode.txt")).expect("root_mode"),
        "750\n",
        "what the task saw of its package directory"
    );
    // The comparison reads what it compares: a change, a time and an attribute.
    let copied_up = got.get(Path::new("copied_up.txt")).expect("copied_up.txt");
    assert_eq!(copied_up.1.as_deref(), Some(&b"c\nmore\n"[..]));
    assert_eq!(copied_up.4, ["user.mine"]);
    let stamp = got.get(Path::new("stamp.txt")).expect("stamp.txt");
    assert_eq!(stamp.3, 978_307_200, "touch -d '2001-01-01 00:00' (UTC)");
}

#[test]
fn a_layered_tasks_changes_land_as_they_would_have_without_the_sandbox() {
    let (_temp, root) = workdir();
    let tmpdir = root.join("tmp");
    std::fs::create_dir(&tmpdir).expect("tmp");
    layered_changes_land_as_without_the_sandbox(&root, &tmpdir);
}

/// The same with the layer on another file system (a tmpfs temp directory, as on
/// distributions whose `/tmp` is one): the changes are copied, and the copy keeps what the
/// rename would have, the file's times and the task's own attributes.
#[test]
fn a_layered_tasks_changes_land_as_without_the_sandbox_when_copied_from_another_file_system() {
    use std::os::unix::fs::MetadataExt;
    let (_temp, root) = workdir();
    let tmpdir = tempfile::tempdir_in("/dev/shm").expect("a directory in /dev/shm");
    let device = |path: &Path| std::fs::metadata(path).expect("stat").dev();
    assert_ne!(
        device(tmpdir.path()),
        device(&root),
        "/dev/shm is not another file system than the test's workspace: this test needs it \
         to be (a tmpfs)"
    );
    layered_changes_land_as_without_the_sandbox(&root, tmpdir.path());
}

/// A tmpfs mounted at a directory (of `size`, if given), unmounted on drop so that a failed
/// assertion leaves nothing mounted.
struct Mounted(PathBuf);

impl Mounted {
    fn tmpfs(dir: &Path, size: Option<&str>) -> Mounted {
        let options = size.map(|size| format!("size={size}"));
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            options.as_deref(),
        )
        .expect("mount a tmpfs");
        Mounted(dir.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A layer whose file system fills up (a small tmpfs temp directory, the cache inside the
/// package) fails its task with `ENOSPC`; vt names the layer's full file system and what
/// to change. The control: a task that fails for its own reason, with room, gets no such
/// word.
#[test]
fn a_task_whose_layer_ran_out_of_space_is_told_so() {
    if !vt_tests::root_or_skip("mounting a small tmpfs") {
        return;
    }
    let (_temp, root) = workdir();
    let tmpdir = root.join("tmp");
    std::fs::create_dir(&tmpdir).expect("mkdir");
    let _mounted = Mounted::tmpfs(&tmpdir, Some("256k"));
    let package = root.join("pkg");
    let run = |script: &str| {
        vt_tests::write(
            &package,
            "package.json",
            &format!(r#"{{"name":"full","scripts":{{"t":"{script}"}}}}"#),
        );
        vt_with_tmpdir(&package, &tmpdir, &["run", "t", "--sandbox", "--no-cache"])
    };
    let full = run("head -c 1048576 /dev/zero > big.bin");
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert!(!full.status.success(), "{stderr}");
    assert!(
        stderr.contains("the sandbox's copy-on-write layer has no space left"),
        "{stderr}"
    );
    assert!(
        stderr.contains("set VT_CACHE_DIR outside the package"),
        "{stderr}"
    );
    assert!(
        !package.join("big.bin").exists(),
        "a failed task's write landed"
    );
    let own = run("exit 3");
    let stderr = String::from_utf8_lossy(&own.stderr);
    assert!(!own.status.success(), "{stderr}");
    assert!(!stderr.contains("no space left"), "{stderr}");
}

/// A file system mounted inside a package (a `node_modules` volume, a tmpfs for `dist/`)
/// is not part of an overlay's lower layer: through a layer the task would find the empty
/// directory beneath the mount. vt gives such a package no layer and says so; the task
/// sees the mount's files and its changes land. The control: the same package without the
/// mount runs through a layer.
#[test]
fn a_package_holding_a_mount_point_is_bound_whole_instead_of_layered() {
    if !vt_tests::root_or_skip("mounting a tmpfs inside a package") {
        return;
    }
    let (_temp, root) = workdir();
    vt_tests::write(
        &root,
        "package.json",
        r#"{"name":"mounted","scripts":{"t":"cat data/in.txt > seen.txt && echo w > data/out.txt"}}"#,
    );
    let data = root.join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let mounted = Mounted::tmpfs(&data, None);
    std::fs::write(data.join("in.txt"), "from the mount\n").expect("write");
    let stderr = succeed(vt(&root, &["run", "t", "--sandbox", "--no-cache"]));
    assert!(
        stderr.contains(&format!(
            "no copy-on-write layer for {}: {} is a mount point in it",
            root.display(),
            data.display()
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("seen.txt")).expect("seen"),
        "from the mount\n"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("out.txt")).expect("out"),
        "w\n"
    );
    drop(mounted);
    // The control: no mount, a layer (nothing said), and the task's change lands through it.
    std::fs::write(data.join("in.txt"), "from the directory\n").expect("write");
    let stderr = succeed(vt(&root, &["run", "t", "--sandbox", "--no-cache"]));
    assert!(!stderr.contains("no copy-on-write layer"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(root.join("seen.txt")).expect("seen"),
        "from the directory\n"
    );
}

#[test]
fn a_layer_without_a_cache_outside_the_package_is_made_in_this_users_own_temp_directory() {
    // One package, the cache inside it: the layer goes to the temp directory.
    let (_temp, root) = workdir();
    vt_tests::write(
        &root,
        "package.json",
        r#"{"name":"solo","scripts":{"build":"mkdir -p dist && echo built > dist/out.js"}}"#,
    );
    let run =
        |tmpdir: &Path| vt_with_tmpdir(&root, tmpdir, &["run", "build", "--sandbox", "--no-cache"]);
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let fresh = tempfile::tempdir().expect("tmpdir");
    succeed(run(fresh.path()));
    assert_eq!(
        std::fs::read_to_string(root.join("dist/out.js")).expect("out"),
        "built\n"
    );
    let layers = fresh.path().join(format!("vt-layers-{uid}"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&layers)
            .expect("the layers' directory")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o700, "only this user's");
    // Another user's directory of that name is not used: a clear error instead.
    if !vt_tests::root_or_skip("a directory owned by another user") {
        return;
    }
    let taken = tempfile::tempdir().expect("tmpdir");
    let theirs = taken.path().join(format!("vt-layers-{uid}"));
    std::fs::create_dir(&theirs).expect("mkdir");
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("chown");
    std::fs::remove_dir_all(root.join("dist")).expect("clean");
    let output = run(taken.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("no private directory for the sandbox's copy-on-write layer"),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(&theirs).expect("theirs").next().is_none(),
        "nothing made in another user's directory"
    );
}

/// `vt ARGS` in `root` with its cache and temp directory (and so its layers) on an
/// overlayfs, which overlayfs refuses as a layer's upper directory ("not supported as upperdir"): the host of a
/// container whose root is an overlayfs. The overlay is mounted in a mount namespace of
/// the command's own, so nothing is left mounted on the host.
fn vt_with_layers_refused(root: &Path, scratch: &Path, args: &[&str]) -> Output {
    for dir in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir_all(scratch.join(dir)).expect("overlay dirs");
    }
    let script = r#"mount -t overlay overlay -o "lowerdir=$1/lower,upperdir=$1/upper,workdir=$1/work" "$1/merged" || exit 99
scratch="$1" root="$2" vt="$3"
shift 3
mkdir -p "$scratch/merged/tmp"
cd "$root" && TMPDIR="$scratch/merged/tmp" VT_CACHE_DIR="$scratch/merged/cache" exec "$vt" "$@""#;
    let vt_path = vt_binary();
    let mut command = Command::new("unshare");
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(scratch)
        .arg(root)
        .arg(&vt_path)
        .args(args);
    let output = command.output().expect("unshare runs");
    assert_ne!(
        output.status.code(),
        Some(99),
        "cannot mount an overlayfs for this test (it needs root and overlayfs): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn where_the_host_refuses_a_layer_a_sandboxed_task_runs_once_with_its_package_writable() {
    let (_temp, root) = zero_config_workspace();
    let scratch = tempfile::tempdir().expect("scratch");
    vt_tests::write(
        &root,
        "packages/app/package.json",
        r#"{"name":"app","scripts":{"build":"echo started && mkdir -p dist && echo built > dist/out.js"}}"#,
    );
    let app = root.join("packages/app");
    let refused = "no copy-on-write layer on this host";

    // A lone task: its sandbox fails at the layer before anything runs, and it runs again,
    // once, with its package bound writable; its output lands.
    let output = vt_with_layers_refused(&root, scratch.path(), &["run", "app#build", "--sandbox"]);
    let stderr = succeed(output.clone());
    assert_eq!(stderr.matches(refused).count(), 1, "{stderr}");
    assert!(stderr.contains("copy-on-write overlay) failed"), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout)
            .matches("started")
            .count(),
        1,
        "the task ran once"
    );
    assert_eq!(
        std::fs::read_to_string(app.join("dist/out.js")).expect("out"),
        "built\n"
    );

    // Replayed from the cache.
    std::fs::remove_dir_all(app.join("dist")).expect("clean");
    let stderr = succeed(vt_with_layers_refused(
        &root,
        scratch.path(),
        &["run", "app#build", "--sandbox"],
    ));
    assert!(
        stderr.contains("app#build: cache hit, replaying"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(app.join("dist/out.js")).expect("out"),
        "built\n"
    );

    // Several tasks in one run: said once, and every task still builds.
    let stderr = succeed(vt_with_layers_refused(
        &root,
        scratch.path(),
        &["run", "build", "-r", "--sandbox", "--no-cache"],
    ));
    assert_eq!(stderr.matches(refused).count(), 1, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(root.join("packages/lib/esm/index.js")).expect("esm"),
        "export const a = 1;\n"
    );
    assert!(stderr.contains("app#build"), "{stderr}");

    // The control: the same task with its layers on a file system overlayfs accepts
    // (the workspace's) goes through a layer.
    let output = vt(&root, &["run", "app#build", "--sandbox", "--no-cache"]);
    let stderr = succeed(output.clone());
    assert!(!stderr.contains(refused), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout)
            .matches("started")
            .count(),
        1
    );
}

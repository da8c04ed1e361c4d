//! The LD_PRELOAD fast path (docs/architecture.md, "Trace and jail"): it must see exactly what seccomp alone sees,
//! behave exactly like glibc, and take most calls off the notification path.

use std::path::Path;
use std::process::{Command, Output};

use vt_tests::workdir;

/// `vt trace --json` of `command` in `cwd`, with extra environment.
fn trace(cwd: &Path, env: &[(&str, &str)], command: &[&str]) -> (Output, serde_json::Value) {
    let json_path = cwd.join(".vt-log.json");
    let output = vt_tests::trace_json_command(&vt_tests::vt_binary(), &json_path, command)
        .current_dir(cwd)
        // cargo's test environment points the loader at target/; its misses would be
        // lookups by ld.so, which no preload can take off the notification path.
        .env_remove("LD_LIBRARY_PATH")
        .envs(env.iter().copied())
        .output()
        .expect("vt runs");
    (output, vt_tests::read_trace_log(&json_path))
}

/// The distinct accesses, minus gcc's randomly named temporary files.
fn accesses(log: &serde_json::Value) -> Vec<(String, String)> {
    let mut all: Vec<_> = log["accesses"]
        .as_array()
        .expect("accesses")
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().expect("kind").to_owned(),
                a["path"].as_str().expect("path").to_owned(),
            )
        })
        .filter(|(_, path)| !path.starts_with("/tmp/cc"))
        .collect();
    all.sort();
    all
}

/// Compiles `source` to `dir/probe`.
fn build_probe(dir: &Path, source: &str) {
    std::fs::write(dir.join("probe.c"), source).expect("write");
    let built = Command::new("gcc")
        .args(["-O1", "-o", "probe", "probe.c"])
        .current_dir(dir)
        .status()
        .expect("gcc runs");
    assert!(built.success(), "gcc could not build the probe");
}

/// `dir/probe`, untraced.
fn run_probe(dir: &Path) -> Output {
    Command::new(dir.join("probe"))
        .current_dir(dir)
        .output()
        .expect("the probe runs")
}

/// Whether `seen` (from [`accesses`]) has a `kind` access to `path`.
fn has_access(seen: &[(String, String)], kind: &str, path: &Path) -> bool {
    seen.contains(&(kind.to_owned(), path.to_string_lossy().into_owned()))
}

/// The process id a probe printed on its line starting with `who`.
fn printed_pid(stdout: &str, who: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(who))
        .map(|p| p.trim().to_owned())
        .unwrap_or_else(|| panic!("no {who} line in {stdout}"))
}

fn count(log: &serde_json::Value, field: &str) -> u64 {
    log[field].as_u64().expect("a count")
}

/// How many `syscall` calls reached the supervisor.
fn notified(log: &serde_json::Value, syscall: &str) -> u64 {
    log["notified_by_syscall"][syscall].as_u64().unwrap_or(0)
}

const SOURCE: &str =
    "#include <stdio.h>\n#include <stdlib.h>\nint main(void) { puts(\"hi\"); return 0; }\n";

#[test]
fn the_fast_path_sees_what_seccomp_sees_with_a_fraction_of_the_notifications() {
    let (_t, dir) = workdir();
    std::fs::write(dir.join("main.c"), SOURCE).expect("write");
    let compile = ["gcc", "-O2", "-o", "main", "main.c"];

    let (out, fast) = trace(&dir, &[], &compile);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(dir.join("main")).expect("rm");
    let (out, slow) = trace(&dir, &[("VT_PRELOAD", "off")], &compile);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(
        accesses(&fast),
        accesses(&slow),
        "the two paths saw different things"
    );
    assert!(
        fast["gaps"].as_array().expect("gaps").is_empty(),
        "{}",
        fast["gaps"]
    );
    assert!(
        count(&fast, "fast_path_records") > 100,
        "{}",
        fast["fast_path_records"]
    );
    assert_eq!(count(&slow, "fast_path_records"), 0);
    let (fast_n, slow_n) = (count(&fast, "notifications"), count(&slow, "notifications"));
    assert!(
        fast_n * 3 < slow_n,
        "the fast path should take most notifications away: {fast_n} vs {slow_n}"
    );
    // gcc's realpath storm is gone: no readlink reaches the supervisor.
    assert!(
        fast["notified_by_syscall"]["readlink"].is_null(),
        "{}",
        fast["notified_by_syscall"]
    );
    assert!(
        fast["tracer"]
            .as_str()
            .expect("tracer")
            .contains("+preload")
    );
}

/// A program that prints what glibc's path functions return, including their errors.
const REALPATH_PROBE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>
static void rp(const char *p) {
    char buf[PATH_MAX];
    char *r = realpath(p, buf);
    printf("realpath(%s) = %s errno=%s\n", p, r ? r : "NULL", r ? "-" : strerror(errno));
    char *m = canonicalize_file_name(p);
    printf("canonicalize(%s) = %s\n", p, m ? m : "NULL");
    free(m);
}
int main(void) {
    const char *paths[] = {"d/link", "d/link/..", "d/chain", "./d/../d/f", "d/f/", "d/f/.",
        "d/none", "d/none/x", "loop", "d//f", "/", ".", "..", "d/rel", "d/abs", ""};
    for (unsigned i = 0; i < sizeof paths / sizeof *paths; i++) rp(paths[i]);
    struct stat st;
    printf("stat=%d lstat=%d access=%d\n", stat("d/link", &st), lstat("d/none", &st),
           access("d/f", R_OK));
    char link[64] = {0};
    printf("readlink=%zd %s\n", readlink("d/chain", link, sizeof link - 1), link);
    int fd = openat(AT_FDCWD, "d", O_RDONLY | O_DIRECTORY);
    printf("openat dir=%d fstatat=%d\n", fd >= 0, fstatat(fd, "f", &st, 0));
    FILE *f = fopen("d/f", "re");
    printf("fopen=%d fopen_missing=%d errno=%s\n", f != NULL, fopen("d/zz", "r") == NULL,
           strerror(errno));
    return 0;
}
"#;

#[test]
fn interposed_functions_behave_like_glibc() {
    let (_t, dir) = workdir();
    build_probe(&dir, REALPATH_PROBE);
    std::fs::create_dir(dir.join("d")).expect("mkdir");
    std::fs::create_dir(dir.join("d/sub")).expect("mkdir");
    std::fs::write(dir.join("d/f"), "x").expect("write");
    let symlink = |target: &str, link: &str| {
        std::os::unix::fs::symlink(target, dir.join(link)).expect("symlink")
    };
    symlink("sub", "d/link");
    symlink("link", "d/chain");
    symlink("loop", "loop");
    symlink("../d/./f", "d/rel");
    symlink(dir.join("d/sub").to_str().expect("utf-8"), "d/abs");

    let bare = run_probe(&dir);
    let (traced, log) = trace(&dir, &[], &["./probe"]);
    assert!(bare.status.success(), "{bare:?}");
    assert!(traced.status.success(), "{traced:?}");
    assert_eq!(
        String::from_utf8_lossy(&traced.stdout),
        String::from_utf8_lossy(&bare.stdout),
        "interposed calls must return what glibc returns"
    );
    assert!(count(&log, "fast_path_records") > 20);
    // What realpath looked at is recorded: the links it followed and the name it missed.
    let seen = accesses(&log);
    let has = |kind: &str, rel: &str| has_access(&seen, kind, &dir.join(rel));
    assert!(has("stat", "d/chain") && has("stat", "d/link") && has("missing", "d/none"));
}

#[test]
fn the_tasks_own_ld_preload_is_kept_after_vts() {
    let (_t, dir) = workdir();
    let libm = "/lib/x86_64-linux-gnu/libm.so.6";
    let (out, _) = trace(
        &dir,
        &[("LD_PRELOAD", libm)],
        &["sh", "-c", "echo \"$LD_PRELOAD\""],
    );
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (ours, theirs) = line.split_once(':').expect("two entries");
    assert!(ours.ends_with("/libvt_preload.so"), "{line}");
    assert_eq!(theirs, libm);
}

/// execvp/execvpe as a program uses them: each in a child, printing how it failed.
const EXECVP_PROBE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
extern char **environ;
static void try(const char *name, int pe) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[] = {(char *)name, "arg1", NULL};
        if (pe) execvpe(name, argv, environ); else execvp(name, argv);
        printf("%s: %s\n", name, strerror(errno));
        fflush(stdout);
        _exit(1);
    }
    int status;
    waitpid(pid, &status, 0);
}
int main(void) {
    try("nothere", 0);   /* ENOENT after every PATH entry */
    try("onlya", 1);     /* only a non-executable file: EACCES */
    try("tool", 0);      /* a/ is not executable, b/ is a script without #!: /bin/sh runs it */
    try("./tool", 0);    /* a slash: no search, not executable here */
    return 0;
}
"#;

#[test]
fn execvp_searches_path_like_glibc_and_each_candidate_is_recorded_not_notified() {
    use std::os::unix::fs::PermissionsExt;
    let (_t, dir) = workdir();
    build_probe(&dir, EXECVP_PROBE);
    for sub in ["a", "b"] {
        std::fs::create_dir(dir.join(sub)).expect("mkdir");
    }
    let file = |rel: &str, text: &str, mode: u32| {
        std::fs::write(dir.join(rel), text).expect("write");
        std::fs::set_permissions(dir.join(rel), std::fs::Permissions::from_mode(mode))
            .expect("chmod");
    };
    file("a/tool", "not executable\n", 0o644);
    file("a/onlya", "not executable\n", 0o644);
    file("b/tool", "echo ran b/tool with \"$1\"\n", 0o755);
    file("tool", "not executable\n", 0o644);
    let path = format!("{0}/a:{0}/b:/usr/bin:/bin", dir.display());
    let bare = Command::new(dir.join("probe"))
        .current_dir(&dir)
        .env("PATH", &path)
        .output()
        .expect("runs");
    let (traced, log) = trace(&dir, &[("PATH", &path)], &["./probe"]);
    assert!(bare.status.success() && traced.status.success());
    let bare_out = String::from_utf8_lossy(&bare.stdout);
    assert!(bare_out.contains("ran b/tool with arg1"), "{bare_out}");
    assert_eq!(
        String::from_utf8_lossy(&traced.stdout),
        bare_out,
        "the interposed execvp must do what glibc's does"
    );
    let seen = accesses(&log);
    let has = |kind: &str, path: String| seen.contains(&(kind.to_owned(), path));
    let d = dir.display();
    assert!(has("missing", format!("{d}/a/nothere")), "{seen:?}");
    assert!(has("missing", format!("{d}/b/nothere")), "{seen:?}");
    assert!(has("missing", "/usr/bin/nothere".into()), "{seen:?}");
    assert!(has("exec", format!("{d}/b/tool")), "{seen:?}");
    assert!(has("exec", "/bin/sh".into()) || has("exec", "/usr/bin/sh".into()));
    // Only vt's own exec of ./probe reaches the supervisor.
    assert!(
        notified(&log, "execve") <= 1,
        "{}",
        log["notified_by_syscall"]
    );
}

/// glibc opening files on its own: the locale (`setlocale`), message catalogues (`gettext`)
/// and `opendir`, none of which goes through an interposable symbol.
const GLIBC_INTERNAL_PROBE: &str = r#"
#include <dirent.h>
#include <libintl.h>
#include <locale.h>
#include <stdio.h>
int main(int argc, char **argv) {
    const char *loc = setlocale(LC_ALL, "");
    bindtextdomain("probe", argv[1]);
    textdomain("probe");
    const char *msg = gettext("hello");
    DIR *d = opendir("sub");
    int n = 0;
    while (d && readdir(d)) n++;
    if (d) closedir(d);
    printf("locale=%s msg=%s entries=%d\n", loc ? loc : "NULL", msg, n);
    return 0;
}
"#;

#[test]
fn glibcs_own_opens_are_recorded_in_process_like_seccomp_sees_them() {
    let (_t, dir) = workdir();
    build_probe(&dir, GLIBC_INTERNAL_PROBE);
    std::fs::create_dir(dir.join("sub")).expect("mkdir");
    std::fs::write(dir.join("sub/f"), "x").expect("write");
    let catalogues = dir.join("locale");
    let catalogues = catalogues.to_str().expect("UTF-8 temp dir");
    let command = ["./probe", catalogues];
    let env = [("LC_ALL", "C.UTF-8")];
    let bare = Command::new(dir.join("probe"))
        .arg(catalogues)
        .current_dir(&dir)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("runs");
    let (out, fast) = trace(&dir, &env, &command);
    let (slow_out, slow) = trace(
        &dir,
        &[("LC_ALL", "C.UTF-8"), ("VT_PRELOAD", "off")],
        &command,
    );
    assert!(bare.status.success() && out.status.success() && slow_out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&bare.stdout),
        "glibc must behave as without vt"
    );
    assert_eq!(
        accesses(&fast),
        accesses(&slow),
        "the two paths saw different things"
    );
    let seen = accesses(&fast);
    let has = |kind: &str, path: String| seen.contains(&(kind.to_owned(), path));
    let d = dir.display();
    assert!(has("read_dir", format!("{d}/sub")), "opendir: {seen:?}");
    assert!(
        has(
            "missing",
            format!("{d}/locale/C.UTF-8/LC_MESSAGES/probe.mo")
        ),
        "gettext's catalogue probe: {seen:?}"
    );
    assert!(
        seen.iter().any(|(_, p)| p.starts_with("/usr/lib/locale/")),
        "setlocale's files: {seen:?}"
    );
    // What is left notified is the dynamic loader's: ld.so.cache, vt's recorder, libc.
    assert!(
        notified(&fast, "openat") <= 4,
        "{}",
        fast["notified_by_syscall"]
    );
    assert!(
        notified(&slow, "openat") >= notified(&fast, "openat") + 3,
        "glibc's own opens should have moved to the recorder: {} vs {}",
        fast["notified_by_syscall"],
        slow["notified_by_syscall"]
    );
}

/// Forks; parent and child each open `/proc/self/comm` and print their pid.
const FORK_PROBE: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    pid_t child = fork();
    if (child < 0) return 2;
    if (child == 0) {
        printf("child %d\n", getpid());
        fflush(stdout);
        close(open("/proc/self/comm", O_RDONLY));
        _exit(0);
    }
    waitpid(child, 0, 0);
    printf("parent %d\n", getpid());
    fflush(stdout);
    close(open("/proc/self/comm", O_RDONLY));
    return 0;
}
"#;

#[test]
fn a_forked_childs_records_carry_its_own_process_id() {
    // The recorder stamps records with a process id it keeps rather than asks for per call;
    // a fork child must not inherit its parent's. `/proc/self` is mapped with that id.
    let (_t, dir) = workdir();
    build_probe(&dir, FORK_PROBE);
    let (out, log) = trace(&dir, &[], &["./probe"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pid_of = |who: &str| printed_pid(&stdout, who);
    let seen = accesses(&log);
    for who in ["parent ", "child "] {
        let path = format!("/proc/{}/comm", pid_of(who));
        assert!(
            seen.contains(&("read".to_owned(), path.clone())),
            "{who}'s /proc/self/comm should be {path}: {seen:?}"
        );
    }
    assert!(count(&log, "fast_path_records") > 0, "recorded in-process");
}

/// Starts `/bin/true` five times with `posix_spawn`, as make starts its jobs.
const SPAWN_PROBE: &str = r#"
#include <spawn.h>
#include <sys/wait.h>
extern char **environ;
int main(void) {
    for (int i = 0; i < 5; i++) {
        pid_t child;
        char *argv[] = {"true", 0};
        if (posix_spawn(&child, "/bin/true", 0, 0, argv, environ) != 0) return 2;
        int status;
        if (waitpid(child, &status, 0) < 0 || status != 0) return 3;
    }
    return 0;
}
"#;

#[test]
fn posix_spawns_own_execve_is_recorded_in_process_like_seccomp_sees_it() {
    // glibc's posix_spawn child calls `__execve` directly, past any interposed `execve`;
    // the recorder's patch of glibc's entry must catch it without changing what is seen.
    let (_t, dir) = workdir();
    build_probe(&dir, SPAWN_PROBE);
    let (out, fast) = trace(&dir, &[], &["./probe"]);
    let (slow_out, slow) = trace(&dir, &[("VT_PRELOAD", "off")], &["./probe"]);
    assert!(out.status.success() && slow_out.status.success());
    assert_eq!(
        accesses(&fast),
        accesses(&slow),
        "the two paths saw different things"
    );
    assert!(
        accesses(&fast).contains(&("exec".to_owned(), "/usr/bin/true".to_owned()))
            || accesses(&fast).contains(&("exec".to_owned(), "/bin/true".to_owned())),
        "{:?}",
        accesses(&fast)
    );
    // Only vt's own exec of the probe is left notified.
    assert!(
        notified(&fast, "execve") <= 1,
        "{}",
        fast["notified_by_syscall"]
    );
    assert!(
        notified(&slow, "execve") >= 6,
        "{}",
        slow["notified_by_syscall"]
    );
}

/// Repeats the same lookups, as cc1 does for every prefix of every header, then changes
/// their answer; a fork child repeats its parent's lookup of `/proc/self`.
const REPEAT_PROBE: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    struct stat st;
    char link[64];
    for (int i = 0; i < 1000; i++) {
        stat("later", &st);
        stat("present", &st);
        readlink("present", link, sizeof link);
        stat("/proc/self/comm", &st);
    }
    close(open("later", O_CREAT | O_WRONLY, 0644));
    if (stat("later", &st) != 0) return 2;
    pid_t child = fork();
    if (child == 0) {
        for (int i = 0; i < 100; i++) stat("/proc/self/comm", &st);
        printf("child %d\n", getpid());
        return 0;
    }
    int status;
    waitpid(child, &status, 0);
    printf("parent %d\n", getpid());
    return status == 0 ? 0 : 3;
}
"#;

#[test]
fn a_process_records_a_repeated_lookup_once_until_its_answer_changes() {
    let (_t, dir) = workdir();
    build_probe(&dir, REPEAT_PROBE);
    std::fs::write(dir.join("present"), "x").expect("write");
    let (out, log) = trace(&dir, &[], &["./probe"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pid_of = |who: &str| printed_pid(&stdout, who);
    let seen = accesses(&log);
    let has = |kind: &str, path: String| seen.contains(&(kind.to_owned(), path));
    let at = |name: &str| dir.join(name).to_string_lossy().into_owned();
    // The answer changed (missing, then there): both are observations.
    assert!(has("missing", at("later")), "{seen:?}");
    assert!(has("stat", at("later")), "{seen:?}");
    assert!(has("stat", at("present")), "{seen:?}");
    // A fork child's `/proc/self` is its own, even though its parent looked first.
    for who in ["parent ", "child "] {
        assert!(
            has("stat", format!("/proc/{}/comm", pid_of(who))),
            "{who}: {seen:?}"
        );
    }
    // 4 000 repeated lookups in the parent and 100 in the child: a handful of records
    // (plus the loader's and libc's own), none notified.
    let records = count(&log, "fast_path_records");
    assert!(records < 100, "{records} records for ~10 distinct lookups");
    assert_eq!(notified(&log, "newfstatat"), 0);
    assert_eq!(notified(&log, "readlink"), 0);
}

/// Opens with O_CREAT as programs make them: a new file, an existing one truncated, mkstemp's
/// O_EXCL on a name that exists, a missing directory, a directory, a symlink to a new file;
/// prints each result so the traced run can be compared with the bare one.
const CREATE_PROBE: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
static void try(const char *path, int flags) {
    int fd = open(path, flags, 0644);
    printf("%s %d %d\n", path, fd >= 0, fd >= 0 ? 0 : errno);
    if (fd >= 0) close(fd);
}
int main(void) {
    try("new.txt", O_WRONLY | O_CREAT | O_TRUNC);
    try("old.txt", O_WRONLY | O_CREAT | O_TRUNC);
    try("old.txt", O_WRONLY | O_CREAT | O_EXCL);
    try("nodir/x.txt", O_WRONLY | O_CREAT);
    try("d", O_RDONLY | O_CREAT);
    try("link", O_WRONLY | O_CREAT);
    FILE *f = fopen("appended.txt", "a");
    if (!f) return 2;
    fclose(f);
    return 0;
}
"#;

#[test]
fn creating_opens_are_recorded_in_process_with_what_was_there_before() {
    let (_t, dir) = workdir();
    build_probe(&dir, CREATE_PROBE);
    let reset = || {
        for name in ["new.txt", "appended.txt", "target.txt"] {
            let _ = std::fs::remove_file(dir.join(name));
        }
        std::fs::write(dir.join("old.txt"), "old").expect("write");
    };
    std::fs::create_dir(dir.join("d")).expect("mkdir");
    std::os::unix::fs::symlink("target.txt", dir.join("link")).expect("symlink");
    reset();
    let bare = run_probe(&dir);
    reset();
    let (traced, log) = trace(&dir, &[], &["./probe"]);
    assert!(bare.status.success(), "{bare:?}");
    assert_eq!(
        String::from_utf8_lossy(&traced.stdout),
        String::from_utf8_lossy(&bare.stdout),
        "the opens must return what they return untraced"
    );
    let seen = accesses(&log);
    let has = |kind: &str, rel: &str| has_access(&seen, kind, &dir.join(rel));
    assert!(has("create", "new.txt"), "{seen:?}");
    assert!(has("write", "old.txt"), "{seen:?}");
    assert!(has("missing", "nodir/x.txt"), "{seen:?}");
    assert!(has("stat", "d"), "{seen:?}");
    // Through a symlink to a missing file: the target is created.
    assert!(
        has("create", "link") || has("create", "target.txt"),
        "{seen:?}"
    );
    assert!(has("create", "appended.txt"), "{seen:?}");
    assert!(
        !has("write", "new.txt") && !has("create", "old.txt"),
        "{seen:?}"
    );
    // None of them stopped the process: only the loader's opens are notified.
    assert!(
        notified(&log, "openat") <= 4,
        "{} notified openat",
        notified(&log, "openat")
    );
}

/// A program that looks up a new missing name and opens `input` (an event for fanotify's
/// reader, which reads the buffers while the task runs) for at least 300 ms of its own
/// clock, then prints how many names it looked up.
const LONG_PROBE: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
static long ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}
int main(void) {
    long start = ms(), n = 0;
    char name[64];
    struct stat st;
    do {
        snprintf(name, sizeof name, "missing-%ld", n++);
        stat(name, &st);
        int fd = open("input", O_RDONLY);
        if (fd >= 0) close(fd);
    } while (ms() - start < 300);
    printf("%ld\n", n);
    return 0;
}
"#;

#[test]
fn records_read_while_the_task_runs_are_all_in_the_log() {
    // The buffers are read during the run by fanotify's reader.
    if !vt_tests::root_or_skip("fanotify needs CAP_SYS_ADMIN") {
        return;
    }
    let (_t, dir) = workdir();
    build_probe(&dir, LONG_PROBE);
    std::fs::write(dir.join("input"), "x").expect("write");
    let (out, log) = trace(&dir, &[("VT_TIMINGS", "1")], &["./probe"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Its buffer was read during the run (fanotify's reader looks every 20 ms while events
    // come: the probe's 300 ms of opens make many looks).
    let looks: u32 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("vt timing: while running: preload buffers "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no early reading: {stderr}"));
    assert!(looks >= 2, "{looks} looks: {stderr}");
    // And every lookup it made is in the log once the task is over.
    let looked_up: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the probe's count");
    let seen = accesses(&log);
    let found_missing: std::collections::HashSet<&str> = seen
        .iter()
        .filter(|(kind, _)| kind == "missing")
        .map(|(_, path)| path.as_str())
        .collect();
    let missing = (0..looked_up)
        .filter(|n| {
            let path = dir.join(format!("missing-{n}"));
            !found_missing.contains(path.to_string_lossy().as_ref())
        })
        .count();
    assert_eq!(missing, 0, "of {looked_up} lookups");
    assert!(has_access(&seen, "read", &dir.join("input")), "{seen:?}");
    assert!(count(&log, "fast_path_records") > looked_up);
    assert!(
        log["gaps"].as_array().expect("gaps").is_empty(),
        "{}",
        log["gaps"]
    );
}

//! The tracer's correctness oracle: run a command under `strace -f` and under `vt trace`,
//! reduce both to the same shape, and compare.
//!
//! The shape is a set of `(Outcome, path)`: every path a path syscall named, whether the
//! lookup found something, and every directory listed. The strace side is parsed with its own
//! table of argument positions (not vt's), so a wrong position in vt's table cannot hide.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Found,
    Missing,
    Listed,
}

pub type Observed = BTreeSet<(Outcome, PathBuf)>;

/// Where a syscall's paths are: `(dirfd argument, path argument)` per path.
fn path_positions(name: &str) -> Option<&'static [(Option<usize>, usize)]> {
    Some(match name {
        "open" | "creat" | "stat" | "lstat" | "access" | "readlink" | "execve" | "chdir"
        | "mkdir" | "mknod" | "rmdir" | "unlink" | "truncate" | "utime" | "utimes" | "chmod"
        | "chown" | "lchown" | "statfs" | "getxattr" | "lgetxattr" | "listxattr" | "llistxattr"
        | "setxattr" | "lsetxattr" | "removexattr" | "lremovexattr" | "chroot" => &[(None, 0)],
        "openat" | "openat2" | "newfstatat" | "statx" | "faccessat" | "faccessat2"
        | "readlinkat" | "execveat" | "mkdirat" | "mknodat" | "unlinkat" | "utimensat"
        | "futimesat" | "fchmodat" | "fchmodat2" | "fchownat" | "name_to_handle_at" => {
            &[(Some(0), 1)]
        }
        "rename" | "link" => &[(None, 0), (None, 1)],
        "renameat" | "renameat2" | "linkat" => &[(Some(0), 1), (Some(2), 3)],
        "symlink" => &[(None, 1)],
        "symlinkat" => &[(Some(1), 2)],
        "inotify_add_watch" => &[(None, 1)],
        _ => return None,
    })
}

/// Runs `command` (absolute program path first) in `cwd` under strace and returns what it saw.
pub fn strace(command: &[String], cwd: &Path, env: &[(&str, &str)], scratch: &Path) -> Observed {
    let out = scratch.join("strace.txt");
    let status = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-y",
            "-s",
            "65535",
            "-e",
            "signal=none",
            "-e",
            "trace=%file,getdents64,getdents,fchdir",
            "-o",
        ])
        .arg(&out)
        .args(command)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .status()
        .expect("strace runs (apt-get install strace)");
    assert!(status.success(), "strace {command:?} failed: {status}");
    let text = std::fs::read(&out).expect("strace output");
    parse_strace(&text, cwd)
}

/// Runs `command` under `vt trace --json` and returns what it saw (plus the gap count).
pub fn vt_trace(
    vt: &Path,
    command: &[String],
    cwd: &Path,
    env: &[(&str, &str)],
    scratch: &Path,
) -> (Observed, usize) {
    let out = scratch.join("vt.json");
    let output = crate::trace_json_command(vt, &out, command)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .output()
        .expect("vt runs");
    assert!(
        output.status.success(),
        "vt trace {command:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let json = crate::read_trace_log(&out);
    let mut observed = Observed::new();
    for access in json["accesses"].as_array().expect("accesses") {
        let path = PathBuf::from(access["path"].as_str().expect("path"));
        let outcome = match access["kind"].as_str().expect("kind") {
            "missing" => Outcome::Missing,
            "read_dir" => Outcome::Listed,
            _ => Outcome::Found,
        };
        observed.insert((outcome, path));
    }
    let gaps = json["gaps"].as_array().map_or(0, Vec::len);
    (observed, gaps)
}

/// Paths excluded from the comparison, and why:
/// - `/proc/<pid>/…`, `/proc/self/…`: per-process pseudo files whose names contain pids
///   that differ between the two runs; never cache inputs.
pub fn excluded(path: &Path) -> bool {
    let mut components = path.components().skip(1);
    if components.next().is_some_and(|c| c.as_os_str() == "proc") {
        return components.next().is_some_and(|c| {
            let s = c.as_os_str().to_string_lossy();
            s == "self" || s == "thread-self" || s.chars().all(|ch| ch.is_ascii_digit())
        });
    }
    false
}

/// Replaces randomly named temp files (gcc's `/tmp/ccAbC123.s`) by a stable name.
pub fn stable_name(path: &Path) -> PathBuf {
    let s = path.to_string_lossy();
    if let Some(rest) = s.strip_prefix("/tmp/cc")
        && rest.len() >= 6
        && rest.is_char_boundary(6)
    {
        return PathBuf::from(format!("/tmp/ccXXXXXX{}", &rest[6..]));
    }
    path.to_path_buf()
}

pub fn normalize(observed: Observed) -> Observed {
    observed
        .into_iter()
        .filter(|(_, p)| !excluded(p))
        .map(|(o, p)| (o, stable_name(&p)))
        .collect()
}

/// Parses `strace -f -y` output.
pub fn parse_strace(text: &[u8], initial_cwd: &Path) -> Observed {
    let mut observed = Observed::new();
    let mut pending: HashMap<String, String> = HashMap::new();
    let mut cwd: HashMap<String, PathBuf> = HashMap::new();
    for raw_line in String::from_utf8_lossy(text).lines() {
        let Some((pid, rest)) = raw_line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        let line = if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some(idx) = resumed.find(" resumed>") else {
                continue;
            };
            let head = pending.remove(pid).unwrap_or_default();
            format!("{head}{}", &resumed[idx + " resumed>".len()..])
        } else if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(pid.to_owned(), head.to_owned());
            continue;
        } else {
            rest.to_owned()
        };
        let Some(open) = line.find('(') else { continue };
        let name = &line[..open];
        let Some((close, result)) = split_result(&line) else {
            continue;
        };
        let args = split_args(&line[open + 1..close]);
        let missing = result.starts_with("-1 ENOENT") || result.starts_with("-1 ENOTDIR");
        if result.starts_with("-1 ENAMETOOLONG") {
            continue;
        }
        // Learn the cwd from AT_FDCWD decorations; relative non-*at calls use it.
        for arg in &args {
            if let Some(dir) = arg
                .strip_prefix("AT_FDCWD<")
                .and_then(|d| d.strip_suffix('>'))
            {
                cwd.insert(pid.to_owned(), PathBuf::from(unescape(dir)));
            }
        }
        let base_cwd = cwd
            .get(pid)
            .cloned()
            .unwrap_or_else(|| initial_cwd.to_path_buf());
        // fchdir moves the cwd (vt reads /proc/PID/cwd instead of tracking it).
        if name == "fchdir" {
            if let (Some(dir), true) = (
                args.first().and_then(|a| decoration(a)),
                result.starts_with('0'),
            ) {
                cwd.insert(pid.to_owned(), dir);
            }
            continue;
        }
        // getcwd reports a path, it does not look one up (and vt does not trace it).
        if name == "getcwd" {
            continue;
        }
        if name == "getdents64" || name == "getdents" {
            if let Some(dir) = args.first().and_then(|a| decoration(a)) {
                observed.insert((Outcome::Listed, dir));
            }
            continue;
        }
        let positions = path_positions(name)
            .unwrap_or_else(|| panic!("oracle does not know syscall {name}: {line}"));
        for (index, (dirfd, path_arg)) in positions.iter().enumerate() {
            if missing && index > 0 {
                break; // a failed two-path call: the first path is the one that was missing
            }
            let Some(raw) = args.get(*path_arg).and_then(|a| quoted(a)) else {
                continue;
            };
            if raw.is_empty() {
                continue; // AT_EMPTY_PATH: acts on the fd, no lookup
            }
            let base = match dirfd {
                Some(i) => args
                    .get(*i)
                    .and_then(|a| decoration(a))
                    .unwrap_or_else(|| base_cwd.clone()),
                None => base_cwd.clone(),
            };
            let path = sandbox::trace::paths::absolute_clean(Some(&base), &raw);
            observed.insert((
                if missing {
                    Outcome::Missing
                } else {
                    Outcome::Found
                },
                path,
            ));
        }
        if name == "chdir"
            && !missing
            && result.starts_with('0')
            && let Some(raw) = args.first().and_then(|a| quoted(a))
        {
            cwd.insert(
                pid.to_owned(),
                sandbox::trace::paths::absolute_clean(Some(&base_cwd), &raw),
            );
        }
    }
    observed
}

/// Finds the `)` that closes the argument list and the result after ` = `. strace pads
/// short calls with spaces (`stat("x", 0x7f…)       = -1 ENOENT (…)`), and the errno text
/// has parentheses of its own, so look for the last ` = ` preceded by `)`.
fn split_result(line: &str) -> Option<(usize, &str)> {
    line.rmatch_indices(" = ").find_map(|(i, _)| {
        let before = line[..i].trim_end();
        before
            .ends_with(')')
            .then(|| (before.len() - 1, line[i + 3..].trim()))
    })
}

/// Splits an argument list at top-level commas (outside quotes, brackets and `<…>`).
fn split_args(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0i32;
    let mut in_string = false;
    let mut escaped = false;
    for ch in args.chars() {
        if in_string {
            current.push(ch);
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_string = false;
            }
            continue;
        }
        match ch {
            '"' => {
                in_string = true;
                current.push(ch);
            }
            '[' | '{' | '(' | '<' => {
                depth += 1;
                current.push(ch);
            }
            ']' | '}' | ')' | '>' => {
                depth -= 1;
                current.push(ch);
            }
            ',' if depth == 0 => {
                out.push(current.trim().to_owned());
                current.clear();
            }
            _ => current.push(ch),
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

/// The bytes of a quoted C string argument (`"…"`, possibly followed by `...`).
fn quoted(arg: &str) -> Option<Vec<u8>> {
    let inner = arg.strip_prefix('"')?;
    let end = inner.rfind('"')?;
    Some(unescape_bytes(&inner[..end]))
}

/// The path in an fd decoration: `3</a/b>` or `AT_FDCWD</a>`.
fn decoration(arg: &str) -> Option<PathBuf> {
    let start = arg.find('<')?;
    let inner = arg[start + 1..].strip_suffix('>')?;
    Some(PathBuf::from(unescape(inner)))
}

fn unescape(s: &str) -> OsString {
    OsString::from_vec(unescape_bytes(s))
}

fn unescape_bytes(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' || i + 1 >= bytes.len() {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let next = bytes[i + 1];
        match next {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'v' => out.push(0x0b),
            b'f' => out.push(0x0c),
            b'x' => {
                let hex =
                    std::str::from_utf8(&bytes[i + 2..(i + 4).min(bytes.len())]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 4;
                continue;
            }
            b'0'..=b'7' => {
                let mut value = 0u32;
                let mut j = i + 1;
                while j < bytes.len() && j < i + 4 && (b'0'..=b'7').contains(&bytes[j]) {
                    value = value * 8 + u32::from(bytes[j] - b'0');
                    j += 1;
                }
                out.push(value as u8);
                i = j;
                continue;
            }
            other => out.push(other),
        }
        i += 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resumed_calls_decorations_and_failures() {
        let text = br#"100 openat(AT_FDCWD</w>, "a.txt", O_RDONLY <unfinished ...>
101 execve("/usr/bin/x", ["x"], 0x0 /* 1 var */) = -1 ENOENT (No such file or directory)
100 <... openat resumed>) = 3</w/a.txt>
100 getdents64(3</w/dir>, 0x55 /* 4 entries */, 32768) = 112
100 newfstatat(3</w/a.txt>, "", {st_mode=S_IFREG|0644, ...}, AT_EMPTY_PATH) = 0
100 renameat2(AT_FDCWD</w>, "x,y", AT_FDCWD</w>, "z\303\251", RENAME_NOREPLACE) = 0
100 access("rel", F_OK)    = -1 ENOENT (No such file or directory)
"#;
        let got = parse_strace(text, Path::new("/start"));
        let want: Observed = [
            (Outcome::Found, PathBuf::from("/w/a.txt")),
            (Outcome::Missing, PathBuf::from("/usr/bin/x")),
            (Outcome::Listed, PathBuf::from("/w/dir")),
            (Outcome::Found, PathBuf::from("/w/x,y")),
            (Outcome::Found, PathBuf::from("/w/zé")),
            (Outcome::Missing, PathBuf::from("/w/rel")),
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want);
    }
}

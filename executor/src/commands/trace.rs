//! `vt trace -- CMD`: run a command traced and print its access log.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};

use anyhow::Context;
use sandbox::AccessLog;

use crate::cli::TraceArgs;
use crate::signals;

pub fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    signals::install()?;
    let (program, rest) = args.command.split_first().context("no command given")?;
    let child = match launch(program, rest)? {
        Some((launch, missing, at_ns)) => {
            let mut child = sandbox::trace::spawn_launch(launch)?;
            child.looked_up(missing, at_ns);
            child
        }
        None => {
            let mut command = Command::new(program);
            command.args(rest);
            signals::unblock_in_child(&mut command);
            sandbox::trace::spawn(command)?
        }
    };
    signals::register_tree(child.id());
    let pid = child.id();
    let (status, log) = child.wait()?;
    signals::unregister_tree(pid);
    if signals::received().is_some() {
        // The task died because vt was stopped: the log is incomplete and is not written.
        // The signal thread is still killing stragglers and exits with 128 + signal.
        signals::wait_for_shutdown();
    }

    let rendering = sandbox::timings::phase("trace: render");
    let rendered = if args.json {
        render_json(&log, status)?.into_bytes()
    } else {
        render_text(&log)
    };
    rendering.end();
    let _writing = sandbox::timings::phase("trace: write");
    match &args.output {
        Some(path) => std::fs::write(path, rendered)
            .with_context(|| format!("writing the access log to {}", path.display()))?,
        None => std::io::stderr().write_all(&rendered)?,
    }
    if !log.gaps.is_empty() {
        crate::say!(
            "vt trace: {} tracing gap(s): this run could not be fully observed",
            log.gaps.len()
        );
    }
    // vt exits next: freeing a build's 100 000 paths one by one would only delay that.
    std::mem::forget(log);
    Ok(exit_code(status))
}

/// The command as a [`sandbox::trace::launch::Launch`] with vt's stdio, environment and
/// working directory, when its program is an absolute path or is found on `PATH` by vt;
/// with the `PATH` entries it was missing from and when vt looked (the task's lookups, as
/// if it had made them). The child then execs one path, not one `execve` per `PATH` entry,
/// each a stop for the supervisor. `None`: a relative path, or a search only the child can
/// answer (`program::find`); started as a `Command` then.
fn launch(
    program: &std::ffi::OsString,
    rest: &[std::ffi::OsString],
) -> anyhow::Result<Option<(sandbox::trace::launch::Launch, Vec<std::path::PathBuf>, u64)>> {
    use std::os::fd::AsFd;
    let at_ns = sandbox::access::monotonic_ns();
    let (path, missing) = if std::path::Path::new(program).is_absolute() {
        (std::path::PathBuf::from(program), Vec::new())
    } else {
        let path_var = std::env::var_os("PATH");
        match sandbox::trace::program::find(program, path_var.as_deref()) {
            Some(found) => (found.path, found.missing),
            None => return Ok(None),
        }
    };
    // vt's stdout and stderr, for the child to take as its own. One that vt was started
    // without (`vt trace -- cmd >&-`) cannot be duplicated: the `Command` then passes on
    // exactly what vt has.
    let (Ok(stdout), Ok(stderr)) = (
        std::io::stdout().as_fd().try_clone_to_owned(),
        std::io::stderr().as_fd().try_clone_to_owned(),
    ) else {
        return Ok(None);
    };
    let launch = sandbox::trace::launch::Launch {
        program: path,
        arg0: program.clone(),
        args: rest.to_vec(),
        env: std::env::vars_os().collect(),
        cwd: std::env::current_dir().context("cannot read the working directory")?,
        stdin: None,
        stdout,
        stderr,
        inherit: Vec::new(),
    };
    Ok(Some((launch, missing, at_ns)))
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code as u8),
        (None, Some(signal)) => ExitCode::from(128u8.wrapping_add(signal as u8)),
        _ => ExitCode::FAILURE,
    }
}

/// One line per distinct access, sorted by path. Paths are written as their raw bytes, so a
/// non-UTF-8 name is shown exactly as the file system has it.
fn render_text(log: &AccessLog) -> Vec<u8> {
    let rows = log.distinct_by_path();
    let distinct = rows.len();
    // Sized once, and the kind padded by hand: a `format!` per row was a third of the
    // rendering of node's 6 000-row log.
    let mut out = Vec::with_capacity(
        rows.iter()
            .map(|(_, path)| path.as_os_str().len() + 13)
            .sum::<usize>()
            + 256,
    );
    for (kind, path) in rows {
        let kind = kind.as_str().as_bytes();
        out.extend_from_slice(kind);
        out.resize(out.len() + 12 - kind.len().min(11), b' ');
        out.extend_from_slice(path.as_os_str().as_bytes());
        out.push(b'\n');
    }
    for gap in &log.gaps {
        let line = format!(
            "gap         pid {} {}: {}\n",
            gap.pid, gap.syscall, gap.reason
        );
        out.extend_from_slice(line.as_bytes());
    }
    let mut top: Vec<_> = log.notified_by_syscall.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1));
    let top: Vec<String> = top
        .iter()
        .take(5)
        .map(|(name, count)| format!("{name} {count}"))
        .collect();
    let summary = format!(
        "vt trace: {} distinct accesses, {} notifications{}, {} fast-path records, {} gaps \
         ({} tracer)\n",
        distinct,
        log.notifications,
        if top.is_empty() {
            String::new()
        } else {
            format!(" ({})", top.join(", "))
        },
        log.fast_path_records,
        log.gaps.len(),
        log.tracer
    );
    out.extend_from_slice(summary.as_bytes());
    out
}

/// The log as JSON: the same document `serde_json::json!` would build (keys in
/// alphabetical order, as its map keeps them; accesses ordered by kind, then path), written
/// from borrowed rows instead of a tree of values: a node build's 2 000-file log took
/// ~10 ms more to render than to print as text.
fn render_json(log: &AccessLog, status: std::process::ExitStatus) -> anyhow::Result<String> {
    #[derive(serde::Serialize)]
    struct Row<'a> {
        kind: &'static str,
        path: std::borrow::Cow<'a, str>,
    }
    /// Fields in alphabetical order: the output is the same as before, byte for byte.
    #[derive(serde::Serialize)]
    struct Document<'a> {
        accesses: Vec<Row<'a>>,
        exit_code: Option<i32>,
        fast_path_records: u64,
        gaps: &'a [sandbox::access::Gap],
        notifications: u64,
        notified_by_syscall: &'a std::collections::BTreeMap<&'static str, u64>,
        signal: Option<i32>,
        tracer: &'a str,
    }
    let document = Document {
        accesses: log
            .distinct_by_kind()
            .into_iter()
            .map(|(kind, path)| Row {
                kind: kind.as_str(),
                path: path.to_string_lossy(),
            })
            .collect(),
        exit_code: status.code(),
        fast_path_records: log.fast_path_records,
        gaps: &log.gaps,
        notifications: log.notifications,
        notified_by_syscall: &log.notified_by_syscall,
        signal: status.signal(),
        tracer: &log.tracer,
    };
    Ok(serde_json::to_string_pretty(&document)? + "\n")
}

//! One module per subcommand; [`dispatch`] runs the one the command line names. The
//! argument types are in [`crate::cli`], which depends on nothing here.

pub mod cache;
pub mod run;
pub mod trace;
pub mod worker;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Runs the subcommand `cli` names.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    // Every command but `cache` traces tasks; refuse a kernel vt cannot trace on before it
    // runs anything (`cache` only reads and writes the store).
    if !matches!(cli.command, Command::Cache(_)) {
        sandbox::timings::time("kernel check", sandbox::kernel::check)?;
    }
    // What the command will need, started on other threads while it reads the workspace.
    if opens_the_cache(&cli.command) {
        crate::cache::rocksdb_init::start_in_background();
    }
    if traces(&cli.command) {
        if sandboxes_every_task(&cli.command) {
            sandbox::trace::probe_seccomp_in_background();
            sandbox::jail::network::make_ahead();
        } else if launches_tasks(&cli.command) {
            // The first task's filter, installed while the workspace is read.
            sandbox::trace::arm_in_background(ahead_of_the_first_task);
        } else {
            sandbox::trace::probe_seccomp_in_background();
        }
    }
    match cli.command {
        Command::Trace(args) => trace::run(args),
        Command::Run(args) => run::run(args),
        Command::Exec(args) => run::exec(args),
        Command::Cache(command) => cache::run(command),
        Command::Worker(args) => worker::run(args),
    }
}

/// Whether the command will open the cache, so RocksDB's static constructors may run on
/// another thread while it reads the workspace (`cache::rocksdb_init`).
fn opens_the_cache(command: &Command) -> bool {
    match command {
        Command::Run(args) => run_opens_the_cache(args),
        Command::Exec(crate::cli::ExecArgs { common, .. }) => !common.no_cache,
        Command::Cache(_) | Command::Worker(_) => true,
        Command::Trace(_) => false,
    }
}

/// Arms the first task's thread before the command line is parsed (clap takes ~0.2 ms of a
/// lone `vt exec`, and the task's start waited for the thread it then armed), when the raw
/// arguments already say that [`dispatch`] will arm it: `vt run` or `vt exec`, tracing,
/// without `--sandbox` (with `--sandbox --network` dispatch arms it too; that case is left
/// to it). Only the arguments before `--` are looked at (the rest are the command's). A
/// guess the parsed command line contradicts costs a thread that is never used; `dispatch`
/// decides as before, and arming an armed vt does nothing.
pub fn arm_before_parsing(args: &[std::ffi::OsString]) {
    if arms_before_parsing(args) {
        sandbox::trace::arm_in_background(ahead_of_the_first_task);
    }
}

fn arms_before_parsing(args: &[std::ffi::OsString]) -> bool {
    let ours = args
        .iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .map(|a| a.as_encoded_bytes());
    let mut launches = false;
    for (i, arg) in ours.enumerate() {
        if i == 0 {
            launches = arg == b"run" || arg == b"exec";
            continue;
        }
        let no_task =
            arg == b"--dry-run" || arg == b"--last-details" || arg.starts_with(b"--graph");
        let help = arg == b"-h" || arg == b"--help";
        if arg == b"--sandbox" || no_task || help {
            return false;
        }
    }
    launches
}

/// What the armed thread does for the first task's start before arming (see
/// `sandbox::trace::arm_in_background`): the IPC server's thread and the signal thread.
fn ahead_of_the_first_task() {
    crate::ipc::warm();
    // Failing here, it is started (or its failure reported) by `signals::install`.
    let _ = crate::signals::start_thread();
}

/// Whether the command starts its tasks through `sandbox::trace::spawn_launch`, which takes
/// an armed thread (`vt trace` and the worker start theirs as a `Command`).
fn launches_tasks(command: &Command) -> bool {
    matches!(command, Command::Run(_) | Command::Exec(_))
}

/// Whether the command line puts every task in the sandbox without the host's network, so
/// the first one's network namespace may be made while the workspace is read
/// (`sandbox::jail::network`).
fn sandboxes_every_task(command: &Command) -> bool {
    match command {
        Command::Run(crate::cli::RunArgs { common, .. })
        | Command::Exec(crate::cli::ExecArgs { common, .. }) => common.sandbox && !common.network,
        _ => false,
    }
}

/// Whether the command will start traced tasks.
fn traces(command: &Command) -> bool {
    match command {
        Command::Run(args) => run_traces(args),
        Command::Exec(_) | Command::Trace(_) | Command::Worker(_) => true,
        Command::Cache(_) => false,
    }
}

/// Whether `vt run` with `args` starts traced tasks (not a dry run, a graph, or the last
/// run's details).
fn run_traces(args: &crate::cli::RunArgs) -> bool {
    !args.dry_run && args.graph.is_none() && !args.last_details
}

/// Whether `vt run` with `args` opens the cache: what [`opens_the_cache`] says of it, for
/// `run` itself, which has its arguments only.
pub(super) fn run_opens_the_cache(args: &crate::cli::RunArgs) -> bool {
    run_traces(args) && !args.common.no_cache
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_tasks_thread_is_armed_before_parsing_only_where_dispatch_would_arm_it() {
        let arms = |line: &str| {
            let args: Vec<std::ffi::OsString> = std::iter::once("vt")
                .chain(line.split(' '))
                .map(Into::into)
                .collect();
            arms_before_parsing(&args)
        };
        assert!(arms("exec --no-cache -- true"));
        assert!(arms("run build -r -j2"));
        // The command's own `--sandbox` is not vt's.
        assert!(arms("exec -- tool --sandbox"));
        for line in [
            "exec --sandbox -- true",
            "run build --sandbox",
            "run build --dry-run",
            "run build --graph=dot",
            "run --last-details",
            "run --help",
            "cache ls",
            "trace -- true",
            "worker --help",
        ] {
            assert!(!arms(line), "{line}");
        }
    }
}

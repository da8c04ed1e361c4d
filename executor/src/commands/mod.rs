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
        Command::Run(crate::cli::RunArgs { common, .. })
        | Command::Exec(crate::cli::ExecArgs { common, .. }) => traces(command) && !common.no_cache,
        Command::Cache(_) | Command::Worker(_) => true,
        Command::Trace(_) => false,
    }
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
        Command::Run(args) => !args.dry_run && args.graph.is_none() && !args.last_details,
        Command::Exec(_) | Command::Trace(_) | Command::Worker(_) => true,
        Command::Cache(_) => false,
    }
}

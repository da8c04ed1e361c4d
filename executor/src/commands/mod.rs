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
    match cli.command {
        Command::Trace(args) => trace::run(args),
        Command::Run(args) => run::run(args),
        Command::Exec(args) => run::exec(args),
        Command::Cache(command) => cache::run(command),
        Command::Worker(args) => worker::run(args),
    }
}

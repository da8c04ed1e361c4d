//! Command-line interface.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands;

/// vt — a task runner whose cache sees what each task really read and wrote.
#[derive(Debug, Parser)]
#[command(name = "vt", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command and print every file it (and every process it starts) read, wrote,
    /// listed, executed or looked for without finding.
    ///
    /// The exit status is the command's (128 + N when it was killed by signal N).
    Trace(TraceArgs),
}

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// Print the access log as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the access log to FILE instead of standard error.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<OsString>,
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Trace(args) => commands::trace::run(args),
    }
}

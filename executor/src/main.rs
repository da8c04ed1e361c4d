use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Files changed before vt started were changed before any task it starts.
    executor::cache::guard::settled();
    let cli = executor::cli::Cli::parse();
    match executor::commands::dispatch(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("vt: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

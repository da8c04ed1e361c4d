use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = executor::cli::Cli::parse();
    match executor::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("vt: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

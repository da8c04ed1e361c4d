//! A runner-aware tool for the end-to-end suites: one IPC call per invocation, through the
//! Rust client, printing what it got.
//!
//! `vt-tool get-env NAME [--untracked]` · `get-envs GLOB` · `ignore-input PATH` ·
//! `ignore-output PATH` · `disable-cache` · `garbage` (sends an undecodable Hello).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("vt-tool: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let arg = |i: usize| args.get(i).cloned().ok_or("missing argument");
    if arg(0)? == "garbage" {
        let raw: i32 = std::env::var(wire::IPC_FD_ENV)
            .map_err(|_| "VT_IPC_FD is not set")?
            .parse()
            .map_err(|_| "VT_IPC_FD is not a number")?;
        let shared = wire::channel::Channel::dup_inherited(raw).map_err(|e| e.to_string())?;
        let (mine, theirs) = wire::channel::pair().map_err(|e| e.to_string())?;
        let theirs = theirs.into_fd();
        shared
            .send(
                b"\xff\xff\xff not a hello",
                Some(std::os::fd::AsFd::as_fd(&theirs)),
            )
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 4096];
        let _ = mine.recv(&mut buf);
        return Ok(());
    }
    let client = wire::Client::from_env().map_err(|e| e.to_string())?;
    match arg(0)?.as_str() {
        "get-env" => {
            let tracked = args.get(2).map(String::as_str) != Some("--untracked");
            let value = client
                .get_env(arg(1)?, tracked)
                .map_err(|e| e.to_string())?;
            println!(
                "{}",
                value.map_or("(unset)".into(), |v| v.to_string_lossy().into_owned())
            );
        }
        "get-envs" => {
            for (name, value) in client.get_envs(&arg(1)?, true).map_err(|e| e.to_string())? {
                println!("{}={}", name.to_string_lossy(), value.to_string_lossy());
            }
        }
        "ignore-input" => client.ignore_input(arg(1)?).map_err(|e| e.to_string())?,
        "ignore-output" => client.ignore_output(arg(1)?).map_err(|e| e.to_string())?,
        "disable-cache" => client.disable_cache().map_err(|e| e.to_string())?,
        other => return Err(format!("unknown command {other:?}")),
    }
    Ok(())
}

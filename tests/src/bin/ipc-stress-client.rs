//! A tool process for the IPC concurrency suite: makes N `getEnv` requests through
//! `VT_IPC_FD` and checks that every reply is the one meant for *this* process.
//! Exit 0 on success, 1 with a message on the first wrong reply.

use std::process::ExitCode;

fn main() -> ExitCode {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let client = match wire::Client::from_env() {
        Ok(client) if client.is_attached() => client,
        Ok(_) => {
            eprintln!("ipc-stress-client: VT_IPC_FD is not set");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("ipc-stress-client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pid = std::process::id();
    for i in 0..count {
        let name = format!("K{pid}_{i}");
        let expected = format!("{pid}:{name}");
        match client.get_env(&name, true) {
            Ok(Some(value)) if value == expected.as_str() => {}
            other => {
                eprintln!(
                    "ipc-stress-client {pid}: request {i} got {other:?}, expected {expected:?}"
                );
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

//! Benchmark tool: times N `getEnv` round trips through `VT_IPC_FD` (run it under
//! `vt exec --no-cache -- ipc-bench-client N`) and prints the mean in microseconds.

use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let count: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let client = match wire::Client::from_env() {
        Ok(client) if client.is_attached() => client,
        _ => {
            eprintln!("ipc-bench-client: run me inside vt (VT_IPC_FD is not set)");
            return ExitCode::FAILURE;
        }
    };
    // The first call opens the private channel; time the steady state.
    let _ = client.get_env("HOME", false);
    let start = Instant::now();
    for _ in 0..count {
        if client.get_env("HOME", false).is_err() {
            eprintln!("ipc-bench-client: a call failed");
            return ExitCode::FAILURE;
        }
    }
    let micros = start.elapsed().as_secs_f64() * 1e6 / f64::from(count);
    println!("rust getEnv round trip: {micros:.1} µs ({count} calls)");
    ExitCode::SUCCESS
}

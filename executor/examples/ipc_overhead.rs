//! Benchmark: what a task's IPC server costs when no tool talks to it — creating the
//! socketpair, starting the server thread and runtime, and waiting for it to finish once the
//! task end is closed. `cargo run --release -p vt-executor --example ipc_overhead`.

use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let rounds = 1000;
    let start = Instant::now();
    for _ in 0..rounds {
        let mut ipc = executor::ipc::TaskIpc::start()?;
        ipc.spawned();
        let report = ipc.finish();
        anyhow::ensure!(report.errors.is_empty(), "{:?}", report.errors);
    }
    let micros = start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    println!("idle IPC server per task (start + finish, no client): {micros:.0} µs");
    Ok(())
}

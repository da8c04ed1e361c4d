//! `vt worker`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::WorkerArgs;
use crate::remote_exec::worker;

pub fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let bot_id = args.bot_id.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "vt".into());
        format!("{host}-{}", std::process::id())
    });
    let sandbox = !args.no_sandbox;
    if sandbox {
        sandbox::jail::probe().context(
            "this host cannot build vt's sandbox, which workers run actions in; fix the host \
             (see the message above) or run the worker with --no-sandbox",
        )?;
        crate::say!("vt worker: sandbox: {}", sandbox::jail::describe_host());
    }
    let work_dir = args
        .work_dir
        .unwrap_or_else(|| PathBuf::from("/var/tmp/vt-worker").join(&bot_id));
    crate::signals::install()?;
    worker::run(worker::Options {
        server: args.server,
        work_dir,
        bot_id,
        sandbox,
        max_leases: args.max_leases,
        jobs: args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1),
        keepalive: std::time::Duration::from_secs(args.keepalive.max(1)),
    })?;
    Ok(ExitCode::SUCCESS)
}

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Large buffers (a task's 256 KiB fanotify read buffer, the IPC server's 128 KiB
    // message buffer, made for every task) come from fresh mappings, whose pages are only
    // faulted in where something is written: without a fixed threshold, glibc raises it
    // after the first such buffer is freed, and every later one is carved from the heap and
    // zeroed in full (~100 page faults per task, measured with `perf stat`).
    // SAFETY: mallopt only sets an allocator parameter; called before any thread exists.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
    // Files changed before vt started were changed before any task it starts.
    executor::cache::guard::settled();
    let main = sandbox::timings::phase("main");
    executor::commands::arm_before_parsing(&std::env::args_os().collect::<Vec<_>>());
    let cli = sandbox::timings::time("command line", executor::cli::Cli::parse);
    let code = match executor::commands::dispatch(cli) {
        Ok(code) => code,
        Err(error) => {
            executor::say!("vt: error: {error:#}");
            ExitCode::from(2)
        }
    };
    main.end();
    sandbox::timings::report();
    exit_now(code)
}

/// Exits without running the C++ static destructors RocksDB registered (its option tables:
/// ~0.3 ms at every exit, a tenth of vt's start-up cost). Everything vt writes is written by
/// now: every database is closed, every file closed; only stdout's buffer is left to flush.
fn exit_now(code: ExitCode) -> ExitCode {
    use std::io::Write;
    let Some(raw) = (0..=u8::MAX).find(|n| ExitCode::from(*n) == code) else {
        return code;
    };
    if std::io::stdout().flush().is_err() {
        // Let std report it as it would.
        return code;
    }
    // SAFETY: _exit ends the process; no Rust state is used after it.
    unsafe { libc::_exit(i32::from(raw)) }
}

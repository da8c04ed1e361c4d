//! 32 real processes share one inherited task socket, each making 1000 requests on its
//! own private channel; every reply must reach the process that asked.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Arc, Mutex};

use wire::server::{self, Handler, Peer, ProtocolError, Server};
use wire::{Request, Response};

#[derive(Default)]
struct PerPid {
    counts: Mutex<HashMap<u32, usize>>,
    errors: Mutex<Vec<String>>,
}

impl Handler for PerPid {
    fn handle(&self, peer: &Peer, request: Request) -> Response {
        *self
            .counts
            .lock()
            .expect("lock")
            .entry(peer.pid)
            .or_default() += 1;
        match request {
            // The reply names the *kernel-reported* peer pid: a reply delivered to the wrong
            // process fails that process's check.
            Request::GetEnv { name, .. } => {
                let mut value = OsString::from(format!("{}:", peer.pid));
                value.push(name);
                Response::Env(Some(value))
            }
            _ => Response::Done,
        }
    }

    fn protocol_error(&self, _: Option<&Peer>, error: &ProtocolError) {
        self.errors.lock().expect("lock").push(error.to_string());
    }
}

#[test]
fn thirty_two_processes_each_get_only_their_own_replies() {
    const PROCESSES: usize = 32;
    const REQUESTS: usize = 1000;
    let (runner_end, task_end) = server::endpoints().expect("socketpair");
    let handler = Arc::new(PerPid::default());
    let server_handler = Arc::clone(&handler);
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            Server::new(runner_end)
                .expect("server")
                .serve(server_handler)
                .await
        });
    });

    let raw = task_end.as_raw_fd();
    let mut children = Vec::new();
    for _ in 0..PROCESSES {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ipc-stress-client"));
        command
            .arg(REQUESTS.to_string())
            .env(wire::IPC_FD_ENV, raw.to_string());
        // SAFETY: the closure only calls fcntl, which is async-signal-safe.
        unsafe { command.pre_exec(move || wire::channel::inherit_across_exec(raw)) };
        children.push(command.spawn().expect("spawn client"));
    }
    drop(task_end);
    let mut pids = Vec::new();
    for mut child in children {
        pids.push(child.id());
        let status = child.wait().expect("wait");
        assert!(
            status.success(),
            "client {} failed: {status}",
            pids.last().copied().unwrap_or(0)
        );
    }
    server
        .join()
        .expect("server ends once every client has gone");

    let counts = handler.counts.lock().expect("lock");
    assert_eq!(counts.len(), PROCESSES, "one peer per process");
    for pid in pids {
        assert_eq!(counts.get(&pid), Some(&REQUESTS), "pid {pid}");
    }
    assert!(
        handler.errors.lock().expect("lock").is_empty(),
        "{:?}",
        handler.errors.lock().expect("lock")
    );
}

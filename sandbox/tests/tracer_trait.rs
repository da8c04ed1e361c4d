//! The Linux backend through the portable `Tracer` trait (the one the macOS and Windows
//! fallbacks implement): same log as calling it directly.

use std::process::Command;

use access_log::{AccessKind, Tracer};

#[test]
fn the_linux_backend_traces_through_the_trait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = std::fs::canonicalize(dir.path()).expect("canonical");
    let input = dir.join("input.txt");
    std::fs::write(&input, "hello").expect("write");
    let tracer: &dyn Tracer = &sandbox::LinuxTracer;
    let mut command = Command::new("cat");
    command
        .arg(&input)
        .arg(dir.join("missing.txt"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let traced = tracer.spawn(command).expect("spawn");
    assert!(traced.id() > 0);
    let (status, log) = traced.wait().expect("wait");
    assert!(!status.success(), "cat of a missing file fails");
    let distinct = log.distinct();
    assert!(
        distinct.contains(&(AccessKind::Read, input)),
        "{distinct:?}"
    );
    assert!(
        distinct.contains(&(AccessKind::Missing, dir.join("missing.txt"))),
        "{distinct:?}"
    );
    assert!(["seccomp", "ptrace"].contains(&tracer.name()));
}

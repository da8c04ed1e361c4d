#!/usr/bin/env python3
"""IPC benchmarks: a getEnv round trip from Rust and from Node inside `vt exec`, and the
per-task cost of an IPC server nobody talks to."""
import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    target = Path(os.environ.get("CARGO_TARGET_DIR", "/var/cache/vt-ci/target"))
    parser.add_argument("--vt", default=str(target / "release" / "vt"))
    parser.add_argument("--client", default=str(target / "release" / "ipc-bench-client"))
    args = parser.parse_args()
    repo = Path(__file__).resolve().parent.parent
    work = Path(tempfile.mkdtemp(prefix="vt-bench-ipc-"))
    (work / "package.json").write_text('{"name":"ipc-bench","private":true}')
    env = dict(os.environ, VT_CACHE_DIR=str(work / "cache"))
    rust = subprocess.run([args.vt, "exec", "--no-cache", "--", args.client, "20000"],
                          cwd=work, env=env, check=True, capture_output=True, text=True).stdout.strip()
    node_script = work / "bench.cjs"
    node_script.write_text(
        f"const c = require({str(repo / 'node-client' / 'index.cjs')!r});\n"
        "c.getEnv('HOME', { tracked: false });\n"
        "const n = 20000, t = process.hrtime.bigint();\n"
        "for (let i = 0; i < n; i++) c.getEnv('HOME', { tracked: false });\n"
        "const us = Number(process.hrtime.bigint() - t) / 1000 / n;\n"
        "console.log(`node getEnv round trip: ${us.toFixed(1)} µs (${n} calls)`);\n")
    node = subprocess.run([args.vt, "exec", "--no-cache", "--", "node", str(node_script)],
                          cwd=work, env=env, check=True, capture_output=True, text=True).stdout.strip()
    idle = subprocess.run(["cargo", "run", "--quiet", "--locked", "--release", "-p", "vt-executor",
                           "--example", "ipc_overhead"], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()
    print("| measurement | result |\n|---|---|")
    for line in (rust, node, idle):
        name, _, value = line.partition(":")
        print(f"| {name} | {value.strip()} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Fully cached `vt run build -r` of the 100-package workspace (bench/cached_run.py's), with
every output restored from the local cache versus from the remote cache (BuildGrid 0.4.4 on
loopback, a fresh empty local cache each round), rounds interleaved."""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cached_run import generate
import buildgrid
from common import parse_args, save_results


def main() -> int:
    args = parse_args(rounds=5)
    if not buildgrid.installed():
        return 1
    work = Path(tempfile.mkdtemp(prefix="vt-bench-remote-"))
    root = work / "ws"
    generate(root)
    server, url = buildgrid.start(work)
    try:
        def run(cache_dir: Path, mode: str):
            for dist in root.glob("packages/*/dist"):
                shutil.rmtree(dist)
            env = dict(os.environ, VT_CACHE_DIR=str(cache_dir), VT_REMOTE_CACHE=url)
            env.pop("CI", None)
            start = time.perf_counter()
            out = subprocess.run([args.vt, "run", "build", "-r", "--json", "--remote-cache", mode],
                                 cwd=root, env=env, check=True, capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            summary = json.loads(out.stdout[out.stdout.index("{\n"):])["summary"]
            return elapsed, summary

        _, summary = run(work / "cache-a", "read-write")  # fills the local and remote caches
        assert summary["cached"] == 0, summary
        local, remote = [], []
        for i in range(args.rounds):
            elapsed, summary = run(work / "cache-a", "off")
            assert summary["cached"] == 100, summary
            local.append(elapsed)
            elapsed, summary = run(work / f"cache-empty-{i}", "read")
            assert summary["cached"] == 100, summary
            remote.append(elapsed)
    finally:
        server.terminate()
        server.wait()
    local_s, remote_s = statistics.median(local), statistics.median(remote)
    print("| 100 packages, every output restored | median (s) |")
    print("|---|---|")
    print(f"| from the local cache | {local_s:.2f} |")
    print(f"| from the remote cache (BuildGrid on loopback, empty local cache) | {remote_s:.2f} |")
    print(f"| remote / local | {remote_s / local_s:.1f}× |")
    save_results("remote", {"rounds": args.rounds, "local_s": local, "remote_s": remote})
    return 0


if __name__ == "__main__":
    sys.exit(main())

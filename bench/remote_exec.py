#!/usr/bin/env python3
"""Worker throughput: the 100-package workspace (bench/cached_run.py's) with every task
executed on two `vt worker`s of a BuildGrid 0.4.4 engine (Execution + Bots on a SQL
scheduler over a PostgreSQL started here), against the same run executed locally with
`-j 2`. Every round edits all 100 sources first, so nothing is cached anywhere (neither
vt's caches nor the engine's action cache); rounds interleave remote and local."""
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
    args = parse_args(rounds=3)
    if not buildgrid.installed():
        return 1
    work = Path(tempfile.mkdtemp(prefix="vt-bench-remote-exec-"))
    work.chmod(0o755)  # PostgreSQL runs as `postgres` and must reach its data directory
    remote_root, local_root = work / "remote" / "ws", work / "local" / "ws"
    generate(remote_root)
    generate(local_root)
    pg_bin, sql = buildgrid.start_postgres(work)
    server, url = buildgrid.start(work, sql)
    procs = [server]
    try:
        logs = []
        for bot in ("w1", "w2"):
            log = open(work / f"{bot}.log", "w")
            logs.append(work / f"{bot}.log")
            procs.append(subprocess.Popen([args.vt, "worker", "--server", url, "--bot-id", bot,
                                           "--work-dir", str(work / bot)], stdout=log, stderr=log))

        def run(root: Path, extra: list[str], round_no: int):
            for src in root.glob("packages/*/src/index.js"):
                src.write_text(src.read_text().split("\n// round")[0] + f"\n// round {round_no}\n")
            env = dict(os.environ, VT_CACHE_DIR=str(root.parent / "cache"), VT_REMOTE_EXEC=url)
            env.pop("CI", None)
            start = time.perf_counter()
            out = subprocess.run([args.vt, "run", "build", "-r", "--json", *extra], cwd=root, env=env,
                                 check=True, capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            summary = json.loads(out.stdout[out.stdout.index("{\n"):])["summary"]
            for line in out.stderr.splitlines():
                if "running locally" in line:
                    print(line, file=sys.stderr)
            return elapsed, summary

        remote, local = [], []
        for i in range(args.rounds):
            elapsed, summary = run(remote_root, ["--remote-exec", "-j", "8"], i)
            assert summary["remote"] == 100 and summary["cached"] == 0, summary
            remote.append(elapsed)
            elapsed, summary = run(local_root, ["-j", "2"], i)
            assert summary["cached"] == 0, summary
            local.append(elapsed)
        leases = [log.read_text().count("done: exit") for log in logs]
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait()
        buildgrid.stop_postgres(pg_bin, work)
    remote_s, local_s = statistics.median(remote), statistics.median(local)
    print(f"rounds: {args.rounds}; leases per worker over all rounds: {leases}\n")
    print("| 100 tasks, nothing cached | median (s) | tasks/s |")
    print("|---|---|---|")
    print(f"| 2 vt workers (BuildGrid on loopback, `--remote-exec -j 8`) | {remote_s:.2f} | {100 / remote_s:.1f} |")
    print(f"| locally (`-j 2`) | {local_s:.2f} | {100 / local_s:.1f} |")
    save_results("remote_exec", {"rounds": args.rounds, "remote_s": remote, "local_s": local,
                                 "leases": leases})
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Worker throughput: the 100-package workspace (bench/cached_run.py's) with every task
executed on two `vt worker`s of a BuildGrid 0.4.4 engine (Execution + Bots on a SQL
scheduler over a PostgreSQL started here), against the same run executed locally with
`-j 2`. Every round edits all 100 sources first, so nothing is cached anywhere (neither
vt's caches nor the engine's action cache); rounds interleave remote and local."""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cached_run import generate
from common import parse_args, save_results

VENV = Path("/var/cache/vt-ci/buildgrid/venv")
BGD = Path(os.environ.get("VT_BUILDGRID", VENV / "bin" / "bgd"))

CONFIG = """server:
  - !channel
    address: "127.0.0.1:{port}"
    insecure-mode: true
# The default (5 per core) is less than 8 clients' Execute streams plus the bots' polls.
thread-pool-size: 64
authorization:
  method: none
connections:
  - !sql-connection &sql
    connection-string: {sql}
    pool-size: 10
    max-overflow: 10
storages:
  - !disk-storage &cas
    path: {cas}
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: false
schedulers:
  - !sql-scheduler &sched
    sql: *sql
    storage: *cas
    action-cache: *ac
    poll-interval: 0.05
    bot-poll-interval: 0.05
    assigners:
      - !priority-age-assigner
        count: 1
        interval: 0.05
        priority-assignment-percentage: 100
instances:
  - name: ''
    services:
      - !action-cache
        cache: *ac
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
      - !execution
        scheduler: *sched
      - !bots
        scheduler: *sched
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, what: str) -> None:
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on {port}")


def start_postgres(work: Path) -> tuple[Path, str]:
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not bins:
        raise SystemExit("PostgreSQL is not installed (.ci/env.sh installs it)")
    bin_dir = bins[-1].parent
    pg = work / "pg"
    pg.mkdir()
    subprocess.run(["chown", "-R", "postgres:postgres", str(pg)], check=True)
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run(as_pg + [str(bin_dir / "initdb"), "--auth=trust", "-U", "bgd", "-D", str(pg / "data")],
                   check=True, capture_output=True, cwd="/")
    port = free_port()
    subprocess.run(as_pg + [str(bin_dir / "pg_ctl"), "-D", str(pg / "data"), "-l", str(pg / "log"), "-w",
                            "-o", f"-p {port} -k {pg} -c listen_addresses=127.0.0.1 -c fsync=off",
                            "start"], check=True, capture_output=True, cwd="/")
    url = f"postgresql+psycopg2://bgd@127.0.0.1:{port}/postgres"
    subprocess.run([str(VENV / "bin" / "python"), "-c",
                    "from buildgrid.server.sql.models import Base\n"
                    "from sqlalchemy import create_engine\n"
                    f"Base.metadata.create_all(create_engine({url!r}))"], check=True)
    return bin_dir, url


def main() -> int:
    args = parse_args(rounds=3)
    if not BGD.exists():
        print(f"BuildGrid is not installed at {BGD} (.ci/env.sh installs it)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="vt-bench-remote-exec-"))
    work.chmod(0o755)  # PostgreSQL runs as `postgres` and must reach its data directory
    remote_root, local_root = work / "remote" / "ws", work / "local" / "ws"
    generate(remote_root)
    generate(local_root)
    pg_bin, sql = start_postgres(work)
    port = free_port()
    (work / "cas").mkdir()
    (work / "bgd.yml").write_text(CONFIG.format(port=port, sql=sql, cas=work / "cas"))
    procs = [subprocess.Popen([str(BGD), "server", "start", str(work / "bgd.yml")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    url = f"grpc://127.0.0.1:{port}"
    try:
        wait_port(port, "BuildGrid")
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
        subprocess.run(["runuser", "-u", "postgres", "--", str(pg_bin / "pg_ctl"), "-D",
                        str(work / "pg" / "data"), "-m", "immediate", "stop"], capture_output=True, cwd="/")
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

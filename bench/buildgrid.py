"""BuildGrid 0.4.4 for the remote benchmarks (the venv `.ci/env.sh` installs): a cache server
(action cache + CAS on disk), or a whole engine (plus Execution and Bots on a SQL scheduler
over a PostgreSQL started here from Debian's binaries)."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

VENV = Path("/var/cache/vt-ci/buildgrid/venv")
BGD = Path(os.environ.get("VT_BUILDGRID", VENV / "bin" / "bgd"))

SERVER = """server:
  - !channel
    address: "127.0.0.1:{port}"
    insecure-mode: true
# The default (5 per core) is less than 8 clients' Execute streams plus the bots' polls.
thread-pool-size: 64
authorization:
  method: none
"""

STORAGE = """storages:
  - !disk-storage &cas
    path: {cas}
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: false
"""

SCHEDULER = """connections:
  - !sql-connection &sql
    connection-string: {sql}
    pool-size: 10
    max-overflow: 10
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
"""

CACHE_SERVICES = """instances:
  - name: ''
    services:
      - !action-cache
        cache: *ac
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
"""

ENGINE_SERVICES = CACHE_SERVICES + """      - !execution
        scheduler: *sched
      - !bots
        scheduler: *sched
"""


def installed() -> bool:
    """Whether BuildGrid is there; says where it was looked for if not."""
    if BGD.exists():
        return True
    print(f"BuildGrid is not installed at {BGD} (.ci/env.sh installs it)", file=sys.stderr)
    return False


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
    """A throwaway cluster in work/pg with BuildGrid's tables; (its bin dir, its URL)."""
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


def stop_postgres(bin_dir: Path, work: Path) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", str(bin_dir / "pg_ctl"), "-D",
                    str(work / "pg" / "data"), "-m", "immediate", "stop"], capture_output=True, cwd="/")


def start(work: Path, sql: str | None = None) -> tuple[subprocess.Popen, str]:
    """BuildGrid in `work` on a free port: a cache, or with `sql` a whole engine."""
    port = free_port()
    (work / "cas").mkdir()
    config = SERVER.format(port=port) + STORAGE.format(cas=work / "cas")
    config += SCHEDULER.format(sql=sql) + ENGINE_SERVICES if sql else CACHE_SERVICES
    (work / "bgd.yml").write_text(config)
    server = subprocess.Popen([str(BGD), "server", "start", str(work / "bgd.yml")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, "BuildGrid")
    return server, f"grpc://127.0.0.1:{port}"

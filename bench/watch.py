#!/usr/bin/env python3
"""`vt run build -r --watch` (issue 23): what an idle watch costs, and how soon an edit to a
read file starts the rerun.

The workspace: 20 packages, each `build` listing its `src/` and reading its 20 files
(`cat src/*.js`), package i depending on package i-1. The task's first step prints
`date +%s%N`, so the latency is measured from the moment before the benchmark writes the
file to the moment the rerun's task process runs, on the machine's one clock. The edits go
to the last package (one task reruns) and to the first (all 20 rerun, the first starts).

Idle: after the first round, the vt process's CPU time (utime + stime from /proc/PID/stat)
over a quiet period, and the number of directories it watches.
"""
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import queue
import time
from pathlib import Path

from common import parse_args

PACKAGES = 20
FILES = 20


def workspace(root: Path) -> None:
    (root / "package.json").write_text('{"name":"root","private":true,"workspaces":["packages/*"]}')
    for i in range(PACKAGES):
        pkg = root / "packages" / f"p{i:02}"
        (pkg / "src").mkdir(parents=True)
        deps = f'"p{i - 1:02}":"*"' if i > 0 else ""
        # The timestamp goes to stdout first: nothing of the task runs before it.
        build = "date +%s%N && mkdir -p dist && cat src/*.js > dist/out.js"
        (pkg / "package.json").write_text(
            f'{{"name":"p{i:02}","dependencies":{{{deps}}},"scripts":{{"build":"{build}"}}}}')
        for f in range(FILES):
            (pkg / "src" / f"m{f:02}.js").write_text(f"export const v{f} = {f};\n" * 20)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


class Watch:
    def __init__(self, vt: str, root: Path, env: dict):
        self.proc = subprocess.Popen([vt, "run", "build", "-r", "--watch"], cwd=root, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: "queue.Queue[tuple[str, str]]" = queue.Queue()
        for tag, pipe in (("out", self.proc.stdout), ("err", self.proc.stderr)):
            threading.Thread(target=self._read, args=(tag, pipe), daemon=True).start()

    def _read(self, tag, pipe):
        for line in pipe:
            self.lines.put((tag, line.rstrip("\n")))

    def until(self, predicate):
        seen = []
        while True:
            tag, line = self.lines.get(timeout=120)
            seen.append((tag, line))
            if predicate(tag, line):
                return seen


def main() -> int:
    args = parse_args(rounds=30)
    work = Path(tempfile.mkdtemp(prefix="vt-bench-watch-"))
    root = work / "ws"
    root.mkdir()
    workspace(root)
    env = dict(os.environ, VT_CACHE_DIR=str(work / "cache"))
    watch = Watch(args.vt, root, env)
    first = watch.until(lambda t, l: l.startswith("vt: watching "))
    watching = first[-1][1]

    # Idle: nothing changes for 10 s.
    hz = os.sysconf("SC_CLK_TCK")
    before, t0 = cpu_ticks(watch.proc.pid), time.perf_counter()
    time.sleep(10)
    idle_cpu = (cpu_ticks(watch.proc.pid) - before) / hz
    idle_wall = time.perf_counter() - t0

    results = {}
    for label, pkg in (("last package (1 task reruns)", PACKAGES - 1),
                       ("first package (20 tasks rerun)", 0)):
        latencies, detect = [], []
        target = root / "packages" / f"p{pkg:02}" / "src" / "m00.js"
        for r in range(args.rounds):
            written = time.time_ns()
            target.write_text(f"export const v0 = {label!r} + {r};\n")
            seen = watch.until(lambda t, l: t == "out" and l.isdigit())
            started = int(seen[-1][1])
            said = next((l for t, l in seen if "→ rerunning" in l), None)
            assert said is not None, seen
            latencies.append((started - written) / 1e6)
            watch.until(lambda t, l: l.startswith("vt: watching "))
        results[label] = latencies

    watch.proc.terminate()
    watch.proc.wait()
    print(f"machine: {os.cpu_count()} cores; vt: {args.vt}; rounds: {args.rounds} per edit")
    print(f"after the first round: `{watching}`")
    print()
    print("| idle for (s) | vt's CPU time (s) | CPU use |")
    print("|---|---|---|")
    print(f"| {idle_wall:.1f} | {idle_cpu:.2f} | {100 * idle_cpu / idle_wall:.2f} % |")
    print()
    print("| edit (default debounce, 50 ms) | write → task starts, median (ms) | p90 (ms) | max (ms) |")
    print("|---|---|---|---|")
    for label, latencies in results.items():
        q = statistics.quantiles(latencies, n=10)
        print(f"| {label} | {statistics.median(latencies):.0f} | {q[8]:.0f} | {max(latencies):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

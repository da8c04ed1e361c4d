#!/usr/bin/env python3
"""Where a traced process waits: every seccomp notification stop of the C build, from `perf sched`.

Runs `vt trace -- make -s -j2` on the generated 200-file C workspace under
`perf record -e sched:sched_switch -g -a`, then pairs each tracee's switch-out inside
`seccomp_do_user_notification` with its next switch-in and reports, by what ran on that
CPU right after the stop (a supervisor thread, nothing: the CPU went idle, or another
task) and whether the tracee came back on the same CPU, how many stops there were and how
long they lasted.

    python3 bench/stops.py [--vt PATH]

Needs `perf` (linux-perf) and root. Prints a Markdown table; writes nothing.
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tracing_overhead import generate_make

SWITCH = re.compile(
    r"\[(\d+)\]\s+([\d.]+):\s+sched:sched_switch:.*?prev_pid=(\d+).*?prev_state=(\S+)"
    r" ==> next_comm=(.*?) next_pid=(\d+)"
)


def switches(perf_script: str):
    """Yields (cpu, time, prev_pid, prev_state, next_comm, next_pid, stack) per switch."""
    current = None
    for line in perf_script.splitlines():
        if line.startswith("\t") or line.startswith(" " * 8):
            if current is not None and line.strip():
                current[6].append(line.split()[1].split("+")[0])
            continue
        match = SWITCH.search(line)
        if match:
            if current is not None:
                yield current
            cpu, time, prev, state, next_comm, next_pid = match.groups()
            current = (int(cpu), float(time), prev, state, next_comm, next_pid, [])
    if current is not None:
        yield current


def classify(events):
    stopped = {}
    classes = collections.defaultdict(list)
    for cpu, time, prev, state, next_comm, next_pid, stack in events:
        if next_pid in stopped:
            t0, cpu0, ran_next = stopped.pop(next_pid)
            kind = (
                "supervisor"
                if ran_next.startswith("vt-supervisor")
                else "idle" if ran_next.startswith("swapper") else "other task"
            )
            where = "same CPU" if cpu == cpu0 else "other CPU"
            classes[(kind, where)].append((time - t0) * 1e6)
        if state in ("S", "D") and "seccomp_do_user_notification.isra.0" in stack:
            stopped[prev] = (time, cpu, next_comm)
    return classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_vt = Path(os.environ.get("CARGO_TARGET_DIR", "/var/cache/vt-ci/target")) / "release" / "vt"
    parser.add_argument("--vt", default=str(default_vt))
    args = parser.parse_args()
    if not Path(args.vt).exists():
        sys.exit(f"{args.vt} not found: build it with `cargo build --release -p vt-executor`")
    if shutil.which("perf") is None:
        sys.exit("perf not found: install Debian's linux-perf (`apt-get install linux-perf`)")
    with tempfile.TemporaryDirectory(prefix="vt-stops-") as tmp:
        work = Path(tmp) / "make-200"
        generate_make(work)
        data = Path(tmp) / "perf.data"
        subprocess.run(
            ["perf", "record", "-q", "-o", str(data), "-e", "sched:sched_switch", "-g", "-a", "--",
             args.vt, "trace", "-o", "/dev/null", "--", "make", "-s", "-j2"],
            cwd=work, check=True, stdout=subprocess.DEVNULL,
        )
        script = subprocess.run(
            ["perf", "script", "-i", str(data)], check=True, capture_output=True, text=True
        ).stdout
    classes = classify(switches(script))
    print("| after the stop, the CPU ran | tracee resumed on | stops | total (ms) | median (µs) | p90 (µs) | max (µs) |")
    print("|---|---|---|---|---|---|---|")
    for (kind, where), durations in sorted(classes.items(), key=lambda kv: -len(kv[1])):
        durations.sort()
        n = len(durations)
        print(
            f"| {kind} | {where} | {n} | {sum(durations) / 1e3:.1f} | {durations[n // 2]:.0f} "
            f"| {durations[int(n * 0.9)]:.0f} | {durations[-1]:.0f} |"
        )


if __name__ == "__main__":
    main()

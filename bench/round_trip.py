#!/usr/bin/env python3
"""What one seccomp notification costs the stopped process, by where the kernel wakes whom.

Runs `probes/notify_round_trip.c` (a tracee making raw `openat` calls that a supervisor
receives, reads, looks up and lets continue, as vt's does) with the three ways a supervisor
can set `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (Linux >= 6.6), interleaved, and once more
pinned to one CPU (`taskset -c 0`): there neither wake-up crosses CPUs.

    python3 bench/round_trip.py [--rounds 7] [--calls 20000]

Prints a Markdown table of the median microseconds per call; writes nothing.
"""
import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import probe

MODES = {
    "0": "no synchronous wake-ups (the kernel's default)",
    "1": "the supervisor woken on the tracee's CPU, the tracee placed by the scheduler (vt's once two tracees stopped)",
    "2": "both woken on the waker's CPU (vt's for a lone tracee)",
    "1-pinned": "mode 1 with supervisor and tracee on one CPU (`taskset -c 0`)",
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vt-round-trip-"))
    binary = probe(work, "notify_round_trip")
    results = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            argv = [str(binary), str(args.calls), mode.split("-")[0]]
            if mode.endswith("pinned"):
                argv = ["taskset", "-c", "0", *argv]
            out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
            results[mode].append(float(out.strip()))
    shutil.rmtree(work)
    print(f"{args.calls} notified `openat` calls per run, {args.rounds} interleaved rounds\n")
    print("| `SYNC_WAKE_UP` | µs per call (median) | range |")
    print("|---|---|---|")
    for mode, label in MODES.items():
        values = results[mode]
        print(f"| {label} | {statistics.median(values):.1f} | {min(values):.1f}–{max(values):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

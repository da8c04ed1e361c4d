#!/usr/bin/env python3
"""`vt trace` of one workload under several vt binaries or environments, interleaved.

    python3 bench/variants.py make|node ROUNDS NAME[@VT]:[ENV=VALUE,...] ...

Each NAME is a variant: `vt trace -o /dev/null -- WORKLOAD` with the binary VT (default:
the release build in $CARGO_TARGET_DIR) and the extra environment given. Every round runs
bare and then each variant, so the machine's drift hits all alike; prints, per variant, the
median time, the ratio of medians to bare, the median of each round's own ratio, and the
same for the CPU time of the whole tree (user + system). The workloads are
`tracing_overhead.py`'s (the 200-file C build with `make -s -j2`, node's 2 000 modules).

    python3 bench/variants.py node 25 before@/tmp/vt-old: after: off:VT_FANOTIFY=off
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tracing_overhead import generate_make, generate_node


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[1] not in ("make", "node"):
        print(__doc__, file=sys.stderr)
        return 2
    workload, rounds = sys.argv[1], int(sys.argv[2])
    target = Path(os.environ.get("CARGO_TARGET_DIR", "/var/cache/vt-ci/target"))
    default_vt = str(target / "release" / "vt")
    work = Path(tempfile.mkdtemp(prefix="vt-bench-variants-"))
    root = work / "w"
    if workload == "make":
        generate_make(root)
        command, clean = ["make", "-s", "-j2"], ["make", "-s", "clean"]
    else:
        generate_node(root)
        command, clean = ["node", "index.js"], ["true"]
    variants = {"bare": ([], {})}
    for spec in sys.argv[3:]:
        name, _, envs = spec.partition(":")
        name, _, vt = name.partition("@")
        env = dict(e.split("=", 1) for e in envs.split(",") if e)
        variants[name] = ([vt or default_vt, "trace", "-o", "/dev/null", "--"], env)
    wall = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    subprocess.run(command, cwd=root, check=True, stdout=subprocess.DEVNULL)  # warm caches
    for _ in range(rounds):
        for name, (prefix, env) in variants.items():
            subprocess.run(clean, cwd=root, check=True, stdout=subprocess.DEVNULL)
            before = os.times()
            start = time.perf_counter()
            subprocess.run([*prefix, *command], cwd=root, check=True,
                           env=dict(os.environ, **env),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall[name].append(time.perf_counter() - start)
            after = os.times()
            cpu[name].append(after.children_user + after.children_system
                             - before.children_user - before.children_system)
    bare = statistics.median(wall["bare"])
    print(f"{workload}: {rounds} rounds, bare {bare:.3f} s, "
          f"CPU {statistics.median(cpu['bare']):.3f} s")
    for name in variants:
        if name == "bare":
            continue
        per_round = [v / b for v, b in zip(wall[name], wall["bare"])]
        cpu_round = [v / b for v, b in zip(cpu[name], cpu["bare"])]
        print(f"  {name}: median {statistics.median(wall[name]):.3f} s, ratio of medians "
              f"{statistics.median(wall[name]) / bare:.3f}, per round "
              f"{statistics.median(per_round):.3f}; CPU per round "
              f"{statistics.median(cpu_round):.3f}")
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())

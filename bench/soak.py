#!/usr/bin/env python3
"""The size limit under a long life (issue 22): 1 000 runs of a task whose input changes each
time (64 KiB that do not compress, so each run stores ~130 KiB of output and log) with
VT_CACHE_MAX_SIZE small. After every run the cache's size on disk is taken; every 50th run
checks that the latest state still hits; at the end `vt cache verify` must be clean."""
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import parse_args


def disk_usage(cache: Path) -> int:
    return sum(f.stat().st_size for f in cache.iterdir() if f.is_file())


def main() -> int:
    args = parse_args(rounds=1000)
    limit = 4 << 20
    work = Path(tempfile.mkdtemp(prefix="vt-bench-soak-"))
    root = work / "ws"
    root.mkdir()
    (root / "package.json").write_text(
        '{"name":"app","scripts":{"build":"mkdir -p dist && cat src.txt > dist/out.txt"}}')
    cache = work / "cache"
    env = dict(os.environ, VT_CACHE_DIR=str(cache), VT_CACHE_MAX_SIZE=str(limit))
    rng = random.Random(22)
    sizes, times, pruned_times, prunes = [], [], [], 0
    for i in range(args.rounds):
        (root / "src.txt").write_bytes(rng.randbytes(32 << 10).hex().encode())
        t = time.perf_counter()
        out = subprocess.run([args.vt, "run", "build"], cwd=root, env=env,
                             capture_output=True, text=True)
        elapsed = time.perf_counter() - t
        assert out.returncode == 0, out.stderr
        if "over its limit" in out.stderr:
            prunes += 1
            pruned_times.append(elapsed)
        else:
            times.append(elapsed)
        sizes.append(disk_usage(cache))
        if i % 50 == 49:
            shutil.rmtree(root / "dist")
            hit = subprocess.run([args.vt, "run", "build"], cwd=root, env=env,
                                 capture_output=True, text=True)
            assert "cache hit" in hit.stderr, hit.stderr
            assert (root / "dist/out.txt").read_bytes() == (root / "src.txt").read_bytes()
    verify = subprocess.run([args.vt, "cache", "verify"], cwd=root, env=env,
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    stats = subprocess.run([args.vt, "cache", "stats"], cwd=root, env=env,
                           capture_output=True, text=True).stdout
    entries = next(l.split()[-1] for l in stats.splitlines() if l.startswith("entries:"))
    print(f"| runs | limit (MiB) | largest size after a run (MiB) | largest / limit | "
          f"runs that pruned | run (s, median) | run that pruned (s, median) | entries at the end | verify |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.rounds} | {limit / 2**20:.0f} | {max(sizes) / 2**20:.2f} | "
          f"{max(sizes) / limit:.2f} | {prunes} | {statistics.median(times):.3f} | "
          f"{statistics.median(pruned_times) if pruned_times else 0:.3f} | {entries} | clean |")
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())

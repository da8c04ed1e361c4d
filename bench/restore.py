#!/usr/bin/env python3
"""Restoring a large output from vt's cache versus copying it with `cp -r`.

One task writes 5 000 files of 10 KiB (50 MB) into out/ (a copy of a generated source tree).
After the first (stored) run, out/ is deleted and the fully cached `vt run` restores it; the
same tree is copied with `cp -r` for comparison. Rounds are interleaved.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    target = Path(os.environ.get("CARGO_TARGET_DIR", "/var/cache/vt-ci/target"))
    parser.add_argument("--vt", default=str(target / "release" / "vt"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vt-bench-restore-"))
    root = work / "ws"
    src = root / "src"
    for d in range(50):
        (src / f"d{d:02}").mkdir(parents=True)
        for f in range(100):
            # Distinct contents: the cache stores each blob once, so equal files would flatter it.
            (src / f"d{d:02}" / f"f{f:03}.bin").write_bytes(os.urandom(10 * 1024))
    (root / "package.json").write_text('{"name":"restore","scripts":{"build":"rm -rf out && cp -r src out"}}')
    env = dict(os.environ, VT_CACHE_DIR=str(work / "cache"))
    vt = [args.vt, "run", "build"]
    subprocess.run(vt, cwd=root, env=env, check=True, capture_output=True)
    restore, copy = [], []
    for _ in range(args.rounds):
        shutil.rmtree(root / "out")
        start = time.perf_counter()
        out = subprocess.run(vt, cwd=root, env=env, check=True, capture_output=True, text=True)
        restore.append(time.perf_counter() - start)
        assert "cache hit" in out.stderr, out.stderr
        shutil.rmtree(root / "out")
        start = time.perf_counter()
        subprocess.run(["cp", "-r", str(src), str(root / "out")], check=True)
        copy.append(time.perf_counter() - start)
    r, c = statistics.median(restore), statistics.median(copy)
    print(f"rounds: {args.rounds} (interleaved)\n")
    print("| 5 000 files, 50 MB | time (s) |\n|---|---|")
    print(f"| vt restore (cache hit) | {r:.2f} |\n| cp -r | {c:.2f} |\n| vt / cp | {r / c:.2f}× |")
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())

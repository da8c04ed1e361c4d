#!/usr/bin/env python3
"""Many vt on one cache (issue 22), measured side by side in one run:

1. the fully cached 100-package `vt run build -r` (bench/cached_run.py's zero-config
   workspace), this vt against a baseline vt (`--baseline`, e.g. the commit before the
   lease), rounds interleaved;
2. two such runs at once on two checkouts sharing one cache, against the two one after the
   other (this vt), and the baseline's two at once;
3. the same run beside a `vt run dev` that holds the terminal (a task that runs until told
   to stop): this vt finishes in its own time; the baseline waits for dev's end (not timed).
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cached_run import generate
from common import parse_args


def main() -> int:
    args = parse_args(rounds=9)
    baseline = os.environ.get("VT_BASELINE")
    work = Path(tempfile.mkdtemp(prefix="vt-bench-conc-"))
    roots = [work / f"ws{i}" / "ws" for i in range(2)]
    for root in roots:
        generate(root, config="none")
    cache = work / "cache"

    def start(vt, root, cache_dir):
        for dist in root.glob("packages/*/dist"):
            shutil.rmtree(dist)
        env = dict(os.environ, VT_CACHE_DIR=str(cache_dir), VT_CACHE_MAX_SIZE="0")
        return subprocess.Popen([vt, "run", "build", "-r"], cwd=root, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def finish(proc):
        _, err = proc.communicate()
        assert proc.returncode == 0, err
        assert "100 cached" in err, err

    def alone(vt, cache_dir):
        t = time.perf_counter()
        finish(start(vt, roots[0], cache_dir))
        return time.perf_counter() - t

    def pair(vt, cache_dir, together=True):
        t = time.perf_counter()
        if together:
            procs = [start(vt, root, cache_dir) for root in roots]
            for p in procs:
                finish(p)
        else:
            for root in roots:
                finish(start(vt, root, cache_dir))
        return time.perf_counter() - t

    binaries = {"this vt": args.vt}
    if baseline:
        binaries["baseline"] = baseline
    caches = {name: work / f"cache-{i}" for i, name in enumerate(binaries)}
    for name, vt in binaries.items():
        for root in roots:  # fill: both checkouts stored once
            start(vt, root, caches[name]).communicate()
    times = {(name, kind): [] for name in binaries for kind in ("alone", "pair", "serial")}
    for _ in range(args.rounds):
        for name, vt in binaries.items():
            times[(name, "alone")].append(alone(vt, caches[name]))
            times[(name, "pair")].append(pair(vt, caches[name]))
            times[(name, "serial")].append(pair(vt, caches[name], together=False))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"machine: {os.cpu_count()} cores; rounds: {args.rounds} (interleaved)\n")
    print("| 100 packages, fully cached `vt run build -r` | this vt (s) | baseline (s) | this / baseline |")
    print("|---|---|---|---|")
    for kind, label in (("alone", "one run"), ("pair", "two at once (two checkouts, one cache)"),
                        ("serial", "the same two, one after the other")):
        ours = med[("this vt", kind)]
        theirs = med.get(("baseline", kind))
        ratio = f"{ours / theirs:.3f}×" if theirs else "-"
        base = f"{theirs:.3f}" if theirs else "-"
        print(f"| {label} | {ours:.3f} | {base} | {ratio} |")

    # Beside a long-running task: dev runs until its fifo is written.
    root = roots[0]
    fifo = work / "release"
    os.mkfifo(fifo)
    (root / "vt.json").write_text(
        '{"tasks":{"dev":{"command":"read line < %s","cache":false}}}' % fifo)
    env = dict(os.environ, VT_CACHE_DIR=str(caches["this vt"]), VT_CACHE_MAX_SIZE="0")
    dev = subprocess.Popen([args.vt, "run", "dev"], cwd=root, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start(args.vt, root, caches["this vt"]).communicate()  # the config change: one store
    beside = [alone(args.vt, caches["this vt"]) for _ in range(args.rounds)]
    assert dev.poll() is None, "dev ended early"
    with open(fifo, "w") as f:
        f.write("go\n")
    dev.wait()
    print(f"\nbeside a running `vt run dev`: the cached run takes {statistics.median(beside):.3f} s "
          f"(median of {args.rounds}); dev kept running throughout")
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())

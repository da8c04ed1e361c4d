#!/usr/bin/env python3
"""What the concurrent-change guard costs: two vt binaries (this one and a baseline built
from the commit before the guard), interleaved round by round on the same workspaces, each
round a cold `vt run` (empty cache: every task executes *and is stored*, which is where the
guard works: the start waits for the timestamp tick when it must, the store re-checks every
input's ctime).

  make     `make -j2` of 200 C files as one task (~4 700 observations to check)
  node     node requiring 2 000 modules as one task
  chain    100 tiny packages (`vt run build -r`, chains of 10 dependent tasks): each
           dependent starts right after its dependency ended, the guard's tick wait
  cached   the same 100 packages fully cached (dist/ deleted, every output restored):
           the hit path, which the guard must not slow (stat values with mtimes, restored
           mtimes, dependents keyed by their dependencies' results)

Usage:
    python3 bench/guard.py --baseline PATH [--rounds 7] [--vt PATH] [--only make]

Prints a Markdown table (medians, ratio of medians, median of per-round ratios); writes
nothing.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from cached_run import generate as generate_packages
from tracing_overhead import generate_make, generate_node


def workspaces(work: Path) -> dict:
    make = work / "make"
    generate_make(make)
    (make / "package.json").write_text(json.dumps({"name": "cbuild", "scripts": {"build": "make -j2"}}))
    node = work / "node"
    node.mkdir()
    generate_node(node)
    (node / "package.json").write_text(json.dumps({"name": "nodebuild", "scripts": {"build": "node index.js"}}))
    chain = work / "chain"
    generate_packages(chain)
    return {
        "make": (make, ["run", "build"], "rm -rf obj"),
        "node": (node, ["run", "build"], None),
        "chain": (chain, ["run", "build", "-r"], "rm -rf packages/*/dist"),
    }


def cold_run(vt: str, root: Path, args, clean, cache: Path) -> float:
    shutil.rmtree(cache, ignore_errors=True)
    if clean:
        subprocess.run(clean, cwd=root, shell=True, check=True)
    env = dict(os.environ, VT_CACHE_DIR=str(cache))
    start = time.perf_counter()
    out = subprocess.run([vt, *args, "--json"], cwd=root, env=env, check=True, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    summary = json.loads(out.stdout[out.stdout.rindex("\n{\n") + 1:] if not out.stdout.startswith("{\n") else out.stdout)
    statuses = {t["status"] for t in summary["tasks"]}
    assert statuses == {"stored"}, (vt, root, statuses, out.stderr[-2000:])
    return elapsed


def cached_run(vt: str, root: Path, cache: Path) -> float:
    """A fully cached `vt run build -r` (filled by an untimed run first, once per cache)."""
    env = dict(os.environ, VT_CACHE_DIR=str(cache))
    if not cache.exists():
        subprocess.run([vt, "run", "build", "-r"], cwd=root, env=env, check=True, capture_output=True)
    subprocess.run("rm -rf packages/*/dist", cwd=root, shell=True, check=True)
    start = time.perf_counter()
    out = subprocess.run([vt, "run", "build", "-r", "--json"], cwd=root, env=env, check=True,
                         capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    summary = json.loads(out.stdout[out.stdout.index("{\n"):])["summary"]
    assert summary["cached"] == 100, (vt, summary)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    target = Path(os.environ.get("CARGO_TARGET_DIR", "/var/cache/vt-ci/target"))
    parser.add_argument("--vt", default=str(target / "release" / "vt"))
    parser.add_argument("--baseline", required=True, help="vt built from the commit before the guard")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", help="run only workloads whose name contains this")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vt-bench-guard-"))
    print(f"machine: {os.cpu_count()} cores; rounds: {args.rounds} (interleaved)\n")
    print("| cold `vt run` (execute + store) | baseline (s) | with the guard (s) | ratio of medians | median of per-round ratios |")
    print("|---|---|---|---|---|")
    for name, (root, vt_args, clean) in workspaces(work).items():
        if args.only and args.only not in name:
            continue
        times = {"baseline": [], "guard": []}
        cache = work / f"cache-{name}"
        for _ in range(args.rounds):
            times["baseline"].append(cold_run(args.baseline, root, vt_args, clean, cache))
            times["guard"].append(cold_run(args.vt, root, vt_args, clean, cache))
        base, guard = (statistics.median(times[k]) for k in ("baseline", "guard"))
        paired = statistics.median(g / b for g, b in zip(times["guard"], times["baseline"]))
        print(f"| {name} | {base:.3f} | {guard:.3f} | {guard / base:.3f}× | {paired:.3f}× |")
    if not args.only or args.only in "cached":
        root = work / "chain"
        times = {"baseline": [], "guard": []}
        for _ in range(args.rounds):
            times["baseline"].append(cached_run(args.baseline, root, work / "cached-baseline"))
            times["guard"].append(cached_run(args.vt, root, work / "cached-guard"))
        base, guard = (statistics.median(times[k]) for k in ("baseline", "guard"))
        paired = statistics.median(g / b for g, b in zip(times["guard"], times["baseline"]))
        print(f"| cached (100 hits) | {base:.3f} | {guard:.3f} | {guard / base:.3f}× | {paired:.3f}× |")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

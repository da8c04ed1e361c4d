#!/usr/bin/env python3
"""Tracing overhead: bare vs `vt trace` vs `strace -f -o /dev/null`, measured side by side.

Workloads are generated deterministically:
  make-200   `make -j2` of 200 generated C files (each includes a few system headers)
  node-2000  `node` requiring 2 000 generated modules in a nested tree

Rounds are interleaved (bare, vt, strace, bare, vt, …) so machine noise hits all three
alike; the table reports medians and the ratios of medians, plus vt's notification count.

    python3 bench/tracing_overhead.py [--rounds 5] [--vt PATH]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def generate_make(root: Path, files: int = 200) -> None:
    src = root / "src"
    src.mkdir(parents=True)
    for i in range(files):
        (src / f"f{i}.c").write_text(
            "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include \"common.h\"\n"
            f"int f{i}(int x) {{ char b[32]; snprintf(b, sizeof b, \"%d\", x + {i}); return (int)strlen(b) + COMMON; }}\n"
        )
    (src / "common.h").write_text("#define COMMON 1\n")
    objs = " ".join(f"obj/f{i}.o" for i in range(files))
    (root / "Makefile").write_text(
        f"all: {objs}\n\nobj/%.o: src/%.c src/common.h | obj\n\tgcc -O0 -c -o $@ $<\n\nobj:\n\tmkdir -p obj\n\n"
        "clean:\n\trm -rf obj\n"
    )


def generate_node(root: Path, modules: int = 2000) -> None:
    lines = []
    for i in range(modules):
        d = root / "lib" / f"d{i // 50}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"m{i}.js").write_text(f"module.exports = {i};\n")
        lines.append(f"total += require('./lib/d{i // 50}/m{i}');")
    (root / "index.js").write_text("let total = 0;\n" + "\n".join(lines) + "\nconsole.log(total);\n")


def run(argv, cwd, prepare=None):
    if prepare:
        subprocess.run(prepare, cwd=cwd, shell=True, check=True, stdout=subprocess.DEVNULL)
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    default_vt = Path(os.environ.get("CARGO_TARGET_DIR", "/var/cache/vt-ci/target")) / "release" / "vt"
    parser.add_argument("--vt", default=str(default_vt))
    args = parser.parse_args()
    vt = args.vt
    if not Path(vt).exists():
        print(f"{vt} not found: build it with `cargo build --release -p vt-executor`", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="vt-bench-"))
    workloads = []
    make_dir = work / "make-200"
    generate_make(make_dir)
    workloads.append(("make -j2, 200 C files", make_dir, ["make", "-s", "-j2"], "make -s clean"))
    node_dir = work / "node-2000"
    generate_node(node_dir)
    node = shutil.which("node")
    workloads.append(("node, 2000 modules", node_dir, [node, "index.js"], None))

    log = work / "vt.json"
    print(f"machine: {os.cpu_count()} cores, kernel {os.uname().release}; rounds: {args.rounds} (interleaved)\n")
    print("| workload | bare (s) | vt trace (s) | strace -f (s) | vt / bare | strace / bare | notifications | µs per notification |")
    print("|---|---|---|---|---|---|---|---|")
    for name, cwd, argv, prepare in workloads:
        run(argv, cwd, prepare)  # warm the page cache
        times = {"bare": [], "vt": [], "strace": []}
        for _ in range(args.rounds):
            times["bare"].append(run(argv, cwd, prepare))
            times["vt"].append(run([vt, "trace", "--json", "-o", str(log), "--", *argv], cwd, prepare))
            times["strace"].append(run(["strace", "-f", "-qq", "-o", "/dev/null", *argv], cwd, prepare))
        notifications = json.loads(log.read_text())["notifications"]
        bare, traced, strace = (statistics.median(times[k]) for k in ("bare", "vt", "strace"))
        per_notification = (traced - bare) / notifications * 1e6 if notifications else 0.0
        print(
            f"| {name} | {bare:.2f} | {traced:.2f} | {strace:.2f} | {traced / bare:.2f}× | {strace / bare:.2f}× "
            f"| {notifications} | {per_notification:.1f} |"
        )
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())

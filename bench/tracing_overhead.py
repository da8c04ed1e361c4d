#!/usr/bin/env python3
"""Tracing overhead: bare vs `vt trace` vs `strace -f -o /dev/null`, measured side by side.

Workloads are generated deterministically:
  make-200   `make -j2` of 200 generated C files (each includes a few system headers)
  node-2000  `node` requiring 2 000 generated modules in a nested tree

Rounds are interleaved (bare, vt, seccomp only, strace, bare, …) so machine noise hits all
alike; the table reports medians and the ratios of medians, the median of each round's own
vt / bare ratio (steadier when the machine speeds up or slows down during the run: a shared
VM here drifts by 15 % within minutes), vt's notification and fast-path record counts, and
which syscalls still reach the supervisor.

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

from common import npm_install, save_results


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


def generate_tsc(root: Path, files: int = 300) -> None:
    src = root / "src"
    src.mkdir(parents=True)
    for i in range(files):
        imports = f"import {{ v{i - 1} }} from './m{i - 1}';\n" if i else ""
        prev = f"v{i - 1} + " if i else ""
        (src / f"m{i}.ts").write_text(
            imports + f"export interface Shape{i} {{ id: number; name: string }}\n"
            f"export const v{i}: number = {prev}{i};\n"
            f"export function make{i}(n: number): Shape{i} {{ return {{ id: n + v{i}, name: `s${{n}}` }}; }}\n"
        )
    (root / "tsconfig.json").write_text(
        '{"compilerOptions":{"target":"ES2020","module":"ES2020","moduleResolution":"bundler",'
        '"strict":true,"outDir":"dist","skipLibCheck":true},"include":["src"]}'
    )


def generate_vite(root: Path, modules: int = 300) -> None:
    src = root / "src"
    src.mkdir(parents=True)
    for i in range(modules):
        imports = f"import {{ v{i - 1} }} from './m{i - 1}.js';\n" if i else ""
        prev = f"v{i - 1} + " if i else ""
        (src / f"m{i}.js").write_text(imports + f"export const v{i} = {prev}{i};\n")
    (src / "main.js").write_text(
        f"import {{ v{modules - 1} }} from './m{modules - 1}.js';\n"
        "document.querySelector('#app').textContent = String(v" + str(modules - 1) + ");\n"
    )
    (root / "index.html").write_text(
        '<!doctype html><html><body><div id="app"></div><script type="module" src="/src/main.js"></script></body></html>\n'
    )
    (root / "vite.config.mjs").write_text("export default {};\n")


def run(argv, cwd, prepare=None, env=None):
    if prepare:
        subprocess.run(prepare, cwd=cwd, shell=True, check=True, stdout=subprocess.DEVNULL)
    full_env = dict(os.environ, **(env or {}))
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=full_env)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    default_vt = Path(os.environ.get("CARGO_TARGET_DIR", "/var/cache/vt-ci/target")) / "release" / "vt"
    parser.add_argument("--vt", default=str(default_vt))
    parser.add_argument("--only", help="run only workloads whose name contains this")
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
    tsc_dir = work / "tsc-300"
    generate_tsc(tsc_dir)
    (tsc_dir / "node_modules").symlink_to(npm_install("typescript", "typescript@^5"))
    workloads.append(("tsc -p, 300 TS files", tsc_dir,
                      [node, str(tsc_dir / "node_modules" / "typescript" / "bin" / "tsc"), "-p", "."], "rm -rf dist"))
    vite_dir = work / "vite-300"
    generate_vite(vite_dir)
    (vite_dir / "node_modules").symlink_to(npm_install("vite", "vite@^8"))
    workloads.append(("vite build, 300 modules", vite_dir,
                      [node, str(vite_dir / "node_modules" / "vite" / "bin" / "vite.js"), "build", "--logLevel", "silent"],
                      "rm -rf dist"))

    log = work / "vt.json"
    seccomp_log = work / "vt-seccomp.json"
    print(f"machine: {os.cpu_count()} cores, kernel {os.uname().release}; rounds: {args.rounds} (interleaved)\n")
    print("vt = seccomp + LD_PRELOAD fast path (the default); seccomp only = VT_PRELOAD=off.\n")
    print(
        "| workload | bare (s) | vt (s) | seccomp only (s) | strace -f (s) | vt / bare | vt / bare, per round "
        "| seccomp only / bare | strace / bare | vt: notifications / fast-path records "
        "| seccomp only: notifications | µs per notification |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    details = []
    saved = {}
    workloads = [w for w in workloads if not args.only or args.only in w[0]]
    for name, cwd, argv, prepare in workloads:
        run(argv, cwd, prepare)  # warm the page cache
        times = {"bare": [], "vt": [], "seccomp": [], "strace": []}
        for _ in range(args.rounds):
            times["bare"].append(run(argv, cwd, prepare))
            times["vt"].append(run([vt, "trace", "--json", "-o", str(log), "--", *argv], cwd, prepare))
            times["seccomp"].append(
                run([vt, "trace", "--json", "-o", str(seccomp_log), "--", *argv], cwd, prepare, {"VT_PRELOAD": "off"})
            )
            times["strace"].append(run(["strace", "-f", "-qq", "-o", "/dev/null", *argv], cwd, prepare))
        hybrid = json.loads(log.read_text())
        seccomp = json.loads(seccomp_log.read_text())
        bare, traced, seccomp_only, strace = (
            statistics.median(times[k]) for k in ("bare", "vt", "seccomp", "strace")
        )
        paired = statistics.median(v / b for v, b in zip(times["vt"], times["bare"]))
        n = seccomp["notifications"]
        per_notification = (seccomp_only - bare) / n * 1e6 if n else 0.0
        print(
            f"| {name} | {bare:.2f} | {traced:.2f} | {seccomp_only:.2f} | {strace:.2f} | {traced / bare:.2f}× "
            f"| {paired:.2f}× | {seccomp_only / bare:.2f}× | {strace / bare:.2f}× "
            f"| {hybrid['notifications']} / {hybrid['fast_path_records']} | {n} | {per_notification:.1f} |"
        )
        saved[name] = {
            "bare": bare,
            "vt": traced,
            "seccomp only": seccomp_only,
            "strace": strace,
            "vt / bare per round": paired,
        }
        top = sorted(hybrid["notified_by_syscall"].items(), key=lambda kv: -kv[1])[:6]
        details.append(f"- {name}: still notified with the fast path: " + ", ".join(f"{k} {v}" for k, v in top))
    print()
    print("\n".join(details))
    if not args.only:
        save_results("tracing", saved)
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())

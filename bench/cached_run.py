#!/usr/bin/env python3
"""Fully cached `vt run build -r` on a generated 100-package workspace, with the tasks'
dependencies declared in vt.json, in vite-task.json (zero-change parity with vite-task's
config), or not at all (package.json scripts only).

Each package's build copies its source into dist/ (sh, cat); every tenth package depends on
the one before it. The first run executes and stores all 100 tasks; then rounds of the fully
cached run (with dist/ deleted each time, so every output is restored) are timed.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import npm_install, parse_args


CONFIGS = ("vt.json", "vite-task.json", "none")


def generate(root: Path, packages: int = 100, config: str = "vt.json") -> None:
    """`config`: where the ^build dependencies are declared: vt.json, vite-task.json (the
    same schema under vite-task's name), or "none" (package.json scripts only, zero config:
    no declared order, so the tasks run in parallel)."""
    root.mkdir(parents=True)
    (root / "package.json").write_text(json.dumps({"name": "root", "private": True, "workspaces": ["packages/*"]}))
    for i in range(packages):
        pkg = root / "packages" / f"p{i:03}"
        (pkg / "src").mkdir(parents=True)
        manifest = {"name": f"p{i:03}", "scripts": {"build": "mkdir -p dist && cat src/index.js > dist/index.js"}}
        if i % 10 and i > 0:
            manifest["dependencies"] = {f"p{i - 1:03}": "*"}
            if config != "none":
                (pkg / config).write_text(json.dumps({"tasks": {"build": {"dependsOn": ["^build"]}}}))
        (pkg / "package.json").write_text(json.dumps(manifest))
        (pkg / "src" / "index.js").write_text(f"export const id = {i};\n")


def main() -> int:
    args = parse_args(rounds=5)
    print(f"machine: {os.cpu_count()} cores; rounds: {args.rounds}\n")
    print("| 100 packages, `vt run build -r`, tasks from | first run: 100 tasks executed (s) | fully cached run (s, median) | per task (ms) |")
    print("|---|---|---|---|")
    work = Path(tempfile.mkdtemp(prefix="vt-bench-cached-"))
    for config in CONFIGS:
        root = work / config / "ws"
        generate(root, config=config)
        env = dict(os.environ, VT_CACHE_DIR=str(work / config / "cache"))

        def vt_run():
            for dist in root.glob("packages/*/dist"):
                shutil.rmtree(dist)
            start = time.perf_counter()
            out = subprocess.run([args.vt, "run", "build", "-r", "--json"], cwd=root, env=env,
                                 check=True, capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            summary = json.loads(out.stdout[out.stdout.index("{\n"):])["summary"]
            return elapsed, summary

        cold, summary = vt_run()
        assert summary["cached"] == 0, summary
        warm = []
        for _ in range(args.rounds):
            elapsed, summary = vt_run()
            assert summary["cached"] == 100, summary
            warm.append(elapsed)
        median = statistics.median(warm)
        source = {"vt.json": "`vt.json`", "vite-task.json": "`vite-task.json` (vite-task's file)",
                  "none": "`package.json` scripts only (zero config)"}[config]
        print(f"| {source} | {cold:.2f} | {median:.2f} | {median * 1000 / 100:.1f} |")
    # The peer on the zero-config workspace: vite-task, as `vp run` in Vite+ (npm `vite-plus`),
    # which caches package.json scripts when given --cache.
    vp = npm_install("vite-plus", "vite-plus") / ".bin" / "vp"
    root = work / "none" / "ws"
    shutil.rmtree(root / "node_modules" / ".vite", ignore_errors=True)

    def vp_run():
        for dist in root.glob("packages/*/dist"):
            shutil.rmtree(dist)
        start = time.perf_counter()
        out = subprocess.run([str(vp), "run", "--cache", "-r", "build"], cwd=root, check=True,
                             capture_output=True, text=True)
        return time.perf_counter() - start, out.stdout.strip().splitlines()[-1]

    cold, _ = vp_run()
    warm = []
    for _ in range(args.rounds):
        elapsed, summary = vp_run()
        assert "100/100 cache hit" in summary, summary
        warm.append(elapsed)
    median = statistics.median(warm)
    version = subprocess.run([str(vp), "--version"], capture_output=True, text=True).stdout.split()[1]
    print(f"| vite-task ({version}, `vp run --cache -r build`), `package.json` scripts only | "
          f"{cold:.2f} | {median:.2f} | {median * 1000 / 100:.1f} |")
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""vt versus Turborepo on the same generated 100-package npm workspace, in the same run.

Packages p000…p099: chains of ten (p001 → p000, p002 → p001, …) and a fan-out (every chain
head p010, p020, … depends on p000). Each `build` script is `node build.js`: read
src/index.js and the dependencies' dist/, write dist/index.js. vt reads the same scripts
with `dependsOn: ["^build"]` in vt.json; turbo with the equivalent turbo.json.

Steps, per tool, interleaved round by round: cold (empty cache), fully cached (dist/
deleted, so every output is restored), and after touching one leaf's source.
`--baseline OLD_VT` adds an older vt binary to the same rounds (its own cache). turbo
(npm `turbo`) is installed once into $VT_NPM_INSTALLS (default /var/cache/vt-ci/npm-installs).
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

from common import fresh_copies, npm_git_workspace, npm_install, save_results

BUILD_JS = """const fs = require("node:fs");
const path = require("node:path");
const deps = Object.keys(require("./package.json").dependencies || {});
const parts = deps.map((d) => fs.readFileSync(path.join("..", d, "dist", "index.js"), "utf8").length);
fs.mkdirSync("dist", { recursive: true });
fs.writeFileSync("dist/index.js", fs.readFileSync("src/index.js", "utf8") + `// deps: ${parts.join(",")}\\n`);
"""


def generate(root: Path, packages: int = 100) -> None:
    root.mkdir(parents=True)
    npm_version = subprocess.run(["npm", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    (root / "package.json").write_text(json.dumps({
        "name": "bench-root", "private": True, "workspaces": ["packages/*"],
        "packageManager": f"npm@{npm_version}",
    }))
    (root / "turbo.json").write_text(json.dumps({
        "$schema": "https://turbo.build/schema.json",
        "tasks": {"build": {"dependsOn": ["^build"], "outputs": ["dist/**"]}},
    }))
    for i in range(packages):
        name = f"p{i:03}"
        pkg = root / "packages" / name
        (pkg / "src").mkdir(parents=True)
        deps = {}
        if i % 10:
            deps[f"p{i - 1:03}"] = "*"
        elif i:
            deps["p000"] = "*"
        (pkg / "package.json").write_text(json.dumps({
            "name": name, "version": "1.0.0", "scripts": {"build": "node build.js"}, "dependencies": deps,
        }))
        (pkg / "vt.json").write_text(json.dumps({"tasks": {"build": {"dependsOn": ["^build"]}}}))
        (pkg / "build.js").write_text(BUILD_JS)
        (pkg / "src" / "index.js").write_text(f"export const id = {i};\n")
    npm_git_workspace(root, "node_modules/\ndist/\n.turbo/\n")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    target = Path(os.environ.get("CARGO_TARGET_DIR", "/var/cache/vt-ci/target"))
    parser.add_argument("--vt", default=str(target / "release" / "vt"))
    parser.add_argument("--baseline", help="an older vt binary, measured in the same rounds")
    args = parser.parse_args()
    turbo = npm_install("turbo", "turbo@^2") / ".bin" / "turbo"
    work = Path(tempfile.mkdtemp(prefix="vt-bench-peers-"))
    root = work / "ws"
    generate(root)
    env = dict(os.environ, TURBO_TELEMETRY_DISABLED="1", DO_NOT_TRACK="1",
               TURBO_NO_UPDATE_NOTIFIER="1")
    binaries = fresh_copies({"vt": args.vt, **({"baseline": args.baseline} if args.baseline else {})},
                            work / "bin")
    commands = {
        "vt": [binaries["vt"], "run", "build", "-r"],
        "turbo": [str(turbo), "run", "build", "--output-logs=none", "--no-daemon", "--concurrency=2"],
    }
    caches = {"vt": work / "vt-cache", "turbo": root / ".turbo"}
    if args.baseline:
        commands["vt (baseline)"] = [binaries["baseline"], "run", "build", "-r"]
        caches["vt (baseline)"] = work / "vt-baseline-cache"
    leaf = root / "packages" / "p099" / "src" / "index.js"

    def clean_outputs():
        for dist in root.glob("packages/*/dist"):
            shutil.rmtree(dist)

    def timed(tool):
        start = time.perf_counter()
        subprocess.run(commands[tool], cwd=root, env=dict(env, VT_CACHE_DIR=str(caches[tool])),
                       check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start

    results = {(tool, step): [] for tool in commands for step in ("cold", "cached", "one leaf")}
    for round_ in range(args.rounds):
        for tool in commands:
            shutil.rmtree(caches[tool], ignore_errors=True)
            clean_outputs()
            results[(tool, "cold")].append(timed(tool))
            clean_outputs()
            results[(tool, "cached")].append(timed(tool))
            leaf.write_text(f"export const id = 99; // round {round_} {tool}\n")
            results[(tool, "one leaf")].append(timed(tool))
    print(f"machine: {os.cpu_count()} cores; rounds: {args.rounds} (interleaved); turbo "
          + subprocess.run([str(turbo), "--version"], capture_output=True, text=True).stdout.strip() + "\n")
    base = "vt (baseline)" in commands
    print("| 100 packages | vt (s) | turbo (s) | vt / turbo |"
          + (" baseline vt (s) | baseline / turbo |" if base else ""))
    print("|---|---|---|---|" + ("---|---|" if base else ""))
    for step in ("cold", "cached", "one leaf"):
        v = statistics.median(results[("vt", step)])
        t = statistics.median(results[("turbo", step)])
        row = f"| {step} | {v:.3f} | {t:.3f} | {v / t:.2f}× |"
        if base:
            b = statistics.median(results[("vt (baseline)", step)])
            row += f" {b:.3f} | {b / t:.2f}× |"
        print(row)
    save_results("peers", {step: {"vt": statistics.median(results[("vt", step)]),
                                  "turbo": statistics.median(results[("turbo", step)])}
                           for step in ("cold", "cached", "one leaf")})
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())

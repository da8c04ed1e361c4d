#!/usr/bin/env python3
"""Sandbox setup + teardown per task: bare fork+exec of /bin/true, vt's jail, and bubblewrap
doing the equivalent (sandbox/examples/sandbox_setup.rs, one interleaved run), then the
whole `vt exec -- true` with and without --sandbox."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import save_results


def cli_median(cmd, cwd, env, rounds):
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    target = Path(os.environ.get("CARGO_TARGET_DIR", "/var/cache/vt-ci/target"))
    parser.add_argument("--vt", default=str(target / "release" / "vt"))
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    repo = Path(__file__).resolve().parent.parent
    setup = json.loads(subprocess.run(
        ["cargo", "run", "--quiet", "--locked", "--release", "-p", "vt-sandbox", "--example",
         "sandbox_setup", "--", str(args.rounds)],
        cwd=repo, check=True, capture_output=True, text=True).stdout)
    by_name = {r["variant"]: r for r in setup["results"]}
    bare = by_name["bare"]["median_ms"]
    print(f"sandbox: {setup['landlock']}; {setup['rounds']} interleaved rounds\n")
    print("| /bin/true | median (ms) | p90 (ms) | setup + teardown over bare (ms) |")
    print("|---|---|---|---|")
    for row in setup["results"]:
        extra = row["median_ms"] - bare
        print(f"| {row['variant']} | {row['median_ms']:.2f} | {row['p90_ms']:.2f} | "
              f"{'—' if row['variant'] == 'bare' else f'{extra:.2f}'} |")

    work = Path(tempfile.mkdtemp(prefix="vt-bench-sandbox-"))
    (work / "package.json").write_text('{"name":"sandbox-bench","private":true}')
    env = dict(os.environ, VT_CACHE_DIR=str(work / "cache"))
    rounds = max(10, args.rounds // 10)
    plain = cli_median([args.vt, "exec", "--no-cache", "--", "true"], work, env, rounds)
    jailed = cli_median([args.vt, "exec", "--no-cache", "--sandbox", "--", "true"], work, env, rounds)
    print(f"\n| `vt exec --no-cache -- true` (traced) | {plain:.1f} ms |")
    print(f"| `vt exec --no-cache --sandbox -- true` (traced + sandboxed) "
          f"| {jailed:.1f} ms |")
    save_results("sandbox", {"setup": setup, "cli_ms": {"traced": plain, "sandboxed": jailed}})
    return 0


if __name__ == "__main__":
    sys.exit(main())

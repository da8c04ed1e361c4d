#!/usr/bin/env python3
"""vt's fixed cost per task, measured side by side in one run.

Two views, interleaved round by round so machine noise hits all alike:

  one process   bare `sh -c true` against `vt exec [--sandbox] --no-cache -- true`,
                `vt exec -- true` (cache open, lookup, hit) and `vt --version` (vt's
                start: exec, the loader, RocksDB's static initializers, clap).
  one run       100 packages, each a `check` script `true`, run cold (empty cache) in one
                `vt run check -r` with -j1 and -j2 (and with `--sandbox`), against 100
                `sh -c true` one after the other and against turbo (`turbo run check --force --concurrency=2`):
                what a monorepo's hundreds of small lint/test tasks pay.
  a peer        with bubblewrap installed (`bwrap`, Debian's `bubblewrap`), the same
                `sh -c true` in bwrap giving the view vt's sandbox gives (the system
                directories and /etc's essentials read-only, fresh /dev, /proc and /tmp,
                the workspace read-only, the package writable, every namespace, no
                capabilities), alone and 100 one after the other: what that isolation
                costs by the reference sandbox, without any tracing or cache.

Then the per-phase table: `VT_TIMINGS=1` (sandbox/src/timings.rs) for the cold -j1 run,
medians over the rounds, per task. `--baseline PATH` adds another vt binary (e.g. the
commit before) to every row.

    python3 bench/fixed_cost.py [--rounds 7] [--vt PATH] [--baseline PATH]
"""
import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import fresh_copies, npm_git_workspace, npm_install, save_results

TASKS = 100


def generate(root: Path) -> None:
    root.mkdir(parents=True)
    npm_version = subprocess.run(["npm", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    (root / "package.json").write_text(json.dumps({
        "name": "fixed-cost", "private": True, "workspaces": ["packages/*"],
        "packageManager": f"npm@{npm_version}",
    }))
    (root / "turbo.json").write_text(json.dumps({
        "$schema": "https://turbo.build/schema.json", "tasks": {"check": {"outputs": []}},
    }))
    for i in range(TASKS):
        pkg = root / "packages" / f"p{i:03}"
        pkg.mkdir(parents=True)
        (pkg / "package.json").write_text(json.dumps({
            "name": f"p{i:03}", "version": "1.0.0", "scripts": {"check": "true"},
        }))
    npm_git_workspace(root, "node_modules/\n.turbo/\n")


def sandbox_view() -> list:
    """The host paths vt's sandbox shows read-only to every task: `SYSTEM_DIRS` and
    `ETC_ESSENTIALS` of sandbox/src/jail/plan.rs, read from there so the two stay one list."""
    plan = (Path(__file__).resolve().parent.parent / "sandbox" / "src" / "jail" / "plan.rs").read_text()
    paths = []
    for name in ("SYSTEM_DIRS", "ETC_ESSENTIALS"):
        body = re.search(rf"pub const {name}: &\[&str\] = &\[(.*?)\];", plan, re.S)
        if not body:
            raise SystemExit(f"bench/fixed_cost.py: {name} not found in {plan}")
        paths += re.findall(r'"([^"]+)"', body.group(1))
    return paths


def bwrap_command(workspace: Path, package: Path, command: list) -> list:
    """`command` in bubblewrap with the view of vt's sandbox (sandbox/examples/sandbox_setup.rs
    gives bwrap the same one)."""
    cmd = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
           "--hostname", "vt-sandbox"]
    for path in sandbox_view():
        if os.path.islink(path):
            cmd += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            cmd += ["--ro-bind", path, path]
    cmd += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
            "--ro-bind", str(workspace), str(workspace), "--bind", str(package), str(package),
            "--chdir", str(package)]
    return cmd + command


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    target = Path(os.environ.get("CARGO_TARGET_DIR", "/var/cache/vt-ci/target"))
    parser.add_argument("--vt", default=str(target / "release" / "vt"))
    parser.add_argument("--baseline", help="another vt binary, measured in the same rounds")
    parser.add_argument("--no-turbo", action="store_true")
    args = parser.parse_args()
    vts = {"vt": args.vt}
    if args.baseline:
        vts["baseline"] = args.baseline
    turbo = None if args.no_turbo else npm_install("turbo", "turbo@^2") / ".bin" / "turbo"
    work = Path(tempfile.mkdtemp(prefix="vt-bench-fixed-"))
    vts = fresh_copies(vts, work / "bin")
    root = work / "ws"
    generate(root)
    # A cache per binary: two vt of different cache schemas would wipe each other's.
    caches = {name: work / f"vt-cache-{name}" for name in vts}
    env = dict(os.environ, TURBO_TELEMETRY_DISABLED="1",
               DO_NOT_TRACK="1", TURBO_NO_UPDATE_NOTIFIER="1")
    env.pop("VT_TIMINGS", None)
    pkg = root / "packages" / "p000"

    def timed(cmd, cwd=root, extra=None):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=dict(env, **(extra or {})), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start

    single = {"bare sh -c true": (["sh", "-c", "true"], None)}
    for name, vt in vts.items():
        # Not the cache the `run` rows delete every round: the first "hit" of each round
        # would be a miss.
        own = {"VT_CACHE_DIR": str(work / f"vt-cache-{name}-one")}
        single[f"{name} --version"] = ([vt, "--version"], own)
        single[f"{name} exec --no-cache -- true"] = ([vt, "exec", "--no-cache", "--", "true"], own)
        single[f"{name} exec --sandbox --no-cache -- true"] = (
            [vt, "exec", "--sandbox", "--no-cache", "--", "true"], own)
        single[f"{name} exec -- true (a hit)"] = ([vt, "exec", "--", "true"], own)
    boxed = bwrap_command(root, pkg, ["sh", "-c", "true"]) if shutil.which("bwrap") else None
    if boxed:
        single["bwrap, vt's sandbox view, sh -c true"] = (boxed, None)
    else:
        print("(no bwrap: the bubblewrap rows are left out; `apt-get install bubblewrap`, or `bash bench/run`)")
    loop = ["sh", "-c", f"for i in $(seq {TASKS}); do sh -c true; done"]
    many = {f"{TASKS}× sh -c true, one after the other": (loop, None)}
    if boxed:
        # The same loop, each `sh -c true` in its own bubblewrap sandbox.
        many[f"{TASKS}× bwrap … sh -c true, one after the other"] = (
            ["sh", "-c", f"for i in $(seq {TASKS}); do {shlex.join(boxed)}; done"], None)
    for name, vt in vts.items():
        for jobs in ("1", "2"):
            many[f"{name} run check -r -j{jobs}, cold"] = (
                [vt, "run", "check", "-r", "-j", jobs], caches[name])
        # The sandbox's cost per task inside one run (what a sandboxed monorepo pays).
        for jobs in ("1", "2"):
            many[f"{name} run check -r --sandbox -j{jobs}, cold"] = (
                [vt, "run", "check", "-r", "--sandbox", "-j", jobs], caches[name])
    if turbo:
        # Only at 2: turbo starts each script through `npm run` (a node process, ~0.3 s per
        # task here), so a serial run would take most of the benchmark's time.
        many["turbo run check --force --concurrency=2"] = (
            [str(turbo), "run", "check", "--force", "--output-logs=none", "--no-daemon",
             "--concurrency=2"], None)

    # Once untimed: the first `exec -- true` of a binary fills its cache (a miss).
    for cmd, extra in single.values():
        timed(cmd, cwd=pkg, extra=extra)
    times = {k: [] for k in list(single) + list(many)}
    phases = {name: {} for name in vts}
    for round_ in range(args.rounds):
        # The order reversed every other round: a run leaves work behind it (the kernel's
        # teardown of its sandboxes' namespaces, layers its remover had not removed, which
        # the next vt sweeps), and whatever runs next pays it. Alternating spreads that
        # over both binaries alike.
        order = (lambda d: list(d.items())) if round_ % 2 == 0 else (lambda d: list(d.items())[::-1])
        for label, (cmd, extra) in order(single):
            for _ in range(5):  # a few per round: each is milliseconds
                times[label].append(timed(cmd, cwd=pkg, extra=extra))
        for label, (cmd, clear) in order(many):
            if clear:
                shutil.rmtree(clear, ignore_errors=True)
            times[label].append(timed(cmd, extra=clear and {"VT_CACHE_DIR": str(clear)}))
        for name, vt in vts.items():
            shutil.rmtree(caches[name], ignore_errors=True)
            out = subprocess.run([vt, "run", "check", "-r", "-j", "1"], cwd=root, check=True,
                                 env=dict(env, VT_TIMINGS="1", VT_CACHE_DIR=str(caches[name])),
                                 capture_output=True, text=True).stderr
            for line in out.splitlines():
                if line.startswith("vt timing: "):
                    phase, _count, ms = line[len("vt timing: "):].rsplit(" ", 2)
                    phases[name].setdefault(phase, []).append(float(ms))
    med = {k: statistics.median(v) for k, v in times.items()}
    # A median hides a cost paid in some runs only (a wait at exit in one run of four):
    # the mean and the 90th percentile show it.
    mean = {k: statistics.mean(v) for k, v in times.items()}
    p90 = {k: sorted(v)[int(len(v) * 0.9)] for k, v in times.items()}
    bare = med["bare sh -c true"]
    print(f"machine: {os.cpu_count()} cores; rounds: {args.rounds} (interleaved)\n")
    print("| one process | median (ms) | mean (ms) | p90 (ms) | median over bare `sh -c true` (ms) |")
    print("|---|---|---|---|---|")
    for label in single:
        print(f"| `{label}` | {med[label] * 1000:.2f} | {mean[label] * 1000:.2f} "
              f"| {p90[label] * 1000:.2f} | {(med[label] - bare) * 1000:+.2f} |")
    loop_s = med[f"{TASKS}× sh -c true, one after the other"]
    print(f"\n| {TASKS} tiny tasks, cold | total (s) | per task (ms) | per task over bare (ms) |")
    print("|---|---|---|---|")
    for label in many:
        per = med[label] / TASKS * 1000
        print(f"| {label} | {med[label]:.3f} | {per:.2f} | {per - loop_s / TASKS * 1000:+.2f} |")
    if "baseline" in vts:
        # The comparison that holds in a noisy hour: each round's own ratio (the two ran in
        # the same round, in alternating order), its median and quartiles.
        print("\n| vt against the baseline, per-round ratio | median | q1 | q3 |")
        print("|---|---|---|---|")
        for label in list(single) + list(many):
            if not label.startswith("vt "):
                continue
            other = "baseline " + label[len("vt "):]
            if other not in times:
                continue
            if label in single:
                # Five of each per round: the round's medians.
                per_round = [statistics.median(times[label][i:i + 5]) / statistics.median(times[other][i:i + 5])
                             for i in range(0, len(times[label]), 5)]
            else:
                per_round = [a / b for a, b in zip(times[label], times[other])]
            per_round.sort()
            n = len(per_round)
            print(f"| {label[len('vt '):]} | {statistics.median(per_round):.3f} "
                  f"| {per_round[n // 4]:.3f} | {per_round[(3 * n) // 4]:.3f} |")
    for name in vts:
        if not phases[name]:
            print(f"\n({name} prints no VT_TIMINGS table: a vt from before it existed)")
            continue
        print(f"\n| phase ({name}, -j1, cold; medians of the run's totals) | total (ms) | per task (ms) |")
        print("|---|---|---|")
        for phase, values in phases[name].items():
            total = statistics.median(values)
            print(f"| {phase} | {total:.2f} | {total / TASKS:.3f} |")
    save_results("fixed_cost", {"single_ms": {k: med[k] * 1000 for k in single},
                                "single_mean_ms": {k: mean[k] * 1000 for k in single},
                                "single_p90_ms": {k: p90[k] * 1000 for k in single},
                                "many_s": {k: med[k] for k in many},
                                "phases_ms": {n: {p: statistics.median(v) for p, v in ph.items()}
                                              for n, ph in phases.items()}})
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())

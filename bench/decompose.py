#!/usr/bin/env python3
"""Where vt's tracing overhead comes from, one layer at a time.

Runs a workload of tracing_overhead.py's (`make -s -j2` of the 200-file C workspace, or
with `--workload node` node requiring 2 000 modules) six ways, interleaved round by round
so machine drift hits all alike:

  bare        the workload alone
  preload     with an empty `LD_PRELOAD` library: what loading any library costs
  recorder    with vt's recorder and its buffers, no vt: the fast path alone, no seccomp
  fanotify    under a fanotify group marked like vt's second source, which nobody reads
              while the workload runs (`probes/fanotify_group.c`): the kernel's side of
              the cross-check alone, what each event costs the process that causes it
  vt-nofan    `vt trace` without its second source (`VT_FANOTIFY=off`)
  vt          `vt trace -o /dev/null -- WORKLOAD`

and prints, for each against bare: the median of the rounds' own ratios with a bootstrap
95 % interval, the ratio of medians, and the CPU ratio (user + system of all processes).
The interval is what says whether a target such as ≤1.10× is met or only touched.

    python3 bench/decompose.py [--rounds 15] [--vt PATH] [--workload make|node]

The recorder is the copy vt extracts for its runs (`$XDG_RUNTIME_DIR/vt` or `/tmp/vt-UID`),
so vt runs once first. Prints a Markdown table; writes nothing.
"""
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import parse_args, probe
from tracing_overhead import generate_make, generate_node


def recorder_copy(vt: str, work: Path) -> Path:
    """The recorder library vt injects, after one run has made sure it is extracted."""
    subprocess.run([vt, "trace", "-o", "/dev/null", "--", "true"], cwd=work, check=True)
    places = []
    if os.environ.get("XDG_RUNTIME_DIR"):
        places.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "vt")
    places.append(Path(tempfile.gettempdir()) / f"vt-{os.getuid()}")
    copies = [p for place in places for p in place.glob("preload-*/libvt_preload.so")]
    if not copies:
        sys.exit(f"no extracted recorder under {', '.join(map(str, places))}")
    return max(copies, key=lambda p: p.stat().st_mtime)


def empty_library(work: Path) -> Path:
    source = work / "empty.c"
    source.write_text("int vt_bench_empty_library;\n")
    library = work / "libempty.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(library), str(source)], check=True)
    return library


def bootstrap_median(values, draws=4000, seed=1):
    """95 % interval of the median, by resampling the rounds."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    return medians[int(0.025 * draws)], medians[int(0.975 * draws) - 1]


def main() -> int:
    args = parse_args(rounds=15, workloads=("make", "node"))
    if not Path(args.vt).exists():
        print(f"{args.vt} not found: build it with `cargo build --release -p vt-executor`", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="vt-decompose-"))
    workload_dir = work / "workload"
    if args.workload == "node":
        generate_node(workload_dir)
        command, clean = ["node", "index.js"], None
        title = "node, 2 000 modules"
    else:
        generate_make(workload_dir)
        command, clean = ["make", "-s", "-j2"], ["make", "-s", "clean"]
        title = "make -s -j2, 200 C files"
    buffers = Path("/dev/shm" if os.access("/dev/shm", os.W_OK) else work) / f"vt-decompose-{os.getpid()}"
    variants = {
        "bare": ([], {}),
        "preload": ([], {"LD_PRELOAD": str(empty_library(work))}),
        "recorder": ([], {"LD_PRELOAD": str(recorder_copy(args.vt, work)), "VT_PRELOAD_DIR": str(buffers)}),
        "fanotify": ([str(probe(work, "fanotify_group")), str(workload_dir)], {}),
        "vt-nofan": ([args.vt, "trace", "-o", "/dev/null", "--"], {"VT_FANOTIFY": "off"}),
        "vt": ([args.vt, "trace", "-o", "/dev/null", "--"], {}),
    }
    labels = {
        "preload": "an empty `LD_PRELOAD` library, no vt",
        "recorder": "vt's recorder and its buffers, no vt",
        "fanotify": "a fanotify group like vt's second source, never read, no vt",
        "vt-nofan": "`vt trace`, `VT_FANOTIFY=off`",
        "vt": "`vt trace`",
    }
    wall = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    subprocess.run(command, cwd=workload_dir, check=True, stdout=subprocess.DEVNULL)  # warm
    for _ in range(args.rounds):
        for name, (prefix, env) in variants.items():
            if clean:
                subprocess.run(clean, cwd=workload_dir, check=True, stdout=subprocess.DEVNULL)
            shutil.rmtree(buffers, ignore_errors=True)
            buffers.mkdir()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run([*prefix, *command], cwd=workload_dir, check=True,
                           env=dict(os.environ, **env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall[name].append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    shutil.rmtree(buffers, ignore_errors=True)
    shutil.rmtree(work)

    bare, bare_cpu = statistics.median(wall["bare"]), statistics.median(cpu["bare"])
    print(f"{title}; {args.rounds} interleaved rounds; bare {bare:.2f} s, CPU {bare_cpu:.2f} s\n")
    print("| variant | per-round median | 95 % interval | ratio of medians | CPU |")
    print("|---|---|---|---|---|")
    for name in ("preload", "recorder", "fanotify", "vt-nofan", "vt"):
        ratios = [v / b for v, b in zip(wall[name], wall["bare"])]
        low, high = bootstrap_median(ratios)
        print(
            f"| {labels[name]} | {statistics.median(ratios):.3f}× | {low:.3f}–{high:.3f}× "
            f"| {statistics.median(wall[name]) / bare:.3f}× | {statistics.median(cpu[name]) / bare_cpu:.3f}× |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

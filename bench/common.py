"""What the benchmark scripts share: npm packages installed once outside the clone, and
results written for bench/plot.py."""
import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def npm_install(package: str, spec: str) -> Path:
    """node_modules holding `spec`, installed once into $VT_NPM_INSTALLS (outside the clone)."""
    base = Path(os.environ.get("VT_NPM_INSTALLS", "/var/cache/vt-ci/npm-installs")) / package
    base.mkdir(parents=True, exist_ok=True)
    if not (base / "package.json").exists():
        (base / "package.json").write_text('{"private":true}')
    if not (base / "node_modules" / package / "package.json").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", spec], cwd=base, check=True)
    return base / "node_modules"


def save_results(name: str, data) -> None:
    """bench/results/NAME.json, which bench/plot.py draws."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")


def probe(work: Path, name: str) -> Path:
    """bench/probes/NAME.c, compiled into `work`."""
    binary = work / name
    source = Path(__file__).resolve().parent / "probes" / f"{name}.c"
    subprocess.run(["cc", "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def parse_args(rounds: int, workloads: tuple = ()) -> argparse.Namespace:
    """`--rounds N` and `--vt PATH` (default: the release vt in $CARGO_TARGET_DIR); with
    `workloads`, `--workload NAME`, the first by default."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=rounds)
    target = Path(os.environ.get("CARGO_TARGET_DIR", "/var/cache/vt-ci/target"))
    parser.add_argument("--vt", default=str(target / "release" / "vt"))
    if workloads:
        parser.add_argument("--workload", choices=workloads, default=workloads[0])
    return parser.parse_args()


def npm_git_workspace(root: Path, ignore: str) -> None:
    """`npm install` in `root` (links the workspace packages, writes the lockfile turbo reads),
    then a git checkout of it, as turbo expects: it hashes tracked files and honours
    .gitignore (without git it hashes its own logs too, and never hits)."""
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=root, check=True)
    (root / ".gitignore").write_text(ignore)
    git = ["git", "-c", "user.email=bench@vt.invalid", "-c", "user.name=bench"]
    subprocess.run(git + ["init", "-q"], cwd=root, check=True)
    subprocess.run(git + ["add", "-A"], cwd=root, check=True)
    subprocess.run(git + ["commit", "-qm", "bench workspace"], cwd=root, check=True)


def fresh_copies(binaries: dict, into: Path) -> dict:
    """Each binary copied into `into` now, so that every one compared starts from a file
    written at the same moment. A binary file written long ago started measurably slower
    here than a fresh copy of itself (`vt --version` 0.12-0.13 ms per run, 150 interleaved
    rounds, 2026-12-06): its page cache, not its code. Comparing a fresh build against an
    old file credits the new code with that difference."""
    into.mkdir(parents=True, exist_ok=True)
    copies = {}
    for name, path in binaries.items():
        copy = into / f"{name}-{Path(path).name}"
        shutil.copy2(path, copy)
        copies[name] = str(copy)
    return copies

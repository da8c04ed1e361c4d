#!/usr/bin/env python3
"""Draws bench/results/*.json (written by the benchmark scripts) into bench/plots/*.png for
BENCHMARKS.md. Needs matplotlib: `bench/run` provides it in a venv outside the clone."""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent


def bars(title, groups, series, values, ylabel, path):
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(series)
    for i, name in enumerate(series):
        xs = [g + i * width for g in range(len(groups))]
        ax.bar(xs, [values[group][name] for group in groups], width, label=name)
    ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))], groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> int:
    results, plots = HERE / "results", HERE / "plots"
    plots.mkdir(exist_ok=True)
    peers = results / "peers.json"
    if peers.exists():
        data = json.loads(peers.read_text())
        bars("100-package workspace: vt vs Turborepo (lower is better)", list(data), ["vt", "turbo"],
             data, "seconds", plots / "peers.png")
    tracing = results / "tracing.json"
    if tracing.exists():
        data = json.loads(tracing.read_text())
        ratios = {w: {k: v[k] / v["bare"] for k in ("vt", "seccomp only", "strace")} for w, v in data.items()}
        bars("Tracing overhead, × bare (lower is better)", list(ratios), ["vt", "seccomp only", "strace"],
             ratios, "× bare", plots / "tracing.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

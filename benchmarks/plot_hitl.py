"""Plot and tabulate a ``bench_hitl`` results file: per kind, the rest of the experiment and forgetting.

Writes a PNG with two panels (mean AP@0.5 on the kind's other images before
and after each recipe; mean change on the other kinds' panel) and prints the
Markdown table ``docs/benchmarks.md`` quotes.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.plot_hitl benchmarks/results/hitl.json --png docs/images/hitl.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def table(report: dict[str, Any]) -> str:
    """Markdown table: one row per kind, default AP@0.5 then after / forgetting for each recipe."""
    recipes = list(report["recipes"])
    head = "| kind (held-out images) | default | " + " | ".join(f"{r}: after / forgetting" for r in recipes) + " |"
    rows = [head, "|" + "---|" * (2 + len(recipes))]
    for kind, info in report["kinds"].items():
        cells = [f"{kind} ({len(info['images'])})", f"{info['default_ap50']:.3f}"]
        for recipe in recipes:
            row = report["recipes"][recipe][kind]
            cells.append(f"{np.mean(row['kind_after']):.3f} / {row['forgetting_mean']:+.3f}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(report: dict[str, Any], path: Path) -> None:
    """Two bar charts side by side, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds, recipes = list(report["kinds"]), list(report["recipes"])
    x = np.arange(len(kinds))
    width = 0.8 / (1 + len(recipes))
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    left.bar(x, [report["kinds"][k]["default_ap50"] for k in kinds], width, label="default model", color="0.6")
    for index, recipe in enumerate(recipes, start=1):
        after = [np.mean(report["recipes"][recipe][k]["kind_after"]) for k in kinds]
        forgetting = [report["recipes"][recipe][k]["forgetting_mean"] for k in kinds]
        left.bar(x + index * width, after, width, label=f"fine-tuned: {recipe}")
        right.bar(x + index * width, forgetting, width, label=recipe)
    settings = report["settings"]
    left.set_title(f"rest of the experiment after correcting {settings['k']} images ({settings['seconds']:.0f} s)")
    left.set_ylabel("mean AP@0.5")
    right.set_title("change on the other kinds (forgetting)")
    right.set_ylabel("mean AP@0.5 change")
    right.axhline(0, color="black", linewidth=0.8)
    for axes in (left, right):
        axes.set_xticks(x + width * len(recipes) / 2, kinds, rotation=25, ha="right", fontsize=8)
    left.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    """Read the results file, write the plot, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--png", type=Path, default=None)
    args = parser.parse_args()
    report = json.loads(args.results.read_text(encoding="utf-8"))
    if args.png:
        plot(report, args.png)
    print(table(report))


if __name__ == "__main__":
    main()

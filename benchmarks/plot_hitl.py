"""Plot and tabulate a ``bench_hitl`` results file: per kind, the rest of the experiment and forgetting.

Writes a PNG with two panels (mean AP@0.5 on the kind's other images before
and after each recipe; mean change on the other kinds' panel) and prints the
Markdown table ``docs/benchmarks.md`` quotes.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.plot_hitl benchmarks/results/hitl.json --png docs/images/hitl.png \\
        --grid benchmarks/results/hitl_k4_120.json ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def table(report: dict[str, Any], recipe: str = "shipped") -> str:
    """Markdown table of one recipe: per kind, default and fine-tuned AP@0.5, forgetting, what was kept, half image."""
    rows = [
        "| kind (held-out images) | default | fine-tuned | gain | forgetting | worst other kind | "
        "held-out corrections | kept | right half after correcting the left |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, info in report["kinds"].items():
        row = report["recipes"][recipe][kind]
        held = f"{row['held_out_before']['val_ap50']:.3f} -> {row['held_out_after']['val_ap50']:.3f}"
        half = row.get("half_image")
        cells = [
            f"{kind} ({len(info['images'])})",
            f"{info['default_ap50']:.3f}",
            f"{np.mean(row['kind_after']):.3f}",
            f"{row['kind_gain']:+.3f}",
            f"{row['forgetting_mean']:+.3f}",
            f"{min(row['forgetting'].values(), default=0.0):+.3f}",
            held if row.get("held_out_before") else "-",
            kept_text(row),
            f"{half['before']:.3f} -> {half['after']:.3f}" if half else "-",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def kept_text(row: dict[str, Any]) -> str:
    """What the run kept: the starting model, the new weights, or their average (and why)."""
    check = row.get("other_kinds_check") or {}
    if row["kept_parent"]:
        return "start (other kinds)" if check.get("kept_parent") else "start (held-out)"
    if "parent_share" in check:
        return f"average, {check['parent_share']:.0%} start"
    return "new, warned" if check.get("warning") else "new"


def grid_table(reports: list[dict[str, Any]], recipe: str = "shipped") -> str:
    """Markdown table over runs with other K / budgets: per kind, gain on the kind / mean forgetting of each run."""
    heads = [f"K={r['settings']['k']}, {r['settings']['seconds']:.0f} s" for r in reports]
    rows = ["| kind | " + " | ".join(f"{head}: gain / forgetting" for head in heads) + " |"]
    rows.append("|" + "---|" * (1 + len(reports)))
    for kind in reports[0]["kinds"]:
        cells = [kind]
        for report in reports:
            row = report["recipes"][recipe].get(kind)
            cells.append("-" if row is None else f"{row['kind_gain']:+.3f} / {row['forgetting_mean']:+.3f}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def order_table(uncertain: dict[str, Any], folder: dict[str, Any], recipe: str = "shipped") -> str:
    """Markdown table: per kind, the gain on the same scored images when the user corrects the K most uncertain
    of the pool or its first K (``bench_hitl --pool P --order uncertain|folder``)."""
    pool = uncertain["settings"]["pool"]
    rows = [
        f"| kind (scored images) | default | first {uncertain['settings']['k']} of {pool}: gain / forgetting "
        f"| most uncertain {uncertain['settings']['k']} of {pool}: gain / forgetting | same images chosen |",
        "|---|---|---|---|---|",
    ]
    for kind, info in uncertain["kinds"].items():
        first, unsure = folder["recipes"][recipe][kind], uncertain["recipes"][recipe][kind]
        same = "yes" if info["corrected"] == folder["kinds"][kind]["corrected"] else "no"
        cells = [
            f"{kind} ({len(unsure['kind_before'])})",
            f"{info['default_ap50']:.3f}",
            f"{first['kind_gain']:+.3f} / {first['forgetting_mean']:+.3f}",
            f"{unsure['kind_gain']:+.3f} / {unsure['forgetting_mean']:+.3f}",
            same,
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def scale_table(at_one: dict[str, Any], at_estimate: dict[str, Any], recipe: str = "shipped") -> str:
    """Markdown table: per kind, the run at scale 1 beside the run at the estimated scale
    (``bench_hitl --scale estimate``): start, gain / forgetting, what was kept, for each."""
    rows = [
        "| kind | scale 1: start | gain / forgetting | kept | estimated scale | start | gain / forgetting | kept |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, info in at_one["kinds"].items():
        one, estimate = at_one["recipes"][recipe][kind], at_estimate["recipes"][recipe][kind]
        estimated = at_estimate["kinds"][kind]
        cells = [
            kind,
            f"{info['default_ap50']:.3f}",
            f"{one['kind_gain']:+.3f} / {one['forgetting_mean']:+.3f}",
            kept_text(one),
            f"{estimated['scale']:.2f}",
            f"{estimated['default_ap50']:.3f}",
            f"{estimate['kind_gain']:+.3f} / {estimate['forgetting_mean']:+.3f}",
            kept_text(estimate),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


FORGETTING_AXIS = 0.1
"""The forgetting chart spans at least -0.1 to +0.1 AP@0.5 (the issue's limit for any kind)."""


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
    low, high = right.get_ylim()
    right.set_ylim(min(low, -FORGETTING_AXIS), max(high, FORGETTING_AXIS))  # a tiny change looks tiny
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
    parser.add_argument("--grid", type=Path, nargs="*", default=[], help="more runs (other K / budgets) to tabulate")
    parser.add_argument(
        "--order", type=Path, nargs=2, default=None, help="UNCERTAIN.json FOLDER.json: the correction-order runs"
    )
    parser.add_argument(
        "--scale", type=Path, nargs=2, default=None, help="ONE.json ESTIMATE.json: runs at scale 1 and estimated"
    )
    args = parser.parse_args()
    report = json.loads(args.results.read_text(encoding="utf-8"))
    if args.png:
        plot(report, args.png)
    print(table(report))
    if args.grid:
        print()
        print(grid_table([report, *(json.loads(path.read_text(encoding="utf-8")) for path in args.grid)]))
    if args.order:
        print()
        print(order_table(*(json.loads(path.read_text(encoding="utf-8")) for path in args.order)))
    if args.scale:
        print()
        print(scale_table(*(json.loads(path.read_text(encoding="utf-8")) for path in args.scale)))


if __name__ == "__main__":
    main()

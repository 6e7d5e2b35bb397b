"""Would a tighter forgetting limit on the corrected kind's own group of check crops refuse the harmful fine-tunes?

The other-kinds guard lets a child lose up to
:data:`~napari_unet.core.train.replay.GROUP_FORGETTING_LIMIT` (0.10) AP@0.5 on
any group of the replay set's check crops.  ``bench_hitl`` found children
that cost their own kind more than the issue's 0.02 while the check crops of
that kind's group (fluorescence crops for a fluorescence kind, colour crops
for a colour kind) lost less than 0.10.  A tighter limit for the own group
would refuse those, and maybe also children that helped.  This reads every
``bench_hitl`` result (``benchmarks/results/hitl*.json``), takes each child
that was kept (not the parent) and has check scores for its own group, drops
repeats (the same run reported in several files), and counts, for each
candidate limit, the children it would have refused: harmful ones (kind
worse by more than 0.02), helpful ones (better by more than 0.02) and the
rest.  No training: an analysis of measured runs.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.own_group_limit --json benchmarks/results/own_group_limit.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.report import is_bound, save

RESULTS = Path(__file__).parent / "results"
OWN_GROUP = {
    "dsb_colour_tissue": "colour",
    "dsb_stage2_colour": "colour",
    "synthetic_he": "colour",
    "dsb_fluorescence_small": "fluorescence",
    "dsb_fluorescence_large": "fluorescence",
    "dsb_stage2_fluorescence": "fluorescence",
    "s_bsst265_tumour": "tissue",
    "s_bsst265_normal": "tissue",
}
"""bench_hitl kind -> the replay set's group of check crops that holds images like it."""

LIMITS = (0.01, 0.02, 0.03, 0.05, 0.10)
HARM = 0.02
"""A child is harmful when its kind lost more than this (the issue's bound), helpful when it gained more."""


def kept_children(paths: list[Path]) -> list[dict[str, Any]]:
    """Every distinct kept child in ``paths`` with its kind's gain and its own group's check change.

    Returns
    -------
    list of dict
        ``model``, ``kind``, ``kind_gain``, ``own_group_change`` (child minus
        parent, pooled AP@0.5 on the own group's check crops) and ``files``
        (the results files that report this run), sorted by the change.
    """
    children: dict[tuple[Any, ...], dict[str, Any]] = {}
    for path in paths:
        report = json.loads(path.read_text())
        if is_bound(report):
            continue
        model = report.get("settings", {}).get("model") or "default"
        for kinds in report.get("recipes", {}).values():
            for kind, row in kinds.items():
                groups = (row.get("other_kinds_check") or {}).get("groups", {})
                own = groups.get(OWN_GROUP.get(kind, ""))
                if row.get("kept_parent") or own is None:
                    continue
                change = round(own[1] - own[0], 4)
                key = (model, kind, round(row["kind_gain"], 4), change, row.get("steps"))
                child = children.setdefault(
                    key,
                    {
                        "model": model,
                        "kind": kind,
                        "kind_gain": row["kind_gain"],
                        "own_group_change": change,
                        "files": [],
                    },
                )
                child["files"].append(path.name)
    return sorted(children.values(), key=lambda child: child["own_group_change"])


def refusals(children: list[dict[str, Any]], limit: float) -> dict[str, int]:
    """Children a limit of ``limit`` on the own group's loss would refuse, counted as harmful, helpful or neither."""
    refused = [child for child in children if -child["own_group_change"] > limit]
    harmful = sum(child["kind_gain"] < -HARM for child in refused)
    helpful = sum(child["kind_gain"] > HARM for child in refused)
    return {
        "refused": len(refused),
        "harmful": harmful,
        "helpful": helpful,
        "neither": len(refused) - harmful - helpful,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    paths = sorted(path for path in RESULTS.glob("hitl*.json"))
    children = kept_children(paths)
    report = {
        "benchmark": "own_group_limit",
        "harm": HARM,
        "children": len(children),
        "harmful": sum(child["kind_gain"] < -HARM for child in children),
        "helpful": sum(child["kind_gain"] > HARM for child in children),
        "limits": {f"{limit:.2f}": refusals(children, limit) for limit in LIMITS},
        "rows": children,
    }
    print(save(report, args.json))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

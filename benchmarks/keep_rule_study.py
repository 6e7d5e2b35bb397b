"""Would another held-out rule keep more of the fine-tunes that help and none more that harm?

A fine-tune of a trained model is kept only when the mean AP@0.5 of its
last :data:`~napari_unet.core.train.loop.LASTING_VALIDATIONS` checks on the
held-out corrections beats the starting model's by
:func:`~napari_unet.core.train.outcome.required_held_out_gain` of the
held-out nuclei (0.05, or two nuclei's worth on fewer than 40).  On kinds
the parent never saw that refuses children which improved the rest of the
kind (``pairs_v1_normal.json``, ``pairs_v1_tumour.json``); on the bundled
model's own kinds it refuses children that made it worse.

This reads every run made with the rule off (``--keep-every-child`` in
``bench_hitl`` and ``bench_pairs``), takes each child whose weights differ
from the parent's (``best_step`` > 0) together with its held-out checks, its
kind's gain and its forgetting on the other kinds' panel, drops repeats (the
same run reported in several files), and replays candidate rules on the
checks: a rule that refuses a child leaves its user with the parent (gain 0).
The records hold the checks as they ran (quick, without flips, for a model
that segments with them), so the shipped rule's confirmation with the flips
is not replayed: for such models it keeps at most what is counted here.
No training: an analysis of measured runs.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.keep_rule_study --json benchmarks/results/keep_rule_study.json
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import is_bound, save
from napari_unet.core.train.loop import LASTING_VALIDATIONS
from napari_unet.core.train.outcome import MIN_HELD_OUT_GAIN

RESULTS = Path(__file__).parent / "results"
HARM = 0.02
"""A child is harmful when its kind lost more than this (the issue's bound), helpful when it gained more."""
FORGOT = 0.10
"""A child forgot when one kind of the panel lost more than this (the issue's bound for any kind)."""
MARGINS = (1.0, 1.5, 2.0, 3.0)
"""Held-out nuclei's worth of AP@0.5 a rule may require (the shipped rule: 2)."""
HELD_OUT_MESSAGE = re.compile(r"validating on (\d+) held-out nuclei")


def every_child_reports(paths: list[Path]) -> list[Path]:
    """The results files of ``paths`` made with the held-out rule off (``settings.keep_every_child``).

    Bounds (``bench_hitl --correct-scored``) are not users: their children trained on the images they are
    scored on, so they are left out.
    """
    found = []
    for path in paths:
        report = json.loads(path.read_text())
        if report.get("settings", {}).get("keep_every_child") and not is_bound(report):
            found.append(path)
    return found


def report_rows(report: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(recipe, kind, row)`` of a bench_hitl report (rows by kind) or a bench_pairs one (rows by user)."""
    kind = report.get("settings", {}).get("kind")
    for recipe, rows in report.get("recipes", {}).items():
        if "users" in rows:
            for user in rows["users"]:
                yield recipe, kind, user
        else:
            for row_kind, row in rows.items():
                yield recipe, row_kind, row


def held_out_nuclei(row: dict[str, Any]) -> int | None:
    """Held-out nuclei of one child's run (its decision record, else its validation message)."""
    decision = row.get("held_out_decision")
    if decision:
        return int(decision["nuclei"])
    for message in row.get("messages", []):
        found = HELD_OUT_MESSAGE.match(message)
        if found:
            return int(found.group(1))
    return None


def children(paths: list[Path]) -> list[dict[str, Any]]:
    """Every distinct fine-tuned child in ``paths`` with its checks, nuclei, kind gain and worst forgetting.

    Returns
    -------
    list of dict
        ``model``, ``kind``, ``recipe``, ``nuclei``, ``start`` (the parent's
        held-out AP@0.5), ``checks`` (AP@0.5 of each later check, in order),
        ``kind_gain``, ``worst_forgetting`` (the most any panel kind lost,
        negative when worse) and ``files``.
    """
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for path in paths:
        report = json.loads(path.read_text())
        model = report.get("settings", {}).get("model") or "default"
        for recipe, kind, row in report_rows(report):
            checks = [check["val_ap50"] for check in row.get("validations") or []]
            nuclei = held_out_nuclei(row)
            if row.get("best_step", 0) == 0 or len(checks) < 2 or nuclei is None:
                continue
            forgetting = row.get("forgetting") or {}
            child = {
                "model": model,
                "kind": kind,
                "recipe": recipe,
                "nuclei": nuclei,
                "start": checks[0],
                "checks": checks[1:],
                "kind_gain": row["kind_gain"],
                "worst_forgetting": min(forgetting.values(), default=0.0),
            }
            key = (model, kind, nuclei, tuple(np.round(checks, 4)), round(row["kind_gain"], 4))
            found.setdefault(key, {**child, "files": []})["files"].append(path.name)
    return list(found.values())


Rule = Callable[[dict[str, Any]], bool]


def required_gain(nuclei: int, margin: float) -> float:
    """``max(MIN_HELD_OUT_GAIN, margin / nuclei)``: the shipped :func:`required_held_out_gain` at margin 2."""
    return max(MIN_HELD_OUT_GAIN, margin / max(1, nuclei))


def last_checks_rule(margin: float) -> Rule:
    """The shipped statistic: the mean of the last LASTING_VALIDATIONS checks beats the start by the gain."""

    def keeps(child: dict[str, Any]) -> bool:
        late = float(np.mean(child["checks"][-LASTING_VALIDATIONS:]))
        return late >= child["start"] + required_gain(child["nuclei"], margin) - 1e-9

    return keeps


def later_half_rule(margin: float, every_check_above: bool = False) -> Rule:
    """The mean of the later half of the checks beats the start by the gain (and, optionally, every one of them)."""

    def keeps(child: dict[str, Any]) -> bool:
        later = child["checks"][len(child["checks"]) // 2 :]
        if every_check_above and min(later) <= child["start"]:
            return False
        return float(np.mean(later)) >= child["start"] + required_gain(child["nuclei"], margin) - 1e-9

    return keeps


def candidate_rules() -> dict[str, Rule]:
    """Rule name -> rule: the shipped statistic and two others, each at every margin of :data:`MARGINS`."""
    rules: dict[str, Rule] = {}
    for margin in MARGINS:
        rules[f"last {LASTING_VALIDATIONS} checks, {margin:g} nuclei"] = last_checks_rule(margin)
        rules[f"later half, {margin:g} nuclei"] = later_half_rule(margin)
        rules[f"later half all above start, {margin:g} nuclei"] = later_half_rule(margin, every_check_above=True)
    rules["every child"] = lambda child: True
    return rules


def outcome(group: list[dict[str, Any]], rule: Rule) -> dict[str, Any]:
    """What ``rule`` would have done to the children of ``group``: kept, harmful and helpful counts, mean gain."""
    kept = [child for child in group if rule(child)]
    refused = [child for child in group if not rule(child)]
    return {
        "kept": len(kept),
        "kept_harmful": sum(child["kind_gain"] < -HARM for child in kept),
        "kept_forgot": sum(child["worst_forgetting"] < -FORGOT for child in kept),
        "refused_helpful": sum(child["kind_gain"] > HARM for child in refused),
        "mean_gain": float(np.mean([child["kind_gain"] if rule(child) else 0.0 for child in group])) if group else 0.0,
        "worst_kept": min((child["kind_gain"] for child in kept), default=0.0),
    }


def groups(found: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The children by parent: the bundled model's own real kinds, v1's kinds it never saw, and synthetic H&E."""
    real = [child for child in found if not child["kind"].startswith("synthetic")]
    return {
        "bundled model, real kinds": [child for child in real if child["model"] == "default"],
        "v1, kinds it never saw": [child for child in real if child["model"] != "default"],
        "synthetic H&E": [child for child in found if child["kind"].startswith("synthetic")],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    paths = every_child_reports(sorted(RESULTS.glob("hitl*.json")) + sorted(RESULTS.glob("pairs*.json")))
    found = children(paths)
    by_group = groups(found)
    report = {
        "benchmark": "keep_rule_study",
        "harm": HARM,
        "forgot": FORGOT,
        "files": [path.name for path in paths],
        "children": {name: len(group) for name, group in by_group.items()},
        "rules": {
            name: {group_name: outcome(group, rule) for group_name, group in by_group.items()}
            for name, rule in candidate_rules().items()
        },
        "rows": found,
    }
    print(save(report, args.json))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

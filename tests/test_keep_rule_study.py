from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.keep_rule_study import (
    candidate_rules,
    children,
    every_child_reports,
    groups,
    last_checks_rule,
    later_half_rule,
    outcome,
)
from napari_unet.core.train.outcome import required_held_out_gain


def write(path: Path, recipes: dict, **settings) -> Path:
    path.write_text(json.dumps({"settings": {"keep_every_child": True, **settings}, "recipes": recipes}))
    return path


def hitl_row(checks: list[float], gain: float, nuclei: int = 12, best_step: int = 50, worst: float = 0.0) -> dict:
    return {
        "validations": [{"step": 25 * i, "val_ap50": ap} for i, ap in enumerate(checks)],
        "messages": [f"validating on {nuclei} held-out nuclei (a strip of 2 image(s))"],
        "best_step": best_step,
        "kind_gain": gain,
        "forgetting": {"dsb_fluorescence_small": worst, "s_bsst265_normal": 0.01},
    }


def test_children_are_read_from_hitl_and_pairs_runs_once_each(tmp_path):
    row = hitl_row([0.5, 0.6, 0.7, 0.8], 0.05, worst=-0.2)
    first = write(tmp_path / "hitl_a.json", {"shipped": {"dsb_colour_tissue": row}})
    again = write(tmp_path / "hitl_b.json", {"shipped": {"dsb_colour_tissue": row}}, model="default")
    parent = write(tmp_path / "hitl_c.json", {"shipped": {"s_bsst265_normal": hitl_row([0.5, 0.6], 0.0, best_step=0)}})
    user = {**hitl_row([0.4, 0.45, 0.5], 0.1), "messages": [], "held_out_decision": {"nuclei": 30}}
    pairs = write(tmp_path / "pairs_x.json", {"shipped": {"users": [user]}}, model="out/v1", kind="s_bsst265_tumour")
    ruled = tmp_path / "hitl_rule.json"
    ruled.write_text(json.dumps({"settings": {"keep_every_child": False}, "recipes": {}}))
    bound = write(tmp_path / "hitl_bound.json", {"shipped": {"dsb_colour_tissue": row}}, correct_scored=True)
    paths = every_child_reports([first, again, parent, pairs, ruled, bound])
    assert paths == [first, again, parent, pairs], "runs made with the rule on, and bounds, are not read"
    found = children(paths)
    assert len(found) == 2, "the same run in two files counts once; a child that is the parent is left out"
    hitl, user_child = found
    assert hitl["files"] == ["hitl_a.json", "hitl_b.json"]
    assert (hitl["start"], hitl["checks"], hitl["nuclei"], hitl["worst_forgetting"]) == (0.5, [0.6, 0.7, 0.8], 12, -0.2)
    assert (user_child["model"], user_child["kind"], user_child["nuclei"]) == ("out/v1", "s_bsst265_tumour", 30)
    assert list(groups(found)) == ["bundled model, real kinds", "v1, kinds it never saw", "synthetic H&E"]
    assert groups(found)["v1, kinds it never saw"] == [user_child]


def test_the_margin_two_rule_is_the_shipped_one_and_the_others_differ_where_they_should():
    assert "last 3 checks, 2 nuclei" in candidate_rules()
    shipped = last_checks_rule(2.0)
    needed = required_held_out_gain(12)  # two nuclei's worth: 0.167
    just = {"nuclei": 12, "start": 0.5, "checks": [0.9, 0.5, 0.5 + needed, 0.5 + needed, 0.5 + needed]}
    short = {**just, "checks": [0.9, 0.9, 0.5 + needed - 0.01, 0.5 + needed - 0.01, 0.5 + needed - 0.01]}
    assert shipped(just) and not shipped(short)
    assert last_checks_rule(1.0)(short), "one nucleus's worth asks less"
    dipped = {"nuclei": 100, "start": 0.5, "checks": [0.7, 0.7, 0.7, 0.7, 0.45, 0.7]}  # later half 0.45-0.7
    assert later_half_rule(2.0)(dipped) and not later_half_rule(2.0, every_check_above=True)(dipped)


def test_outcome_counts_what_a_rule_keeps_and_refuses_and_the_users_expected_gain():
    helpful = {"nuclei": 100, "start": 0.5, "checks": [0.8] * 4, "kind_gain": 0.10, "worst_forgetting": -0.2}
    harmful = {"nuclei": 100, "start": 0.5, "checks": [0.6] * 4, "kind_gain": -0.05, "worst_forgetting": 0.0}
    refused = {"nuclei": 100, "start": 0.5, "checks": [0.5] * 4, "kind_gain": 0.04, "worst_forgetting": 0.0}
    result = outcome([helpful, harmful, refused], last_checks_rule(2.0))
    assert result["kept"] == 2 and result["kept_harmful"] == 1 and result["kept_forgot"] == 1
    assert result["refused_helpful"] == 1 and result["worst_kept"] == -0.05
    assert result["mean_gain"] == pytest.approx((0.10 - 0.05 + 0.0) / 3)

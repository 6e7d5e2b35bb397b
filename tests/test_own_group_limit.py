from __future__ import annotations

import json
from pathlib import Path

from benchmarks.own_group_limit import kept_children, refusals


def write_report(path: Path, rows: dict[str, dict], model: str | None = None) -> Path:
    path.write_text(json.dumps({"settings": {"model": model}, "recipes": {"shipped": rows}}))
    return path


def child(gain: float, parent: float, after: float, kept_parent: bool = False) -> dict:
    return {
        "kind_gain": gain,
        "kept_parent": kept_parent,
        "steps": 548,
        "other_kinds_check": {"groups": {"colour": [parent, after], "fluorescence": [0.8, 0.5]}},
    }


def test_children_are_read_once_with_their_own_group_and_counted_by_limit(tmp_path):
    rows = {"synthetic_he": child(0.30, 0.70, 0.62), "dsb_colour_tissue": child(-0.05, 0.70, 0.67)}
    first = write_report(tmp_path / "hitl_a.json", rows)
    again = write_report(tmp_path / "hitl_b.json", {"synthetic_he": child(0.30, 0.70, 0.62)}, model="default")
    parent_kept = write_report(tmp_path / "hitl_c.json", {"dsb_colour_tissue": child(0.0, 0.7, 0.1, kept_parent=True)})
    children = kept_children([first, again, parent_kept])
    assert [(c["kind"], c["own_group_change"]) for c in children] == [
        ("synthetic_he", -0.08),
        ("dsb_colour_tissue", -0.03),
    ]
    assert children[0]["files"] == ["hitl_a.json", "hitl_b.json"], "the same run in two files counts once"
    assert refusals(children, 0.02) == {"refused": 2, "harmful": 1, "helpful": 1, "neither": 0}
    assert refusals(children, 0.05) == {"refused": 1, "harmful": 0, "helpful": 1, "neither": 0}
    assert refusals(children, 0.10)["refused"] == 0


def test_correct_scored_bounds_are_not_read_as_users(tmp_path):
    bound = tmp_path / "hitl_bound.json"
    bound.write_text(
        json.dumps(
            {"settings": {"correct_scored": True}, "recipes": {"shipped": {"synthetic_he": child(0.3, 0.7, 0.6)}}}
        )
    )
    user = write_report(tmp_path / "hitl_user.json", {"dsb_colour_tissue": child(-0.05, 0.70, 0.67)})
    assert [c["files"] for c in kept_children([bound, user])] == [["hitl_user.json"]]

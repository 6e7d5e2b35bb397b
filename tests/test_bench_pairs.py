"""``benchmarks/bench_pairs.py``: many simulated users of one kind, each correcting different images."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.bench_hitl import recipe_config
from benchmarks.bench_pairs import panel_items, summary, trained_on, users_of
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.models.registry import load_model
from napari_unet.core.train.inputs import image_checksums


def test_users_correct_disjoint_groups_after_the_scored_images():
    found = [(f"k{i}", None, None) for i in range(11)]
    assert users_of(found, scored=4, k=2, users=3) == [[4, 5], [6, 7], [8, 9]]  # image 10 has no partner
    with pytest.raises(SystemExit, match="only 3 groups"):
        users_of(found, scored=4, k=2, users=4)


def test_the_forgetting_panel_is_the_same_images_whatever_k_the_users_correct():
    items = [f"other{i}" for i in range(5)]
    assert panel_items("other", items, panel=2) == ["other2", "other3"]  # bench_hitl's K = 2 panel
    assert panel_items("other", items[:3], panel=2) == ["other2"]
    with pytest.raises(SystemExit, match="none left for its forgetting panel"):
        panel_items("other", items[:2], panel=2)


def test_images_that_trained_the_model_are_found_by_their_pixels():
    (image_a, labels_a), (image_b, labels_b) = (
        synthetic_nuclei((32, 32), 3, seed=1),
        synthetic_nuclei((32, 32), 3, seed=2),
    )
    lineage = {"data": [image_checksums(image_b, labels_b)]}
    bundle = SimpleNamespace(metadata={"lineage": lineage})
    assert trained_on(bundle, [("a", image_a, labels_a), ("b", image_b, labels_b)]) == ["b"]
    assert trained_on(SimpleNamespace(metadata={}), [("a", image_a, labels_a)]) == []


def test_summary_averages_over_users_and_splits_them_by_corrected_nuclei():
    rows = [
        {"kind_gain": gain, "nuclei": count, "kept_parent": kept, "forgetting": {"x": f}, "forgetting_mean": f}
        for gain, count, kept, f in [(0.2, 100, False, -0.01), (-0.05, 20, False, -0.03), (0.0, 30, True, 0.0)]
    ]
    result = summary(rows)
    assert result["mean_gain"] == pytest.approx(0.05)
    assert result["standard_error"] == pytest.approx(np.std([0.2, -0.05, 0.0], ddof=1) / np.sqrt(3))
    assert (result["users_gaining_0_10"], result["users_worse_0_02"], result["parent_kept"]) == (1, 1, 1)
    assert result["worst_forgetting"] == pytest.approx(-0.03)
    assert result["median_nuclei"] == 30
    assert result["fewer_nuclei"] == pytest.approx(-0.05)  # the user with 20 nuclei
    assert result["more_nuclei"] == pytest.approx(0.1)  # 30 and 100


def test_a_recipe_config_is_the_shipped_fine_tune_with_the_recipe_changes_and_a_step_budget():
    bundle = load_model("default")
    shipped, no_replay = recipe_config(bundle, "shipped", 548.4, 3), recipe_config(bundle, "no_replay", 0.2, 0)
    assert (shipped.max_steps, shipped.max_seconds, shipped.seed) == (548, None, 3)
    assert no_replay.max_steps == 1 and no_replay.replay_fraction == 0.0
    assert shipped.replay_fraction > 0

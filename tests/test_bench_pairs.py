"""``benchmarks/bench_pairs.py``: many simulated users of one kind, each correcting different images."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.bench_hitl import recipe_config
from benchmarks.bench_pairs import main, of_look, panel_items, stain_look, summary, trained_on, users_of
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


def crop(means: tuple[float, float, float], spreads: tuple[float, float, float], shape=(256, 320)) -> np.ndarray:
    """A ``(*shape, 3)`` uint8 image whose channels have about these means and spreads."""
    rng = np.random.default_rng(0)
    return np.clip(rng.normal(means, spreads, (*shape, 3)), 0, 255).astype(np.uint8)


def test_the_stain_look_sorts_crops_by_channel_means_and_spreads():
    assert stain_look(crop((193, 82, 153), (23, 48, 42))) == "pink"
    assert stain_look(crop((202, 197, 217), (24, 46, 12))) == "white"
    assert stain_look(crop((175, 155, 207), (11, 15, 3))) == "pale"
    assert stain_look(crop((150, 118, 196), (34, 49, 8))) == "blue"
    assert stain_look(crop((180, 163, 201), (36, 64, 25))) == "purple"
    assert stain_look(crop((180, 163, 201), (36, 64, 25), shape=(512, 680))) == "other"  # not a DSB crop
    found = [("a", crop((150, 118, 196), (34, 49, 8)), None), ("b", crop((175, 155, 207), (11, 15, 3)), None)]
    assert [key for key, _, _ in of_look(found, "blue")] == ["a"] and of_look(found, None) == found


def test_a_look_is_refused_for_kinds_other_than_dsb_colour_tissue():
    argv = ["--model", "default", "--kind", "s_bsst265_normal", "--look", "blue", "--steps-per-second", "1"]
    with pytest.raises(SystemExit, match="DSB colour tissue images only"):
        main(argv)

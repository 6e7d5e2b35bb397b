"""``benchmarks/bench_hitl.py``: the simulated user segments and fine-tunes an experiment at its estimated scale."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.transform import rescale

from benchmarks.bench_hitl import (
    experiment_scale,
    image_scales,
    load_kinds,
    magnified_pairs,
    parse_args,
    score,
    validation_records,
)
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.models.registry import load_model
from training.splits import SHARED_DATA


def test_scale_one_is_the_default_so_earlier_runs_repeat():
    assert parse_args(["--steps-per-second", "1"]).scale == "1"
    assert parse_args(["--scale", "estimate"]).model == "default"


@pytest.mark.slow
def test_an_experiment_of_enlarged_nuclei_is_segmented_at_the_estimated_scale():
    bundle = load_model("default")
    image, labels = synthetic_nuclei((128, 128), 8, seed=4)  # median diameter 21 px
    big_image = rescale(image, 5, order=1, preserve_range=True).astype(image.dtype)
    big_labels = rescale(labels, 5, order=0, preserve_range=True, anti_aliasing=False).astype(labels.dtype)
    assert image_scales(bundle, [image]) == [1.0]  # nuclei of the model's training sizes
    factor = experiment_scale(image_scales(bundle, [big_image]))
    assert 0.3 < factor < 0.8  # five times larger nuclei (~105 px): brought to the model's largest (52 px)
    at_estimate, at_one = score(bundle, [(big_image, big_labels)], factor), score(bundle, [(big_image, big_labels)])
    assert at_estimate[0] > at_one[0]  # 0.875 against 0.750 when written


def test_an_experiment_scale_is_rounded_as_estimate_rounds():
    assert experiment_scale([0.75, 1.0]) == 1.0  # 0.866: within the factor Estimate does not resize by
    assert experiment_scale([0.26, 0.37]) == 0.31
    assert experiment_scale([1.0, 0.39]) == 0.62
    assert experiment_scale([1.0]) == 1.0


def test_magnified_pairs_resize_image_and_labels_together():
    image, labels = synthetic_nuclei((64, 80), 5, seed=1)
    magnified = magnified_pairs([(image, labels)], [0.5, 2.0])
    assert list(magnified) == ["0.5", "2.0"]
    (small_image, small_labels), (large_image, large_labels) = magnified["0.5"][0], magnified["2.0"][0]
    assert small_image.shape[:2] == small_labels.shape == (32, 40)
    assert large_image.shape[:2] == large_labels.shape == (128, 160)
    assert set(np.unique(large_labels)) == set(np.unique(labels)), "nearest-neighbour labels keep every nucleus"
    assert np.count_nonzero(large_labels) == pytest.approx(4 * np.count_nonzero(labels), rel=0.05)
    assert magnified_pairs([(image, labels)], []) == {}


def test_validation_records_are_every_held_out_check_of_a_real_fine_tune_with_its_loss():
    from napari_unet.core.train.fine_tune import iter_train
    from tests.core.test_training import FAST, dataset, drain, tiny_bundle

    images, labels = dataset(2)
    result, _ = drain(iter_train(tiny_bundle(), images, labels, FAST))
    records = validation_records(result)
    checked = [row for row in result.history if "val_ap50" in row]
    assert records[0]["step"] == 0 and len(records) == len(checked) >= 2
    assert [(r["step"], r["val_ap50"], r["val_loss"]) for r in records] == [
        (row["step"], row["val_ap50"], row["val_loss"]) for row in checked
    ]


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent (fresh clone)")
def test_the_correct_scored_bound_corrects_exactly_the_images_it_scores():
    bundle = load_model("default")
    user = load_kinds(parse_args(["--kinds", "dsb_colour_tissue", "--scored", "3"]), bundle)["dsb_colour_tissue"]
    bound_args = parse_args(["--kinds", "dsb_colour_tissue", "--scored", "3", "--correct-scored"])
    bound = load_kinds(bound_args, bundle)["dsb_colour_tissue"]
    assert user["corrected_keys"] == user["keys"][:2] and bound["corrected_keys"] == user["keys"][2:5]
    assert len(bound["corrected"]) == len(bound["scored"]) == 3
    for (image, labels), (scored_image, scored_labels) in zip(bound["corrected"], bound["scored"], strict=True):
        assert np.array_equal(image, scored_image) and np.array_equal(labels, scored_labels)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(user["scored"], bound["scored"], strict=True))

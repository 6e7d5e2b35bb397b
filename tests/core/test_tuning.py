"""Post-processing threshold tuning on cached probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label

from napari_unet.core.config import InferenceConfig, PostprocessConfig
from napari_unet.core.errors import Cancelled, UserInputError
from napari_unet.core.evaluate.tuning import candidate_configs, iter_tune_postprocess
from napari_unet.core.progress import run_to_end
from tests.core.test_inference import disc_image, threshold_bundle

CPU = InferenceConfig(device="cpu", tile_size=64)


def test_candidate_grid_keeps_other_fields() -> None:
    start = PostprocessConfig(min_seed_size=7, fill_holes=False)
    grid = candidate_configs(
        start,
        foreground=(0.4, 0.5),
        seeds=(0.6,),
        min_sizes=(0, 10),
        split_distances=(0,),
        min_relative_sizes=(0, 0.3),
        min_confidences=(0, 0.9),
    )
    assert len(grid) == 16
    assert {c.min_relative_size for c in grid} == {0, 0.3}
    assert [c.min_confidence for c in grid[:4]] == [0, 0.9, 0, 0.9]  # fastest: neighbours share a watershed
    assert all(c.min_seed_size == 7 and c.fill_holes is False for c in grid)


def test_tuning_recovers_from_settings_that_delete_every_object() -> None:
    # The discs have 149 pixels each; min_size=400 deletes all of them (AP 0), min_size 0/20 keeps them (AP 1).
    bundle = threshold_bundle(postprocess=PostprocessConfig(min_size=400, min_seed_size=1))
    image = disc_image()
    truth = label(image > 500)
    result = run_to_end(iter_tune_postprocess(bundle, [image], [truth], inference=CPU))
    assert result.baseline_scores["AP@0.5"] == 0.0
    assert result.best_scores["AP@0.5"] == 1.0
    assert result.best.min_size < 400
    assert len(result.table) == len(candidate_configs(bundle.postprocess))


def test_progress_and_cancel() -> None:
    bundle = threshold_bundle()
    image = disc_image()
    gen = iter_tune_postprocess(bundle, [image], [label(image > 500)], inference=CPU, cancel=lambda: True)
    with pytest.raises(Cancelled):
        next(gen)


def test_mismatched_inputs() -> None:
    with pytest.raises(UserInputError, match="labels"):
        run_to_end(iter_tune_postprocess(threshold_bundle(), [disc_image()], [], inference=CPU))


def test_stacks_are_refused() -> None:
    stack = np.stack([disc_image(), disc_image()])
    with pytest.raises(UserInputError, match="2D"):
        run_to_end(iter_tune_postprocess(threshold_bundle(), [stack], [label(stack > 500)], inference=CPU))


def test_shared_watershed_gives_what_each_config_gives_alone() -> None:
    from napari_unet.core.evaluate.tuning import _SharedWatershed
    from napari_unet.core.labels.postprocess import probabilities_to_labels

    rng = np.random.default_rng(0)
    probabilities = [rng.dirichlet((2, 1, 1), size=(48, 48)).transpose(2, 0, 1).astype(np.float32) for _ in range(2)]
    watershed = _SharedWatershed(probabilities)
    for config in candidate_configs(PostprocessConfig(), foreground=(0.5,), seeds=(0.6,), min_sizes=(0,)):
        for shared, p in zip(watershed(config), probabilities, strict=True):
            alone = probabilities_to_labels(p, config)
            np.testing.assert_array_equal(shared > 0, alone > 0)
            assert len(np.unique(shared)) == len(np.unique(alone))


def blob_probabilities(shape: tuple[int, int], boxes: list[tuple[slice, slice]]) -> np.ndarray:
    """Class probabilities (3, Y, X): interior 1 inside each box, background 1 elsewhere."""
    probabilities = np.zeros((3, *shape), np.float32)
    probabilities[0] = 1
    for box in boxes:
        probabilities[(0, *box)], probabilities[(1, *box)] = 0, 1
    return probabilities


def test_ties_go_to_the_earlier_candidate() -> None:
    from napari_unet.core.evaluate.tuning import iter_choose_postprocess

    box = (slice(4, 12), slice(4, 12))
    truth = np.zeros((16, 16), np.int32)
    truth[box] = 1
    first, second = PostprocessConfig(min_size=0), PostprocessConfig(min_size=10)
    result = run_to_end(
        iter_choose_postprocess([blob_probabilities((16, 16), [box])], [truth], [first, second], second)
    )
    assert result.best == first and result.best_scores == result.baseline_scores
    assert [row["AP@0.5"] for row in result.table] == [1.0, 1.0]


def test_choosing_needs_candidates_and_paired_inputs() -> None:
    from napari_unet.core.evaluate.tuning import iter_choose_postprocess

    probabilities, truth = [blob_probabilities((16, 16), [])], [np.zeros((16, 16), np.int32)]
    with pytest.raises(UserInputError, match="at least one candidate"):
        run_to_end(iter_choose_postprocess(probabilities, truth, [], PostprocessConfig()))
    with pytest.raises(UserInputError, match="got 1 and 2"):
        run_to_end(iter_choose_postprocess(probabilities, truth * 2, [PostprocessConfig()], PostprocessConfig()))

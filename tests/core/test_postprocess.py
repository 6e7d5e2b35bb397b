from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk
from skimage.segmentation import find_boundaries

from napari_unet.core.config import PostprocessConfig
from napari_unet.core.labels.postprocess import (
    fill_label_holes,
    link_slices,
    probabilities_to_labels,
    relabel_stack_unique,
    remove_relatively_small_objects,
    remove_small_objects,
    remove_unconfident_objects,
    sequential_labels,
)

CFG = PostprocessConfig(foreground_threshold=0.5, seed_threshold=0.6, min_seed_size=4, min_size=15, fill_holes=True)


def probabilities_from(interior: np.ndarray, boundary: np.ndarray) -> np.ndarray:
    """(3, Y, X) probabilities: 0.9 for the marked class, the rest spread evenly."""
    probs = np.full((3, *interior.shape), 0.05, dtype=np.float32)
    probs[0] = 0.9
    for channel, mask in ((1, interior), (2, boundary)):
        probs[:, mask] = 0.05
        probs[channel, mask] = 0.9
    return probs


def touching_discs(shape=(48, 64)) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.int32)
    labels[disk((24, 22), 11, shape=shape)] = 1
    second = np.zeros(shape, dtype=bool)
    second[disk((24, 41), 11, shape=shape)] = True
    labels[second & (labels == 0)] = 2  # overlapping discs: they touch along a line
    return labels


def probabilities_for(labels: np.ndarray) -> np.ndarray:
    boundary = find_boundaries(labels, mode="inner") & (labels > 0)
    return probabilities_from((labels > 0) & ~boundary, boundary)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def test_touching_discs_are_separated():
    truth = touching_discs()
    labels = probabilities_to_labels(probabilities_for(truth), CFG)
    assert labels.dtype == np.int32 and labels.shape == truth.shape
    assert set(np.unique(labels)) == {0, 1, 2}
    np.testing.assert_array_equal(labels > 0, truth > 0)  # the boundary band is given back to the objects
    for value in (1, 2):
        best = max(iou(labels == found, truth == value) for found in (1, 2))
        assert best > 0.9


def test_small_junk_is_removed_and_ids_are_sequential():
    truth = touching_discs()
    junk = np.zeros_like(truth, dtype=bool)
    junk[2:5, 2:5] = True  # 9 px < min_size 15
    probs = probabilities_for(truth)
    probs[:, junk] = [[0.05], [0.9], [0.05]]
    labels = probabilities_to_labels(probs, CFG)
    assert not labels[junk].any()
    assert labels.max() == 2
    kept = probabilities_to_labels(probs, PostprocessConfig(min_size=0, min_seed_size=0))
    assert kept[junk].all() and kept.max() == 3


def test_hole_is_filled_only_when_asked():
    shape = (40, 40)
    ring = np.zeros(shape, dtype=bool)
    ring[disk((20, 20), 12, shape=shape)] = True
    hole = np.zeros(shape, dtype=bool)
    hole[disk((20, 20), 4, shape=shape)] = True
    ring &= ~hole
    probs = probabilities_from(ring, np.zeros(shape, dtype=bool))
    filled = probabilities_to_labels(probs, CFG)
    assert filled.max() == 1 and filled[hole].all()
    unfilled = probabilities_to_labels(probs, PostprocessConfig(fill_holes=False))
    assert unfilled.max() == 1 and not unfilled[hole].any()


def test_foreground_without_seed_becomes_its_own_object():
    shape = (30, 30)
    interior = np.zeros(shape, dtype=bool)
    interior[3:12, 3:12] = True
    boundary_only = np.zeros(shape, dtype=bool)
    boundary_only[18:26, 18:26] = True  # 64 px of boundary class, no interior seed
    labels = probabilities_to_labels(probabilities_from(interior, boundary_only), CFG)
    assert labels.max() == 2
    assert len(np.unique(labels[boundary_only])) == 1 and labels[20, 20] > 0
    assert labels[5, 5] != labels[20, 20]


def test_tiny_seeds_do_not_split_an_object():
    shape = (30, 30)
    interior = np.zeros(shape, dtype=bool)
    interior[5:20, 5:20] = True
    boundary = np.zeros(shape, dtype=bool)
    boundary[12:20, 5:20] = True  # rows 5-11 stay interior (one seed), rows 12-19 are boundary
    interior &= ~boundary
    probs = probabilities_from(interior, boundary)
    probs[:, 17, 10] = [0.05, 0.9, 0.05]  # a 1-px interior seed inside the boundary area
    labels = probabilities_to_labels(probs, CFG)
    assert labels.max() == 1  # the 1-px seed (< min_seed_size 4) is ignored
    split = probabilities_to_labels(probs, PostprocessConfig(min_seed_size=1))
    assert split.max() == 2


def test_empty_probabilities_give_no_objects():
    probs = np.zeros((3, 16, 16), dtype=np.float32)
    probs[0] = 1.0
    labels = probabilities_to_labels(probs, CFG)
    assert labels.dtype == np.int32 and labels.max() == 0


def test_fragment_far_smaller_than_its_neighbours_is_removed_only_when_asked():
    # Two discs of ~373 px and a 36 px speck: above the absolute min_size, under 0.2 x the median area.
    truth = touching_discs()
    speck = np.zeros_like(truth, dtype=bool)
    speck[2:8, 56:62] = True
    probs = probabilities_for(truth)
    probs[:, speck] = [[0.05], [0.9], [0.05]]
    assert probabilities_to_labels(probs, CFG).max() == 3
    labels = probabilities_to_labels(probs, PostprocessConfig(**{**CFG.to_dict(), "min_relative_size": 0.2}))
    assert not labels[speck].any()
    assert labels.max() == 2
    np.testing.assert_array_equal(labels > 0, truth > 0)


def test_remove_relatively_small_objects_uses_the_median_area():
    labels = np.zeros((10, 40), dtype=np.uint16)
    labels[0:4, 0:4] = 1  # 16 px
    labels[0:5, 10:15] = 2  # 25 px  <- median of (16, 25, 36)
    labels[0:6, 20:26] = 3  # 36 px
    original = labels.copy()
    out = remove_relatively_small_objects(labels, 0.7)  # threshold 17.5 px: only object 1 goes
    assert sorted(np.unique(out)) == [0, 2, 3]
    assert out.dtype == labels.dtype
    np.testing.assert_array_equal(labels, original)
    assert remove_relatively_small_objects(labels, 0.0) is labels
    assert remove_relatively_small_objects(labels, 0.6) is labels  # threshold 15 px: nothing to remove
    assert remove_relatively_small_objects(np.zeros((4, 4), np.int32), 0.5).max() == 0


def test_min_relative_size_must_be_a_fraction():
    with pytest.raises(ValueError, match="min_relative_size"):
        PostprocessConfig(min_relative_size=1.5)


def test_remove_small_objects():
    labels = np.array([[1, 1, 1, 0, 2], [1, 0, 3, 3, 2], [0, 0, 3, 3, 0]], dtype=np.int32)
    original = labels.copy()
    out = remove_small_objects(labels, 3)
    expected = np.array([[1, 1, 1, 0, 0], [1, 0, 3, 3, 0], [0, 0, 3, 3, 0]])
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(labels, original)  # input untouched
    assert remove_small_objects(labels, 2) is labels  # nothing to remove: no copy
    assert out.dtype == labels.dtype


def test_fill_label_holes_single_owner_only():
    labels = np.zeros((9, 12), dtype=np.uint16)
    labels[1:6, 1:6] = 4
    labels[3, 3] = 0  # hole inside object 4 -> filled
    labels[1:6, 7:9] = 5
    labels[1:6, 10:12] = 6
    labels[3, 9] = 0  # gap enclosed by objects 5 and 6 -> stays
    labels[1, 9] = 5
    labels[5, 9] = 6
    labels[2, 9], labels[4, 9] = 5, 6
    labels[8, 0:3] = 7
    labels[7, 1] = 7  # a notch at the border is not a hole
    out = fill_label_holes(labels)
    assert out[3, 3] == 4
    assert out[3, 9] == 0
    assert out[8, 3] == 0 and out[7, 0] == 0
    assert out.dtype == labels.dtype
    changed = out != labels
    assert changed.sum() == 1


def test_fill_label_holes_does_not_swallow_an_inner_object():
    labels = np.zeros((11, 11), dtype=np.int32)
    labels[1:10, 1:10] = 1
    labels[3:8, 3:8] = 0
    labels[5, 5] = 2  # an object inside the hole of object 1
    out = fill_label_holes(labels)
    assert out[5, 5] == 2
    assert (out[3:8, 3:8] == 0).sum() == 24  # the hole touches object 2 too, so it stays


def test_fill_label_holes_without_holes_returns_input():
    labels = np.zeros((5, 5), dtype=np.int32)
    labels[1:3, 1:3] = 1
    assert fill_label_holes(labels) is labels


def test_sequential_labels():
    labels = np.array([[0, 7, 7], [3, 0, 9]], dtype=np.int32)
    np.testing.assert_array_equal(sequential_labels(labels), [[0, 2, 2], [1, 0, 3]])


def test_relabel_stack_unique():
    stack = np.array(
        [
            [[1, 1, 0], [0, 2, 2]],
            [[0, 0, 0], [0, 0, 0]],
            [[5, 0, 1], [5, 0, 1]],
        ],
        dtype=np.int32,
    )
    out = relabel_stack_unique(stack)
    expected = np.array(
        [
            [[1, 1, 0], [0, 2, 2]],
            [[0, 0, 0], [0, 0, 0]],
            [[4, 0, 3], [4, 0, 3]],
        ]
    )
    assert out.dtype == np.uint32
    np.testing.assert_array_equal(out, expected)


def test_link_slices_follows_a_moving_object_and_starts_new_ones():
    z = np.zeros((3, 20, 20), dtype=np.int32)
    z[0, 2:10, 2:10] = 1
    z[1, 3:11, 3:11] = 1  # same nucleus, shifted by one pixel (IoU 49/79 = 0.62)
    z[2, 4:12, 4:12] = 3
    z[1, 14:18, 14:18] = 2  # appears in slice 1 only
    z[2, 14:18, 2:6] = 1  # a new object far away in slice 2
    out = link_slices(z, min_iou=0.3)
    assert out.dtype == np.uint32
    assert out[0, 5, 5] == out[1, 5, 5] == out[2, 6, 6]
    ids = {int(out[0, 5, 5]), int(out[1, 15, 15]), int(out[2, 15, 3])}
    assert len(ids) == 3
    assert set(np.unique(out)) == {0, 1, 2, 3}


def test_link_slices_respects_min_iou_and_one_to_one():
    z = np.zeros((2, 20, 20), dtype=np.int32)
    z[0, 0:10, 0:10] = 1
    z[1, 0:10, 0:4] = 1  # IoU 40/100 = 0.4 with the object above
    z[1, 0:10, 4:10] = 2  # IoU 60/100 = 0.6: the better match wins the id
    out = link_slices(z, min_iou=0.3)
    assert out[1, 0, 5] == out[0, 0, 0]
    assert out[1, 0, 0] != out[0, 0, 0]
    strict = link_slices(z, min_iou=0.7)
    assert len(np.unique(strict)) == 4  # nothing linked: 3 objects + background


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.uint32, np.int64])
def test_helpers_accept_integer_dtypes(dtype):
    labels = np.zeros((6, 6), dtype=dtype)
    labels[1:5, 1:5] = 3
    labels[2, 2] = 0
    assert fill_label_holes(labels)[2, 2] == 3
    assert remove_small_objects(labels, 100).max() == 0
    assert relabel_stack_unique(labels[np.newaxis]).max() == 1


def test_split_distance_separates_nuclei_whose_interiors_fused():
    # Two discs of radius 10 whose centres are 16 px apart: the interior map has no boundary band between them,
    # so threshold seeds give ONE object; distance peaks 16 px apart split it into two.
    from skimage.draw import disk

    probs = np.zeros((3, 40, 60), dtype=np.float32)
    for centre in ((20, 20), (20, 36)):
        probs[1][disk(centre, 10, shape=(40, 60))] = 0.9
    probs[0] = 1 - probs[1]
    fused = probabilities_to_labels(probs, PostprocessConfig(min_size=0))
    split = probabilities_to_labels(probs, PostprocessConfig(min_size=0, split_distance=5))
    assert fused.max() == 1
    assert split.max() == 2
    assert (split > 0).sum() == (fused > 0).sum()
    left, right = split[20, 12], split[20, 44]
    assert left != right and left > 0 and right > 0


def test_objects_the_network_is_unsure_of_are_removed_only_when_asked():
    truth = touching_discs()
    probs = probabilities_for(truth)
    unsure = truth == 2
    probs[0, unsure] = 0.25  # still foreground (0.75 > 0.5) but less sure than the other disc (0.95)
    probs[1:, unsure] *= 0.75 / probs[1:, unsure].sum(axis=0)
    assert len(np.unique(probabilities_to_labels(probs, CFG))) == 3
    labels = probabilities_to_labels(probs, PostprocessConfig(**{**CFG.to_dict(), "min_confidence": 0.8}))
    assert set(np.unique(labels)) == {0, 1}
    assert iou(labels == 1, truth == 1) > 0.9


def test_remove_unconfident_objects_uses_the_mean_foreground_probability():
    labels = np.array([[1, 1, 0, 2], [1, 1, 0, 2]], dtype=np.uint16)
    foreground = np.array([[0.9, 1.0, 0.0, 0.6], [0.8, 0.9, 0.1, 0.9]], dtype=np.float32)  # means 0.9 and 0.75
    np.testing.assert_array_equal(remove_unconfident_objects(labels, foreground, 0.8), np.where(labels == 2, 0, labels))
    assert remove_unconfident_objects(labels, foreground, 0.7) is labels
    assert remove_unconfident_objects(labels, foreground, 0.0) is labels
    with pytest.raises(ValueError, match="min_confidence"):
        PostprocessConfig(min_confidence=1.5)

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.segmentation import find_boundaries

from napari_unet.core.errors import UserInputError
from napari_unet.core.train.pixel_classes import (
    BOUNDARY,
    INTERIOR,
    changed_pixels,
    labels_to_classes,
    labels_to_classes_torch,
    loss_weights,
    rasterize_rois,
)


def two_touching_boxes() -> np.ndarray:
    labels = np.zeros((7, 9), dtype=np.uint16)
    labels[1:6, 1:4] = 1
    labels[1:6, 4:8] = 2
    return labels


def test_classes_of_touching_boxes_are_separated_by_boundary():
    expected = np.array(
        [
            [0, 0, 0, 0, 0, 0, 0, 0, 0],
            [0, 2, 2, 2, 2, 2, 2, 2, 0],
            [0, 2, 1, 2, 2, 1, 1, 2, 0],
            [0, 2, 1, 2, 2, 1, 1, 2, 0],
            [0, 2, 1, 2, 2, 1, 1, 2, 0],
            [0, 2, 2, 2, 2, 2, 2, 2, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, 0],
        ]
    )
    classes = labels_to_classes(two_touching_boxes())
    assert classes.dtype == np.int64
    np.testing.assert_array_equal(classes, expected)


def test_thicker_boundary_and_interior_kept_for_a_big_object():
    labels = np.zeros((12, 12), dtype=np.int32)
    labels[1:11, 1:11] = 5
    classes = labels_to_classes(labels, boundary_width=2)
    assert (classes[1:11, 1:11][[0, 1, -2, -1], :] == BOUNDARY).all()
    assert (classes[3:9, 3:9] == INTERIOR).all()
    assert (classes[labels == 0] == 0).all()


def test_tiny_objects_keep_a_central_interior_pixel():
    labels = np.zeros((9, 9), dtype=np.int32)
    labels[1:4, 1:4] = 1  # 3x3: ring of boundary around one pixel
    labels[6, 6] = 2  # a single pixel
    labels[6, 1:3] = 3  # two pixels
    classes = labels_to_classes(labels)
    assert classes[2, 2] == INTERIOR and (classes[1:4, 1:4] == BOUNDARY).sum() == 8
    assert classes[6, 6] == INTERIOR
    assert (classes[6, 1:3] == INTERIOR).all()


def test_float_integral_labels_are_accepted_but_fractions_refused():
    classes = labels_to_classes(two_touching_boxes().astype(float))
    np.testing.assert_array_equal(classes, labels_to_classes(two_touching_boxes()))
    with pytest.raises(UserInputError, match="integer"):
        labels_to_classes(np.full((4, 4), 0.5))
    with pytest.raises(UserInputError, match="2D"):
        labels_to_classes(np.zeros((2, 2, 4, 4), dtype=int))  # 2D images and 3D stacks only


def test_full_mode_counts_everything():
    weights = loss_weights(two_touching_boxes(), "full")
    assert weights.dtype == np.float32
    np.testing.assert_array_equal(weights, np.ones((7, 9)))


def test_rectangle_and_polygon_rois():
    labels = np.zeros((10, 10), dtype=np.int32)
    labels[2:5, 2:5] = 1
    weights = loss_weights(labels, "rois", rois=[(1, 1, 3, 4)])
    expected = np.zeros((10, 10))
    expected[1:3, 1:4] = 1
    np.testing.assert_array_equal(weights, expected)
    triangle = np.array([[0, 0], [0, 9], [9, 0]])  # (y, x) vertices
    mask = rasterize_rois([triangle], (10, 10))
    assert mask[0, 0] and mask[1, 1] and mask[4, 4] and not mask[6, 6] and not mask[9, 9]
    # a rectangle drawn in napari is a 4-vertex polygon (y, x); fills rows 2..6, columns 3..7
    square = np.array([[2, 3], [2, 7], [6, 7], [6, 3]])
    mask = rasterize_rois([square], (10, 10))
    assert mask[2:7, 3:8].all() and mask.sum() == 25


def test_changed_mode_counts_corrections_plus_margin_and_upweights_them():
    previous = np.zeros((20, 20), dtype=np.int32)
    previous[2:8, 2:8] = 1
    labels = previous.copy()
    labels[12:16, 12:16] = 2  # the user painted a missed nucleus
    corrected = changed_pixels(labels, previous)
    np.testing.assert_array_equal(corrected, labels > 1)
    weights = loss_weights(labels, "changed", previous=previous, margin=2, corrected_weight=3.0)
    assert (weights[12:16, 12:16] == 3.0).all()
    assert weights[10, 14] == 1.0 and weights[9, 14] == 0.0  # 2 px margin
    assert weights[5, 5] == 0.0
    # renumbering an object is not a correction
    np.testing.assert_array_equal(changed_pixels(previous * 7, previous), np.zeros((20, 20), bool))


def test_corrected_pixels_upweighted_in_full_mode_when_previous_given():
    previous = np.zeros((10, 10), dtype=np.int32)
    previous[1:5, 1:5] = 1
    labels = np.zeros_like(previous)
    labels[1:5, 1:5] = 1
    labels[6:9, 6:9] = 2
    weights = loss_weights(labels, "full", previous=previous, corrected_weight=2.0)
    assert (weights[6:9, 6:9] == 2.0).all()
    assert weights[0, 0] == 1.0 and weights.min() == 1.0


def test_changed_mode_accepts_erasing_every_object():
    previous = np.zeros((10, 10), dtype=np.int32)
    previous[1:5, 1:5] = 1
    weights = loss_weights(np.zeros_like(previous), "changed", previous=previous, margin=0)
    assert weights.sum() == 16 * 2.0


@pytest.mark.parametrize("value", [0, 3])
def test_labels_all_one_value_are_refused(value):
    with pytest.raises(UserInputError, match="label at least one nucleus"):
        loss_weights(np.full((8, 8), value), "full")


def test_error_cases():
    labels = two_touching_boxes()
    with pytest.raises(UserInputError, match="shape"):
        loss_weights(labels, "full", previous=np.zeros((3, 3), int))
    with pytest.raises(UserInputError, match="needs the previous prediction"):
        loss_weights(labels, "changed")
    with pytest.raises(UserInputError, match="do not differ"):
        loss_weights(labels, "changed", previous=labels)
    with pytest.raises(UserInputError, match="at least one ROI"):
        loss_weights(labels, "rois")
    with pytest.raises(UserInputError, match="inside the ROIs"):
        loss_weights(labels, "rois", rois=[(50, 50, 60, 60)])
    with pytest.raises(UserInputError, match="ROI 0"):
        loss_weights(labels, "rois", rois=[(1, 2, 3)])
    with pytest.raises(UserInputError, match="unknown annotation mode"):
        loss_weights(labels, "everything")
    with pytest.raises(UserInputError, match="negative"):
        loss_weights(labels.astype(int) - 1, "full")


def random_label_batch(rng: np.random.Generator, count: int = 6, shape: tuple[int, int] = (48, 40)) -> np.ndarray:
    """Labels with big and tiny (1-4 px) objects, touching, at the image border, partly painted over."""
    batch = np.zeros((count, *shape), dtype=np.int64)
    for labels in batch:
        for label_id in rng.choice(np.arange(1, 200), size=int(rng.integers(5, 30)), replace=False):
            y, x = rng.integers(-2, shape[0]), rng.integers(-2, shape[1])
            if rng.random() < 0.4:  # tiny: 1 pixel, 1x2, 2x1, 2x2, L shapes
                height, width = rng.integers(1, 3, size=2)
                labels[max(0, y) : y + height, max(0, x) : x + width] = label_id
                if rng.random() < 0.3:
                    labels[max(0, y - 1), max(0, x)] = label_id
            else:
                height, width = rng.integers(2, 14, size=2)
                labels[max(0, y) : y + height, max(0, x) : x + width] = label_id  # overlaps: later ids win
    return batch


def classes_per_sample(batch: np.ndarray) -> np.ndarray:
    return np.stack([labels_to_classes(labels) for labels in batch])


@pytest.mark.parametrize("seed", range(4))
def test_torch_classes_equal_numpy_classes_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    batch = random_label_batch(rng)
    batch[0] = 0  # an empty image
    batch[1, :, :] = 7  # one object filling the image: no boundary at the image edge
    noise = rng.integers(0, 4, size=batch.shape[1:])  # pixel noise: many 1-3 px pieces, disconnected ids
    batch[2] = np.where(rng.random(batch.shape[1:]) < 0.5, noise, batch[2])
    expected = classes_per_sample(batch)
    classes = labels_to_classes_torch(torch.from_numpy(batch))
    assert classes.dtype == torch.int64 and classes.shape == batch.shape
    assert np.array_equal(classes.numpy(), expected)
    assert (expected == INTERIOR).any() and (expected == BOUNDARY).any()
    rim = np.stack([find_boundaries(labels, mode="inner") for labels in batch])
    assert (rim & (expected == INTERIOR)).any()  # the tiny-object rule was exercised


def test_torch_classes_of_tiny_objects_and_large_ids():
    labels = np.zeros((9, 9), dtype=np.int64)
    labels[1:4, 1:4] = 1  # 3x3: ring of boundary around one interior pixel
    labels[6, 6] = 2  # a single pixel
    labels[6, 1:3] = 3  # two pixels
    labels[8, 0] = 4  # a single pixel in the corner
    labels[0:2, 7:9] = 5  # 2x2 at the border
    labels[4:9, 4] = 6  # a line touching object 2's neighbourhood and the border
    labels[3, 5:8] = 2  # a second piece of object 2, with no interior either
    expected = labels_to_classes(labels)
    np.testing.assert_array_equal(labels_to_classes_torch(torch.from_numpy(labels[None]))[0].numpy(), expected)
    # the classes do not depend on the ids: huge ids (beyond what find_objects could index) give the same
    rng = np.random.default_rng(1)
    batch = random_label_batch(rng, count=3)
    huge = np.zeros_like(batch)
    for index, labels in enumerate(batch):
        ids = np.unique(labels[labels > 0])
        mapping = dict(zip(ids, rng.choice(2**62, size=ids.size, replace=False) + 1, strict=True))
        huge[index] = np.vectorize(lambda v, m=mapping: m.get(v, 0), otypes=[np.int64])(labels)
    assert huge.max() > 2**40
    expected = classes_per_sample(batch)
    assert torch.equal(labels_to_classes_torch(torch.from_numpy(huge)), torch.from_numpy(expected))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.bool])
def test_torch_classes_of_other_integer_dtypes(dtype):
    batch = random_label_batch(np.random.default_rng(2), count=2) % (2 if dtype == torch.bool else 100)
    expected = classes_per_sample(batch)
    assert np.array_equal(labels_to_classes_torch(torch.from_numpy(batch).to(dtype)).numpy(), expected)


def test_torch_classes_refuse_float_and_unbatched_labels():
    with pytest.raises(UserInputError, match="integer"):
        labels_to_classes_torch(torch.zeros((1, 4, 4)))
    with pytest.raises(UserInputError, match=r"\(N, Y, X\)"):
        labels_to_classes_torch(torch.zeros((4, 4), dtype=torch.int64))

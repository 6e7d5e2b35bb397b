from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.errors import UserInputError
from napari_unet.core.targets import (
    BOUNDARY,
    INTERIOR,
    changed_pixels,
    labels_to_classes,
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

"""Nucleus sizes: the training range, the factor for a known diameter, and the estimate made with the model."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from skimage.draw import disk

from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.errors import Cancelled, UserInputError
from napari_unet.core.models.bundle import ModelBundle
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.object_size import (
    DEFAULT_DIAMETER_RANGE,
    METADATA_KEY,
    DiameterRange,
    central_slices,
    diameter_range_of,
    estimate_scale,
    median_diameter,
    object_diameters,
)


def disks(shape: tuple[int, int], centres: list[tuple[int, int]], radius: float) -> np.ndarray:
    """Labels ``(Y, X)`` with one disk of ``radius`` per centre (ids 1..N)."""
    labels = np.zeros(shape, np.uint16)
    for index, centre in enumerate(centres, start=1):
        labels[disk(centre, radius, shape=shape)] = index
    return labels


@pytest.fixture(scope="module")
def bundled() -> ModelBundle:
    return load_model("default")


# --------------------------------------------------------------------------- the range and the factor


@pytest.mark.parametrize(
    ("diameter", "expected"),
    [
        (20.0, 1.0),  # inside the range
        (12.0, 1.0),  # at an end
        (10.0, 1.0),  # 1.2x off: not worth a resize
        (6.0, 2.0),  # brought up to low
        (100.0, 0.4),  # brought down to high
        (1.0, 4.0),  # clipped to MAX_AUTO_SCALE
        (1000.0, 0.25),  # clipped to MIN_AUTO_SCALE
    ],
)
def test_scale_for_brings_a_diameter_into_the_range(diameter, expected) -> None:
    assert DiameterRange(12.0, 40.0).scale_for(diameter) == pytest.approx(expected)


@pytest.mark.parametrize("diameter", [0.0, -3.0, float("nan")])
def test_scale_for_refuses_non_positive_diameters(diameter) -> None:
    with pytest.raises(UserInputError, match="positive number of pixels"):
        DiameterRange(12.0, 40.0).scale_for(diameter)


def test_range_comes_from_the_model_metadata_or_the_default() -> None:
    assert DiameterRange.of_model({METADATA_KEY: {"low": 5, "high": 9, "median": 7}}) == DiameterRange(5.0, 9.0)
    recorded = {METADATA_KEY: {"low": 5, "high": 9, "measured_over_true": 1.1}}
    assert DiameterRange.of_model(recorded) == DiameterRange(5.0, 9.0, 1.1)
    assert DiameterRange.of_model({}) == DiameterRange(*DEFAULT_DIAMETER_RANGE)
    assert DiameterRange.of_model({METADATA_KEY: "garbage"}) == DiameterRange(*DEFAULT_DIAMETER_RANGE)
    with pytest.raises(UserInputError, match="0 < low <= high"):
        DiameterRange(10.0, 5.0)
    with pytest.raises(UserInputError, match="measured_over_true"):
        DiameterRange(10.0, 20.0, 3.0)


def test_bundled_model_records_its_training_diameters(bundled) -> None:
    record = bundled.metadata[METADATA_KEY]
    assert record["images"] == 670  # the training split of training/splits_v2.json
    assert 8 < record["low"] < record["median"] < record["high"] < 60
    assert 1.0 <= record["measured_over_true"] < 1.2  # predicted outlines are a little wider than drawn ones


# --------------------------------------------------------------------------- measuring labels


def test_object_diameters_of_disks() -> None:
    labels = disks((100, 100), [(30, 30), (70, 70)], radius=10)
    np.testing.assert_allclose(object_diameters(labels), [20.0, 20.0], rtol=0.05)
    assert object_diameters(np.zeros((5, 5), np.uint8)).shape == (0,)


def test_median_diameter_leaves_out_objects_cut_by_the_border() -> None:
    labels = disks((120, 120), [(30, 30), (60, 60), (90, 90)], radius=8)
    labels[0:4, 50:54] = 9  # a sliver cut by the border
    labels[116:120, 10:14] = 10
    assert median_diameter(labels) == pytest.approx(16.0, rel=0.05)
    assert median_diameter(labels[:, :64]) is not None  # one object inside: the 3 cut ones count too
    assert median_diameter(np.zeros((10, 10), np.uint8)) is None


def test_diameter_range_of_training_labels_counts_stack_planes() -> None:
    small = disks((64, 64), [(20, 20), (40, 40)], radius=4)
    large = disks((64, 64), [(20, 20), (44, 44)], radius=12)
    record = diameter_range_of([small, np.stack([large, large])], low_percentile=0, high_percentile=100)
    assert record["images"] == 3
    assert record["low"] == pytest.approx(8.0, rel=0.1) and record["high"] == pytest.approx(24.0, rel=0.1)
    with pytest.raises(UserInputError, match="hold no object"):
        diameter_range_of([np.zeros((8, 8), np.uint8)])


def test_central_slices() -> None:
    assert central_slices((100, 300), 50) == (slice(25, 75), slice(125, 175))
    assert central_slices((20, 30), 50) == (slice(0, 50), slice(0, 50))


# --------------------------------------------------------------------------- estimating with the model


def test_estimate_keeps_nuclei_the_model_knows_at_scale_1(bundled) -> None:
    image, labels = synthetic_nuclei((256, 256), 40, seed=1, radius_range=(7.0, 10.0))
    estimate = estimate_scale(image, bundled)
    assert estimate.scale == 1.0
    assert estimate.diameter == pytest.approx(median_diameter(labels), rel=0.25)
    assert estimate.passes[0][0] == 0.5
    assert "scale 1" in estimate.describe()


def test_estimate_enlarges_tiny_nuclei(bundled) -> None:
    image, labels = synthetic_nuclei((256, 256), 120, seed=1, radius_range=(2.5, 3.5))
    estimate = estimate_scale(image, bundled)
    assert median_diameter(labels) < 8
    assert estimate.scale > 1.25
    assert estimate.diameter < 12
    assert len(estimate.passes) >= 2 and estimate.passes[-1][0] >= 1.0  # small nuclei are measured at full size


def test_estimate_shrinks_huge_nuclei_read_lazily_from_a_stack(bundled) -> None:
    image, labels = synthetic_nuclei((768, 768), 30, seed=1, radius_range=(40.0, 50.0))
    stack = da.from_array(np.stack([np.zeros_like(image), image, np.zeros_like(image)]), chunks=(1, 256, 256))
    estimate = estimate_scale(stack, bundled, axes="ZYX")  # the middle plane is measured
    assert estimate.scale < 0.8
    assert estimate.diameter == pytest.approx(median_diameter(labels), rel=0.25)
    assert estimate.scale == DiameterRange.of_model(bundled.metadata).scale_for(estimate.diameter)


def test_estimate_with_too_few_nuclei_keeps_scale_1(bundled) -> None:
    image = np.zeros((64, 64), np.float32)
    image[30:36, 30:36] = 1000.0  # one nucleus: no median worth trusting
    estimate = estimate_scale(image, bundled)
    assert estimate.diameter is None and estimate.scale == 1.0
    assert [scale for scale, _ in estimate.passes] == [0.5, 1.0, 2.0, 4.0]  # doubling while nothing is found
    assert "too few nuclei" in estimate.describe()


def test_measured_diameters_are_divided_by_the_models_bias(bundled) -> None:
    image, _ = synthetic_nuclei((256, 256), 40, seed=1, radius_range=(7.0, 10.0))
    unbiased = estimate_scale(image, bundled, target=DiameterRange(12.0, 40.0))
    biased = estimate_scale(image, bundled, target=DiameterRange(12.0, 40.0, 1.25))
    assert biased.diameter == pytest.approx(unbiased.diameter / 1.25)


def test_measurement_bias_over_training_pairs(bundled) -> None:
    from napari_unet.core.predict.object_size import measurement_bias

    pairs = [synthetic_nuclei((192, 192), 30, seed=seed, radius_range=(7.0, 10.0)) for seed in (4, 5)]
    images, labels = [image for image, _ in pairs], [truth for _, truth in pairs]
    bias = measurement_bias(bundled, images, labels, DiameterRange(12.0, 40.0, 1.5))  # its own bias is ignored
    raw = [estimate_scale(image, bundled, target=DiameterRange(12.0, 40.0)).diameter for image in images]
    expected = np.median([d / median_diameter(truth) for d, truth in zip(raw, labels, strict=True)])
    assert bias == pytest.approx(np.clip(expected, 0.8, 1.25), abs=1e-3)
    assert measurement_bias(bundled, [images[0]], [np.zeros((192, 192), np.uint8)], DiameterRange(12, 40)) == 1.0


def test_estimate_can_be_cancelled(bundled) -> None:
    image, _ = synthetic_nuclei((128, 128), 10, seed=2)
    with pytest.raises(Cancelled):
        estimate_scale(image, bundled, cancel=lambda: True)


# --------------------------------------------------------------------------- training at a scale


def test_rescale_training_plane_resizes_like_prediction() -> None:
    from napari_unet.core.predict.object_size import rescale_training_plane

    labels = disks((40, 60), [(20, 20), (20, 42)], radius=6)
    image = np.stack([labels > 0] * 3, axis=-1).astype(np.uint8) * 200
    rois = [np.array([[0.0, 0.0], [9.0, 19.0]])]
    big_image, big_labels, big_previous, big_rois = rescale_training_plane(image, labels, 2.0, labels.copy(), rois)
    assert big_image.shape == (80, 120, 3) and big_image.dtype == np.float32
    assert big_labels.shape == (80, 120) and big_labels.dtype == labels.dtype
    assert set(np.unique(big_labels)) == {0, 1, 2}  # ids kept, no blending
    np.testing.assert_array_equal(big_labels[::2, ::2], labels)  # every source pixel becomes a 2x2 block
    np.testing.assert_array_equal(big_previous, big_labels)
    np.testing.assert_allclose(big_rois[0], [[0.5, 0.5], [18.5, 38.5]])  # pixel centres map to block centres
    assert object_diameters(big_labels) == pytest.approx(2 * object_diameters(labels), rel=0.05)

    small_image, small_labels, previous, none_rois = rescale_training_plane(image[..., 0], labels, 0.5)
    assert small_image.shape == small_labels.shape == (20, 30) and previous is None and none_rois is None
    assert rescale_training_plane(image, labels, 1.0)[1] is labels
    rectangle = rescale_training_plane(image, labels, 2.0, rois=[(0, 5, 10, 20)])[3][0]
    assert rectangle == (0.0, 10.0, 20.0, 40.0)  # half-open pixel edges scale exactly

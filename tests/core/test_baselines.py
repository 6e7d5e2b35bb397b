"""Classical baselines on small synthetic images with known nuclei."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_unet.core.errors import UserInputError
from napari_unet.core.evaluate.baselines import BASELINE_METHODS, segment_baseline
from napari_unet.core.evaluate.metrics import evaluate_image, match_instances

CENTERS = ((20, 20), (20, 90), (60, 50), (100, 25), (100, 100), (60, 110))
RADIUS = 9


def disc_labels(shape: tuple[int, int] = (128, 128), centers=CENTERS, radius: int = RADIUS) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, dtype=np.int32)
    for label, (y, x) in enumerate(centers, start=1):
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = label
    return labels


def fluorescence(labels: np.ndarray, seed: int = 0, background=20.0, signal=100.0, noise=10.0) -> np.ndarray:
    """Bright nuclei on a dark, noisy background (float64)."""
    rng = np.random.default_rng(seed)
    return background + signal * (labels > 0) + rng.normal(0.0, noise, labels.shape)


def assert_finds_all(gt: np.ndarray, labels: np.ndarray) -> None:
    result = match_instances(gt, labels, 0.5)
    assert (result.tp, result.fp, result.fn) == (gt.max(), 0, 0)


@pytest.mark.parametrize("method", BASELINE_METHODS)
def test_discs_on_noisy_background(method: str) -> None:
    gt = disc_labels()
    labels = segment_baseline(fluorescence(gt), method)
    assert labels.dtype == np.int32 and labels.shape == gt.shape
    assert sorted(np.unique(labels)) == list(range(len(CENTERS) + 1))  # labels 0..n, consecutive
    assert_finds_all(gt, labels)
    assert evaluate_image(gt, labels)["dice"] > 0.9


def test_two_touching_discs_threshold_one_watershed_two() -> None:
    gt = disc_labels((80, 80), centers=((40, 30), (40, 52)), radius=12)  # centres 22 px apart: they touch
    image = fluorescence(gt, seed=1)
    assert segment_baseline(image, "otsu").max() == 1
    split = segment_baseline(image, "watershed")
    assert split.max() == 2
    assert_finds_all(gt, split)


def test_dark_nuclei_on_light_background_are_inverted() -> None:
    gt = disc_labels()
    bright = fluorescence(gt, seed=2)
    dark_on_light = 255.0 - bright
    for method in ("otsu", "watershed"):
        assert_finds_all(gt, segment_baseline(dark_on_light, method))
    # forcing no inversion segments the bright background instead of the nuclei
    assert match_instances(gt, segment_baseline(dark_on_light, "otsu", invert="never")).tp == 0
    assert_finds_all(gt, segment_baseline(dark_on_light, "otsu", invert=True))


def test_rgb_brightfield_like_image() -> None:
    gt = disc_labels()
    rng = np.random.default_rng(3)
    rgb = np.empty((*gt.shape, 3), dtype=np.float64)
    rgb[:] = (235, 230, 240)  # pale background
    rgb[gt > 0] = (110, 60, 150)  # purple nuclei
    rgb = np.clip(rgb + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)
    labels = segment_baseline(rgb, "otsu")
    assert labels.shape == gt.shape
    assert_finds_all(gt, labels)


def test_uint16_image() -> None:
    gt = disc_labels()
    image = np.round(fluorescence(gt, seed=4, background=1000, signal=4000, noise=200)).astype(np.uint16)
    assert image.min() > 0 and image.max() < 6500
    for method in BASELINE_METHODS:
        assert_finds_all(gt, segment_baseline(image, method))


def test_float_image_with_tiny_range_is_not_cast_to_8_bit() -> None:
    gt = disc_labels()
    image = fluorescence(gt, seed=5, background=1e-3, signal=1e-3, noise=1e-4).astype(np.float32)
    assert_finds_all(gt, segment_baseline(image, "li"))


def test_stack_is_segmented_slice_by_slice_with_unique_labels() -> None:
    gt = disc_labels()
    stack = np.stack([fluorescence(gt, seed=6), np.zeros(gt.shape), fluorescence(gt, seed=7)[::-1]])
    labels = segment_baseline(stack, "otsu", axes="ZYX")
    assert labels.shape == stack.shape and labels.dtype == np.int32
    assert not labels[1].any()  # the blank slice yields nothing and raises nothing
    first, last = set(np.unique(labels[0])) - {0}, set(np.unique(labels[2])) - {0}
    assert len(first) == len(last) == len(CENTERS)
    assert not first & last
    assert_finds_all(gt, labels[0])
    assert_finds_all(gt[::-1], labels[2])


def test_channels_first_image_needs_axes() -> None:
    gt = disc_labels()
    grey = fluorescence(gt, seed=8)
    cyx = np.stack([grey, grey, grey])
    labels = segment_baseline(cyx, "otsu", axes="CYX")
    assert labels.shape == gt.shape
    assert_finds_all(gt, labels)


def test_min_size_removes_small_objects() -> None:
    gt = disc_labels(centers=((30, 30), (90, 90)), radius=9)
    gt[60:63, 20:23] = 3  # 9-pixel speck
    image = fluorescence(gt, seed=9, noise=3)
    assert segment_baseline(image, "otsu", sigma=0, min_size=5).max() == 3
    assert segment_baseline(image, "otsu", sigma=0, min_size=15).max() == 2


def test_even_block_size_is_accepted() -> None:
    gt = disc_labels()
    assert_finds_all(gt, segment_baseline(fluorescence(gt), "local", block_size=50))


def test_unknown_method_lists_valid_ones() -> None:
    with pytest.raises(UserInputError, match="otsu, li, local, watershed"):
        segment_baseline(np.random.default_rng(0).random((16, 16)), "cellpose")


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.full((16, 16), 7, dtype=np.uint8), "constant"),
        (np.zeros((0, 16)), "empty"),
    ],
)
def test_constant_and_empty_images_are_rejected(image: np.ndarray, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        segment_baseline(image, "otsu")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"invert": "sometimes"}, "invert"),
        ({"block_size": 1}, "block_size"),
        ({"min_size": -1}, "min_size"),
        ({"sigma": -1.0}, "sigma"),
        ({"min_distance": 0}, "min_distance"),
    ],
)
def test_invalid_parameters_are_rejected(params: dict, message: str) -> None:
    image = fluorescence(disc_labels())
    with pytest.raises(UserInputError, match=message):
        segment_baseline(image, "otsu", **params)


SHARED_VAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "dsb2018" / "val"


@pytest.mark.shared_data
def test_real_fluorescence_image_is_sane() -> None:
    image_path = SHARED_VAL / "0e132f71c8b4_image.tif"
    if not image_path.exists():
        pytest.skip("../shared/data is absent (fresh clone)")
    import tifffile

    image = tifffile.imread(image_path)
    gt = tifffile.imread(SHARED_VAL / "0e132f71c8b4_labels.tif")
    for method in ("otsu", "watershed"):
        result = evaluate_image(gt, segment_baseline(image, method))
        f1 = result["per_threshold"][0]["f1"]
        assert f1 > 0.5, (method, f1)
        assert result["dice"] > 0.6, (method, result["dice"])

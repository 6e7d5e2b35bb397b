from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_unet.core.config import NormalizeConfig
from napari_unet.core.data.normalize import (
    LUMINANCE_WEIGHTS,
    IntensityStats,
    apply_stats,
    infer_axes,
    intensity_stats,
    is_bright_background,
    normalize_plane,
    spatial_shape,
    to_planes,
    validate_image,
)
from napari_unet.core.errors import UserInputError

FULL_RANGE = NormalizeConfig(low_percentile=0.0, high_percentile=100.0, invert="never")
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "dsb2018"


def ramp(shape=(8, 8), dtype=np.uint8):
    return np.arange(np.prod(shape)).reshape(shape).astype(dtype)


def blobs(background: float, foreground: float, shape=(40, 40)) -> np.ndarray:
    """Two square 'nuclei' covering ~10% of the image."""
    image = np.full(shape, background, dtype=np.float32)
    image[5:14, 5:14] = foreground
    image[25:33, 20:28] = foreground
    return image


# --------------------------------------------------------------------------- validate_image


@pytest.mark.parametrize(
    ("array", "fragment"),
    [
        (np.arange(10), "1 axis"),
        (np.zeros((2, 2, 2, 2, 2)), "5 axes"),
        (np.zeros((0, 10), dtype=np.uint8), "empty"),
        (np.full((5, 5), 7, dtype=np.uint16), "constant"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), "NaN"),
        (np.array([[0.0, np.inf], [1.0, 2.0]], dtype=np.float32), "infinite"),
        (np.array([[True, False], [False, True]]), "boolean"),
        (np.array([[1 + 1j, 0], [0, 1]]), "complex"),
        (np.array([["a", "b"], ["c", "d"]]), "not numeric"),
        (np.array([[1, None], [2, 3]], dtype=object), "not numeric"),
    ],
)
def test_validate_image_rejects_with_a_specific_message(array, fragment):
    with pytest.raises(UserInputError, match=fragment):
        validate_image(array)


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64, np.float16, np.float32, np.float64]
)
def test_validate_image_accepts_numeric_dtypes_without_copying(dtype):
    array = ramp((4, 5), dtype)
    checked = validate_image(array)
    assert checked is array


def test_validate_image_turns_lists_into_arrays():
    checked = validate_image([[0, 1], [2, 3]])
    assert isinstance(checked, np.ndarray)
    assert checked.shape == (2, 2)


# --------------------------------------------------------------------------- infer_axes


@pytest.mark.parametrize(
    ("shape", "axes"),
    [
        ((64, 48), "YX"),
        ((64, 48, 3), "YXC"),
        ((64, 48, 4), "YXC"),
        ((5, 64, 48), "ZYX"),
        ((3, 64, 48), "ZYX"),  # channels-first needs explicit axes
        ((5, 64, 48, 3), "ZYXC"),
        ((5, 64, 48, 4), "ZYXC"),
    ],
)
def test_infer_axes_guesses(shape, axes):
    assert infer_axes(shape) == axes


@pytest.mark.parametrize(
    ("shape", "axes", "expected"),
    [((3, 64, 48), "cyx", "CYX"), ((7, 64, 48), "TYX", "TYX"), ((7, 64, 48, 3), "tyxc", "TYXC"), ((64, 3), "YX", "YX")],
)
def test_infer_axes_explicit_axes_win(shape, axes, expected):
    assert infer_axes(shape, axes) == expected


@pytest.mark.parametrize(
    ("shape", "axes", "fragment"),
    [
        ((5, 64, 48, 2), None, "axes='ZYXC'"),
        ((64,), None, "1 axis"),
        ((1, 2, 3, 4, 5), None, "5 axes"),
        ((64, 48), "ZYX", "name 3 axes but the image has 2"),
        ((64, 48), "XY", "not supported"),
        ((3, 64, 48), "CZX", "not supported"),
    ],
)
def test_infer_axes_errors(shape, axes, fragment):
    with pytest.raises(UserInputError, match=fragment):
        infer_axes(shape, axes)


# --------------------------------------------------------------------------- to_planes


@pytest.mark.parametrize(
    ("shape", "axes", "expected"),
    [((5, 6), "YX", (5, 6)), ((5, 6, 3), "YXC", (5, 6)), ((2, 5, 6), "CYX", (5, 6)), ((4, 5, 6, 3), "ZYXC", (4, 5, 6))],
)
def test_spatial_shape_drops_the_channel_axis(shape, axes, expected):
    assert spatial_shape(shape, axes) == expected


def test_spatial_shape_checks_the_axes():
    with pytest.raises(UserInputError, match="name 3 axes but the image has 2"):
        spatial_shape((5, 6), "YXC")


def test_to_planes_single_images():
    grey = ramp((4, 5))
    planes, plane_axis = to_planes(grey, "YX")
    assert planes.shape == (1, 4, 5, 1)
    assert planes.dtype == np.float32
    assert plane_axis is None
    np.testing.assert_array_equal(planes[0, :, :, 0], grey)

    cyx = np.stack([grey, grey + 100, grey + 200]).astype(np.uint8)
    planes, plane_axis = to_planes(cyx, "CYX")
    assert planes.shape == (1, 4, 5, 3)
    np.testing.assert_array_equal(planes[0, 2, 3], [cyx[0, 2, 3], cyx[1, 2, 3], cyx[2, 2, 3]])


def test_to_planes_stacks_keep_a_view_when_asked():
    stack = ramp((3, 4, 5), np.uint16)
    planes, plane_axis = to_planes(stack, "TYX", dtype=None)
    assert planes.shape == (3, 4, 5, 1)
    assert plane_axis == "T"
    assert planes.dtype == np.uint16
    assert np.shares_memory(planes, stack)

    colour = ramp((2, 4, 5, 3))
    planes, plane_axis = to_planes(colour, "ZYXC")
    assert planes.shape == (2, 4, 5, 3)
    assert plane_axis == "Z"


# --------------------------------------------------------------------------- normalize_plane


def test_percentiles_map_to_zero_and_one():
    image = ramp((10, 10), np.uint16) * 600  # 0 .. 59400
    out = normalize_plane(image, FULL_RANGE, 1)
    assert out.shape == (1, 10, 10)
    assert out.dtype == np.float32
    assert out.flags.c_contiguous
    np.testing.assert_allclose(out[0], image / 59400.0, atol=1e-6)


def test_percentiles_are_not_clipped():
    image = ramp((10, 10)).astype(np.float32)  # 0 .. 99
    cfg = NormalizeConfig(low_percentile=10.0, high_percentile=90.0, invert="never")
    out = normalize_plane(image, cfg, 1)[0]
    low, high = np.percentile(image, [10, 90])
    np.testing.assert_allclose(out, (image - low) / (high - low), atol=1e-6)
    assert out.min() < 0 and out.max() > 1


@pytest.mark.parametrize(
    ("dtype", "offset"), [(np.int32, 2**30), (np.uint32, 2**31), (np.int64, 2**40), (np.float64, 1e12)]
)
def test_wide_dtypes_keep_precision_despite_large_offsets(dtype, offset):
    small = ramp((10, 10)).astype(np.float64)
    shifted = (small + offset).astype(dtype)
    out = normalize_plane(shifted, FULL_RANGE, 1)
    np.testing.assert_allclose(out[0], small / 99.0, atol=1e-6)


def test_negative_float_images():
    image = ramp((10, 10)).astype(np.float32) - 50.0
    out = normalize_plane(image, FULL_RANGE, 1)
    np.testing.assert_allclose(out[0], (image + 50) / 99.0, atol=1e-6)


def test_rgb_to_grey_uses_luminance_for_one_channel_models():
    plane = np.zeros((2, 2, 3), dtype=np.uint8)
    plane[0, 0] = (255, 0, 0)
    plane[0, 1] = (0, 255, 0)
    plane[1, 0] = (0, 0, 255)  # plane[1, 1] stays black
    out = normalize_plane(plane, FULL_RANGE, 1)
    red, green, blue = LUMINANCE_WEIGHTS
    expected = np.array([[red, green], [blue, 0.0]]) / green  # green is the brightest luminance
    np.testing.assert_allclose(out[0], expected, atol=1e-6)


def test_grey_is_repeated_for_three_channel_models():
    image = ramp((6, 7))
    out = normalize_plane(image, FULL_RANGE, 3)
    assert out.shape == (3, 6, 7)
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_allclose(out[0], image / 41.0, atol=1e-6)


def test_rgb_for_three_channel_models_is_scaled_jointly():
    plane = np.stack([ramp((4, 4)), ramp((4, 4)) * 2, np.zeros((4, 4), np.uint8)], axis=-1)
    out = normalize_plane(plane, FULL_RANGE, 3)
    assert out.shape == (3, 4, 4)
    np.testing.assert_allclose(out[1], 2 * out[0], atol=1e-6)  # colour ratios survive
    assert out.max() == pytest.approx(1.0)
    np.testing.assert_array_equal(out[2], 0.0)


def test_rgba_drops_alpha():
    rgb = np.random.default_rng(0).integers(0, 255, size=(6, 6, 3), dtype=np.uint8)
    alpha = np.random.default_rng(1).integers(0, 255, size=(6, 6, 1), dtype=np.uint8)
    rgba = np.concatenate([rgb, alpha], axis=-1)
    np.testing.assert_array_equal(normalize_plane(rgba, FULL_RANGE, 1), normalize_plane(rgb, FULL_RANGE, 1))
    np.testing.assert_array_equal(normalize_plane(rgba, FULL_RANGE, 3), normalize_plane(rgb, FULL_RANGE, 3))


def test_unmappable_channel_count_is_a_user_error():
    with pytest.raises(UserInputError, match="2 channels but the model reads 1"):
        normalize_plane(np.zeros((4, 4, 2), dtype=np.uint8), FULL_RANGE, 1)


def test_blank_plane_becomes_zeros():
    out = normalize_plane(np.full((5, 5), 9, dtype=np.uint8), NormalizeConfig(), 1)
    np.testing.assert_array_equal(out, 0.0)


def test_auto_invert_keeps_fluorescence():
    image = blobs(background=10, foreground=200)
    out = normalize_plane(image, NormalizeConfig(low_percentile=0, high_percentile=100), 1)[0]
    assert out[8, 8] == pytest.approx(1.0) and out[0, 0] == pytest.approx(0.0)
    assert not is_bright_background(image)


def test_auto_invert_flips_brightfield():
    image = blobs(background=220, foreground=40)
    out = normalize_plane(image, NormalizeConfig(low_percentile=0, high_percentile=100), 1)[0]
    assert out[8, 8] == pytest.approx(1.0)  # the dark nucleus is now bright
    assert out[0, 0] == pytest.approx(0.0)
    assert is_bright_background(image)


def test_auto_invert_ignores_a_few_bright_outliers():
    image = blobs(background=10, foreground=200)
    image[0, :3] = 5000  # hot pixels must not make the background look bright
    assert not is_bright_background(image)


def test_auto_invert_on_he_like_colour():
    plane = np.empty((40, 40, 3), dtype=np.uint8)
    plane[...] = (235, 180, 225)  # pink background
    plane[5:14, 5:14] = (90, 40, 140)  # purple nuclei
    plane[25:33, 20:28] = (90, 40, 140)
    out = normalize_plane(plane, NormalizeConfig(low_percentile=0, high_percentile=100), 1)[0]
    assert out[8, 8] == pytest.approx(1.0) and out[0, 0] == pytest.approx(0.0)


@pytest.mark.parametrize(("mode", "inverted"), [("never", False), ("always", True)])
def test_invert_can_be_forced(mode, inverted):
    image = blobs(background=10, foreground=200)
    out = normalize_plane(image, NormalizeConfig(low_percentile=0, high_percentile=100, invert=mode), 1)[0]
    assert out[8, 8] == pytest.approx(0.0 if inverted else 1.0)


def nuclei_with_outliers(channels: int = 1) -> np.ndarray:
    """Dim background (100-200) with bright nuclei (1000-1100), 0.5% dead (0) and 0.25% hot (5000) pixels.

    The 1st and 99.5th percentiles fall inside the background and the nuclei, far from the outliers.
    Colour images hold the same intensities at 1, 0.6 and 0.3 times in R, G, B.
    """
    rng = np.random.default_rng(11)
    image = rng.uniform(100, 200, size=(80, 100))
    image[10:30, 10:30] = rng.uniform(1000, 1100, size=(20, 20))
    image[45:70, 50:80] = rng.uniform(1000, 1100, size=(25, 30))
    flat = image.ravel()  # a view
    outliers = rng.permutation(flat.size)
    flat[outliers[:40]] = 0.0  # 0.5% dead pixels
    flat[outliers[40:60]] = 5000.0  # 0.25% hot pixels
    if channels == 1:
        return image.astype(np.float32)
    return np.stack([image, 0.6 * image, 0.3 * image], axis=-1).astype(np.float32)


@pytest.mark.parametrize(
    ("channels", "in_channels", "invert"),
    [(1, 1, "auto"), (1, 1, "never"), (1, 3, "auto_gray"), (3, 3, "auto"), (3, 3, "auto_gray"), (3, 1, "never")],
)
def test_low_percentile_maps_to_zero_high_to_one_and_bright_nuclei_stay_bright(channels, in_channels, invert):
    image = nuclei_with_outliers(channels)
    cfg = NormalizeConfig(low_percentile=1.0, high_percentile=99.5, invert=invert)
    out = normalize_plane(image, cfg, in_channels)
    model_input = image if in_channels == 3 or channels == 1 else image @ np.float32(LUMINANCE_WEIGHTS)
    low, high = np.percentile(model_input, [1.0, 99.5])  # jointly over the channels
    assert low > 0 and high < model_input.max() / 4, "the percentiles ignore the dead and the hot pixels"

    stats = intensity_stats(image, cfg, in_channels)
    assert stats == IntensityStats(low=pytest.approx(low), high=pytest.approx(high), invert=False, grey_rgb=False)
    scaled = (model_input - low) / (high - low)
    expected = np.moveaxis(scaled, -1, 0) if model_input.ndim == 3 else np.repeat(scaled[None], in_channels, 0)
    np.testing.assert_allclose(out, expected, atol=1e-5)

    assert np.mean(out < 0) == pytest.approx(0.01, abs=0.002), "1% of the values lie below 0"
    assert np.mean(out > 1) == pytest.approx(0.005, abs=0.002), "0.5% lie above 1"
    nuclei, background = np.s_[10:30, 10:30], np.s_[0:8, 40:100]
    assert 0.85 < np.median(out[0][nuclei]) < 1.05, "nuclei (in the brightest channel) near 1"
    for channel in out:
        assert np.median(channel[nuclei]) > np.median(channel[background]) + 0.25, "nuclei stay brighter"
    order = np.argsort(model_input[..., 0] if model_input.ndim == 3 else model_input, axis=None, kind="stable")
    assert np.all(np.diff(out[0].ravel()[order]) >= 0), "brighter in the image is brighter in the output"


# --------------------------------------------------------------------------- intensity statistics


def test_intensity_stats_are_the_percentiles_and_the_inversion_decision():
    image = blobs(background=220, foreground=40)
    stats = intensity_stats(image, NormalizeConfig(low_percentile=0, high_percentile=100), 1)
    assert stats == IntensityStats(low=40.0, high=220.0, invert=True)
    forced = intensity_stats(image, NormalizeConfig(low_percentile=0, high_percentile=100, invert="never"), 1)
    assert forced == IntensityStats(low=40.0, high=220.0, invert=False)


def test_apply_stats_maps_any_chunk_with_the_given_range():
    stats = IntensityStats(low=100.0, high=300.0, invert=False)
    chunk = np.array([[100, 200], [300, 500]], dtype=np.uint16)
    np.testing.assert_allclose(apply_stats(chunk, stats, 1)[0], [[0.0, 0.5], [1.0, 2.0]])
    inverted = apply_stats(chunk, IntensityStats(100.0, 300.0, invert=True), 3)
    assert inverted.shape == (3, 2, 2) and inverted.dtype == np.float32
    np.testing.assert_allclose(inverted[2], [[1.0, 0.5], [0.0, -1.0]])
    np.testing.assert_array_equal(apply_stats(chunk, IntensityStats(5.0, 5.0, False), 1), 0.0)


@pytest.mark.parametrize("invert", ["auto", "never", "always"])
@pytest.mark.parametrize(("shape", "in_channels"), [((30, 40), 1), ((30, 40), 3), ((30, 40, 3), 1), ((30, 40, 4), 3)])
def test_normalize_plane_is_apply_stats_of_intensity_stats(shape, in_channels, invert):
    image = np.random.default_rng(4).gamma(2.0, 300.0, size=shape).astype(np.uint16)
    cfg = NormalizeConfig(invert=invert)
    stats = intensity_stats(image, cfg, in_channels)
    np.testing.assert_array_equal(apply_stats(image, stats, in_channels), normalize_plane(image, cfg, in_channels))


def test_intensity_stats_decide_inversion_on_colour_brightness():
    plane = np.zeros((40, 40, 3), dtype=np.uint8)
    plane[...] = (0, 0, 255)  # a bright blue background whose luminance is low
    plane[5:14, 5:14] = (0, 200, 0)  # green nuclei: higher luminance, lower max(R, G, B)
    assert intensity_stats(plane, NormalizeConfig(), 1).invert
    assert not intensity_stats(plane[..., 1], NormalizeConfig(), 1).invert  # the green channel alone is dark


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data/dsb2018")
def test_auto_invert_matches_real_images():
    tifffile = pytest.importorskip("tifffile")
    images = sorted((SHARED_DATA / "val").glob("*_image.tif"))[:12]
    assert images
    for path in images:
        image = tifffile.imread(path)
        labels = tifffile.imread(str(path).replace("_image", "_labels"))
        grey = image[..., :3].mean(axis=-1) if image.ndim == 3 else image.astype(float)
        nuclei_darker = grey[labels > 0].mean() < grey[labels == 0].mean()
        assert is_bright_background(image) == nuclei_darker, path.name


@pytest.mark.parametrize(("shape", "axes"), [((1, 1), "YX"), ((1, 50), "YX"), ((1, 1, 3), "YXC"), ((5, 1, 64), "ZYX")])
def test_tiny_images_are_refused_as_too_small_not_constant(shape, axes):
    from napari_unet.core.models.bundle import placeholder_default
    from napari_unet.core.predict.segment import predict

    image = np.ones(shape, np.uint8)
    image.flat[0] = 0 if image.size > 1 else 1
    with pytest.raises(UserInputError, match="too small to hold a nucleus"):
        predict(image, placeholder_default(), axes=axes)

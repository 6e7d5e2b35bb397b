from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from skimage.color import hed_from_rgb, rgb_from_hed

from napari_unet.core.config import ConfigError, TrainingConfig
from napari_unet.core.train.augment import (
    DEFAULT_PARAMS,
    AugmentParams,
    augment_sample,
    flip_rot90,
    random_intensity,
    random_stain,
    random_warp_coordinates,
    warp,
)
from napari_unet.core.train.loop import augment_params_for

NO_INTENSITY = {"p_intensity": 0.0, "p_gamma": 0.0, "p_noise": 0.0}


def sample(size: int = 32, channels: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    target = rng.integers(0, 3, size=(size, size)).astype(np.int64)
    image = np.stack([target.astype(np.float32) + 10 * c for c in range(channels)])
    weight = (target + 1).astype(np.float32)
    return image, target, weight


def test_same_seed_same_result_and_inputs_untouched():
    image, target, weight = sample()
    copies = [a.copy() for a in (image, target, weight)]
    first = augment_sample(image, target, weight, np.random.default_rng(7))
    second = augment_sample(image, target, weight, np.random.default_rng(7))
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    for original, kept in zip((image, target, weight), copies, strict=True):
        np.testing.assert_array_equal(original, kept)
    outputs = [augment_sample(image, target, weight, np.random.default_rng(s))[1] for s in range(8)]
    assert any(not np.array_equal(outputs[0], other) for other in outputs[1:])


def test_output_shapes_dtypes_and_contiguity():
    image, target, weight = sample(size=48, channels=3)
    for seed in range(6):
        out_image, out_target, out_weight = augment_sample(
            image, target, weight, np.random.default_rng(seed), AugmentParams(p_warp=1.0)
        )
        assert out_image.shape == (3, 48, 48) and out_image.dtype == np.float32
        assert out_target.shape == (48, 48) and out_target.dtype == np.int64
        assert out_weight.shape == (48, 48) and out_weight.dtype == np.float32
        assert all(a.flags.c_contiguous for a in (out_image, out_target, out_weight))
        assert set(np.unique(out_target)) <= {0, 1, 2}


def test_flips_and_rot90_move_image_target_and_weight_together():
    image, target, weight = sample()
    params = AugmentParams(p_warp=0.0, **NO_INTENSITY)
    seen = set()
    for seed in range(64):
        out_image, out_target, out_weight = augment_sample(image, target, weight, np.random.default_rng(seed), params)
        np.testing.assert_array_equal(out_image[0], out_target)
        np.testing.assert_array_equal(out_image[1], out_target + 10)
        np.testing.assert_array_equal(out_weight, out_target + 1)
        seen.add(out_target.tobytes())
    assert len(seen) == 8  # the 8 symmetries of the square all occur


def test_flip_rot90_is_a_permutation_of_pixels():
    image, target, weight = sample()
    _, out_target, _ = flip_rot90(image, target, weight, np.random.default_rng(3))
    assert sorted(out_target.ravel()) == sorted(target.ravel())


def test_warp_by_integer_shift_is_exact_and_outside_gets_zero_weight():
    image, target, weight = sample(size=16, channels=1)
    yy, xx = np.meshgrid(np.arange(16.0), np.arange(16.0), indexing="ij")
    coords = np.stack([yy + 3, xx - 2]).astype(np.float32)  # output (y, x) reads input (y + 3, x - 2)
    out_image, out_target, out_weight = warp(image, target, weight, coords)
    np.testing.assert_array_equal(out_target[:13, 2:], target[3:, :14])
    np.testing.assert_allclose(out_image[0, :13, 2:], image[0, 3:, :14])
    np.testing.assert_array_equal(out_weight[:13, 2:], weight[3:, :14])
    assert (out_weight[13:, :] == 0).all() and (out_weight[:, :2] == 0).all()
    assert (out_target[13:, :] == 0).all()


def test_random_warp_keeps_image_and_target_aligned():
    size = 64
    yy, xx = np.mgrid[:size, :size]
    target = ((yy - 32) ** 2 + (xx - 30) ** 2 < 15**2).astype(np.int64)
    image = target[None].astype(np.float32)
    weight = np.ones((size, size), np.float32)
    params = AugmentParams(p_warp=1.0, **NO_INTENSITY)
    for seed in range(5):
        out_image, out_target, out_weight = augment_sample(image, target, weight, np.random.default_rng(seed), params)
        inside = out_weight > 0
        agree = np.mean(np.round(out_image[0][inside]) == out_target[inside])
        assert agree > 0.97
        assert out_target.sum() > 0.5 * target.sum()


def test_warp_coordinates_identity_when_no_rotation_scale_or_elastic():
    params = AugmentParams(max_rotation_deg=0.0, scale_range=(1.0, 1.0), elastic_alpha=0.0)
    coords = random_warp_coordinates((5, 7), np.random.default_rng(0), params)
    yy, xx = np.meshgrid(np.arange(5.0), np.arange(7.0), indexing="ij")
    np.testing.assert_allclose(coords, np.stack([yy, xx]), atol=1e-5)


def test_intensity_changes_image_only_and_gamma_keeps_range():
    image, _, _ = sample()
    params = AugmentParams(p_intensity=0.0, p_gamma=1.0, p_noise=0.0)
    out = random_intensity(image, np.random.default_rng(0), params)
    assert out.min() == np.float32(image.min()) and np.isclose(out.max(), image.max())
    assert not np.allclose(out, image)
    noisy = random_intensity(image, np.random.default_rng(0), AugmentParams(p_intensity=0, p_gamma=0, p_noise=1))
    assert 0 < np.std(noisy - image) <= 0.05 * 1.2


def test_augmentation_keeps_a_grey_patch_grey_and_noises_colour_channels_apart():
    """A two-branch model routes by equal channels: augmenting a grey patch must not send it to the colour net."""
    grey, target, weight = sample()
    grey = np.repeat(grey[:1], 3, axis=0)
    rng = np.random.default_rng(0)
    noisy_only = AugmentParams(p_intensity=1.0, p_gamma=1.0, p_noise=1.0)
    for _ in range(20):
        out, _, _ = augment_sample(grey, target, weight, rng, noisy_only)
        assert (out == out[:1]).all()
    colour = grey + np.arange(3, dtype=np.float32)[:, None, None] * 0.1
    out = random_intensity(colour, np.random.default_rng(0), AugmentParams(p_intensity=0, p_gamma=0, p_noise=1))
    residual = out - colour
    assert not np.allclose(residual[0], residual[1])


def stained_patch(size: int = 24) -> np.ndarray:
    """A (3, size, size) colour patch made of known haematoxylin, eosin and DAB densities (background 1)."""
    rng = np.random.default_rng(3)
    stains = rng.uniform(0.0, 0.6, size=(3, size * size))
    return np.exp(-(rgb_from_hed.T @ stains)).reshape(3, size, size).astype(np.float32)


def stain_densities(image: np.ndarray) -> np.ndarray:
    """(3, pixels) haematoxylin, eosin and DAB densities of a (3, Y, X) patch."""
    return hed_from_rgb.T @ -np.log(image.reshape(3, -1).astype(np.float64))


def test_stain_jitter_scales_and_shifts_each_stain_within_its_ranges():
    patch = stained_patch()
    params = AugmentParams(stain_scale=0.2, stain_shift=0.05)
    out = random_stain(patch, np.random.default_rng(0), params)
    before, after = stain_densities(patch), stain_densities(out)
    slopes = []
    for stain in range(3):
        slope, shift = np.polyfit(before[stain], after[stain], 1)
        np.testing.assert_allclose(after[stain], slope * before[stain] + shift, atol=1e-4)
        assert 0.8 - 1e-6 <= slope <= 1.2 + 1e-6 and abs(shift) <= 0.05 + 1e-6
        slopes.append(slope)
    assert np.ptp(slopes) > 0.01, "each stain draws its own change"


def test_stain_jitter_leaves_grey_patches_and_is_off_by_default():
    grey = np.repeat(stained_patch()[:1], 3, axis=0)
    assert random_stain(grey, np.random.default_rng(0)) is grey
    _, target, weight = sample(size=24, channels=3)
    colour = stained_patch()

    def red_blue_ratios(p_stain: float) -> np.ndarray:
        params, rng = AugmentParams(p_stain=p_stain, p_warp=0.0, **NO_INTENSITY), np.random.default_rng(5)
        outputs = [augment_sample(colour, target, weight, rng, params)[0] for _ in range(4)]
        return np.array([out[0].sum() / out[2].sum() for out in outputs])

    assert np.ptp(red_blue_ratios(0.0)) < 1e-6, "flips and turns keep colour ratios"
    assert np.ptp(red_blue_ratios(1.0)) > 1e-3, "stain jitter changes them"
    assert AugmentParams().p_stain == 0.0 and TrainingConfig().stain_jitter == 0.0
    with pytest.raises(ConfigError, match="stain_jitter"):
        TrainingConfig(stain_jitter=1.5)


def zoom_of(coords: np.ndarray) -> float:
    """The zoom a warp without rotation or elastic part applies: 1 / the input step between neighbouring pixels."""
    return 1.0 / float(coords[1, 0, 1] - coords[1, 0, 0])


def test_scale_augment_sets_the_zoom_range_and_its_default_is_the_default_warp():
    assert augment_params_for(TrainingConfig()) == DEFAULT_PARAMS, "default training draws as before"
    params = augment_params_for(TrainingConfig(scale_augment=2.0))
    assert params.scale_range == (0.5, 2.0)
    still = {"max_rotation_deg": 0.0, "elastic_alpha": 0.0}
    rng = np.random.default_rng(0)

    def zooms(warp_params: AugmentParams) -> list[float]:
        return [zoom_of(random_warp_coordinates((16, 16), rng, replace(warp_params, **still))) for _ in range(200)]

    default_zooms, wide_zooms = zooms(DEFAULT_PARAMS), zooms(params)
    assert min(default_zooms) >= 0.8 - 1e-4 and max(default_zooms) <= 1.25 + 1e-4
    assert min(wide_zooms) < 0.6 and max(wide_zooms) > 1.7 and min(wide_zooms) >= 0.5 - 1e-4
    with pytest.raises(ConfigError, match="scale_augment"):
        TrainingConfig(scale_augment=0.5)

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.predict.tiling import gaussian_weights, pad_to_multiple, padded_size, tile_grid, tile_starts


@pytest.mark.parametrize(
    ("size", "tile", "overlap", "align", "expected"),
    [
        (50, 64, 0.125, 1, [0]),  # shorter than a tile: one (short) tile
        (64, 64, 0.125, 1, [0]),
        (128, 64, 0.0, 1, [0, 64]),
        # step 56 -> ceil(136 / 56) + 1 = 4 tiles spread evenly over 136 pixels
        (200, 64, 0.125, 1, [0, 45, 91, 136]),
        # aligned to 4: span 34 units, step 14 units -> 4 tiles at round(i * 34 / 3) * 4
        (200, 64, 0.125, 4, [0, 44, 92, 136]),
        (168, 64, 0.125, 4, [0, 52, 104]),
    ],
)
def test_tile_starts_hand_computed(size, tile, overlap, align, expected):
    assert tile_starts(size, tile, overlap, align) == expected


@pytest.mark.parametrize("overlap", [0.0, 0.1, 0.25, 0.49])
@pytest.mark.parametrize(("size", "tile", "align"), [(200, 64, 1), (1008, 96, 16), (37, 16, 1), (256, 64, 16)])
def test_tile_starts_cover_with_requested_overlap(size, tile, align, overlap):
    starts = tile_starts(size, tile, overlap, align)
    assert starts[0] == 0 and starts[-1] == size - tile
    assert all(start % align == 0 for start in starts)
    gaps = np.diff(starts)
    assert (gaps > 0).all()
    assert (gaps <= tile).all()  # no pixel left uncovered
    assert (tile - gaps >= overlap * tile - align).all()  # overlap kept (up to the alignment step)


def test_tile_starts_rejects_bad_arguments():
    with pytest.raises(ValueError, match="multiples of align"):
        tile_starts(100, 64, 0.1, align=16)
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(100, 64, 1.0)


def test_tile_grid_covers_plane_with_equal_tiles():
    tiles = tile_grid((200, 168), 64, 0.125, align=4)
    assert len(tiles) == 4 * 3
    coverage = np.zeros((200, 168), dtype=int)
    for sy, sx in tiles:
        assert (sy.stop - sy.start, sx.stop - sx.start) == (64, 64)
        coverage[sy, sx] += 1
    assert coverage.min() >= 1


def test_tile_grid_small_plane_is_one_tile():
    assert tile_grid((37, 53), (64, 64), 0.25) == [(slice(0, 37), slice(0, 53))]
    assert tile_grid((37, 200), 64, 0.0) == [(slice(0, 37), slice(x, x + 64)) for x in (0, 45, 91, 136)]


def test_gaussian_weights_shape_and_values():
    weights = gaussian_weights((64, 48))
    assert weights.shape == (64, 48) and weights.dtype == np.float32
    assert weights.max() == pytest.approx(1.0, abs=1e-3)
    assert weights.min() > 0
    np.testing.assert_allclose(weights, weights[::-1, ::-1], rtol=1e-6)  # symmetric
    assert weights[0, 0] == weights.min()  # corners weigh least
    # separable Gaussian with sigma = 64 / 8 = 8 along Y, centred at 31.5
    ratio = weights[31 - 8, 23] / weights[31, 23]
    assert ratio == pytest.approx(np.exp(-0.5 * ((8.5**2 - 0.5**2) / 64.0)), rel=1e-5)


def test_gaussian_weights_are_clamped_above_zero():
    weights = gaussian_weights((512, 512), sigma_scale=0.05)
    assert weights.min() == pytest.approx(1e-6)


@pytest.mark.parametrize(
    ("size", "multiple", "min_size", "expected"), [(37, 16, 1, 48), (48, 16, 1, 48), (5, 8, 64, 64)]
)
def test_padded_size(size, multiple, min_size, expected):
    assert padded_size(size, multiple, min_size) == expected


def test_pad_to_multiple_reflects_and_crops_back():
    array = np.array([[[1, 2, 3]]], dtype=np.float32)  # (C=1, Y=1, X=3)
    padded, crop = pad_to_multiple(array, 4)
    assert padded.shape == (1, 4, 4)
    np.testing.assert_array_equal(padded[0, 1], [1, 2, 3, 2])  # X: 0 before, 1 after, mirrored
    np.testing.assert_array_equal(padded[0], np.repeat([[1, 2, 3, 2]], 4, axis=0))  # single row reflects to itself
    np.testing.assert_array_equal(padded[crop], array)


def test_pad_to_multiple_odd_size_and_min_size():
    array = np.random.default_rng(0).random((2, 37, 53)).astype(np.float32)
    padded, crop = pad_to_multiple(array, 16, min_size=64)
    assert padded.shape == (2, 64, 64)
    np.testing.assert_array_equal(padded[crop], array)
    # padding is split evenly: 27 rows -> 13 before, 14 after
    assert crop[1] == slice(13, 50)
    np.testing.assert_array_equal(padded[:, 12, crop[2]], array[:, 1])  # mirrored without repeating the edge


def test_pad_to_multiple_no_copy_when_already_aligned():
    array = np.zeros((1, 32, 48), dtype=np.float32)
    padded, crop = pad_to_multiple(array, 16)
    assert padded is array
    assert padded[crop].shape == array.shape

"""Tile grids, Gaussian blending weights and padding for sliding-window inference.

Large planes are cut into overlapping tiles; every tile's prediction is
multiplied by a weight map that falls off toward the tile edges (where the
network sees less context) and the weighted sum is divided by the summed
weights.  This follows nnU-Net's ``compute_gaussian`` and MONAI's
``sliding_window_inference``.
"""

from __future__ import annotations

import math

import numpy as np

TileShape = int | tuple[int, int]


def tile_starts(size: int, tile: int, overlap: float, align: int = 1) -> list[int]:
    """Start offsets of tiles covering ``[0, size)`` along one axis.

    Parameters
    ----------
    size : int
        Length of the axis (pixels), >= 1.
    tile : int
        Tile length; a single tile ``[0]`` is returned when ``size <= tile``
        (that tile is then shorter than ``tile``).
    overlap : float
        Minimum fraction of ``tile`` shared by neighbours, in [0, 1).
    align : int
        Every start is a multiple of this.  Inference passes ``2**depth`` so
        each tile sees the same pooling grid as the whole image (a UNet is
        only shift-equivariant for shifts that are multiples of ``2**depth``);
        ``size`` and ``tile`` must then be multiples of ``align`` too.

    Returns
    -------
    list of int
        Increasing starts; the first is 0 and the last is ``size - tile``, so
        the tiles cover the axis exactly with evenly spread overlaps.

    """
    if size < 1 or tile < 1 or align < 1:
        raise ValueError(f"size, tile and align must be >= 1, got size={size}, tile={tile}, align={align}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if size <= tile:
        return [0]
    if size % align or tile % align:
        raise ValueError(f"size ({size}) and tile ({tile}) must be multiples of align ({align})")
    span, step = (size - tile) // align, max(1, round(tile * (1.0 - overlap) / align))
    count = math.ceil(span / step) + 1
    return [round(i * span / (count - 1)) * align for i in range(count)]


def _pair(tile: TileShape) -> tuple[int, int]:
    return (tile, tile) if isinstance(tile, int) else (int(tile[0]), int(tile[1]))


def tile_grid(shape_yx: tuple[int, int], tile: TileShape, overlap: float, align: int = 1) -> list[tuple[slice, slice]]:
    """Overlapping tiles covering a ``(Y, X)`` plane, row by row.

    Parameters
    ----------
    shape_yx : tuple of int
        ``(Y, X)`` size of the plane.
    tile : int or tuple of int
        Tile edge, or ``(tile_y, tile_x)``.  Along an axis no longer than the
        tile there is a single, shorter tile.
    overlap : float
        Minimum overlap fraction between neighbouring tiles.
    align : int
        Tile starts are multiples of this (see :func:`tile_starts`).

    Returns
    -------
    list of (slice, slice)
        ``(y_slice, x_slice)`` per tile; every tile has the same shape
        ``(min(tile_y, Y), min(tile_x, X))``.

    """
    tile_y, tile_x = _pair(tile)
    size_y, size_x = shape_yx
    height, width = min(tile_y, size_y), min(tile_x, size_x)
    return [
        (slice(y, y + height), slice(x, x + width))
        for y in tile_starts(size_y, tile_y, overlap, align)
        for x in tile_starts(size_x, tile_x, overlap, align)
    ]


def gaussian_weights(tile_shape: tuple[int, ...], sigma_scale: float = 0.125) -> np.ndarray:
    """Blending weights of one tile (nnU-Net style).

    Parameters
    ----------
    tile_shape : tuple of int
        ``(ty, tx)``, or ``(tz, ty, tx)`` for a 3D tile.
    sigma_scale : float
        Gaussian sigma as a fraction of the tile edge (nnU-Net: 1/8).

    Returns
    -------
    numpy.ndarray
        ``tile_shape`` float32, maximum 1 at the centre, strictly positive
        everywhere (clamped at ``1e-6`` of the maximum) so every pixel of
        the plane keeps a non-zero total weight.

    """
    weights = np.ones((), dtype=np.float64)
    for n in tile_shape:
        sigma = max(n * sigma_scale, 1e-3)
        coords = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        weights = np.multiply.outer(weights, np.exp(-0.5 * (coords / sigma) ** 2))
    weights /= weights.max()
    np.maximum(weights, 1e-6, out=weights)
    return weights.astype(np.float32)


def padded_size(size: int, multiple: int, min_size: int = 1) -> int:
    """Smallest multiple of ``multiple`` that is ``>= max(size, min_size)``."""
    return math.ceil(max(size, min_size, 1) / multiple) * multiple


def pad_to_multiple(
    array: np.ndarray, multiple: int | tuple[int, ...], min_size: int = 1
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Reflect-pad the last spatial axes to a multiple of ``multiple``.

    Parameters
    ----------
    array : numpy.ndarray
        ``(C, Y, X)`` (any number of leading axes), or ``(C, Z, Y, X)`` with
        one multiple per spatial axis.
    multiple : int or tuple of int
        An int pads the two last axes (``Y`` and ``X``) to multiples of it
        (``2**depth`` for a UNet); a tuple pads the last ``len(multiple)``
        axes, each to its own multiple (``ModelConfig.size_multiples``).
    min_size : int
        The padded sizes are also at least this.

    Returns
    -------
    padded : numpy.ndarray
        ``(C, Yp, Xp)`` (or ``(C, Zp, Yp, Xp)``); ``array`` itself (no copy)
        when no padding is needed.  The padding is split evenly before and
        after, mirrored without repeating the edge pixel (NumPy
        ``"reflect"``; an axis of size 1 is repeated).
    crop : tuple of slice
        ``padded[crop]`` is ``array``; use it to crop predictions back.

    """
    multiples = (multiple, multiple) if isinstance(multiple, int) else tuple(multiple)
    lead = array.ndim - len(multiples)
    pads = [(0, 0)] * lead
    crop: list[slice] = [slice(None)] * lead
    for size, axis_multiple in zip(array.shape[lead:], multiples, strict=True):
        extra = padded_size(size, axis_multiple, min_size) - size
        before = extra // 2
        pads.append((before, extra - before))
        crop.append(slice(before, before + size))
    if all(before == after == 0 for before, after in pads):
        return array, tuple(crop)
    return np.pad(array, pads, mode="reflect"), tuple(crop)

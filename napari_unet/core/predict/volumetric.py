"""Segment Z-stacks with a 3D model (``ModelConfig.spatial_dims == 3``).

A 3D UNet sees the stack as one volume: its convolutions, pooling and
up-sampling run over Z, Y and X, so a nucleus is judged from the planes above
and below it as well (a 2D model segments each plane alone and
:func:`~napari_unet.core.labels.postprocess.link_slices` joins the slices
afterwards).  The volume is normalised as a whole (one pair of percentiles
for the stack, so planes dimmed by depth stay dim), cut into overlapping 3D
tiles whose predictions are blended with 3D Gaussian weights, and the
``(3, Z, Y, X)`` probabilities go through the same seeded watershed as 2D
images, in 3D (:func:`~napari_unet.core.labels.postprocess.probabilities_to_labels`).

Anisotropy: a model records the Z step it was trained at
(``metadata["z_spacing"]``, in units of the pixel size).  A stack with
another Z step (the napari layer's ``scale``, or ``--z-spacing``) is
resampled along Z to the model's step before the network runs and the
probabilities are resampled back, so the labels keep the stack's shape.
The network's memory is bounded by the tile, not the stack: it only ever
holds one ``VOLUME_TILE_ZYX`` tile; the stack's input, probabilities and
the 3D watershed are held in memory (about 60 bytes per voxel of the stack
as resampled to the model's Z step: 4 GB for 64 x 1024 x 1024).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn

from napari_unet.core.config import InferenceConfig, ModelConfig, PostprocessConfig
from napari_unet.core.data.normalize import normalize_volume
from napari_unet.core.errors import UserInputError
from napari_unet.core.labels.extraction import labels_from_probabilities
from napari_unet.core.predict.runtime import (
    BundleLike,
    Prediction,
    autocast_context,
    inference_network,
    output_probabilities,
    resolve_device,
)
from napari_unet.core.predict.tiling import gaussian_weights, pad_to_multiple, padded_size, tile_starts
from napari_unet.core.progress import Progress, check_cancel

VOLUME_TILE_ZYX = (32, 128, 128)
"""Largest 3D tile the network sees at once (planes, rows, columns); its feature maps bound the memory."""

VOLUME_AXES = ("ZYX", "ZYXC")
"""Axes a 3D model segments."""

DEFAULT_Z_SPACING = 1.0
"""Z step (in pixel sizes) assumed for a model or a stack that does not say."""


def volume_tiles(
    shape_zyx: tuple[int, int, int], multiples: tuple[int, int, int], overlap: float
) -> list[tuple[slice, slice, slice]]:
    """Overlapping 3D tiles of at most :data:`VOLUME_TILE_ZYX` covering a padded ``(Z, Y, X)`` volume.

    Parameters
    ----------
    shape_zyx : tuple of int
        Padded volume size (each a multiple of its entry of ``multiples``).
    multiples : tuple of int
        The network's size multiple per axis (tile starts and sizes are multiples of it).
    overlap : float
        Minimum overlap fraction between neighbouring tiles.

    Returns
    -------
    list of (slice, slice, slice)
        All tiles have the same shape.

    """
    per_axis = []
    for size, multiple, largest in zip(shape_zyx, multiples, VOLUME_TILE_ZYX, strict=True):
        tile = min(size, max(multiple, largest // multiple * multiple))
        per_axis.append([slice(start, start + tile) for start in tile_starts(size, tile, overlap, multiple)])
    return [(sz, sy, sx) for sz in per_axis[0] for sy in per_axis[1] for sx in per_axis[2]]


def iter_volume_probabilities(
    network: nn.Module,
    volume_input: np.ndarray,
    config: ModelConfig,
    cfg: InferenceConfig,
    device: torch.device,
    cancel: Callable[[], bool] | None = None,
) -> Generator[int, None, np.ndarray]:
    """Blend the network's probabilities over 3D tiles; yield 1 per tile done.

    Parameters
    ----------
    network : torch.nn.Module
        A 3D network in eval mode on ``device``.
    volume_input : numpy.ndarray
        ``(C, Z, Y, X)`` float32 from :func:`~napari_unet.core.data.normalize.normalize_volume`.
    config : ModelConfig
        The network's architecture (size multiples, output channels).
    cfg : InferenceConfig
        ``overlap`` and ``blend`` are used.
    device : torch.device
        Where the network runs (``cfg.amp``: mixed precision as for 2D models).
    cancel : callable, optional
        Checked between tiles.

    Returns
    -------
    numpy.ndarray
        ``(out_channels, Z, Y, X)`` float32 probabilities (via ``StopIteration.value``).

    """
    multiples = config.size_multiples
    padded, crop = pad_to_multiple(volume_input, multiples)
    tiles = volume_tiles(padded.shape[1:], multiples, cfg.overlap)
    tile_shape = tuple(s.stop - s.start for s in tiles[0])
    weights = (
        gaussian_weights(tile_shape) if cfg.blend == "gaussian" and len(tiles) > 1 else np.ones(tile_shape, np.float32)
    )
    total = np.zeros((config.out_channels, *padded.shape[1:]), dtype=np.float32)
    weight_sum = np.zeros(padded.shape[1:], dtype=np.float32)
    for tile in tiles:
        check_cancel(cancel)
        inputs = torch.from_numpy(np.ascontiguousarray(padded[(slice(None), *tile)]))[None].to(device)
        with torch.inference_mode(), autocast_context(device, cfg.amp):
            logits = network(inputs)
        total[(slice(None), *tile)] += output_probabilities(logits)[0].cpu().numpy() * weights
        weight_sum[tile] += weights
        yield 1
    total /= weight_sum
    return total[(slice(None), *crop[1:])]


def z_factor(model_z_spacing: float, image_z_spacing: float | None) -> float:
    """How much the stack is stretched along Z to reach the model's Z step (1 = as it is)."""
    if image_z_spacing is None:
        return 1.0
    if not math.isfinite(image_z_spacing) or image_z_spacing <= 0:
        raise UserInputError(f"the Z step must be a positive number (pixel sizes), got {image_z_spacing}")
    return float(image_z_spacing) / float(model_z_spacing)


def resampled_shape(shape_zyx: tuple[int, ...], factors: tuple[float, ...]) -> tuple[int, ...]:
    """``(Z, Y, X)`` size after zooming each axis by its factor (at least 1 per axis)."""
    return tuple(max(1, round(n * f)) for n, f in zip(shape_zyx, factors, strict=True))


def resample(
    array: np.ndarray, factors: tuple[float, float, float], shape_zyx: tuple[int, ...] | None = None
) -> np.ndarray:
    """Linearly resample the three last axes of ``(C, Z, Y, X)``.

    Parameters
    ----------
    array : numpy.ndarray
        ``(C, Z, Y, X)`` float32.
    factors : tuple of float
        Zoom per axis (ignored when ``shape_zyx`` is given).
    shape_zyx : tuple of int, optional
        Exact output size (to return to an original shape).

    Returns
    -------
    numpy.ndarray
        ``(C, Z', Y', X')`` float32; ``array`` itself when nothing changes.

    """
    target = shape_zyx or resampled_shape(array.shape[1:], factors)
    if tuple(target) == array.shape[1:]:
        return array
    zoom = [1.0] + [t / n for t, n in zip(target, array.shape[1:], strict=True)]
    out = ndi.zoom(array, zoom, order=1, mode="nearest", grid_mode=True)
    return out.astype(np.float32, copy=False)


def check_volume_axes(image_axes: str) -> None:
    """Raise a clear error unless a 3D model can segment an image with ``image_axes``."""
    if image_axes not in VOLUME_AXES:
        kind = {"TYX": "a time-lapse", "TYXC": "a time-lapse"}.get(image_axes, f"a {image_axes} image")
        raise UserInputError(
            f"this is a 3D model: it segments Z-stacks (ZYX); the image is {kind}. Pick a 2D model "
            "(e.g. 'default'), or give the stack's axes as ZYX if it is one."
        )


def model_z_spacing(metadata: dict[str, Any]) -> float:
    """Return the Z step (pixel sizes) a 3D model was trained at (:data:`DEFAULT_Z_SPACING` when unrecorded)."""
    return float(metadata.get("z_spacing") or DEFAULT_Z_SPACING)


def volume_tile_count(
    shape_zyx: tuple[int, ...], config: ModelConfig, cfg: InferenceConfig, zoom: tuple[float, ...]
) -> int:
    """Tiles :func:`iter_volume_probabilities` will run for a stack of ``shape_zyx`` resampled by ``zoom``."""
    resampled = resampled_shape(shape_zyx, zoom)
    padded = tuple(padded_size(n, m) for n, m in zip(resampled, config.size_multiples, strict=True))
    return len(volume_tiles(padded, config.size_multiples, cfg.overlap))


def iter_predict_volume(
    image: np.ndarray,
    image_axes: str,
    bundle: BundleLike,
    inference: InferenceConfig,
    postprocess: PostprocessConfig,
    cancel: Callable[[], bool] | None = None,
    z_spacing: float | None = None,
) -> Generator[Progress, None, Prediction]:
    """Segment a Z-stack with a 3D model (what :func:`~napari_unet.core.predict.segment.iter_predict` runs for one).

    Parameters
    ----------
    image : numpy.ndarray
        ``(Z, Y, X)`` or ``(Z, Y, X, C)`` stack, validated.
    image_axes : str
        ``"ZYX"`` or ``"ZYXC"``.
    bundle : ModelBundle
        A model whose ``config.spatial_dims`` is 3.
    inference : InferenceConfig
        ``scale`` zooms Y, X (and Z with them); ``overlap``, ``blend``, ``amp``, ``device``.
    postprocess : PostprocessConfig
        Thresholds and sizes (sizes in voxels).
    cancel : callable, optional
        Checked between tiles.
    z_spacing : float, optional
        The stack's Z step in pixel sizes (napari ``scale[0] / scale[-1]``);
        ``None`` takes the model's.

    Yields
    ------
    Progress
        ``stage="predict"``, counting tiles.

    Returns
    -------
    Prediction
        ``labels (Z, Y, X)`` uint32 3D objects, ``probabilities (Z, 3, Y, X)``,
        ``axes="ZYX"``, ``volumetric=True``.

    """
    check_volume_axes(image_axes)
    if inference.tta or inference.multiscale:
        yield Progress("predict", 0, 0, "Test-time augmentation applies to 2D models only; the 3D model runs once")
    config = bundle.config
    zoom = (inference.scale * z_factor(model_z_spacing(bundle.metadata), z_spacing), inference.scale, inference.scale)
    total = volume_tile_count(image.shape[:3], config, inference, zoom)
    device = resolve_device(inference.device)
    yield Progress("predict", 0, total, f"Predicting {total} 3D tile(s) on {device}", {"device": str(device)})
    network = inference_network(bundle.network, device)
    volume_input = resample(normalize_volume(image, bundle.normalize, config.in_channels), zoom)
    tiles = iter_volume_probabilities(network, volume_input, config, inference, device, cancel)
    done = 0
    while True:
        try:
            done += next(tiles)
        except StopIteration as stop:
            probabilities = stop.value
            break
        yield Progress("predict", done, total, f"Predicting: 3D tile {done}/{total}", {})
    probabilities = resample(probabilities[:3], zoom, shape_zyx=image.shape[:3])
    probabilities = np.ascontiguousarray(probabilities.transpose(1, 0, 2, 3))
    labels = labels_from_probabilities(probabilities, "ZYX", postprocess, cancel, volumetric=True)
    return Prediction(labels, probabilities, "ZYX", image_axes, volumetric=True)

"""Class probabilities of 2D planes: tiles, batches, device, test-time flips and sizes.

Each plane is resized by ``InferenceConfig.scale`` (when not 1),
reflect-padded to a size the network accepts, cut into overlapping tiles that
run through the network in batches, blended back with Gaussian weights,
cropped and resized back.  :mod:`~napari_unet.core.predict.segment` turns the
probabilities of every plane into labels.

Inference runs a copy of the bundle's network with every BatchNorm folded into
its convolution, in channels-last layout, on the compute device
(:func:`~napari_unet.core.predict.runtime.inference_network`); the copy is made once and reused while the
weights stay the same, and the bundle's own network is left as it is (on its
device, in its mode), ready to be fine-tuned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_unet.core.config import InferenceConfig, ModelConfig
from napari_unet.core.predict.memory import available_memory_bytes, tiles_that_fit
from napari_unet.core.predict.runtime import (
    BundleLike,
    autocast_context,
    channels_last,
    inference_network,
    output_probabilities,
    resolve_device,
    settings_for_model,
)
from napari_unet.core.predict.tiling import gaussian_weights, pad_to_multiple, padded_size, tile_grid
from napari_unet.core.progress import check_cancel, run_to_end

MIN_INPUT_SIZE = 64
"""Planes smaller than this (pixels per axis) are reflect-padded up to it, giving the network some context."""

DEVICE_ACCUMULATE_MAX_BYTES = 2 * 1024**3
"""On a GPU, planes whose padded input + blended output fit in this stay on the GPU; larger ones blend on the CPU."""


# --------------------------------------------------------------------------- one plane


@dataclass(frozen=True)
class _TilePlan:
    """How every plane of one image is padded, tiled and blended."""

    model: ModelConfig
    min_size: int
    padded_shape: tuple[int, int]
    tiles: list[tuple[slice, slice]]
    weights: np.ndarray | None  # (ty, tx) blending weights; None for a single tile
    inverse_weight_sum: np.ndarray | None  # (Yp, Xp)

    @property
    def multiple(self) -> int:
        return self.model.size_multiple

    @property
    def out_channels(self) -> int:
        return self.model.out_channels

    @property
    def tiles_per_plane(self) -> int:
        return len(self.tiles)

    @property
    def tile_pixels(self) -> int:
        """Pixels of one tile (every tile of a plan has the same shape)."""
        return math.prod(_tile_shape(self.tiles))


def _tile_shape(tiles: list[tuple[slice, slice]]) -> tuple[int, int]:
    """``(ty, tx)`` of the first tile (all tiles of a grid share it)."""
    sy, sx = tiles[0]
    return sy.stop - sy.start, sx.stop - sx.start


def _plan_tiles(shape_yx: tuple[int, int], model: ModelConfig, cfg: InferenceConfig) -> _TilePlan:
    """Pad sizes, tiles and weights for planes of ``shape_yx`` (identical for every plane)."""
    multiple = model.size_multiple
    min_size = max(MIN_INPUT_SIZE, multiple)
    padded = (padded_size(shape_yx[0], multiple, min_size), padded_size(shape_yx[1], multiple, min_size))
    tile = max(multiple, cfg.tile_size // multiple * multiple)
    tiles = tile_grid(padded, tile, cfg.overlap, align=multiple)
    if len(tiles) == 1:
        return _TilePlan(model, min_size, padded, tiles, None, None)
    tile_shape = _tile_shape(tiles)
    weights = gaussian_weights(tile_shape) if cfg.blend == "gaussian" else np.ones(tile_shape, dtype=np.float32)
    weight_sum = np.zeros(padded, dtype=np.float32)
    for sy, sx in tiles:
        weight_sum[sy, sx] += weights
    return _TilePlan(model, min_size, padded, tiles, weights, 1.0 / weight_sum)


def _accumulate_on(device: torch.device, plan: _TilePlan, in_channels: int, out_channels: int) -> torch.device:
    if device.type == "cpu":
        return device
    needed = math.prod(plan.padded_shape) * (in_channels + out_channels + 1) * 4
    return device if needed <= DEVICE_ACCUMULATE_MAX_BYTES else torch.device("cpu")


CPU_BATCH_SIZE, GPU_BATCH_SIZE = 1, 8
"""Tiles per forward pass when ``InferenceConfig.batch_size`` is 0 (automatic): on 2 CPU cores one 512² tile
at a time runs 1.7x faster per pixel than four (``benchmarks/bench_inference.py``); a GPU wants batches
(fewer when the memory estimate says they do not fit, and halved while they run out of its memory:
:class:`BatchFit`)."""


def effective_batch_size(
    cfg: InferenceConfig, device: torch.device, plan: _TilePlan, free_bytes: int | None = None
) -> int:
    """``cfg.batch_size``, or for 0 the automatic choice for ``device`` and the plan's tiles.

    On a GPU the automatic choice is :data:`GPU_BATCH_SIZE` tiles, or fewer
    when :func:`~napari_unet.core.predict.memory.tiles_that_fit` estimates
    that fewer fit in its free memory (``free_bytes``: assume this much
    instead of asking the device).
    """
    if cfg.batch_size:
        return cfg.batch_size
    if device.type == "cpu":
        return CPU_BATCH_SIZE
    free = available_memory_bytes(device) if free_bytes is None else free_bytes
    fitting = tiles_that_fit(plan.model, plan.tile_pixels, free_bytes=free, amp=cfg.amp)
    return min(GPU_BATCH_SIZE, fitting)


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class BatchFit:
    """The most tiles one forward pass may take: the batch size, halved each time device memory runs out.

    Attributes
    ----------
    size : int
        Tiles per forward pass (>= 1); one plane's batches share it, so after
        one out-of-memory error the rest of the plane runs in smaller passes.

    """

    def __init__(self, size: int) -> None:
        self.size = max(1, size)

    def shrink(self, device: torch.device) -> bool:
        """Halve :attr:`size` after an out-of-memory error, freeing what the failed pass left in the cache.

        Returns
        -------
        bool
            False, changing nothing, when one tile already ran alone (nothing smaller to try).

        """
        if self.size == 1:
            return False
        self.size //= 2
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return True


def fitting_probabilities(
    network: nn.Module, inputs: torch.Tensor, device: torch.device, cfg: InferenceConfig, fit: BatchFit
) -> torch.Tensor:
    """:func:`tile_probabilities` of ``inputs (N, C, ty, tx)`` in passes of at most ``fit.size`` tiles.

    A pass that runs out of device memory is retried with half as many tiles
    (``fit`` remembers it); the result ``(N, K, ty, tx)`` is the same as one pass.
    """
    parts: list[torch.Tensor] = []
    start = 0
    while start < len(inputs):
        chunk = inputs[start : start + fit.size]
        try:
            parts.append(tile_probabilities(network, chunk, device, cfg))
        except torch.OutOfMemoryError:
            if not fit.shrink(device):
                raise
            continue
        start += len(chunk)
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _iter_plane_probabilities(
    network: nn.Module,
    plane: np.ndarray,
    plan: _TilePlan,
    cfg: InferenceConfig,
    device: torch.device,
    cancel: Callable[[], bool] | None,
    on_rows: RowsCallback | None = None,
) -> Generator[int, None, np.ndarray | None]:
    """Run one normalised plane ``(C, Y, X)`` float32 through ``network`` tile batch by tile batch.

    Yields the number of tiles finished by each batch and returns ``(K, Y, X)``
    float32 softmax probabilities (``K`` = the network's output channels).
    Grad and autocast modes are entered per batch, never across a ``yield``.
    After each batch, rows no later tile touches are final: they are
    normalised then and, with ``on_rows``, handed over as
    ``on_rows(band (K, rows, X) float32, first row)`` in the plane's coordinates;
    the receiver keeps them, so nothing is returned (no second copy of the plane).
    """
    padded, crop = pad_to_multiple(plane, plan.multiple, plan.min_size)
    out_channels = plan.out_channels
    store = _accumulate_on(device, plan, plane.shape[0], out_channels)
    with torch.inference_mode():
        source = torch.from_numpy(np.ascontiguousarray(padded)).to(store)
        if device.type == "cuda" and store.type == "cpu":  # tiles then reach the GPU by asynchronous copies
            source = source.pin_memory()
        total = torch.zeros((out_channels, *plan.padded_shape), dtype=torch.float32, device=store)
        weights = None if plan.weights is None else torch.from_numpy(plan.weights).to(store)
    rows = _FinalRows(plan, crop[-2:], total, on_rows)
    done = 0
    fit = BatchFit(effective_batch_size(cfg, device, plan))
    for batch in _batches(plan.tiles, fit.size):
        check_cancel(cancel)
        with torch.inference_mode():
            inputs = _gather_tiles(source, batch).to(device, non_blocking=True)
            inputs = channels_last(inputs)
            probabilities = fitting_probabilities(network, inputs, device, cfg, fit).to(store)
            for (sy, sx), one_tile in zip(batch, probabilities, strict=True):
                if weights is None:
                    total[:, sy, sx] = one_tile
                else:
                    total[:, sy, sx].addcmul_(one_tile, weights)
            done += len(batch)
            rows.finalise(done)
        yield len(batch)
    if on_rows is not None:
        return None
    with torch.inference_mode():
        cropped = total[(slice(None), *crop[-2:])]
        return np.ascontiguousarray(cropped.cpu().numpy())


RowsCallback = Callable[[np.ndarray, int], None]
"""``on_rows(band (K, rows, X) float32, first row)``: final probability rows of a plane, top to bottom."""


class _FinalRows:
    """Normalises the rows of a plane's blended probabilities that no remaining tile touches, and hands them on."""

    def __init__(
        self, plan: _TilePlan, crop: tuple[slice, ...], total: torch.Tensor, on_rows: RowsCallback | None
    ) -> None:
        self.total, self.on_rows = total, on_rows
        self.crop_y, self.crop_x = crop
        starts = [sy.start for sy, _ in plan.tiles] + [plan.padded_shape[0]]
        self.final_before = np.minimum.accumulate(starts[::-1])[::-1]  # [i]: first row tiles i.. still touch
        self.inverse = None if plan.inverse_weight_sum is None else torch.from_numpy(plan.inverse_weight_sum)
        self.done_rows = 0

    def finalise(self, tiles_done: int) -> None:
        """Normalise (and hand on) the rows made final by the first ``tiles_done`` tiles."""
        stop = int(self.final_before[tiles_done])
        if stop <= self.done_rows:
            return
        band = slice(self.done_rows, stop)
        if self.inverse is not None:
            self.total[:, band] *= self.inverse[band].to(self.total.device)
        self.done_rows = stop
        first, last = max(band.start, self.crop_y.start), min(stop, self.crop_y.stop)
        if self.on_rows is not None and last > first:
            rows = self.total[:, first:last, self.crop_x]
            self.on_rows(rows.cpu().numpy(), first - self.crop_y.start)


def scaled_shape(shape_yx: Sequence[int], scale: float) -> tuple[int, int]:
    """Plane size ``(Y, X)`` the network sees for ``InferenceConfig.scale`` (at least 1 pixel per axis)."""
    return (max(1, round(shape_yx[0] * scale)), max(1, round(shape_yx[1] * scale)))


def resize_plane(plane: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize every channel of a plane.

    Parameters
    ----------
    plane : numpy.ndarray
        ``(C, Y, X)`` float32.
    shape_yx : tuple of int
        New ``(Y', X')``.

    Returns
    -------
    numpy.ndarray
        ``(C, Y', X')`` float32 (``plane`` itself when the size is unchanged).
        Shrinking is anti-aliased.  Channels that sum to 1 (probabilities)
        still do: every output pixel is a convex combination of input pixels.

    """
    if tuple(plane.shape[-2:]) == tuple(shape_yx):
        return plane
    shrinking = shape_yx[0] < plane.shape[-2] or shape_yx[1] < plane.shape[-1]
    with torch.inference_mode():
        source = torch.from_numpy(np.ascontiguousarray(plane, dtype=np.float32)).unsqueeze(0)
        resized = nn.functional.interpolate(
            source, size=shape_yx, mode="bilinear", align_corners=False, antialias=shrinking
        )
    return np.ascontiguousarray(resized[0].numpy())


MULTISCALE_FACTORS: tuple[float, ...] = (2**-0.5, 1.0, 2**0.5)
"""Sizes, relative to ``InferenceConfig.scale``, averaged by multi-scale test-time augmentation."""


def plan_scales(shape_yx: Sequence[int], model: ModelConfig, cfg: InferenceConfig) -> list[tuple[float, _TilePlan]]:
    """``(scale, tile plan)`` of every size a plane of ``shape_yx`` is predicted at (one unless ``cfg.multiscale``)."""
    factors = MULTISCALE_FACTORS if cfg.multiscale else (1.0,)
    scales = [cfg.scale * factor for factor in factors]
    return [(scale, _plan_tiles(scaled_shape(shape_yx, scale), model, cfg)) for scale in scales]


def iter_scaled_plane_probabilities(
    network: nn.Module,
    plane: np.ndarray,
    plans: list[tuple[float, _TilePlan]],
    cfg: InferenceConfig,
    device: torch.device,
    cancel: Callable[[], bool] | None,
    on_rows: RowsCallback | None = None,
) -> Generator[int, None, np.ndarray | None]:
    """Average of :func:`_iter_plane_probabilities` of ``plane (C, Y, X)`` resized to each planned scale.

    Yields tiles finished, as :func:`_iter_plane_probabilities`; returns
    ``(K, Y, X)`` float32 probabilities at the plane's own size, or None with
    ``on_rows`` (final rows handed on as they are made; needs a single plan at
    scale 1, see :func:`rows_arrive_in_order`).
    """
    if on_rows is not None and not rows_arrive_in_order(plans):
        raise ValueError("final rows can be handed on only for a single plan at scale 1")
    if on_rows is not None:
        return (yield from _iter_plane_probabilities(network, plane, plans[0][1], cfg, device, cancel, on_rows))
    shape_yx = (plane.shape[-2], plane.shape[-1])
    total: np.ndarray | None = None
    for scale, plan in plans:
        scaled = resize_plane(plane, scaled_shape(shape_yx, scale))
        probabilities = yield from _iter_plane_probabilities(network, scaled, plan, cfg, device, cancel)
        probabilities = resize_plane(probabilities, shape_yx)
        total = probabilities if total is None else total + probabilities
    assert total is not None  # there is at least one scale
    return total / len(plans) if len(plans) > 1 else total


def rows_arrive_in_order(plans: list[tuple[float, _TilePlan]]) -> bool:
    """Whether a plane's final probability rows can be handed on while it is predicted (one plan, at scale 1)."""
    return len(plans) == 1 and plans[0][0] == 1.0


TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
"""Flips averaged by test-time augmentation (identity, horizontal, vertical, both)."""


def tile_probabilities(
    network: nn.Module, inputs: torch.Tensor, device: torch.device, cfg: InferenceConfig
) -> torch.Tensor:
    """Softmax probabilities ``(N, K, ty, tx)`` of a tile batch ``(N, C, ty, tx)``.

    With ``cfg.tta`` the network also sees the flipped tiles and the
    probabilities, flipped back, are averaged (4x the compute).
    """
    return tile_logits_and_probabilities(network, inputs, device, cfg)[1]


def tile_logits_and_probabilities(
    network: nn.Module, inputs: torch.Tensor, device: torch.device, cfg: InferenceConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(N, K, ty, tx)`` of the unflipped tiles and the probabilities of :func:`tile_probabilities`.

    One set of network passes gives both: validation needs the logits for
    its loss and the (flip-averaged) probabilities for its score.
    """
    with autocast_context(device, cfg.amp):
        unflipped_logits = network(inputs)
    total = output_probabilities(unflipped_logits)
    extra_flips = [dims for dims in TTA_FLIPS if dims] if cfg.tta else []
    for dims in extra_flips:
        with autocast_context(device, cfg.amp):
            logits = network(inputs.flip(dims))
        total.add_(output_probabilities(logits).flip(dims))
    return unflipped_logits, total / (1 + len(extra_flips))


def _gather_tiles(source: torch.Tensor, batch: Sequence[tuple[slice, slice]]) -> torch.Tensor:
    """Stack the tiles of ``batch`` from ``source`` (C, Yp, Xp) into (N, C, ty, tx); a lone tile is not copied."""
    if len(batch) == 1:
        sy, sx = batch[0]
        return source[:, sy, sx].unsqueeze(0)
    return torch.stack([source[:, sy, sx] for sy, sx in batch])


def predict_probabilities(
    bundle: BundleLike,
    plane: np.ndarray,
    cfg: InferenceConfig | None = None,
    cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Class probabilities of one normalised plane.

    Parameters
    ----------
    bundle : ModelBundle
        The model (``bundle.network``, ``bundle.config``).
    plane : numpy.ndarray
        ``(C, Y, X)`` float32 network input (see
        :func:`napari_unet.core.data.normalize.normalize_plane`), ``C`` =
        ``bundle.config.in_channels``.
    cfg : InferenceConfig, optional
        Tiles, batch size, device, blending, mixed precision, test-time
        augmentation (``tta=None``: the model's own, :func:`settings_for_model`).
    cancel : callable, optional
        Checked between batches; raises :class:`~napari_unet.core.errors.Cancelled`.

    Returns
    -------
    numpy.ndarray
        ``(3, Y, X)`` float32 probabilities (background, interior, boundary).

    """
    cfg = settings_for_model(cfg, bundle)
    if plane.ndim != 3 or plane.shape[0] != bundle.config.in_channels:
        raise ValueError(f"plane must be (C={bundle.config.in_channels}, Y, X), got shape {plane.shape}")
    device = resolve_device(cfg.device)
    network = inference_network(bundle.network, device)
    plans = plan_scales(plane.shape[-2:], bundle.config, cfg)
    return run_to_end(
        iter_scaled_plane_probabilities(network, plane.astype(np.float32, copy=False), plans, cfg, device, cancel)
    )


# --------------------------------------------------------------------------- whole images


# --------------------------------------------------------------------------- post-processing


"""Axes of :attr:`Prediction.labels` (and of :func:`labels_from_probabilities`' result)."""

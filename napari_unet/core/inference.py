"""Apply a UNet bundle to an image: tiles, batches, device, progress.

``iter_predict`` is the engine's one inference path (the widgets wrap it in a
thread worker, the CLI in a progress bar); ``predict`` drains it.  Each plane
(the image itself, or each z-slice / time frame of a stack) is normalised,
resized by ``InferenceConfig.scale`` (when not 1), reflect-padded to a size
the network accepts, cut into overlapping tiles that
run through the network in batches, blended back with Gaussian weights,
cropped, resized back and post-processed into instance labels.

Inference runs a copy of the bundle's network with every BatchNorm folded into
its convolution, in channels-last layout, on the compute device
(:func:`inference_network`); the copy is made once and reused while the
weights stay the same, and the bundle's own network is left as it is (on its
device, in its mode), ready to be fine-tuned.
"""

from __future__ import annotations

import contextlib
import functools
import math
import weakref
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from napari_unet.core.config import InferenceConfig, ModelConfig, NormalizeConfig, PostprocessConfig
from napari_unet.core.errors import UserInputError
from napari_unet.core.model import fold_batch_norm
from napari_unet.core.normalize import check_image_size, infer_axes, normalize_plane, to_planes, validate_image
from napari_unet.core.postprocess import link_slices, probabilities_to_labels, relabel_stack_unique
from napari_unet.core.progress import Progress, check_cancel, run_to_end
from napari_unet.core.tiling import gaussian_weights, pad_to_multiple, padded_size, tile_grid

MIN_INPUT_SIZE = 64
"""Planes smaller than this (pixels per axis) are reflect-padded up to it, giving the network some context."""

DEVICE_ACCUMULATE_MAX_BYTES = 2 * 1024**3
"""On a GPU, planes whose padded input + blended output fit in this stay on the GPU; larger ones blend on the CPU."""

LINK_MIN_IOU = 0.3
"""IoU above which objects of consecutive z-slices are linked into one 3D object."""


class BundleLike(Protocol):
    """What inference needs of :class:`napari_unet.core.store.ModelBundle`."""

    network: nn.Module
    config: ModelConfig
    normalize: NormalizeConfig
    postprocess: PostprocessConfig
    metadata: dict[str, Any]


FLIPS_METADATA_KEY = "tuned_with_flips"
"""Model metadata: ``True`` when the model's thresholds were chosen on flip-averaged predictions."""


def model_uses_flips(metadata: Mapping[str, Any]) -> bool:
    """Whether a model (its ``metadata``) runs with test-time flips by default: its thresholds were tuned with them."""
    return bool(metadata.get(FLIPS_METADATA_KEY, False))


def settings_for_model(cfg: InferenceConfig | None, bundle: BundleLike) -> InferenceConfig:
    """``cfg`` (defaults when ``None``) with ``tta=None`` replaced by the model's own choice (:func:`model_uses_flips`).

    Flip averaging makes probabilities smoother, so thresholds tuned with it
    suit it and those tuned without suit plain predictions: a model runs the
    way its thresholds were chosen unless the caller says otherwise.
    """
    cfg = cfg or InferenceConfig()
    return cfg if cfg.tta is not None else replace(cfg, tta=model_uses_flips(bundle.metadata))


@dataclass(frozen=True)
class Prediction:
    """Result of :func:`predict`.

    Attributes
    ----------
    labels : numpy.ndarray
        uint32 instance labels with the input's spatial shape: ``(Y, X)`` for
        ``YX``, ``YXC`` and ``CYX`` inputs, ``(P, Y, X)`` for ``ZYX(C)`` and
        ``TYX(C)`` stacks.  Ids are unique across a stack; z-stacks are linked
        across slices (one id per 3D object), time-lapses are not.
    probabilities : numpy.ndarray
        float32 class probabilities (background, interior, boundary):
        ``(3, Y, X)`` for a single plane, ``(P, 3, Y, X)`` for a stack.
    axes : str
        Axes of ``labels``: ``"YX"``, ``"ZYX"`` or ``"TYX"``.
    image_axes : str
        Axes the input image was read with (e.g. ``"YXC"``).
    volumetric : bool
        True when a 3D model segmented the stack as one volume (its objects
        are 3D from the start; post-processing runs in 3D), False when the
        planes were segmented one by one.

    """

    labels: np.ndarray
    probabilities: np.ndarray
    axes: str
    image_axes: str = ""
    volumetric: bool = False


# --------------------------------------------------------------------------- devices


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a device name into a :class:`torch.device`.

    Parameters
    ----------
    name : str
        ``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` or ``"mps"``.

    Raises
    ------
    UserInputError
        If the name is unknown or the requested accelerator is not available.

    """
    text = str(name).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps", 0) if _mps_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise UserInputError("Device 'mps' was requested but Apple MPS is not available; choose 'auto' or 'cpu'.")
        return torch.device("mps", 0)
    if text == "cuda" or text.startswith("cuda:"):
        return _cuda_device(text)
    raise UserInputError(f"Unknown device {name!r}; choose 'auto', 'cpu', 'cuda' or 'mps'.")


def accelerator_names() -> list[str]:
    """Names of the accelerators PyTorch can use here, e.g. ``["cuda:0 NVIDIA H100", "Apple MPS"]``.

    Returns
    -------
    list of str
        One entry per CUDA device (``cuda:<index> <model name>``), then
        ``"Apple MPS"`` when available; empty on a CPU-only machine.

    """
    names = []
    if torch.cuda.is_available():
        names += [f"cuda:{index} {torch.cuda.get_device_name(index)}" for index in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("Apple MPS")
    return names


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _cuda_device(text: str) -> torch.device:
    if not torch.cuda.is_available():
        raise UserInputError(
            f"Device {text!r} was requested but PyTorch sees no CUDA GPU (CPU-only build or no driver); "
            "choose 'auto' or 'cpu'."
        )
    index_text = text.partition(":")[2] or str(torch.cuda.current_device())
    count = torch.cuda.device_count()
    if not index_text.isdigit() or int(index_text) >= count:
        raise UserInputError(f"Device {text!r} does not exist; this machine has CUDA devices 0..{count - 1}.")
    return torch.device("cuda", int(index_text))


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)


_INFERENCE_COPIES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]] = weakref.WeakKeyDictionary()
"""Per network: the fingerprint of its weights and device, and its folded, channels-last inference copy."""


def inference_network(network: nn.Module, device: torch.device) -> nn.Module:
    """Return the network as inference runs it: BatchNorm folded into the convolutions, channels-last, on ``device``.

    The copy is made once and reused while ``network``'s weights stay the
    same (fine-tuning changes them in place: the copy is then made again);
    ``network`` itself is never changed, so it can still be trained.
    2D networks only get channels-last (the memory layout oneDNN and cuDNN
    convolve fastest).
    """
    tensors = [*network.parameters(), *network.buffers()]
    fingerprint = (str(device), tuple((t.data_ptr(), t._version) for t in tensors))
    cached = _INFERENCE_COPIES.get(network)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    copy = fold_batch_norm(network).to(device)
    if getattr(getattr(network, "config", None), "spatial_dims", 2) == 2:
        copy = copy.to(memory_format=torch.channels_last)
    _INFERENCE_COPIES[network] = (fingerprint, copy)
    return copy


def autocast_context(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision when ``amp``: fp16 on CUDA; bf16 on a CPU that computes it natively; else nothing.

    The softmax always runs in float32 (:func:`output_probabilities`).
    """
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    if amp and device.type == "cpu" and cpu_has_native_bf16():
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this processor convolves in bfloat16 natively (AVX512-BF16 or AMX), where it is about 2x faster.

    Elsewhere bfloat16 is emulated and slower than float32, so it is not used.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# --------------------------------------------------------------------------- one plane


@dataclass(frozen=True)
class _TilePlan:
    """How every plane of one image is padded, tiled and blended."""

    multiple: int
    min_size: int
    out_channels: int
    padded_shape: tuple[int, int]
    tiles: list[tuple[slice, slice]]
    weights: np.ndarray | None  # (ty, tx) blending weights; None for a single tile
    inverse_weight_sum: np.ndarray | None  # (Yp, Xp)

    @property
    def tiles_per_plane(self) -> int:
        return len(self.tiles)


def _plan_tiles(shape_yx: tuple[int, int], model: ModelConfig, cfg: InferenceConfig) -> _TilePlan:
    """Pad sizes, tiles and weights for planes of ``shape_yx`` (identical for every plane)."""
    multiple = model.size_multiple
    min_size = max(MIN_INPUT_SIZE, multiple)
    padded = (padded_size(shape_yx[0], multiple, min_size), padded_size(shape_yx[1], multiple, min_size))
    tile = max(multiple, cfg.tile_size // multiple * multiple)
    tiles = tile_grid(padded, tile, cfg.overlap, align=multiple)
    if len(tiles) == 1:
        return _TilePlan(multiple, min_size, model.out_channels, padded, tiles, None, None)
    tile_shape = (tiles[0][0].stop - tiles[0][0].start, tiles[0][1].stop - tiles[0][1].start)
    weights = gaussian_weights(tile_shape) if cfg.blend == "gaussian" else np.ones(tile_shape, dtype=np.float32)
    weight_sum = np.zeros(padded, dtype=np.float32)
    for sy, sx in tiles:
        weight_sum[sy, sx] += weights
    return _TilePlan(multiple, min_size, model.out_channels, padded, tiles, weights, 1.0 / weight_sum)


def _accumulate_on(device: torch.device, plan: _TilePlan, in_channels: int, out_channels: int) -> torch.device:
    if device.type == "cpu":
        return device
    needed = math.prod(plan.padded_shape) * (in_channels + out_channels + 1) * 4
    return device if needed <= DEVICE_ACCUMULATE_MAX_BYTES else torch.device("cpu")


CPU_BATCH_SIZE, GPU_BATCH_SIZE = 1, 8
"""Tiles per forward pass when ``InferenceConfig.batch_size`` is 0 (automatic): on 2 CPU cores one 512² tile
at a time runs 1.7x faster per pixel than four (``benchmarks/bench_inference.py``); a GPU wants batches."""


def effective_batch_size(cfg: InferenceConfig, device: torch.device) -> int:
    """``cfg.batch_size``, or for 0 the automatic choice for ``device``."""
    if cfg.batch_size:
        return cfg.batch_size
    return CPU_BATCH_SIZE if device.type == "cpu" else GPU_BATCH_SIZE


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _iter_plane_probabilities(
    network: nn.Module,
    plane: np.ndarray,
    plan: _TilePlan,
    cfg: InferenceConfig,
    device: torch.device,
    cancel: Callable[[], bool] | None,
) -> Generator[int, None, np.ndarray]:
    """Run one normalised plane ``(C, Y, X)`` float32 through ``network`` tile batch by tile batch.

    Yields the number of tiles finished by each batch and returns ``(K, Y, X)``
    float32 softmax probabilities (``K`` = the network's output channels).
    Grad and autocast modes are entered per batch, never across a ``yield``.
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
    for batch in _batches(plan.tiles, effective_batch_size(cfg, device)):
        check_cancel(cancel)
        with torch.inference_mode():
            inputs = _gather_tiles(source, batch).to(device, non_blocking=True)
            inputs = inputs.contiguous(memory_format=torch.channels_last) if inputs.dim() == 4 else inputs
            probabilities = tile_probabilities(network, inputs, device, cfg).to(store)
            for (sy, sx), one_tile in zip(batch, probabilities, strict=True):
                if weights is None:
                    total[:, sy, sx] = one_tile
                else:
                    total[:, sy, sx].addcmul_(one_tile, weights)
        yield len(batch)
    with torch.inference_mode():
        if plan.inverse_weight_sum is not None:
            total *= torch.from_numpy(plan.inverse_weight_sum).to(store)
        cropped = total[(slice(None), *crop[-2:])]
        return np.ascontiguousarray(cropped.cpu().numpy())


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


def _plan_scales(shape_yx: Sequence[int], model: ModelConfig, cfg: InferenceConfig) -> list[tuple[float, _TilePlan]]:
    """``(scale, tile plan)`` of every size a plane of ``shape_yx`` is predicted at (one unless ``cfg.multiscale``)."""
    factors = MULTISCALE_FACTORS if cfg.multiscale else (1.0,)
    scales = [cfg.scale * factor for factor in factors]
    return [(scale, _plan_tiles(scaled_shape(shape_yx, scale), model, cfg)) for scale in scales]


def _iter_scaled_plane_probabilities(
    network: nn.Module,
    plane: np.ndarray,
    plans: list[tuple[float, _TilePlan]],
    cfg: InferenceConfig,
    device: torch.device,
    cancel: Callable[[], bool] | None,
) -> Generator[int, None, np.ndarray]:
    """Average of :func:`_iter_plane_probabilities` of ``plane (C, Y, X)`` resized to each planned scale.

    Yields tiles finished, as :func:`_iter_plane_probabilities`; returns
    ``(K, Y, X)`` float32 probabilities at the plane's own size.
    """
    shape_yx = (plane.shape[-2], plane.shape[-1])
    total: np.ndarray | None = None
    for scale, plan in plans:
        scaled = resize_plane(plane, scaled_shape(shape_yx, scale))
        probabilities = yield from _iter_plane_probabilities(network, scaled, plan, cfg, device, cancel)
        probabilities = resize_plane(probabilities, shape_yx)
        total = probabilities if total is None else total + probabilities
    assert total is not None  # there is at least one scale
    return total / len(plans) if len(plans) > 1 else total


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


def output_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Network logits ``(N, K, *S)`` -> probabilities: softmax over the 3 classes, sigmoid of a 4th (distance) channel.

    Returns
    -------
    torch.Tensor
        ``(N, K, *S)`` float32: background, interior, boundary (summing to 1)
        and, for the ``bg_interior_boundary_distance`` head, the predicted
        distance to the object's edge as a fraction of the object's largest
        (0 at the edge, 1 at the centre).

    """
    classes = torch.softmax(logits[:, :3].float(), dim=1)
    if logits.shape[1] == 3:
        return classes
    return torch.cat([classes, torch.sigmoid(logits[:, 3:].float())], dim=1)


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
        :func:`napari_unet.core.normalize.normalize_plane`), ``C`` =
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
    plans = _plan_scales(plane.shape[-2:], bundle.config, cfg)
    return _drain(
        _iter_scaled_plane_probabilities(network, plane.astype(np.float32, copy=False), plans, cfg, device, cancel)
    )


def _drain(gen: Generator[int, None, np.ndarray]) -> np.ndarray:
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


# --------------------------------------------------------------------------- whole images


def iter_predict(
    image: Any,
    bundle: BundleLike,
    axes: str | None = None,
    inference: InferenceConfig | None = None,
    postprocess: PostprocessConfig | None = None,
    cancel: Callable[[], bool] | None = None,
    z_spacing: float | None = None,
) -> Generator[Progress, None, Prediction]:
    """Segment an image, yielding progress after every batch of tiles.

    A 2D model segments every plane of a stack; a 3D model
    (``bundle.config.spatial_dims == 3``) segments a Z-stack as one volume
    (:func:`napari_unet.core.volume.iter_predict_volume`).

    Parameters
    ----------
    image : array-like
        ``YX``, ``YXC``, ``CYX``, ``ZYX``, ``TYX``, ``ZYXC`` or ``TYXC`` data of
        any integer or float dtype (see :mod:`napari_unet.core.normalize`).
    bundle : ModelBundle
        Network, model config and its normalisation / post-processing configs.
    axes : str, optional
        Axis order of ``image``; guessed by
        :func:`~napari_unet.core.normalize.infer_axes` when omitted.
    inference : InferenceConfig, optional
        Tiling, batching, device, precision and test-time augmentation
        (defaults when omitted; ``tta=None``: the model's own, :func:`settings_for_model`).
    postprocess : PostprocessConfig, optional
        Label extraction settings; ``None`` uses ``bundle.postprocess``.
    cancel : callable, optional
        Checked between batches; when it returns True the generator raises
        :class:`~napari_unet.core.errors.Cancelled`.
    z_spacing : float, optional
        Z step of a stack in pixel sizes; used by 3D models (which resample
        Z to the step they were trained at), ignored by 2D ones.

    Yields
    ------
    Progress
        ``stage="predict"``, ``done``/``total`` counting tiles over all
        planes (a first event with ``done=0``).

    Returns
    -------
    Prediction
        Labels, probabilities and axes (via ``StopIteration.value``; use
        :func:`predict` or :func:`~napari_unet.core.progress.run_to_end`).

    Raises
    ------
    UserInputError
        For images the engine cannot read (see
        :func:`~napari_unet.core.normalize.validate_image`) or an unavailable device.

    """
    inference = settings_for_model(inference, bundle)
    postprocess = postprocess or bundle.postprocess
    image = validate_image(image)
    image_axes = infer_axes(image.shape, axes)
    check_image_size(image.shape, image_axes)
    if bundle.config.spatial_dims == 3:
        from napari_unet.core.volume import iter_predict_volume

        return (yield from iter_predict_volume(image, image_axes, bundle, inference, postprocess, cancel, z_spacing))
    planes, plane_axis = to_planes(image, image_axes, dtype=None)
    device = resolve_device(inference.device)
    network = inference_network(bundle.network, device)
    plans = _plan_scales(planes.shape[1:3], bundle.config, inference)
    total = len(planes) * sum(plan.tiles_per_plane for _, plan in plans)
    yield Progress("predict", 0, total, f"Predicting {total} tile(s) on {device}", {"device": str(device)})
    probabilities: np.ndarray | None = None
    done = 0
    for index, plane in enumerate(planes):
        check_cancel(cancel)
        network_input = normalize_plane(plane, bundle.normalize, bundle.config.in_channels)
        plane_gen = _iter_scaled_plane_probabilities(network, network_input, plans, inference, device, cancel)
        while True:
            try:
                done += next(plane_gen)
            except StopIteration as stop:
                plane_probabilities = stop.value
                break
            yield Progress("predict", done, total, _message(index, len(planes), done, total), {"plane": index})
        if probabilities is None:
            probabilities = np.empty((len(planes), *plane_probabilities.shape), dtype=np.float32)
        probabilities[index] = plane_probabilities
    assert probabilities is not None  # validate_image guarantees at least one plane
    labels_axes = "YX" if plane_axis is None else f"{plane_axis}YX"
    if plane_axis is None:
        probabilities = probabilities[0]
    labels = labels_from_probabilities(probabilities, labels_axes, postprocess, cancel)
    return Prediction(labels, probabilities, labels_axes, image_axes)


def _message(index: int, planes: int, done: int, total: int) -> str:
    prefix = f"plane {index + 1}/{planes}, " if planes > 1 else ""
    return f"Predicting: {prefix}tile {done}/{total}"


# --------------------------------------------------------------------------- post-processing


LABEL_AXES = ("YX", "ZYX", "TYX")
"""Axes of :attr:`Prediction.labels` (and of :func:`labels_from_probabilities`' result)."""


def labels_from_probabilities(
    probabilities: np.ndarray,
    axes: str,
    postprocess: PostprocessConfig,
    cancel: Callable[[], bool] | None = None,
    volumetric: bool = False,
) -> np.ndarray:
    """Instance labels from class probabilities, exactly as :func:`iter_predict` makes them.

    Lets a caller that kept ``Prediction.probabilities`` try other
    post-processing settings without running the network again.

    Parameters
    ----------
    probabilities : numpy.ndarray
        float32 (background, interior, boundary) probabilities: ``(3, Y, X)``
        for ``axes="YX"``, ``(P, 3, Y, X)`` for ``"ZYX"`` / ``"TYX"``.
    axes : str
        Axes of the labels (``Prediction.axes``): ``"YX"``; ``"ZYX"``, whose
        slices are linked into 3D objects (IoU >= :data:`LINK_MIN_IOU`); or
        ``"TYX"``, whose frames are only given distinct ids.
    postprocess : PostprocessConfig
        Thresholds, minimum sizes, hole filling.
    cancel : callable, optional
        Checked between planes; raises :class:`~napari_unet.core.errors.Cancelled`.
    volumetric : bool
        ``Prediction.volumetric``: the ``(Z, 3, Y, X)`` probabilities of a 3D
        model, post-processed as one volume.

    Returns
    -------
    numpy.ndarray
        uint32 labels, ``(Y, X)`` or ``(P, Y, X)``.

    Raises
    ------
    UserInputError
        If ``axes`` is not one of :data:`LABEL_AXES` or does not fit the shape of ``probabilities``.

    """
    if axes not in LABEL_AXES or probabilities.ndim != len(axes) + 1:
        raise UserInputError(
            f"Probabilities of shape {probabilities.shape} do not fit labels axes {axes!r}; "
            "pass (3, Y, X) with 'YX', or (P, 3, Y, X) with 'ZYX' or 'TYX' (as in Prediction)."
        )
    if axes == "YX":
        return probabilities_to_labels(probabilities, postprocess).astype(np.uint32)
    if volumetric:
        return probabilities_to_labels(probabilities.transpose(1, 0, 2, 3), postprocess).astype(np.uint32)
    labels = np.empty((probabilities.shape[0], *probabilities.shape[2:]), dtype=np.int32)
    for index, plane_probabilities in enumerate(probabilities):
        check_cancel(cancel)
        labels[index] = probabilities_to_labels(plane_probabilities, postprocess)
    stack = link_slices(labels, min_iou=LINK_MIN_IOU) if axes == "ZYX" else relabel_stack_unique(labels)
    return stack.astype(np.uint32, copy=False)


def foreground_probability(probabilities: np.ndarray) -> np.ndarray:
    """Probability that a pixel belongs to a nucleus: P(interior) + P(boundary) = 1 - P(background).

    Parameters
    ----------
    probabilities : numpy.ndarray
        float32 ``(3, Y, X)`` or ``(P, 3, Y, X)`` class probabilities.

    Returns
    -------
    numpy.ndarray
        float32 ``(Y, X)`` or ``(P, Y, X)``, shaped like the labels.

    """
    return 1.0 - probabilities[..., 0, :, :]


def predict(
    image: Any,
    bundle: BundleLike,
    axes: str | None = None,
    inference: InferenceConfig | None = None,
    postprocess: PostprocessConfig | None = None,
    cancel: Callable[[], bool] | None = None,
    z_spacing: float | None = None,
) -> Prediction:
    """Segment an image (see :func:`iter_predict`, whose progress this discards)."""
    return run_to_end(iter_predict(image, bundle, axes, inference, postprocess, cancel, z_spacing))

"""What 2D and 3D prediction share: the bundle they need, devices, the inference copy of a network, results.

A leaf of :mod:`napari_unet.core.predict`: :mod:`~napari_unet.core.predict.planar`
(2D planes) and :mod:`~napari_unet.core.predict.volumetric` (3D stacks) both
import it, and it imports neither.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from napari_unet.core.config import InferenceConfig, ModelConfig, NormalizeConfig, PostprocessConfig
from napari_unet.core.errors import UserInputError
from napari_unet.core.models.network import fold_batch_norm


class BundleLike(Protocol):
    """What inference needs of :class:`napari_unet.core.models.bundle.ModelBundle`."""

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
    """Mixed precision when ``amp`` and :func:`mixed_precision_on` the device: fp16 on CUDA, bf16 on a CPU; else none.

    The softmax always runs in float32 (:func:`output_probabilities`).
    """
    if not (amp and mixed_precision_on(device)):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


def mixed_precision_on(device: torch.device) -> bool:
    """Whether ``device`` runs the network in mixed precision when asked (``amp``), for inference and training.

    CUDA (float16); a CPU that computes bfloat16 natively (:func:`cpu_has_native_bf16`), where fine-tuning the
    bundled model makes about 1.5x the steps per second (``benchmarks/results/train_precision.json``); not MPS,
    nor CPUs that would emulate bfloat16.
    """
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())


def channels_last(batch: torch.Tensor) -> torch.Tensor:
    """``batch (N, C, Y, X)`` stored channels-last (same values), the layout convolutions run fastest in; 3D as is."""
    return batch.contiguous(memory_format=torch.channels_last) if batch.ndim == 4 else batch


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this processor convolves in bfloat16 natively (AVX512-BF16 or AMX), where it is about 2x faster.

    Elsewhere bfloat16 is emulated and slower than float32, so it is not used.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


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


_INFERENCE_COPIES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]] = weakref.WeakKeyDictionary()
"""Per network: the fingerprint of its weights and device, and its folded, channels-last inference copy."""

"""Train a 3D model on annotated Z-stacks, fully or sparsely annotated.

What :func:`napari_unet.core.train.fine_tune.iter_train` is for images, this is for
volumes: random 3D patches (mostly centred on nuclei), flips along Z, Y and X,
quarter turns in the YX plane and random contrast, gamma and noise; the same
masked cross-entropy + Dice loss on the background / interior / boundary
classes (:mod:`napari_unet.core.train.losses`); AdamW with warm-up and a cosine
schedule; and, on validation stacks, the 3D AP@0.5 of the full segmentation
every ``val_every`` steps, keeping the best weights (the starting ones until a
later step scores strictly higher). Without validation stacks, a fine-tune of
a trained model returns the last weights averaged with the starting ones, as
in 2D (:func:`napari_unet.core.train.outcome.average_with_parent`).

Sparse annotation
-----------------
``annotated`` marks the voxels the user reviewed, per stack: a ``(Z, Y, X)``
bool mask, or a list of Z indices of the planes they labelled.  Other voxels
weigh 0 in the loss.  The class of a voxel depends on its neighbours above
and below (an object's top and bottom planes are its boundary in 3D); where
those planes were not reviewed that is unknown, so such voxels take their
class from their own plane alone (the 2D inner rim).
"""

from __future__ import annotations

import copy
import datetime
import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_unet.core.config import InferenceConfig, TrainingConfig
from napari_unet.core.data.normalize import normalize_volume
from napari_unet.core.errors import UserInputError
from napari_unet.core.evaluate.metrics import evaluate_image, summary_row
from napari_unet.core.models.bundle import ModelBundle
from napari_unet.core.predict.runtime import autocast_context, mixed_precision_on, resolve_device
from napari_unet.core.predict.volumetric import iter_predict_volume, model_z_spacing, resample, z_factor
from napari_unet.core.progress import Progress, check_cancel, run_to_end
from napari_unet.core.train.augment import random_intensity
from napari_unet.core.train.losses import class_weights_from_targets, segmentation_loss
from napari_unet.core.train.outcome import (
    UNVALIDATED_OUTCOME,
    TrainResult,
    average_with_parent,
    child_metadata,
    child_postprocess,
    is_trained,
)
from napari_unet.core.train.pixel_classes import check_labels, labels_to_classes

PATCH_ZYX = (16, 64, 64)
"""Default 3D training patch (planes, rows, columns); rounded to the model's size multiples."""

VOLUME_BATCH_SIZE = 2
"""3D patches per step when the caller does not choose (``TrainingConfig.batch_size`` is meant for 2D tiles)."""

FOREGROUND_CENTRE_FRACTION = 0.67
"""Share of patches centred on an annotated nucleus voxel (the rest anywhere annotated)."""

Annotated = np.ndarray | Sequence[int] | None


@dataclass
class _Stack:
    """One annotated stack, padded by half a patch on every side for cropping."""

    image: np.ndarray  # (C, Z, Y, X) float32
    target: np.ndarray  # (Z, Y, X) int64
    weight: np.ndarray  # (Z, Y, X) float32, 0 = not reviewed (and in the padding)
    shape: tuple[int, int, int]  # the stack's (Z, Y, X) before padding
    offset: np.ndarray  # (3,) padding before each axis
    foreground: np.ndarray  # (K,) flat indices (in ``shape``) of reviewed nucleus voxels
    counted: np.ndarray | None  # (K,) flat indices of reviewed voxels; None = every voxel

    def random_centre(self, rng: np.random.Generator) -> np.ndarray:
        """Draw a patch centre ``(3,)`` in padded coordinates: on a nucleus 2/3 of the time, else anywhere reviewed."""
        if self.foreground.size and rng.random() < FOREGROUND_CENTRE_FRACTION:
            flat = self.foreground[int(rng.integers(self.foreground.size))]
        elif self.counted is None:
            flat = int(rng.integers(math.prod(self.shape)))
        else:
            flat = self.counted[int(rng.integers(self.counted.size))]
        return np.array(np.unravel_index(int(flat), self.shape)) + self.offset


def annotated_mask(annotated: Annotated, shape_zyx: tuple[int, int, int]) -> np.ndarray:
    """``(Z, Y, X)`` bool: which voxels were reviewed (all when ``annotated`` is None).

    Parameters
    ----------
    annotated : array (Z, Y, X) of bool, sequence of int, or None
        A voxel mask, or the Z indices of the reviewed planes.
    shape_zyx : tuple of int
        The stack's shape.

    Raises
    ------
    UserInputError
        For a mask of another shape, plane indices outside the stack, or nothing reviewed.

    """
    if annotated is None:
        return np.ones(shape_zyx, dtype=bool)
    array = np.asarray(annotated)
    if array.ndim == 3:
        if array.shape != tuple(shape_zyx):
            raise UserInputError(f"the annotated mask has shape {array.shape}; the stack has {tuple(shape_zyx)}")
        mask = array.astype(bool)
    elif array.ndim > 1:
        raise UserInputError(
            f"annotated must be a (Z, Y, X) mask or a list of Z planes, got an array of shape {array.shape}"
        )
    else:
        planes = array.astype(np.int64).ravel()
        if planes.size and (planes.min() < 0 or planes.max() >= shape_zyx[0]):
            raise UserInputError(f"annotated planes must be Z indices 0..{shape_zyx[0] - 1}, got {sorted(set(planes))}")
        mask = np.zeros(shape_zyx, dtype=bool)
        mask[planes] = True
    if not mask.any():
        raise UserInputError("no voxel is marked as annotated: mark the planes or regions you labelled")
    return mask


def sparse_classes(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """3-class targets ``(Z, Y, X)`` int64 of a stack whose reviewed voxels are ``mask``.

    Voxels whose planes above and below were reviewed too get their 3D class;
    the others get the class of their own plane (see the module docstring).
    """
    classes = labels_to_classes(labels)
    if mask.all():
        return classes
    reviewed_around = mask.copy()
    reviewed_around[1:] &= mask[:-1]
    reviewed_around[:-1] &= mask[1:]
    for z in np.flatnonzero((mask & ~reviewed_around).any(axis=(1, 2))):
        plane_classes = labels_to_classes(labels[z]) if labels[z].any() else np.zeros(labels.shape[1:], np.int64)
        use_plane = ~reviewed_around[z]
        classes[z][use_plane] = plane_classes[use_plane]
    return classes


def _nearest_along_z(array: np.ndarray, depth: int) -> np.ndarray:
    """``array (Z, Y, X)`` with ``depth`` planes, each the nearest original plane (labels, masks)."""
    source = np.minimum(((np.arange(depth) + 0.5) * array.shape[0] / depth).astype(int), array.shape[0] - 1)
    return array[source]


def _patch_shape(requested: tuple[int, int, int], multiples: tuple[int, ...]) -> tuple[int, int, int]:
    return tuple(max(m, n // m * m) for n, m in zip(requested, multiples, strict=True))  # type: ignore[return-value]


def _prepare_stack(
    bundle: ModelBundle,
    volume: np.ndarray,
    labels: np.ndarray,
    annotated: Annotated,
    patch: tuple[int, int, int],
    z_spacing: float | None = None,
) -> _Stack:
    labels = check_labels(labels, "labels", ndim=3)
    if volume.shape[:3] != labels.shape:
        raise UserInputError(f"the stack has shape {volume.shape[:3]} but its labels have shape {labels.shape}")
    mask = annotated_mask(annotated, labels.shape)
    image = normalize_volume(volume, bundle.normalize, bundle.config.in_channels)
    factor = z_factor(model_z_spacing(bundle.metadata), z_spacing)
    if factor != 1.0:  # learn at the model's Z step, as inference resamples to it
        image = resample(image, (factor, 1.0, 1.0))
        labels, mask = (_nearest_along_z(array, image.shape[1]) for array in (labels, mask))
    target = sparse_classes(labels, mask)
    half = [(p // 2, p - p // 2) for p in patch]
    image = np.pad(image, [(0, 0), *half], mode="reflect" if min(labels.shape) > 1 else "edge")
    target = np.pad(target, half)
    weight = np.pad(mask.astype(np.float32), half)
    offset = np.array([h[0] for h in half])
    counted = None if mask.all() else np.flatnonzero(mask)
    foreground = np.flatnonzero(mask & (labels > 0))
    return _Stack(image, target, weight, labels.shape, offset, foreground, counted)


def _crop(stack: _Stack, centre: np.ndarray, patch: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
    start = [int(c) - p // 2 for c, p in zip(centre, patch, strict=True)]
    window = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
    return stack.image[(slice(None), *window)], stack.target[window], stack.weight[window]


def _augment(
    image: np.ndarray, target: np.ndarray, weight: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flips along Z, Y, X, a quarter turn in YX (square patches only) and random intensity."""
    for axis in (0, 1, 2):
        if rng.random() < 0.5:
            image, target, weight = np.flip(image, axis + 1), np.flip(target, axis), np.flip(weight, axis)
    if target.shape[1] == target.shape[2]:
        turns = int(rng.integers(4))
        image, target, weight = (np.rot90(a, turns, axes=(-2, -1)) for a in (image, target, weight))
    return random_intensity(image, rng), np.ascontiguousarray(target), np.ascontiguousarray(weight)


def _batch(
    stacks: list[_Stack], patch: tuple[int, int, int], size: int, augment: bool, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images, targets, weights = [], [], []
    for _ in range(size):
        stack = stacks[int(rng.integers(len(stacks)))]
        image, target, weight = _crop(stack, stack.random_centre(rng), patch)
        if augment:
            image, target, weight = _augment(image, target, weight, rng)
        images.append(np.ascontiguousarray(image, dtype=np.float32))
        targets.append(target)
        weights.append(weight)
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(targets)), torch.from_numpy(np.stack(weights))


def _learning_rate(cfg: TrainingConfig, step: int, planned: int | None) -> float:
    warmup = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    if cfg.schedule != "cosine" or not planned:
        return cfg.learning_rate * warmup
    return cfg.learning_rate * warmup * 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / planned)))


def validation_ap(
    bundle: ModelBundle, volumes: Sequence[np.ndarray], labels: Sequence[np.ndarray], device: str = "cpu"
) -> float:
    """Mean 3D AP@0.5 of ``bundle`` on ``volumes`` (full segmentation, post-processing included)."""
    inference = InferenceConfig(device=device)
    scores = []
    for volume, truth in zip(volumes, labels, strict=True):
        prediction = run_to_end(iter_predict_volume(volume, "ZYX", bundle, inference, bundle.postprocess))
        scores.append(summary_row(evaluate_image(truth, prediction.labels, (0.5,)))["AP@0.5"])
    return float(np.mean(scores))


def iter_train_volume(
    bundle: ModelBundle,
    volumes: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    cfg: TrainingConfig | None = None,
    *,
    annotated: Sequence[Annotated] | None = None,
    val_volumes: Sequence[np.ndarray] | None = None,
    val_labels: Sequence[np.ndarray] | None = None,
    patch_zyx: tuple[int, int, int] = PATCH_ZYX,
    z_spacings: Sequence[float | None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Generator[Progress, None, TrainResult]:
    """Train a copy of a 3D model's network on annotated stacks, yielding progress after every step.

    Parameters
    ----------
    bundle : ModelBundle
        Starting 3D model (``config.spatial_dims == 3``); never modified.
    volumes : list of arrays (Z, Y, X)
        Stacks, any numeric dtype.
    labels : list of arrays (Z, Y, X) of int
        3D instance labels of each stack (0 = background).
    cfg : TrainingConfig, optional
        ``learning_rate``, ``weight_decay``, ``warmup_steps``, ``schedule``,
        ``batch_size``, ``max_steps``, ``max_seconds``, ``val_every``, ``loss``,
        ``augment``, ``device``, ``seed``, ``amp`` are used. With ``amp`` the network runs in bfloat16 on a
        CPU that computes it natively (weights, optimiser and loss stay float32; 1.57x faster, the same scores:
        ``benchmarks/results/finetune_3d_precision.json``); CUDA trains 3D in float32, not yet measured otherwise.
    annotated : list, optional
        Per stack, the reviewed voxels (see the module docstring); None = all.
    val_volumes, val_labels : lists, optional
        Fully annotated validation stacks; without them the last weights are
        kept, averaged with the starting weights when the starting model is
        trained (:func:`~napari_unet.core.train.outcome.average_with_parent`).
    patch_zyx : tuple of int
        Training patch, rounded down to the network's size multiples.
    z_spacings : list of float or None, optional
        Per stack, its Z step in pixel sizes; stacks are resampled along Z
        to the model's step (``metadata["z_spacing"]``) before training, as
        inference does. None (or None entries) = already at the model's step.
    cancel : callable, optional
        Checked between steps; raises :class:`~napari_unet.core.errors.Cancelled`.

    Yields
    ------
    Progress
        ``stage="train"``, ``done`` = steps, ``metrics`` with ``loss`` and ``val_ap50``.

    Returns
    -------
    TrainResult
        The new bundle (with ``metadata["lineage"]``) and the history.

    """
    cfg = cfg or TrainingConfig()
    started = time.perf_counter()
    if cfg.max_steps is None and cfg.max_seconds is None:
        raise UserInputError("3D training needs a budget in steps or seconds (epochs are not counted for stacks)")
    if bundle.config.spatial_dims != 3:
        raise UserInputError("this model is 2D: train it on images, or start from a 3D model such as 'nuclei-3d'")
    if len(volumes) != len(labels) or not volumes:
        raise UserInputError(
            f"give one label stack per stack: got {len(volumes)} stack(s), {len(labels)} label stack(s)"
        )
    patch = _patch_shape(patch_zyx, bundle.config.size_multiples)
    marks = list(annotated) if annotated is not None else [None] * len(volumes)
    steps_z = list(z_spacings) if z_spacings is not None else [None] * len(volumes)
    stacks = [
        _prepare_stack(bundle, np.asarray(v), np.asarray(lab), m, patch, z)
        for v, lab, m, z in zip(volumes, labels, marks, steps_z, strict=True)
    ]
    class_weights = torch.from_numpy(class_weights_from_targets([s.target for s in stacks], [s.weight for s in stacks]))
    device = resolve_device(cfg.device)
    if device.type == "cpu" and cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    network = copy.deepcopy(bundle.network).to(device=device, dtype=torch.float32).train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    use_amp = cfg.amp and device.type == "cpu" and mixed_precision_on(device)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    validating = bool(val_volumes)
    start_state = copy.deepcopy(network.state_dict())
    best = _Best(start_state, None, 0)
    if validating:
        best.score = validation_ap(_snapshot(bundle, network), val_volumes, val_labels, device.type)
        network.train()
    history: list[dict[str, Any]] = [{"step": 0, "val_ap50": best.score}]
    outcome = "" if validating else f"; no validation stacks: {UNVALIDATED_OUTCOME[is_trained(bundle)]}"
    start_message = f"Training in 3D on {len(stacks)} stack(s), patches {patch}{outcome}"
    yield Progress("train", 0, cfg.max_steps or 0, start_message)
    step, reason = 0, "steps"
    while True:
        check_cancel(cancel)
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
        if cfg.max_seconds is not None and time.perf_counter() - started >= cfg.max_seconds:
            reason = "time"
            break
        loss = _step(network, optimizer, stacks, patch, cfg, class_weights, device, rng, step, use_amp)
        step += 1
        record: dict[str, Any] = {"step": step, "loss": loss, "elapsed_s": time.perf_counter() - started}
        if validating and step % cfg.val_every == 0:
            record["val_ap50"] = validation_ap(_snapshot(bundle, network), val_volumes, val_labels, device.type)
            record["validated"] = True
            network.train()
            best.offer(record["val_ap50"], network, step)
        history.append(record)
        yield Progress("train", step, cfg.max_steps or 0, f"step {step}: loss {loss:.3f}", record)
    if not validating:
        best = _Best(average_with_parent(bundle, start_state, copy.deepcopy(network.state_dict())), None, step)
    network.load_state_dict(best.state)
    network.eval().to("cpu")
    seconds = time.perf_counter() - started
    lineage = _volume_lineage(bundle, cfg, len(stacks), history, best, step, reason, seconds, device, patch)
    new_bundle = ModelBundle(
        network=network,
        config=bundle.config,
        normalize=bundle.normalize,
        postprocess=child_postprocess(bundle.postprocess),
        metadata={**child_metadata(bundle, lineage), "z_spacing": model_z_spacing(bundle.metadata)},
    )
    return TrainResult(
        bundle=new_bundle,
        history=history,
        best_score=best.score,
        stopped_reason=reason,
        best_step=best.step,
        steps=step,
        seconds=seconds,
        metrics_before={"val_ap50": history[0]["val_ap50"]} if validating else None,
        metrics_after={"val_ap50": best.score} if validating else None,
        lineage=lineage,
    )


@dataclass
class _Best:
    """The best weights seen so far and their validation score."""

    state: dict[str, torch.Tensor]
    score: float | None
    step: int

    def offer(self, score: float, network: nn.Module, step: int) -> None:
        if self.score is None or score > self.score:
            self.state, self.score, self.step = copy.deepcopy(network.state_dict()), score, step


def _snapshot(bundle: ModelBundle, network: nn.Module) -> ModelBundle:
    """Return the model as it stands (evaluation mode) for validation."""
    return replace(bundle, network=network.eval())


def _step(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    stacks: list[_Stack],
    patch: tuple[int, int, int],
    cfg: TrainingConfig,
    class_weights: torch.Tensor,
    device: torch.device,
    rng: np.random.Generator,
    step: int,
    use_amp: bool = False,
) -> float:
    """One optimiser step on a random batch; the network in mixed precision when ``use_amp``, the loss in float32."""
    for group in optimizer.param_groups:
        group["lr"] = _learning_rate(cfg, step, cfg.max_steps)
    image, target, weight = (t.to(device) for t in _batch(stacks, patch, cfg.batch_size, cfg.augment, rng))
    with autocast_context(device, use_amp):
        logits = network(image)
    loss = segmentation_loss(logits.float(), target, weight, cfg.loss, class_weights.to(device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _volume_lineage(
    bundle: ModelBundle,
    cfg: TrainingConfig,
    n_stacks: int,
    history: list[dict[str, Any]],
    best: _Best,
    steps: int,
    reason: str,
    seconds: float,
    device: torch.device,
    patch: tuple[int, int, int],
) -> dict[str, Any]:
    return {
        "parent": {"name": bundle.name, "version": bundle.version, "sha256": bundle.sha256},
        "data": [{"role": "train", "kind": "z-stack"}] * n_stacks,
        "annotation_mode": "3d",
        "settings": {**cfg.to_dict(), "patch_zyx": list(patch)},
        "metrics_before": {"val_ap50": history[0]["val_ap50"]},
        "metrics_after": {"val_ap50": best.score},
        "metrics": {"val_ap50": best.score},
        "seconds": round(seconds, 3),
        "steps": steps,
        "best_step": best.step,
        "stopped_reason": reason,
        "device": str(device),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }

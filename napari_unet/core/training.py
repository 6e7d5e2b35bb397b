"""Fine-tuning a UNet bundle on annotated images, as a cancellable progress generator.

:func:`iter_train` trains a *copy* of a bundle's network on user annotations
and returns a new bundle holding the best weights (by validation score);
:func:`fine_tune_and_save` does the same and stores the result as a new model
version, only when the run completes.

Pipeline
--------
1. Inputs are checked (matching shapes and list lengths, finite intensities,
   at least one labelled nucleus) and normalised with the bundle's
   :class:`~napari_unet.core.config.NormalizeConfig`.
2. Labels become 3-class targets and per-pixel loss weights
   (:mod:`napari_unet.core.targets`) following ``cfg.annotation_mode``.
3. A validation set is the given ``val_images``/``val_labels``, else held-out
   images (``val_fraction`` of them, at least one) when there are two or
   more, else a strip on the right of the annotated area of a single image
   (when it holds at least :data:`MIN_VAL_OBJECTS` nuclei).  Otherwise a
   progress message says why no validation is possible and training goes on.
4. Patches are sampled around corrected, foreground and other annotated
   pixels (in that order of preference), augmented
   (:mod:`napari_unet.core.augment`) and fed to AdamW with a linear warm-up
   followed by a cosine decay (or plateau halving, or a constant rate).  The
   schedule runs on the fraction of the budget used, so a time-only budget
   still decays to its end.
5. Every ``val_every`` steps and at the end, the held-out data is predicted
   (averaged over flips for a model that runs with them,
   :func:`~napari_unet.core.inference.model_uses_flips`),
   post-processed and scored (AP@0.5, pooled over the validation crops) and
   the validation loss is computed; the best weights are kept (the starting
   weights are a candidate too, so fine-tuning never returns a model that
   validates worse than its parent).  Without validation the last weights win,
   averaged with the starting weights when those were trained
   (:data:`UNVALIDATED_PARENT_SHARE`).

BatchNorm layers stay in training mode while training (batch statistics of
``batch_size`` patches of ``patch_size`` pixels are plenty) and use their
running statistics when validating; a user who fine-tunes with batches of
one or two patches should prefer a model with ``norm="group"`` or
``"instance"``.

Side effects: ``torch.manual_seed(cfg.seed)`` is called, and on the CPU the
number of torch threads is set to ``cfg.num_threads`` (0 = all cores) and
restored afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import hashlib
import math
import os
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_unet.core.augment import augment_sample
from napari_unet.core.config import InferenceConfig, PostprocessConfig, TrainingConfig
from napari_unet.core.errors import UserInputError
from napari_unet.core.inference import model_uses_flips, resolve_device, tile_logits_and_probabilities
from napari_unet.core.losses import class_weights_from_targets, segmentation_loss
from napari_unet.core.metrics import evaluate_dataset, summary_row
from napari_unet.core.normalize import normalize_plane, validate_image
from napari_unet.core.postprocess import probabilities_to_labels
from napari_unet.core.progress import Progress, check_cancel
from napari_unet.core.store import ModelBundle, save_version
from napari_unet.core.targets import check_labels, labels_to_classes, loss_weights
from napari_unet.core.tiling import pad_to_multiple

MIN_IMAGE_SIZE = 16
"""Images with a side shorter than this (pixels) are refused."""

MIN_VAL_OBJECTS = 3
"""A single image is split for validation only when the strip holds at least this many nuclei."""

MAX_VAL_SIDE = 512
"""Validation windows are cropped to at most this many pixels per side (bounds validation time)."""

VAL_CONTEXT = 32
"""Pixels of image context around a validation strip given to the network."""

PLATEAU_PATIENCE, PLATEAU_FACTOR = 2, 0.5
"""``plateau`` schedule: halve the rate after this many validations without improvement."""

VAL_LOSS_MIN_DELTA = 1e-4
"""At equal validation AP, a validation loss lower by at least this counts as an improvement (not over a trained
parent: see :meth:`_Loop._keep_if_best`)."""

UNVALIDATED_PARENT_SHARE = 0.5
"""Without validation, a fine-tune of a trained model returns this mix of the parent's weights and the last ones."""

UNVALIDATED_OUTCOME = {
    True: "the result will be the last weights averaged with the starting model's",
    False: "keeping the last weights",
}
"""What a run without validation returns, by whether the starting model is trained (end of its message)."""

MIN_LR_FRACTION = 0.05
"""The cosine schedule decays to this fraction of the peak rate."""

WARMUP_MAX_FRACTION = 0.1
"""Warm-up also ends once this fraction of the budget is used (short time budgets)."""

MAX_CENTRES_PER_POOL = 200_000
"""Candidate patch centres kept per image and pool (a random subset beyond this)."""

CancelFlag = Callable[[], bool] | None
Roi = Any


@dataclass
class TrainResult:
    """Outcome of :func:`iter_train`.

    Attributes
    ----------
    bundle : ModelBundle
        New bundle with the best weights and ``metadata["lineage"]``.
    history : list of dict
        One record per step (``step``, ``loss``, ``lr``, ``elapsed_s``) plus
        ``val_ap50``, ``val_ap75``, ``val_f1``, ``val_loss`` on validation
        steps (step 0 is the starting model).
    best_score : float or None
        Best validation AP@0.5 (None without validation).
    stopped_reason : str
        ``"steps"``, ``"epochs"``, ``"time"`` or ``"early_stopping"``.
    best_step : int
        Step whose weights were kept (0 = the starting weights).
    steps : int
        Optimisation steps done.
    seconds : float
        Wall-clock duration of the run.
    metrics_before, metrics_after : dict or None
        Validation scores of the starting and the returned weights.
    lineage : dict
        What :func:`fine_tune_and_save` passes to ``store.save_version``.
    messages : list of str
        Notes shown to the user during the run (padding, validation, ...).
    saved : Any
        The ``ModelInfo`` of the saved version (only from :func:`fine_tune_and_save`).

    """

    bundle: ModelBundle
    history: list[dict[str, Any]]
    best_score: float | None
    stopped_reason: str
    best_step: int = 0
    steps: int = 0
    seconds: float = 0.0
    metrics_before: dict[str, float] | None = None
    metrics_after: dict[str, float] | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    saved: Any = None


@dataclass
class _TrainImage:
    """One annotated image prepared for patch sampling (padded by ``pad`` on every side)."""

    image: np.ndarray  # (C, Y + 2 pad, X + 2 pad) float32, reflect-padded
    target: np.ndarray  # (Y + 2 pad, X + 2 pad) int64, 0 in the padding
    weight: np.ndarray  # (Y + 2 pad, X + 2 pad) float32, 0 in the padding
    pools: list[np.ndarray]  # candidate centres (K, 2) in padded coordinates: corrected, foreground, counted

    @property
    def counted_pixels(self) -> int:
        return int(self.pools[2].shape[0])


@dataclass
class _ValWindow:
    """One validation window: network input with context, and the scored region inside it."""

    image: np.ndarray  # (C, Yw, Xw) float32
    region: tuple[slice, slice]  # scored part of the window
    labels: np.ndarray  # (Yr, Xr) ground truth of the region
    target: np.ndarray  # (Yr, Xr) classes
    weight: np.ndarray  # (Yr, Xr) float32 (0 = not annotated)


@dataclass
class _Prepared:
    normalized: list[np.ndarray]
    classes: list[np.ndarray]
    weights: list[np.ndarray]
    checksums: list[dict[str, Any]]


# --------------------------------------------------------------------------- public API


def iter_train(
    bundle: ModelBundle,
    images: Sequence[np.ndarray] | np.ndarray,
    labels: Sequence[np.ndarray] | np.ndarray,
    cfg: TrainingConfig | None = None,
    *,
    rois: Sequence[Sequence[Roi] | None] | None = None,
    previous: Sequence[np.ndarray | None] | None = None,
    val_images: Sequence[np.ndarray] | None = None,
    val_labels: Sequence[np.ndarray] | None = None,
    cancel: CancelFlag = None,
) -> Generator[Progress, None, TrainResult]:
    """Fine-tune a copy of ``bundle``'s network, yielding progress after every step.

    Parameters
    ----------
    bundle : ModelBundle
        Starting model; its network is deep-copied and never modified.
    images : list of arrays (Y, X) or (Y, X, C)
        Annotated images, any numeric dtype (a single array is one image).
    labels : list of arrays (Y, X) of int
        Instance labels of each image (0 = background).
    cfg : TrainingConfig, optional
        Run settings (``annotation_mode`` decides which pixels count).
    rois : list, optional
        Per image, a list of rectangles ``(y0, x0, y1, x1)`` or ``(N, 2)``
        polygons; needed for ``annotation_mode="rois"``.
    previous : list of arrays (Y, X), optional
        Per image, the prediction the user corrected; needed for ``changed``
        mode, and used in every mode to up-weight corrected pixels.
    val_images, val_labels : lists, optional
        Fully annotated validation images; otherwise part of the data is held out.
    cancel : callable, optional
        Checked between steps; when it returns True, :class:`Cancelled` is raised.

    Yields
    ------
    Progress
        ``stage="train"``, ``done`` = steps, ``total`` = planned steps (0 when
        only a time budget is set) and ``metrics`` with ``loss``, ``lr``,
        ``val_ap50``, ``val_loss``, ``eta_s``, ``steps_per_s``, ``elapsed_s``.

    Returns
    -------
    TrainResult

    Raises
    ------
    UserInputError
        For unusable inputs (see the module docstring).
    Cancelled
        When ``cancel()`` returns True; nothing is returned or changed.

    """
    cfg = cfg or TrainingConfig()
    started = time.perf_counter()
    images, labels = _as_lists(images, labels)
    rois_list = _per_image(rois, len(images), "rois")
    previous_list = _per_image(previous, len(images), "previous")
    model_cfg = bundle.config
    if model_cfg.head != "bg_interior_boundary":
        raise UserInputError(
            f"fine-tuning trains the 3-class head (background / interior / boundary); this model's head is "
            f"{model_cfg.head!r}. Start from the default model or another 3-class model."
        )
    prepared = _prepare(bundle, images, labels, cfg, rois_list, previous_list)
    messages: list[str] = []
    patch, notes = _patch_size(cfg.patch_size, model_cfg.size_multiple, [a.shape[:2] for a in images])
    messages += notes
    _check_batch_norm(model_cfg.norm, cfg.batch_size, patch // model_cfg.size_multiple)
    train_ids, val_windows, val_note = _split_validation(bundle, prepared, labels, cfg, val_images, val_labels)
    if not val_windows:
        val_note += f"; {UNVALIDATED_OUTCOME[is_trained(bundle)]}"
    messages.append(val_note)
    for message in messages:
        yield Progress("train", 0, 0, message)
    train_set = [_train_image(prepared, i, patch) for i in train_ids]
    class_weights = class_weights_from_targets([t.target for t in train_set], [t.weight for t in train_set])

    device = resolve_device(cfg.device)
    network = copy.deepcopy(bundle.network).to(device=device, dtype=torch.float32)
    threads = _set_threads(device, cfg.num_threads)
    try:
        loop = _Loop(network, device, cfg, train_set, val_windows, class_weights, patch, bundle, started)
        yield from loop.run(cancel)
    finally:
        if threads is not None:
            torch.set_num_threads(threads)
    network.load_state_dict(loop.best_state)
    network.eval().to("cpu")
    seconds = time.perf_counter() - started
    lineage = _lineage(bundle, cfg, prepared, train_ids, loop, seconds, device, val_note)
    new_bundle = ModelBundle(
        network=network,
        config=bundle.config,
        normalize=bundle.normalize,
        postprocess=child_postprocess(bundle.postprocess),
        metadata=child_metadata(bundle, lineage),
    )
    return TrainResult(
        bundle=new_bundle,
        history=loop.history,
        best_score=loop.best_score,
        stopped_reason=loop.stopped_reason,
        best_step=loop.best_step,
        steps=loop.step,
        seconds=seconds,
        metrics_before=loop.metrics_before,
        metrics_after=loop.best_metrics,
        lineage=lineage,
        messages=messages,
    )


def fine_tune_and_save(
    bundle: ModelBundle,
    images: Sequence[np.ndarray] | np.ndarray,
    labels: Sequence[np.ndarray] | np.ndarray,
    cfg: TrainingConfig | None = None,
    name: str = "fine-tuned",
    **kwargs: Any,
) -> Generator[Progress, None, TrainResult]:
    """Run :func:`iter_train` and save the result as a new version of model ``name``.

    Nothing is saved when the run is cancelled or fails, so the previous
    versions stay untouched.  Keyword arguments go to :func:`iter_train`.

    Returns
    -------
    TrainResult
        With ``saved`` set to the ``ModelInfo`` returned by ``store.save_version``.

    """
    result = yield from iter_train(bundle, images, labels, cfg, **kwargs)
    result.saved = save_version(result.bundle, name, result.lineage)
    yield Progress("train", result.steps, result.steps, f"saved as model {name!r}", {})
    return result


# --------------------------------------------------------------------------- input checks and preparation


def _as_lists(images: Any, labels: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if isinstance(labels, np.ndarray) and labels.ndim == 2:
        labels = [labels]
        if isinstance(images, np.ndarray):
            images = [images]
    images, labels = list(images), list(labels)
    if len(images) != len(labels):
        raise UserInputError(
            f"{len(images)} images but {len(labels)} label images were given; pass one label image per image"
        )
    if not images:
        raise UserInputError("no annotated images were given; annotate at least one image first")
    return images, labels


def _per_image(values: Sequence[Any] | None, count: int, name: str) -> list[Any]:
    if values is None:
        return [None] * count
    values = list(values)
    if len(values) != count:
        raise UserInputError(f"{len(values)} entries in {name} but {count} images; pass one entry (or None) per image")
    return values


def _check_image(image: Any, index: int) -> np.ndarray:
    try:
        image = validate_image(image)
    except UserInputError as exc:
        raise UserInputError(f"image {index}: {exc}") from exc
    if image.ndim == 3 and image.shape[-1] > 4:
        raise UserInputError(
            f"image {index} has shape {image.shape}; training expects (Y, X) or (Y, X, C) images with C <= 4. "
            "Pass one plane (or a channels-last RGB image) per list item"
        )
    if image.ndim > 3:
        raise UserInputError(f"image {index} has shape {image.shape}; pass 2D planes (Y, X) or (Y, X, C)")
    if min(image.shape[:2]) < MIN_IMAGE_SIZE:
        raise UserInputError(
            f"image {index} is only {image.shape[0]} x {image.shape[1]} pixels; "
            f"training needs at least {MIN_IMAGE_SIZE} x {MIN_IMAGE_SIZE}: annotate a larger area"
        )
    return image


def _check_pair(image: Any, label: Any, index: int, role: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Check one (image, labels) item; ``role`` prefixes the messages (``"validation "`` for validation data)."""
    image = _check_image(image, index)
    label = check_labels(label, f"{role}labels {index}")
    if label.shape != image.shape[:2]:
        raise UserInputError(
            f"{role}labels {index} have shape {label.shape} but {role}image {index} is {image.shape[:2]} (Y, X); "
            "the labels must cover the image pixel for pixel"
        )
    return image, label


def _prepare(
    bundle: ModelBundle,
    images: list[np.ndarray],
    labels: list[np.ndarray],
    cfg: TrainingConfig,
    rois: list[Any],
    previous: list[Any],
) -> _Prepared:
    prepared = _Prepared([], [], [], [])
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        image, label = _check_pair(image, label, index)
        try:
            weight = loss_weights(
                label,
                cfg.annotation_mode,
                rois=rois[index],
                previous=previous[index],
                margin=cfg.changed_margin,
                corrected_weight=cfg.corrected_weight,
            )
        except UserInputError as exc:
            raise UserInputError(f"image {index}: {exc}") from exc
        prepared.normalized.append(normalize_plane(image, bundle.normalize, bundle.config.in_channels))
        prepared.classes.append(labels_to_classes(label))
        prepared.weights.append(weight)
        prepared.checksums.append(_checksums(image, label))
    if not any(((c > 0) & (w > 0)).any() for c, w in zip(prepared.classes, prepared.weights, strict=True)):
        raise UserInputError(
            "no annotated nucleus lies in the areas used for training; "
            "label at least one nucleus inside the ROIs / corrected areas"
        )
    return prepared


def _checksums(image: np.ndarray, label: np.ndarray) -> dict[str, Any]:
    return {
        "image_sha256": hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest(),
        "labels_sha256": hashlib.sha256(np.ascontiguousarray(label).tobytes()).hexdigest(),
        "shape": list(image.shape),
        "dtype": str(image.dtype),
    }


def _patch_size(requested: int, multiple: int, shapes: list[tuple[int, int]]) -> tuple[int, list[str]]:
    """Patch edge: the requested size rounded up to the network's multiple, shrunk when all images are smaller."""
    patch = math.ceil(requested / multiple) * multiple
    largest = max(max(shape) for shape in shapes)
    notes = []
    if patch != requested:
        notes.append(f"patch size {requested} is not a multiple of {multiple}: using {patch} px patches")
    if largest < patch:
        patch = math.ceil(largest / multiple) * multiple
        notes.append(f"the images are smaller than the {requested} px patch size: using {patch} px patches")
    small = [shape for shape in shapes if min(shape) < patch]
    if small:
        sizes = ", ".join(f"{y} x {x}" for y, x in small[:3])
        notes.append(f"{len(small)} image(s) ({sizes}) smaller than the {patch} px patches: padded by reflection")
    return patch, notes


def _check_batch_norm(norm: str, batch_size: int, bottleneck: int) -> None:
    """BatchNorm needs more than one value per channel at the bottleneck."""
    if norm == "batch" and batch_size * bottleneck * bottleneck < 2:
        raise UserInputError(
            f"a batch of {batch_size} patch(es) leaves BatchNorm a single value per channel at the network's "
            "deepest level; use batch_size >= 2 or a larger patch_size"
        )


def _train_image(prepared: _Prepared, index: int, patch: int) -> _TrainImage:
    pad = patch // 2
    image = np.pad(prepared.normalized[index], ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    target = np.pad(prepared.classes[index], pad)
    weight = np.pad(prepared.weights[index], pad)
    rng = np.random.default_rng(index)
    pools = [
        _centres(weight > 1.0, rng),
        _centres((weight > 0) & (target > 0), rng),
        _centres(weight > 0, rng),
    ]
    return _TrainImage(image, target, weight, pools)


def _centres(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    centres = np.argwhere(mask)
    if centres.shape[0] > MAX_CENTRES_PER_POOL:
        centres = centres[rng.choice(centres.shape[0], MAX_CENTRES_PER_POOL, replace=False)]
    return centres


# --------------------------------------------------------------------------- validation split


def _split_validation(
    bundle: ModelBundle,
    prepared: _Prepared,
    labels: list[np.ndarray],
    cfg: TrainingConfig,
    val_images: Sequence[np.ndarray] | None,
    val_labels: Sequence[np.ndarray] | None,
) -> tuple[list[int], list[_ValWindow], str]:
    """Return (training image indices, validation windows, a message saying how validation is done)."""
    everything = list(range(len(prepared.normalized)))
    if val_images is not None or val_labels is not None:
        return everything, _given_validation(bundle, val_images, val_labels), "validating on the given images"
    if cfg.val_fraction <= 0:
        return everything, [], "no validation possible: val_fraction is 0"
    if len(everything) >= 2:
        return _hold_out_images(prepared, labels, cfg)
    return _hold_out_strip(prepared, labels, cfg)


def _given_validation(
    bundle: ModelBundle, val_images: Sequence[np.ndarray] | None, val_labels: Sequence[np.ndarray] | None
) -> list[_ValWindow]:
    if val_images is None or val_labels is None:
        raise UserInputError("give both val_images and val_labels (or neither, to hold out part of the data)")
    images, labels = _as_lists(val_images, val_labels)
    windows = []
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        image, label = _check_pair(image, label, index, "validation ")
        normalized = normalize_plane(image, bundle.normalize, bundle.config.in_channels)
        weight = np.ones(label.shape, dtype=np.float32)
        windows.append(_window(normalized, label, labels_to_classes(label), weight, _full_box(label.shape)))
    return windows


def _hold_out_images(
    prepared: _Prepared, labels: list[np.ndarray], cfg: TrainingConfig
) -> tuple[list[int], list[_ValWindow], str]:
    count = len(prepared.normalized)
    n_val = min(count - 1, max(1, round(cfg.val_fraction * count)))
    order = np.random.default_rng(cfg.seed).permutation(count)
    val_ids = sorted(int(i) for i in order[:n_val])
    train_ids = [i for i in range(count) if i not in val_ids]
    if not any(((prepared.classes[i] > 0) & (prepared.weights[i] > 0)).any() for i in train_ids):
        return list(range(count)), [], "no validation possible: the held-out images would leave no labelled nucleus"
    windows = [
        _window(
            prepared.normalized[i], labels[i], prepared.classes[i], prepared.weights[i], _box(prepared.weights[i] > 0)
        )
        for i in val_ids
    ]
    if sum(_count_objects(w) for w in windows) == 0:
        return list(range(count)), [], "no validation possible: the held-out images hold no labelled nucleus"
    return train_ids, windows, f"validating on {n_val} held-out image(s) of {count}"


def _hold_out_strip(
    prepared: _Prepared, labels: list[np.ndarray], cfg: TrainingConfig
) -> tuple[list[int], list[_ValWindow], str]:
    """Hold out the right ``val_fraction`` of the annotated area of a single image."""
    weight = prepared.weights[0]
    rows, cols = _box(weight > 0)
    width = cols.stop - cols.start
    strip_width = max(MIN_IMAGE_SIZE, round(cfg.val_fraction * width))
    percent = round(100 * cfg.val_fraction)
    if width - strip_width < MIN_IMAGE_SIZE:
        return [0], [], f"no validation possible: the annotated area is only {width} px wide"
    strip = (rows, slice(cols.stop - strip_width, cols.stop))
    window = _window(prepared.normalized[0], labels[0], prepared.classes[0], weight, strip)
    objects = _count_objects(window)
    train_weight = weight.copy()
    train_weight[strip] = 0
    if objects < MIN_VAL_OBJECTS or not ((prepared.classes[0] > 0) & (train_weight > 0)).any():
        return (
            [0],
            [],
            f"no validation possible: only {objects} nuclei in the right {percent}% of the annotated area "
            f"(need {MIN_VAL_OBJECTS}); training on everything",
        )
    prepared.weights[0] = train_weight
    return [0], [window], f"validating on the right {percent}% of the annotated area ({objects} nuclei)"


def _full_box(shape: tuple[int, ...]) -> tuple[slice, slice]:
    return slice(0, shape[0]), slice(0, shape[1])


def _box(mask: np.ndarray) -> tuple[slice, slice]:
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _window(
    image: np.ndarray, label: np.ndarray, classes: np.ndarray, weight: np.ndarray, box: tuple[slice, slice]
) -> _ValWindow:
    """Build the validation window around ``box`` (capped at MAX_VAL_SIDE, with VAL_CONTEXT pixels of context)."""
    scored = tuple(_cap(s, MAX_VAL_SIDE) for s in box)
    context = tuple(
        slice(max(0, s.start - VAL_CONTEXT), min(size, s.stop + VAL_CONTEXT))
        for s, size in zip(scored, label.shape, strict=True)
    )
    region = tuple(slice(s.start - c.start, s.stop - c.start) for s, c in zip(scored, context, strict=True))
    return _ValWindow(
        image=np.ascontiguousarray(image[(slice(None), *context)]),
        region=region,  # type: ignore[arg-type]
        labels=_keep_annotated(label[scored], weight[scored] > 0),
        target=classes[scored],
        weight=(weight[scored] > 0).astype(np.float32),
    )


def _cap(span: slice, size: int) -> slice:
    extra = (span.stop - span.start) - size
    if extra <= 0:
        return span
    start = span.start + extra // 2
    return slice(start, start + size)


def _keep_annotated(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Zero the objects of ``labels`` lying mostly (>= half their area) outside ``mask``."""
    if mask.all():
        return labels
    ids = labels.ravel()
    total = np.bincount(ids)
    inside = np.bincount(ids[mask.ravel()], minlength=total.size)
    keep = inside * 2 >= total
    keep[0] = True
    out = labels.copy()
    out[~keep[labels]] = 0
    return out


def _count_objects(window: _ValWindow) -> int:
    return int(np.unique(window.labels[window.labels > 0]).size)


# --------------------------------------------------------------------------- the training loop


def _set_threads(device: torch.device, requested: int) -> int | None:
    if device.type != "cpu":
        return None
    previous = torch.get_num_threads()
    torch.set_num_threads(requested if requested > 0 else max(1, os.cpu_count() or 1))
    return previous


class _Loop:
    """State of one training run (network, optimiser, schedule, best weights, history)."""

    def __init__(
        self,
        network: nn.Module,
        device: torch.device,
        cfg: TrainingConfig,
        train_set: list[_TrainImage],
        val_windows: list[_ValWindow],
        class_weights: np.ndarray,
        patch: int,
        bundle: ModelBundle,
        started: float,
    ) -> None:
        self.network, self.device, self.cfg = network, device, cfg
        self.train_set, self.val_windows, self.patch = train_set, val_windows, patch
        self.bundle, self.started = bundle, started
        self.class_weights = torch.as_tensor(class_weights, device=device)
        self.rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.optimizer = torch.optim.AdamW(network.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.use_amp = cfg.amp and device.type == "cuda"
        self.validate_with_flips = model_uses_flips(bundle.metadata)  # score the model as it will run
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp else None
        self.image_probs = np.array([t.counted_pixels for t in train_set], dtype=np.float64)
        self.image_probs /= self.image_probs.sum()
        counted = sum(t.counted_pixels for t in train_set)
        self.steps_per_epoch = max(1, math.ceil(counted / (patch * patch * cfg.batch_size)))
        self.planned = self._planned_steps()
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best_state = self.start_state = _state_copy(network)
        self.best_score: float | None = None
        self.best_val_loss = math.inf
        self.best_step = 0
        self.best_metrics: dict[str, float] | None = None
        self.metrics_before: dict[str, float] | None = None
        self.last_val: dict[str, float] = {}
        self.stale_validations = 0
        self.lr_factor = 1.0
        self.stopped_reason = ""
        self.train_seconds = 0.0

    def _planned_steps(self) -> int:
        limits = []
        if self.cfg.max_steps is not None:
            limits.append(self.cfg.max_steps)
        if self.cfg.max_epochs is not None:
            limits.append(self.cfg.max_epochs * self.steps_per_epoch)
        return min(limits) if limits else 0

    # ---------------------------------------------------------------- run

    def run(self, cancel: CancelFlag) -> Generator[Progress, None, None]:
        """Validate the starting weights, train until a limit is reached, validate the end."""
        if self.val_windows:
            check_cancel(cancel)
            self.metrics_before = self._validate()
            self._record({"step": 0, **self.metrics_before})
            yield self._progress(None, "validated the starting model", validated=True)
        while not self._stop_reason():
            check_cancel(cancel)
            loss = self._train_step()
            record = {"step": self.step, "loss": loss, "lr": self._current_lr()}
            message = f"step {self.step}: loss {loss:.4f}"
            validated = bool(self.val_windows) and self.step % max(1, self.cfg.val_every) == 0
            if validated:
                check_cancel(cancel)
                record.update(self._validate())
                message += f", validation AP@0.5 {self.last_val['val_ap50']:.3f}"
            self._record(record)
            yield self._progress(loss, message, validated=validated)
        self.stopped_reason = self._stop_reason()
        if self.val_windows and self.history[-1].get("val_ap50") is None:
            check_cancel(cancel)
            self.history[-1].update(self._validate())
            yield self._progress(self.history[-1].get("loss"), "final validation", validated=True)
        if not self.val_windows:
            self.best_state, self.best_step = self._unvalidated_result(), self.step

    def _unvalidated_result(self) -> dict[str, torch.Tensor]:
        """Weights to return when nothing could be validated: the last ones, mixed with a trained parent's.

        A short fine-tune on a few nuclei can move a good model a long way
        (on 3 of 10 validation-split images with too few nuclei to validate,
        30 s of fine-tuning on half the image lowered AP@0.5 on the other half
        from 0.909 to 0.267, 0.704 to 0.444 and kept 0.659:
        ``benchmarks/results/finetune_val_split_before_guards.json``); averaging the
        fine-tuned weights with the parent's keeps most of what was learned
        and bounds the damage (weight-space ensembles, Wortsman et al. 2022).
        """
        return unvalidated_state(self.bundle, self.start_state, _state_copy(self.network))

    def _stop_reason(self) -> str:
        cfg = self.cfg
        if cfg.max_steps is not None and self.step >= cfg.max_steps:
            return "steps"
        if cfg.max_epochs is not None and self.step >= cfg.max_epochs * self.steps_per_epoch:
            return "epochs"
        if cfg.max_seconds is not None and self._elapsed() >= cfg.max_seconds:
            return "time"
        if cfg.early_stop_patience > 0 and self.stale_validations >= cfg.early_stop_patience:
            return "early_stopping"
        return ""

    def _elapsed(self) -> float:
        return time.perf_counter() - self.started

    def _record(self, record: dict[str, Any]) -> None:
        record["elapsed_s"] = self._elapsed()
        self.history.append(record)

    # ---------------------------------------------------------------- schedule

    def _budget_fraction(self) -> float:
        fractions = [0.0]
        if self.planned:
            fractions.append(self.step / self.planned)
        if self.cfg.max_seconds is not None:
            fractions.append(self._elapsed() / self.cfg.max_seconds)
        return min(1.0, max(fractions))

    def _current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _lr_for_step(self) -> float:
        cfg, fraction = self.cfg, self._budget_fraction()
        warm = 1.0
        if cfg.warmup_steps > 0:
            warm = min(1.0, max((self.step + 1) / cfg.warmup_steps, fraction / WARMUP_MAX_FRACTION))
        if cfg.schedule == "cosine":
            decay = MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * fraction))
        elif cfg.schedule == "plateau":
            decay = self.lr_factor
        else:
            decay = 1.0
        return cfg.learning_rate * warm * decay

    # ---------------------------------------------------------------- one step

    def _train_step(self) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr_for_step()
        images, targets, weights = self._batch()
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        with _autocast(self.use_amp):
            logits = self.network(images)
        loss = segmentation_loss(logits, targets, weights, kind=self.cfg.loss, class_weights=self.class_weights)
        self.step += 1
        if not torch.isfinite(loss):  # skip the update rather than poison the weights
            return float("nan")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return float(loss.detach())

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        samples = [self._sample() for _ in range(self.cfg.batch_size)]
        images, targets, weights = (np.stack(parts) for parts in zip(*samples, strict=True))
        return (
            torch.from_numpy(images).to(self.device, non_blocking=True),
            torch.from_numpy(targets).to(self.device, non_blocking=True),
            torch.from_numpy(weights).to(self.device, non_blocking=True),
        )

    def _sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One patch: centred on a corrected (30%), foreground (40%) or any annotated pixel."""
        item = self.train_set[int(self.rng.choice(len(self.train_set), p=self.image_probs))]
        draw = self.rng.random()
        pool = item.pools[2]
        if draw < 0.3 and item.pools[0].size:
            pool = item.pools[0]
        elif draw < 0.7 and item.pools[1].size:
            pool = item.pools[1]
        centre_y, centre_x = pool[int(self.rng.integers(pool.shape[0]))]
        top = min(max(0, centre_y - self.patch // 2), item.target.shape[0] - self.patch)
        left = min(max(0, centre_x - self.patch // 2), item.target.shape[1] - self.patch)
        window = (slice(top, top + self.patch), slice(left, left + self.patch))
        image, target, weight = item.image[(slice(None), *window)], item.target[window], item.weight[window]
        if self.cfg.augment:
            return augment_sample(image, target, weight, self.rng)
        return np.ascontiguousarray(image), np.ascontiguousarray(target), np.ascontiguousarray(weight)

    # ---------------------------------------------------------------- validation

    def _validate(self) -> dict[str, float]:
        """Score the current weights on the validation windows; update the best weights."""
        gts, preds, losses = [], [], []
        for window in self.val_windows:
            logits, probs = _window_logits_and_probabilities(
                self.network, window, self.device, self.use_amp, flips=self.validate_with_flips
            )
            target = torch.from_numpy(window.target)[None]
            weight = torch.from_numpy(window.weight)[None]
            losses.append(float(segmentation_loss(logits, target, weight, class_weights=self.class_weights.cpu())))
            predicted = probabilities_to_labels(probs, child_postprocess(self.bundle.postprocess))
            gts.append(window.labels)
            preds.append(_keep_annotated(predicted, window.weight > 0))
        row = summary_row(evaluate_dataset(gts, preds)["pooled"])
        scores = {
            "val_ap50": _finite(row["AP@0.5"]),
            "val_ap75": _finite(row["AP@0.75"]),
            "val_f1": _finite(row["F1@0.5"]),
            "val_loss": float(np.mean(losses)),
        }
        self.last_val = scores
        self._keep_if_best(scores)
        return scores

    def _keep_if_best(self, scores: dict[str, float]) -> None:
        """Keep the current weights if they validate best so far.

        Ties on AP@0.5 go to the lower validation loss, except against a
        trained parent that finds nuclei (step 0, AP@0.5 above 0): on a few
        validation nuclei ties are common, and the fine-tuned weights' lower
        loss next to their own training pixels says little about the rest of
        the image, so only a strictly higher AP@0.75 (better outlines of the
        same nuclei) replaces the parent.
        """
        better = self.best_score is None or scores["val_ap50"] > self.best_score
        tie = self.best_score is not None and scores["val_ap50"] == self.best_score
        if tie and self.best_step == 0 and bool(self.best_score) and is_trained(self.bundle):
            tie_broken = scores["val_ap75"] > (self.best_metrics or {}).get("val_ap75", 0.0)
        else:
            tie_broken = scores["val_loss"] < self.best_val_loss - VAL_LOSS_MIN_DELTA
        if better or (tie and tie_broken):
            self.best_score, self.best_val_loss = scores["val_ap50"], scores["val_loss"]
            self.best_state, self.best_step, self.best_metrics = _state_copy(self.network), self.step, dict(scores)
            self.stale_validations = 0
            return
        self.stale_validations += 1
        if self.cfg.schedule == "plateau" and self.stale_validations % PLATEAU_PATIENCE == 0:
            self.lr_factor *= PLATEAU_FACTOR

    # ---------------------------------------------------------------- progress

    def _progress(self, loss: float | None, message: str, validated: bool = False) -> Progress:
        """Return a progress event: ``done`` is the step, ``total`` the steps planned or expected.

        With only a time budget ``total`` is the steps this pace reaches in it;
        ``metrics["validated"]`` is True only when this step was validated.
        """
        elapsed = self._elapsed()
        steps_per_s = self.step / max(elapsed, 1e-9)
        metrics = {
            "loss": loss,
            "lr": self._current_lr(),
            "val_ap50": self.last_val.get("val_ap50"),
            "val_loss": self.last_val.get("val_loss"),
            "validated": validated,
            "eta_s": self._eta(elapsed, steps_per_s),
            "steps_per_s": steps_per_s,
            "elapsed_s": elapsed,
        }
        return Progress("train", self.step, self._expected_steps(), message, metrics)

    def _expected_steps(self) -> int:
        """Planned steps; with only a time budget, the steps this pace reaches in it (at least the steps done)."""
        if self.planned:
            return self.planned
        fraction = self._budget_fraction()
        if self.cfg.max_seconds is None or fraction <= 0:
            return 0
        return max(self.step, round(self.step / fraction)) if self.step else 0

    def _eta(self, elapsed: float, steps_per_s: float) -> float | None:
        etas = []
        if self.planned and steps_per_s > 0:
            etas.append((self.planned - self.step) / steps_per_s)
        if self.cfg.max_seconds is not None:
            etas.append(self.cfg.max_seconds - elapsed)
        return max(0.0, min(etas)) if etas else None


def is_trained(bundle: ModelBundle) -> bool:
    """Whether ``bundle`` holds trained weights (the bundled model's training record or a fine-tune's lineage)."""
    return bool(bundle.metadata.get("training") or bundle.metadata.get("lineage"))


def unvalidated_state(
    bundle: ModelBundle, start: dict[str, torch.Tensor], last: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Return the weights of a run without validation: ``last``, averaged with ``start`` when ``bundle`` is trained.

    Parameters
    ----------
    bundle : ModelBundle
        The starting model (its metadata tells whether it is trained).
    start, last : dict of str to torch.Tensor
        State dicts of the starting and the last weights (same keys).

    Returns
    -------
    dict of str to torch.Tensor
        ``last``, or ``UNVALIDATED_PARENT_SHARE * start + (1 - share) * last``
        (see :data:`UNVALIDATED_OUTCOME` for the message that says which).

    """
    if not is_trained(bundle):
        return last
    return mix_states(start, last, UNVALIDATED_PARENT_SHARE)


def mix_states(
    first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], first_share: float
) -> dict[str, torch.Tensor]:
    """``first_share * first + (1 - first_share) * second`` for float tensors; integers (counters) from ``second``."""
    return {
        key: first[key] * first_share + value * (1.0 - first_share) if value.is_floating_point() else value
        for key, value in second.items()
    }


def _window_logits_and_probabilities(
    network: nn.Module, window: _ValWindow, device: torch.device, amp: bool, flips: bool
) -> tuple[torch.Tensor, np.ndarray]:
    """Logits ``(1, K, Yr, Xr)`` and class probabilities ``(K, Yr, Xr)`` of a validation window's scored region.

    The probabilities are what inference computes for the model
    (:func:`~napari_unet.core.inference.tile_probabilities`): averaged over
    the image and its flips when ``flips``, so that flip-tuned thresholds are
    validated on the probabilities they suit. The logits (for the loss) come
    from the same unflipped pass, so no pass runs twice.
    """
    settings = InferenceConfig(tta=flips, amp=amp)
    logits, probabilities = _on_window(
        network, window, device, lambda inputs: tile_logits_and_probabilities(network, inputs, device, settings)
    )
    return logits, probabilities[0].numpy()


def _on_window(
    network: nn.Module,
    window: _ValWindow,
    device: torch.device,
    compute: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
) -> tuple[torch.Tensor, ...]:
    """Run ``compute`` on a validation window and crop each of its outputs to the scored region.

    ``compute`` gets the whole window, padded to the network's size multiple,
    as ``(1, C, Yp, Xp)`` on ``device``, with the network in eval mode and no
    gradients, and returns ``(1, K, Yp, Xp)`` tensors; each comes back as
    ``(1, K, Yr, Xr)`` float32 on the CPU.
    """
    multiple = network.config.size_multiple if hasattr(network, "config") else 16
    padded, crop = pad_to_multiple(window.image, multiple)
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            outputs = compute(torch.from_numpy(np.ascontiguousarray(padded))[None].to(device))
    finally:
        network.train(was_training)
    unpadded = (slice(None), slice(None), *crop[-2:])
    scored = (slice(None), slice(None), *window.region)
    return tuple(output[unpadded][scored].float().cpu() for output in outputs)


def _autocast(enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """float16 autocast on CUDA when ``enabled``; a no-op otherwise."""
    return torch.autocast("cuda", dtype=torch.float16) if enabled else contextlib.nullcontext()


def _state_copy(network: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().to("cpu", copy=True) for key, value in network.state_dict().items()}


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) else 0.0


# --------------------------------------------------------------------------- lineage


def _lineage(
    bundle: ModelBundle,
    cfg: TrainingConfig,
    prepared: _Prepared,
    train_ids: list[int],
    loop: _Loop,
    seconds: float,
    device: torch.device,
    validation: str,
) -> dict[str, Any]:
    data = [{**sums, "role": "train" if i in train_ids else "validation"} for i, sums in enumerate(prepared.checksums)]
    return {
        "parent": {
            "name": bundle.name,
            "version": bundle.version,
            "sha256": bundle.sha256,
        },
        "data": data,
        "annotation_mode": cfg.annotation_mode,
        "settings": cfg.to_dict(),
        "metrics_before": loop.metrics_before,
        "metrics_after": loop.best_metrics,
        "metrics": dict(loop.best_metrics or {}),
        "validation": validation,
        "seconds": round(seconds, 3),
        "steps": loop.step,
        "best_step": loop.best_step,
        "stopped_reason": loop.stopped_reason,
        "device": str(device),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def child_postprocess(parent: PostprocessConfig) -> PostprocessConfig:
    """Post-processing a trained model starts with: its parent's, unchanged (``min_confidence`` included).

    Dropping the confidence filter of the v2 default model (0.85) after a
    30 s fine-tune on half of each held-out S-BSST265 image lowered AP@0.5 on
    the other halves from 0.670 to 0.602 (objects the filter had removed came
    back; most runs kept the starting weights); keeping it gave 0.680
    (``benchmarks/results/finetune_bsst265_test.json``).  ``napari-unet tune``
    chooses new thresholds for a child.
    """
    return parent


def child_metadata(bundle: ModelBundle, lineage: dict[str, Any]) -> dict[str, Any]:
    """Metadata of a model trained from ``bundle``: the parent's, without its identity, plus ``lineage``."""
    metadata = {key: value for key, value in bundle.metadata.items() if key not in ("name", "version", "sha256")}
    metadata["lineage"] = lineage
    return metadata

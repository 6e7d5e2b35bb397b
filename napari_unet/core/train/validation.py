"""Validation during fine-tuning: which annotated data is held out, and scoring it with the network."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from napari_unet.core.config import InferenceConfig, PostprocessConfig, TrainingConfig
from napari_unet.core.data.normalize import normalize_plane
from napari_unet.core.errors import UserInputError
from napari_unet.core.evaluate.tuning import candidate_configs, iter_choose_postprocess
from napari_unet.core.models.bundle import ModelBundle
from napari_unet.core.predict.planar import tile_logits_and_probabilities
from napari_unet.core.predict.tiling import pad_to_multiple
from napari_unet.core.progress import run_to_end
from napari_unet.core.train.inputs import MIN_IMAGE_SIZE, PreparedImages, as_image_lists, check_pair
from napari_unet.core.train.pixel_classes import labels_to_classes

MIN_VAL_OBJECTS = 3
"""A single image is split for validation only when the strip holds at least this many nuclei."""


MAX_VAL_PIXELS = 512 * 512
"""Validation windows are cropped to at most this many scored pixels (bounds validation time).

The cap is on area, not on each side, so a narrow held-out strip keeps its
full height (capped at 512 rows, the strips of two 1024-row S-BSST265
tumour sections held 56 nuclei in ``benchmarks/results/hitl_side_cap.json``, 86 uncapped).
"""


VAL_CONTEXT = 32
"""Pixels of image context around a validation strip given to the network."""


@dataclass
class ValWindow:
    """One validation window: network input with context, and the scored region inside it."""

    image: np.ndarray  # (C, Yw, Xw) float32
    region: tuple[slice, slice]  # scored part of the window
    labels: np.ndarray  # (Yr, Xr) ground truth of the region
    target: np.ndarray  # (Yr, Xr) classes
    weight: np.ndarray  # (Yr, Xr) float32 (0 = not annotated)


HOLD_OUT_WHOLE_IMAGES_FROM = 5
"""From this many annotated images on, whole images are held out; with fewer, a strip of each (by nucleus count)."""


def split_validation(
    bundle: ModelBundle,
    prepared: PreparedImages,
    labels: list[np.ndarray],
    cfg: TrainingConfig,
    val_images: Sequence[np.ndarray] | None,
    val_labels: Sequence[np.ndarray] | None,
) -> tuple[list[int], list[ValWindow], str]:
    """Return (training image indices, validation windows, a message saying how validation is done)."""
    everything = list(range(len(prepared.normalized)))
    if val_images is not None or val_labels is not None:
        return everything, _given_validation(bundle, val_images, val_labels), "validating on the given images"
    if cfg.val_fraction <= 0:
        return everything, [], "no validation possible: val_fraction is 0"
    if len(everything) >= HOLD_OUT_WHOLE_IMAGES_FROM:
        return _hold_out_images(prepared, labels, cfg)
    return _hold_out_strips(prepared, labels, cfg)


def _given_validation(
    bundle: ModelBundle, val_images: Sequence[np.ndarray] | None, val_labels: Sequence[np.ndarray] | None
) -> list[ValWindow]:
    if val_images is None or val_labels is None:
        raise UserInputError("give both val_images and val_labels (or neither, to hold out part of the data)")
    images, labels = as_image_lists(val_images, val_labels)
    windows = []
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        image, label = check_pair(image, label, index, "validation ")
        normalized = normalize_plane(image, bundle.normalize, bundle.config.in_channels)
        weight = np.ones(label.shape, dtype=np.float32)
        windows.append(_window(normalized, label, labels_to_classes(label), weight, _full_box(label.shape)))
    return windows


def _hold_out_images(
    prepared: PreparedImages, labels: list[np.ndarray], cfg: TrainingConfig
) -> tuple[list[int], list[ValWindow], str]:
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
    if sum(count_objects(w) for w in windows) == 0:
        return list(range(count)), [], "no validation possible: the held-out images hold no labelled nucleus"
    return train_ids, windows, f"validating on {n_val} held-out image(s) of {count}"


def _hold_out_strips(
    prepared: PreparedImages, labels: list[np.ndarray], cfg: TrainingConfig
) -> tuple[list[int], list[ValWindow], str]:
    """Hold out, from each image, the right-hand strip holding its share of ``val_fraction`` of all nuclei.

    The strip is chosen by nucleus count, not by width: together the strips
    hold ``max(MIN_VAL_OBJECTS, val_fraction x nuclei)`` whole nuclei, spread
    over the images in proportion to their nuclei, and every image keeps at
    least one nucleus to train on.  The strips' pixels are left out of
    training.  Without enough nuclei nothing is held out and the message says
    why.
    """
    counts = [_annotated_objects(labels[i], prepared.weights[i]) for i in range(len(labels))]
    total = sum(len(c) for c in counts)
    wanted = max(MIN_VAL_OBJECTS, round(cfg.val_fraction * total))
    if total - wanted < max(1, len(labels)):
        return (
            list(range(len(labels))),
            [],
            f"no validation possible: {total} annotated nuclei, need at least {MIN_VAL_OBJECTS} to hold out "
            "and some to train on",
        )
    windows, held = [], 0
    for index, objects in enumerate(counts):
        share = min(len(objects) - 1, math.ceil(wanted * len(objects) / total))
        if share <= 0:
            continue
        window, train_weight = _strip(prepared, labels, index, objects[-share])
        if window is None:
            continue
        windows.append(window)
        held += count_objects(window)
        prepared.weights[index] = train_weight
    if held < MIN_VAL_OBJECTS:
        return list(range(len(labels))), [], f"no validation possible: only {held} whole nuclei fit a held-out strip"
    return (
        list(range(len(labels))),
        windows,
        f"validating on {held} held-out nuclei (a strip of {len(windows)} image(s))",
    )


def _annotated_objects(label: np.ndarray, weight: np.ndarray) -> list[int]:
    """Left edges (column) of the annotated nuclei of one image, sorted (a nucleus counts when mostly annotated)."""
    kept = keep_annotated(label, weight > 0)
    lefts = []
    for box in ndimage.find_objects(kept):
        if box is not None:
            lefts.append(box[1].start)
    return sorted(lefts)


def _strip(
    prepared: PreparedImages, labels: list[np.ndarray], index: int, cut: int
) -> tuple[ValWindow | None, np.ndarray]:
    """Return the validation window right of column ``cut`` of image ``index`` and the training weights without it.

    Only the window's scored pixels leave training: where a very large strip
    is cropped to :data:`MAX_VAL_PIXELS`, the rest of it still trains.
    """
    weight = prepared.weights[index]
    rows, cols = _box(weight > 0)
    if cut - cols.start < MIN_IMAGE_SIZE or cols.stop - cut < MIN_IMAGE_SIZE:
        return None, weight
    scored = _cap_area((rows, slice(cut, cols.stop)), MAX_VAL_PIXELS)
    window = _window(prepared.normalized[index], labels[index], prepared.classes[index], weight, scored)
    train_weight = weight.copy()
    train_weight[scored] = 0
    if not ((prepared.classes[index] > 0) & (train_weight > 0)).any():
        return None, weight
    return window, train_weight


def _full_box(shape: tuple[int, ...]) -> tuple[slice, slice]:
    return slice(0, shape[0]), slice(0, shape[1])


def _box(mask: np.ndarray) -> tuple[slice, slice]:
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _window(
    image: np.ndarray, label: np.ndarray, classes: np.ndarray, weight: np.ndarray, box: tuple[slice, slice]
) -> ValWindow:
    """Build the validation window around ``box`` (capped at MAX_VAL_PIXELS, with VAL_CONTEXT pixels of context).

    Parameters
    ----------
    image : np.ndarray
        (C, Y, X) normalised image.
    label, classes, weight : np.ndarray
        (Y, X) instance labels, pixel classes and annotation weights.
    box : tuple of slice
        The (rows, columns) to score.

    """
    scored = _cap_area(box, MAX_VAL_PIXELS)
    context = tuple(
        slice(max(0, s.start - VAL_CONTEXT), min(size, s.stop + VAL_CONTEXT))
        for s, size in zip(scored, label.shape, strict=True)
    )
    region = tuple(slice(s.start - c.start, s.stop - c.start) for s, c in zip(scored, context, strict=True))
    return ValWindow(
        image=np.ascontiguousarray(image[(slice(None), *context)]),
        region=region,  # type: ignore[arg-type]
        labels=keep_annotated(label[scored], weight[scored] > 0),
        target=classes[scored],
        weight=(weight[scored] > 0).astype(np.float32),
    )


def _cap_area(box: tuple[slice, slice], max_pixels: int) -> tuple[slice, slice]:
    """Crop ``box`` (rows, columns) about its centre to at most ``max_pixels``, the longer side first.

    A box within the cap is returned as it is; a narrow strip keeps its short
    side and loses length; a large square becomes about ``sqrt(max_pixels)`` a side.
    """
    rows, cols = box
    height, width = rows.stop - rows.start, cols.stop - cols.start
    if height * width <= max_pixels:
        return box
    side = math.isqrt(max_pixels)
    if height <= width:
        height = min(height, side)
        return _centred(rows, height), _centred(cols, max_pixels // height)
    width = min(width, side)
    return _centred(rows, max_pixels // width), _centred(cols, width)


def _centred(span: slice, size: int) -> slice:
    """Return the middle ``size`` of ``span`` (``span`` itself when it is not longer)."""
    extra = (span.stop - span.start) - size
    if extra <= 0:
        return span
    start = span.start + extra // 2
    return slice(start, start + size)


def keep_annotated(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
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


def count_objects(window: ValWindow) -> int:
    """Return the number of nuclei in a validation window's ground truth."""
    return int(np.unique(window.labels[window.labels > 0]).size)


def window_logits_and_probabilities(
    network: nn.Module, window: ValWindow, device: torch.device, amp: bool, flips: bool
) -> tuple[torch.Tensor, np.ndarray]:
    """Logits ``(1, K, Yr, Xr)`` and class probabilities ``(K, Yr, Xr)`` of a validation window's scored region.

    The probabilities are what inference computes for the model
    (:func:`~napari_unet.core.predict.planar.tile_probabilities`): averaged over
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
    window: ValWindow,
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


RETUNE_FOREGROUND = (0.4, 0.5, 0.6)
RETUNE_SEEDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
"""Thresholds tried when a fine-tuned child's post-processing is rechosen on the held-out corrections."""


def rechoose_thresholds(
    network: nn.Module, windows: list[ValWindow], postprocess: PostprocessConfig, flips: bool
) -> tuple[PostprocessConfig, dict[str, float]]:
    """Rechoose the foreground and seed thresholds of a fine-tuned network on the validation windows.

    Parameters
    ----------
    network : torch.nn.Module
        The kept (fine-tuned) weights, on the CPU.
    windows : list of ValWindow
        The held-out corrections.
    postprocess : PostprocessConfig
        The settings the child inherited from its parent; every other field is kept.
    flips : bool
        Whether the model runs with test-time flips (probabilities are averaged the same way).

    Returns
    -------
    (PostprocessConfig, dict)
        The new settings, or ``postprocess`` itself unless another pair scores
        strictly higher AP@0.5 on the windows; and ``{"before", "after"}`` AP@0.5.

    """
    probabilities = [
        window_logits_and_probabilities(network, window, torch.device("cpu"), False, flips)[1] for window in windows
    ]
    candidates = candidate_configs(
        postprocess,
        foreground=RETUNE_FOREGROUND,
        seeds=RETUNE_SEEDS,
        min_sizes=(postprocess.min_size,),
        split_distances=(postprocess.split_distance,),
        min_relative_sizes=(postprocess.min_relative_size,),
        min_confidences=(postprocess.min_confidence,),
    )
    labels = [window.labels for window in windows]
    tuned = run_to_end(iter_choose_postprocess(probabilities, labels, candidates, postprocess))
    before, after = tuned.baseline_scores["AP@0.5"], tuned.best_scores["AP@0.5"]
    chosen = tuned.best if after > before else postprocess
    return chosen, {"before": before, "after": max(before, after)}

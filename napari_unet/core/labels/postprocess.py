"""Network probabilities -> instance labels, and label clean-up helpers.

The network's 3 classes are background, interior and boundary (see
:mod:`napari_unet.core.models.network`).  Touching nuclei are separated by a boundary
band, so connected regions of confident interior are one seed per nucleus;
a seeded watershed on the interior probability grows the seeds over the
foreground (interior + boundary).  All helpers work with lookup tables,
``numpy.bincount`` and ``scipy.ndimage`` rather than Python loops over
pixels or objects.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from napari_unet.core.config import PostprocessConfig


def _cross(ndim: int) -> np.ndarray:
    """Face-connectivity structure (4-connected in 2D, 6-connected in 3D)."""
    return ndi.generate_binary_structure(ndim, 1)


def _face_offsets(ndim: int) -> list[tuple[int, ...]]:
    """Offsets to the face neighbours of a pixel (4 in 2D, 6 in 3D)."""
    offsets = []
    for axis in range(ndim):
        for step in (-1, 1):
            offsets.append(tuple(step if a == axis else 0 for a in range(ndim)))
    return offsets


def probabilities_to_labels(probs: np.ndarray, cfg: PostprocessConfig | None = None) -> np.ndarray:
    """Turn class probabilities into instance labels.

    Parameters
    ----------
    probs : numpy.ndarray
        ``(3, Y, X)`` probabilities of background, interior, boundary; or
        ``(3, Z, Y, X)`` from a 3D model (objects are then 3D: seeds,
        watershed, sizes in voxels and holes all in 3D).
    cfg : PostprocessConfig, optional
        Thresholds and sizes (defaults when omitted).

    Returns
    -------
    numpy.ndarray
        ``(Y, X)`` or ``(Z, Y, X)`` int32 labels, 0 background, objects numbered 1..N.

    Notes
    -----
    1. foreground = P(interior) + P(boundary) > ``foreground_threshold``;
    2. seeds = 4-connected regions of foreground with P(interior) >
       ``seed_threshold`` and at least ``min_seed_size`` pixels;
    3. watershed on ``-P(interior)`` from the seeds, inside the foreground;
    4. foreground components that hold no seed become objects of their own;
    5. objects smaller than ``min_size`` pixels, then those smaller than
       ``min_relative_size`` times the median object area, are removed and
       holes filled (``fill_holes``);
    6. objects whose mean foreground probability is below ``min_confidence``
       are removed, and labels renumbered 1..N.

    """
    cfg = cfg or PostprocessConfig()
    if probs.ndim not in (3, 4) or probs.shape[0] < 3:
        raise ValueError(f"probs must have shape (3, Y, X) or (3, Z, Y, X), got {probs.shape}")
    interior = probs[1]
    foreground = (interior + probs[2]) > cfg.foreground_threshold
    seeds = _seeds(interior, foreground, cfg.seed_threshold, cfg.min_seed_size)
    surface = -interior
    if cfg.split_distance > 0 and seeds.any():
        seeds, surface = _split_seeds(seeds, foreground, cfg.split_distance)
    if seeds.any():
        labels = watershed(surface, markers=seeds, mask=foreground).astype(np.int32, copy=False)
    else:
        labels = np.zeros(foreground.shape, dtype=np.int32)
    labels = _label_unseeded(labels, foreground)
    labels = remove_small_objects(labels, cfg.min_size)
    labels = remove_relatively_small_objects(labels, cfg.min_relative_size)
    if cfg.fill_holes:
        labels = fill_label_holes(labels)
    labels = remove_unconfident_objects(labels, 1.0 - probs[0], cfg.min_confidence)
    return sequential_labels(labels).astype(np.int32, copy=False)


def _seeds(interior: np.ndarray, foreground: np.ndarray, threshold: float, min_seed_size: int) -> np.ndarray:
    """Label connected seed regions ``(Y, X)`` or ``(Z, Y, X)`` int32, dropping small ones."""
    seeds, _ = ndi.label((interior > threshold) & foreground, structure=_cross(interior.ndim))
    return remove_small_objects(seeds.astype(np.int32, copy=False), min_seed_size)


def _split_seeds(seeds: np.ndarray, foreground: np.ndarray, min_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Split seed regions that hold several distance-transform peaks (nuclei fused in the interior map).

    Parameters
    ----------
    seeds : numpy.ndarray
        ``(Y, X)`` int32 seed regions.
    foreground : numpy.ndarray
        ``(Y, X)`` bool foreground.
    min_distance : int
        Peaks closer than this (pixels) count as one nucleus.

    Returns
    -------
    seeds, surface : numpy.ndarray
        New ``(Y, X)`` int32 markers (one per peak; regions without a peak keep
        one marker) and the watershed surface ``-distance(foreground)``.

    """
    from skimage.feature import peak_local_max

    distance = ndi.distance_transform_edt(seeds > 0)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=seeds, exclude_border=False)
    markers = np.zeros_like(seeds)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=seeds.dtype)
    markers, _ = ndi.label(ndi.binary_dilation(markers > 0) & (seeds > 0), structure=_cross(seeds.ndim))
    without_peak = np.setdiff1d(_present_ids(seeds), _present_ids(np.where(markers > 0, seeds, 0)))
    if without_peak.size:
        keep = np.isin(seeds, without_peak)
        markers[keep] = seeds[keep] + int(markers.max())
    return markers.astype(np.int32, copy=False), -ndi.distance_transform_edt(foreground)


def _label_unseeded(labels: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Give every foreground component the watershed did not reach a new label."""
    leftover = foreground & (labels == 0)
    if not leftover.any():
        return labels
    extra, count = ndi.label(leftover, structure=_cross(leftover.ndim))
    if count:
        offset = int(labels.max())
        labels = labels.copy()
        labels[extra > 0] = extra[extra > 0] + offset
    return labels


def sequential_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber the objects of ``labels`` 1..N keeping 0 as background (any shape, same dtype)."""
    present = _present_ids(labels)
    if present.size == 0 or (present[0] == 1 and present[-1] == present.size):
        return labels
    lut = np.zeros(int(present[-1]) + 1, dtype=labels.dtype)
    lut[present] = np.arange(1, present.size + 1, dtype=labels.dtype)
    return lut[labels]


def _present_ids(labels: np.ndarray) -> np.ndarray:
    """Sorted non-zero ids occurring in non-negative integer ``labels``."""
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64)
    largest = int(labels.max())
    if largest <= 2 * labels.size + 1024:  # dense ids: a histogram beats sorting
        present = np.flatnonzero(np.bincount(labels.ravel(), minlength=largest + 1))
    else:
        present = np.unique(labels)
    return present[present != 0]


def remove_small_objects(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Set objects with fewer than ``min_size`` pixels to background.

    Parameters
    ----------
    labels : numpy.ndarray
        Non-negative integer labels, any shape.
    min_size : int
        Minimum object size in pixels (0 or 1 keeps everything).

    Returns
    -------
    numpy.ndarray
        Labels of the same shape and dtype (``labels`` itself when nothing is
        removed; never modified in place).  Ids are not renumbered.

    """
    if min_size <= 1 or labels.size == 0:
        return labels
    return _remove_below(labels, np.bincount(labels.ravel()), min_size)


def _remove_below(labels: np.ndarray, counts: np.ndarray, min_size: int) -> np.ndarray:
    """:func:`remove_small_objects` given ``counts = np.bincount(labels.ravel())`` already measured."""
    if min_size <= 1:
        return labels
    return _drop_ids(labels, counts < min_size)


def _drop_ids(labels: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """Set the ids flagged in ``drop`` (bool, one entry per id from 0 up) to background; id 0 is never flagged."""
    drop[0] = False
    if not drop.any():
        return labels
    lut = np.arange(drop.size, dtype=labels.dtype)
    lut[drop] = 0
    return lut[labels]


def remove_relatively_small_objects(labels: np.ndarray, fraction: float) -> np.ndarray:
    """Set objects smaller than ``fraction`` times the median object area to background.

    The size of nuclei varies from image to image far more than within one, so
    a fragment or a speck of debris is best recognised relative to the
    objects around it.

    Parameters
    ----------
    labels : numpy.ndarray
        Non-negative integer labels, any shape.
    fraction : float
        Fraction of the median object area (0 keeps everything).

    Returns
    -------
    numpy.ndarray
        Labels of the same shape and dtype (``labels`` itself when nothing is
        removed; never modified in place).  Ids are not renumbered.

    """
    if fraction <= 0 or labels.size == 0:
        return labels
    counts = np.bincount(labels.ravel())
    present = counts[1:][counts[1:] > 0]
    if present.size == 0:
        return labels
    return _remove_below(labels, counts, int(np.ceil(fraction * float(np.median(present)))))


def remove_unconfident_objects(labels: np.ndarray, foreground: np.ndarray, min_confidence: float) -> np.ndarray:
    """Set objects whose mean foreground probability is below ``min_confidence`` to background.

    Debris, stained cytoplasm and other look-alikes often pass the pixel
    threshold in places while the network is unsure of them as a whole.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(Y, X)`` non-negative integer labels.
    foreground : numpy.ndarray
        ``(Y, X)`` foreground probability, ``P(interior) + P(boundary)``.
    min_confidence : float
        Lowest mean foreground probability an object may have (0 keeps everything).

    Returns
    -------
    numpy.ndarray
        Labels of the same shape and dtype (``labels`` itself when nothing is
        removed; never modified in place).  Ids are not renumbered.

    """
    if min_confidence <= 0 or labels.size == 0:
        return labels
    flat = labels.ravel()
    counts = np.bincount(flat)
    sums = np.bincount(flat, weights=foreground.ravel().astype(np.float64), minlength=counts.size)
    return _drop_ids(labels, (sums < min_confidence * counts) & (counts > 0))


def fill_label_holes(labels: np.ndarray) -> np.ndarray:
    """Fill background holes that lie inside a single object.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(Y, X)`` or ``(Z, Y, X)`` non-negative integer labels.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype.  A background region (face-connected) not
        touching the image border whose neighbours all belong to one object
        takes that object's id.  Gaps enclosed by several touching objects
        stay background.

    """
    if labels.ndim not in (2, 3):
        raise ValueError(f"fill_label_holes expects (Y, X) or (Z, Y, X) labels, got shape {labels.shape}")
    hole_ids, count = _enclosed_background(labels == 0)
    if count == 0:
        return labels
    owner = _single_neighbour_label(labels, hole_ids, count)
    holes = hole_ids > 0
    filled = labels.copy()
    filled[holes] = owner[hole_ids[holes]]
    return filled


def _enclosed_background(background: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the face-connected background regions that do not touch the image border.

    Returns ``(hole_ids int32 shaped like background, count)``; ids run 1..count.
    """
    regions, count = ndi.label(background, structure=_cross(background.ndim))
    if count == 0:
        return regions, 0
    faces = [np.take(regions, end, axis=axis).ravel() for axis in range(regions.ndim) for end in (0, -1)]
    border = np.concatenate(faces)
    is_hole = np.ones(count + 1, dtype=bool)
    is_hole[border] = False
    is_hole[0] = False
    lut = np.zeros(count + 1, dtype=regions.dtype)
    lut[is_hole] = np.arange(1, int(is_hole.sum()) + 1, dtype=regions.dtype)
    return lut[regions], int(is_hole.sum())


def _single_neighbour_label(labels: np.ndarray, hole_ids: np.ndarray, count: int) -> np.ndarray:
    """For holes 1..count: the one object id around each hole, or 0 if several (index 0 is 0)."""
    where = np.nonzero(hole_ids)
    ids = hole_ids[where]
    pairs_hole, pairs_label = [], []
    for offset in _face_offsets(labels.ndim):
        # holes never touch the border, so indices stay inside
        neighbour = labels[tuple(index + step for index, step in zip(where, offset, strict=True))]
        touching = neighbour > 0
        pairs_hole.append(ids[touching])
        pairs_label.append(neighbour[touching])
    hole, label = _unique_pairs(np.concatenate(pairs_hole), np.concatenate(pairs_label))[:2]
    distinct = np.bincount(hole, minlength=count + 1)
    owner = np.zeros(count + 1, dtype=labels.dtype)
    owner[hole] = label
    owner[distinct != 1] = 0
    return owner


def _unique_pairs(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct ``(first, second)`` pairs of non-negative ints, sorted, with their counts."""
    first, second = first.astype(np.int64), second.astype(np.int64)
    base = int(second.max()) + 1 if second.size else 1
    keys, counts = np.unique(first * base + second, return_counts=True)
    return keys // base, keys % base, counts


def relabel_stack_unique(labels: np.ndarray) -> np.ndarray:
    """Make ids unique across the planes of a stack.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(P, Y, X)`` labels, numbered independently per plane.

    Returns
    -------
    numpy.ndarray
        ``(P, Y, X)`` uint32; plane ``p``'s objects are numbered after those
        of planes ``0..p-1`` (ids run 1..N over the stack, in plane order).

    """
    out = np.zeros(labels.shape, dtype=np.uint32)
    offset = 0
    for index, plane in enumerate(labels):
        relabelled = sequential_labels(plane)
        np.add(relabelled, offset, out=out[index], where=relabelled > 0, casting="unsafe")
        offset += int(relabelled.max()) if relabelled.size else 0
    return out


def link_slices(labels: np.ndarray, min_iou: float = 0.3) -> np.ndarray:
    """Link 2D instances of consecutive z-slices into 3D objects.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(Z, Y, X)`` labels segmented slice by slice (ids may repeat between
        slices).
    min_iou : float
        Objects of consecutive slices with an intersection over union of at
        least this are the same object.

    Returns
    -------
    numpy.ndarray
        ``(Z, Y, X)`` uint32; linked objects share an id, ids run 1..N.

    Notes
    -----
    Matching is one-to-one and greedy by decreasing IoU, so a nucleus that
    splits into two in the next slice continues as the better-overlapping
    part and the other part starts a new object.

    """
    stacked = relabel_stack_unique(labels)
    if stacked.shape[0] < 2:
        return stacked
    lut = np.arange(int(stacked.max()) + 1, dtype=np.uint32)
    for z in range(1, stacked.shape[0]):
        previous = lut[stacked[z - 1]]
        for old, new in _iou_matches(previous, stacked[z], min_iou):
            lut[new] = old
    return sequential_labels(lut[stacked])


def _iou_matches(previous: np.ndarray, current: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """One-to-one ``(previous_id, current_id)`` pairs with IoU >= ``min_iou``, greedy by IoU."""
    both = (previous > 0) & (current > 0)
    if not both.any():
        return []
    prev_ids, curr_ids, intersection = _unique_pairs(previous[both], current[both])
    prev_area = np.bincount(previous.ravel())[prev_ids]
    curr_area = np.bincount(current.ravel())[curr_ids]
    iou = intersection / (prev_area + curr_area - intersection)
    order = np.argsort(-iou, kind="stable")
    order = order[iou[order] >= min_iou]
    used_prev: set[int] = set()
    used_curr: set[int] = set()
    matches = []
    for k in order:
        old, new = int(prev_ids[k]), int(curr_ids[k])
        if old not in used_prev and new not in used_curr:
            used_prev.add(old)
            used_curr.add(new)
            matches.append((old, new))
    return matches

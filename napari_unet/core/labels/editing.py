"""Label-editing helpers behind the *Correct* widget (Qt-free).

Every function takes an instance label array (any integer dtype, 2D ``(Y, X)``
or nD such as ``(Z, Y, X)``; 0 is background) and returns a **new** array of
the same shape and dtype; the input is never modified.  The widget writes the
difference back through napari's undoable ``Labels.data_setitem`` (see
:func:`changed_pixels`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.segmentation import relabel_sequential as _relabel_sequential
from skimage.segmentation import watershed

from napari_unet.core.errors import UserInputError

__all__ = [
    "changed_pixels",
    "delete_small_objects",
    "fill_holes",
    "label_ids",
    "labels_at",
    "merge_labels",
    "next_free_label",
    "relabel_sequential",
    "split_label",
]


def _check_labels(labels: np.ndarray) -> np.ndarray:
    array = np.asarray(labels)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise UserInputError(
            f"labels must hold integers, got dtype {array.dtype}; choose a Labels layer, not an image layer"
        )
    return array


def label_ids(labels: np.ndarray) -> list[int]:
    """Sorted non-zero label values present in ``labels``."""
    values = np.unique(_check_labels(labels))
    return [int(v) for v in values if v != 0]


def next_free_label(labels: np.ndarray) -> int:
    """Smallest label value above every label in use (1 for an empty array)."""
    array = _check_labels(labels)
    return int(array.max(initial=0)) + 1


def labels_at(labels: np.ndarray, points: Iterable[Sequence[float]]) -> list[int]:
    """Label values under ``points`` (data coordinates, one per axis; rounded).

    Raises
    ------
    UserInputError
        If a point lies outside the array or has the wrong number of coordinates.

    """
    array = _check_labels(labels)
    found = []
    for point in points:
        index = tuple(round(float(c)) for c in point)
        if len(index) != array.ndim or any(not 0 <= i < s for i, s in zip(index, array.shape, strict=True)):
            raise UserInputError(f"point {tuple(point)} lies outside the labels of shape {array.shape}")
        found.append(int(array[index]))
    return found


def delete_small_objects(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Set every object with fewer than ``min_size`` pixels to background.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X) or (Z, Y, X) ...
        Instance labels.
    min_size : int
        Objects strictly smaller than this many pixels (voxels) are removed.

    """
    array = _check_labels(labels)
    if min_size < 0:
        raise UserInputError(f"minimum size must be 0 or more, got {min_size}")
    values, inverse, counts = np.unique(array, return_inverse=True, return_counts=True)
    small = (counts < min_size) & (values != 0)
    out = array.copy()
    out[small[inverse.reshape(array.shape)]] = 0
    return out


def merge_labels(labels: np.ndarray, ids: Iterable[int], target: int | None = None) -> np.ndarray:
    """Give all objects in ``ids`` one label.

    Parameters
    ----------
    labels : ndarray of int
        Instance labels.
    ids : iterable of int
        Labels to merge (at least two distinct non-zero values present in ``labels``).
    target : int, optional
        The merged label; defaults to the smallest of ``ids``.

    """
    array = _check_labels(labels)
    wanted = sorted({int(i) for i in ids} - {0})
    present = set(label_ids(array))
    missing = [i for i in wanted if i not in present]
    if missing:
        raise UserInputError(f"label(s) {missing} are not in the layer; pick labels that exist")
    if len(wanted) < 2:
        raise UserInputError("pick at least two different labels to merge")
    out = array.copy()
    out[np.isin(array, wanted)] = wanted[0] if target is None else target
    return out


SPLIT_INTENSITY_WEIGHT = 1.0
SPLIT_SHAPE_WEIGHT = 1.0
SPLIT_SHAPE_ONLY_WEIGHT = 8.0
SPLIT_COMPACTNESS = 0.02
SPLIT_SEED_RADIUS = 0.5
"""Cut surface of :func:`split_label`: weights of the dark-seam and narrow-neck terms (the neck term alone,
without an image, weighs ``SPLIT_SHAPE_ONLY_WEIGHT``), the watershed's compactness, and seed disks as a
fraction of the distance to the object's edge at each click.  Chosen on 75 pairs of touching nuclei from
``dsb2018/val`` merged and split at their centroids (``benchmarks/bench_split.py``)."""
MIN_PIECE_FRACTION = 0.05
"""A split whose smallest piece holds less than this fraction of the object does not honour the clicks."""


def split_label(
    labels: np.ndarray,
    label_id: int,
    seeds: Sequence[Sequence[float]] | None = None,
    min_distance: int = 3,
    image: np.ndarray | None = None,
) -> np.ndarray:
    """Split one object into one piece per seed, cutting along the weakest line between the seeds.

    Parameters
    ----------
    labels : ndarray of int
        Instance labels, ``(Y, X)`` or ``(Z, Y, X)``.
    label_id : int
        The object to split.
    seeds : sequence of points, optional
        Two or more points (data coordinates) inside the object, one per new
        piece (e.g. clicks on the centres of fused nuclei).  Without seeds
        the two highest maxima of the object's distance map (at least
        ``min_distance`` pixels apart) seed two pieces.
    min_distance : int
        Minimum distance between automatic seeds.
    image : ndarray of float, optional
        Intensities with ``labels``' shape, nuclei bright (e.g. a normalised
        plane, inverted for brightfield): the cut then follows the darkest
        seam between the seeds.

    Returns
    -------
    ndarray
        Labels where the first piece keeps ``label_id`` and the other pieces
        take new values above the current maximum.

    Raises
    ------
    UserInputError
        If the label is absent, seeds fall outside it, or the split cannot
        honour the seeds (a piece would be a sliver); nothing is changed then.

    Notes
    -----
    A compact seeded watershed (``skimage.segmentation.watershed`` with
    ``compactness``) on ``w_i * (1 - intensity) + w_s * (1 - distance /
    max distance)``: the cut runs through dark seams and narrow necks, and
    where neither exists (a convex blob of even brightness) it falls halfway
    between the seeds instead of leaving one of them a sliver.

    """
    array = _check_labels(labels)
    if label_id == 0 or label_id not in label_ids(array):
        raise UserInputError(f"label {label_id} is not in the layer; pick an object to split")
    if image is not None and np.shape(image) != array.shape:
        raise UserInputError(f"the image has shape {np.shape(image)} but the labels {array.shape}; pass the same plane")
    box = _padded_box(array == label_id)
    mask = array[box] == label_id
    distance = ndi.distance_transform_edt(mask)
    points = _seed_points(mask, distance, seeds, min_distance, [s.start for s in box])
    markers = _seed_disks(mask, distance, points)
    surface = _cut_surface(mask, distance, None if image is None else np.asarray(image, dtype=np.float32)[box])
    pieces = watershed(surface, markers, mask=mask, compactness=SPLIT_COMPACTNESS)
    _check_pieces(pieces, mask)
    full = np.zeros(array.shape, dtype=np.int32)
    full[box] = pieces
    return _write_pieces(array, array == label_id, full)


def _padded_box(mask: np.ndarray, pad: int = 2) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``pad`` pixels (clipped to the array)."""
    box = ndi.find_objects(mask.astype(np.int8))[0]
    return tuple(slice(max(0, s.start - pad), min(size, s.stop + pad)) for s, size in zip(box, mask.shape, strict=True))


def _seed_points(
    mask: np.ndarray,
    distance: np.ndarray,
    seeds: Sequence[Sequence[float]] | None,
    min_distance: int,
    offset: Sequence[int],
) -> list[tuple[int, ...]]:
    """Seed pixels in the box: the clicks (checked, shifted by ``offset``) or the two highest distance maxima."""
    if seeds is None:
        peaks = peak_local_max(
            distance, min_distance=max(1, min_distance), labels=mask.astype(np.int32), exclude_border=False, num_peaks=2
        )
        if len(peaks) < 2:
            raise UserInputError(
                "the object has a single centre, so it cannot be split automatically; "
                "click two points inside it instead"
            )
        return [tuple(int(c) for c in peak) for peak in peaks]
    points = [tuple(round(float(c)) for c in p) for p in seeds]
    if len(set(points)) < 2:
        raise UserInputError("click at least two different points inside the object to split it")
    inside = []
    for point in points:
        local = tuple(c - o for c, o in zip(point, offset, strict=False))
        if len(point) != mask.ndim or not all(0 <= i < s for i, s in zip(local, mask.shape, strict=True)):
            raise UserInputError(f"split point {point} is not inside the selected object; click inside it")
        if not mask[local]:
            raise UserInputError(f"split point {point} is not inside the selected object; click inside it")
        inside.append(local)
    return inside


def _seed_disks(mask: np.ndarray, distance: np.ndarray, points: list[tuple[int, ...]]) -> np.ndarray:
    """Markers: a disk around each seed (radius a fraction of its distance to the edge), clipped so none overlap."""
    markers = np.zeros(mask.shape, dtype=np.int32)
    grid = np.indices(mask.shape)
    for number, point in enumerate(points, start=1):
        radius = max(1.0, SPLIT_SEED_RADIUS * float(distance[point]))
        squared = sum((axis - c) ** 2 for axis, c in zip(grid, point, strict=True))
        markers[(squared <= radius**2) & mask & (markers == 0)] = number
        markers[point] = number
    return markers


def _cut_surface(mask: np.ndarray, distance: np.ndarray, image: np.ndarray | None) -> np.ndarray:
    """Where the cut may run cheaply: narrow necks (low distance) and, with an image, dark seams."""
    neck = 1.0 - distance / max(float(distance.max()), 1.0)
    if image is None:
        return SPLIT_SHAPE_ONLY_WEIGHT * neck
    surface = SPLIT_SHAPE_WEIGHT * neck
    smooth = ndi.gaussian_filter(image, 1.0)
    low, high = np.percentile(smooth[mask], [2, 98])
    brightness = np.clip((smooth - low) / max(float(high - low), 1e-6), 0.0, 1.0)
    return surface + SPLIT_INTENSITY_WEIGHT * (1.0 - brightness)


def _check_pieces(pieces: np.ndarray, mask: np.ndarray) -> None:
    """Refuse a split whose smallest piece is a sliver (it would not honour the clicks)."""
    sizes = np.bincount(pieces[mask].ravel())[1:]
    smallest, total = int(sizes.min()), int(mask.sum())
    if smallest < max(4, MIN_PIECE_FRACTION * total):
        raise UserInputError(
            f"could not split the object at these points: one piece would hold only {smallest} of its {total} "
            "pixels; nothing was changed. Click nearer the centres of the nuclei."
        )


def _write_pieces(array: np.ndarray, mask: np.ndarray, pieces: np.ndarray) -> np.ndarray:
    piece_ids = [int(p) for p in np.unique(pieces[mask]) if p != 0]
    if len(piece_ids) < 2:
        raise UserInputError("the split produced a single piece; place the points further apart")
    label_id = int(array[mask].flat[0])
    out = array.copy()
    new_value = next_free_label(array)
    for piece in piece_ids[1:]:
        if new_value > np.iinfo(array.dtype).max:
            raise UserInputError(f"no free label value left in dtype {array.dtype}; relabel sequentially first")
        out[pieces == piece] = new_value
        new_value += 1
    out[pieces == piece_ids[0]] = label_id
    return out


def fill_holes(labels: np.ndarray, label_id: int | None = None) -> np.ndarray:
    """Fill background holes enclosed by an object.

    Parameters
    ----------
    labels : ndarray of int
        Instance labels (holes are filled in nD; for stacks prefer 2D planes).
    label_id : int, optional
        Fill only this object; by default every object.

    Notes
    -----
    Only background pixels are filled; a different object sitting inside a
    ring-shaped one is kept.

    """
    array = _check_labels(labels)
    out = array.copy()
    boxes = ndi.find_objects(array)
    for value, box in enumerate(boxes, start=1):
        if box is None or (label_id is not None and value != label_id):
            continue
        region = array[box]
        filled = ndi.binary_fill_holes(region == value)
        out[box][filled & (region == 0)] = value
    return out


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Renumber objects 1..N in order of their current values (background stays 0)."""
    array = _check_labels(labels)
    relabelled, _, _ = _relabel_sequential(array)
    return relabelled.astype(array.dtype, copy=False)


def changed_pixels(old: np.ndarray, new: np.ndarray) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Return the indices and new values where ``new`` differs from ``old``.

    Returns
    -------
    indices : tuple of ndarray
        One integer array per axis (numpy fancy index), as napari's
        ``Labels.data_setitem`` expects.
    values : ndarray
        ``new[indices]``.

    """
    old_array, new_array = np.asarray(old), np.asarray(new)
    if old_array.shape != new_array.shape:
        raise UserInputError(f"labels changed shape from {old_array.shape} to {new_array.shape}")
    indices = np.nonzero(old_array != new_array)
    return indices, new_array[indices]

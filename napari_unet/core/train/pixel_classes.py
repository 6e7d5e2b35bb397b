"""Instance labels -> training targets and per-pixel loss weights.

The network's head predicts three classes per pixel (see
:mod:`napari_unet.core.models.network`): 0 background, 1 interior, 2 boundary.
:func:`labels_to_classes` builds that target from an instance label image (it is
the definition; :func:`labels_to_classes_torch` computes the same classes for a
batch of torch label images on any device, for training on a GPU);
:func:`loss_weights` says which pixels the user actually reviewed (weight 0 =
ignored by the loss) and up-weights the pixels they corrected.

Annotation modes
----------------
``full``
    Every pixel was reviewed and counts.
``rois``
    Only pixels inside the given rectangles ``(y0, x0, y1, x1)`` (half-open)
    or polygons (``(N, 2)`` arrays of ``(y, x)`` vertices) count.
``changed``
    Only pixels where the corrected labels differ from the previous
    prediction count, plus a margin of ``margin`` pixels around them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import polygon as draw_polygon
from skimage.segmentation import find_boundaries

from napari_unet.core.errors import UserInputError

if TYPE_CHECKING:  # torch is imported where it is used, so that importing this module stays light
    import torch

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
ANNOTATION_MODES = ("full", "rois", "changed")

Roi = Sequence[float] | np.ndarray


def check_labels(labels: np.ndarray, name: str = "labels", ndim: int = 2) -> np.ndarray:
    """Return ``labels`` as an integer array of ``ndim`` dimensions or raise a clear error.

    Parameters
    ----------
    labels : array (Y, X), or (Z, Y, X) with ``ndim=3``
        Instance labels: 0 = background, every other value one object.
    name : str
        How the array is called in error messages.
    ndim : int
        2 for an image, 3 for a volume.

    """
    labels = np.asarray(labels)
    if labels.ndim != ndim:
        axes = "(Y, X)" if ndim == 2 else "(Z, Y, X)"
        raise UserInputError(f"{name} must be a {ndim}D {axes} label image, got shape {labels.shape}")
    if labels.dtype == bool:
        return labels.astype(np.int64)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or not np.all(np.mod(labels, 1) == 0):
            raise UserInputError(f"{name} must hold integer instance ids, got dtype {labels.dtype}")
        labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise UserInputError(f"{name} holds negative values; instance ids must be >= 0 (0 = background)")
    return labels


def labels_to_classes(labels: np.ndarray, boundary_width: int = 1) -> np.ndarray:
    """Convert instance labels to the 3-class target of the network.

    Parameters
    ----------
    labels : array (Y, X) or (Z, Y, X) of int
        Instance labels (0 = background) of an image or a volume.
    boundary_width : int
        Thickness in pixels of the inner rim marked as boundary (1 or 2).

    Returns
    -------
    array (Y, X) or (Z, Y, X) of int64
        0 background, 1 interior, 2 boundary.  The boundary is the inner rim of
        every instance (in 3D, its outer voxels along Z, Y and X), so two
        touching nuclei are separated by boundary pixels.  An object too
        small to keep any interior keeps its most central pixel(s) as
        interior, so it still gets a watershed seed.

    """
    labels = check_labels(labels, ndim=3 if np.ndim(labels) == 3 else 2)
    classes = np.zeros(labels.shape, dtype=np.int64)
    foreground = labels > 0
    boundary = find_boundaries(labels, mode="inner")
    for _ in range(max(0, boundary_width - 1)):
        inner = labels * ~boundary
        boundary |= find_boundaries(inner, mode="inner") & foreground
    boundary &= foreground
    classes[foreground] = INTERIOR
    classes[boundary] = BOUNDARY
    _restore_tiny_interiors(labels, classes)
    return classes


def _restore_tiny_interiors(labels: np.ndarray, classes: np.ndarray) -> None:
    """Mark the most central pixel(s) of objects without interior as interior (in place)."""
    present = np.unique(labels[labels > 0])
    with_interior = np.unique(labels[classes == INTERIOR])
    missing = np.setdiff1d(present, with_interior, assume_unique=True)
    if missing.size == 0:
        return
    slices = ndi.find_objects(labels)
    for label_id in missing:
        window = slices[label_id - 1]
        mask = labels[window] == label_id
        distance = ndi.distance_transform_edt(np.pad(mask, 1))[(slice(1, -1),) * mask.ndim]
        centre = mask & (distance == distance.max())
        classes[window][centre] = INTERIOR


def labels_to_classes_torch(labels: torch.Tensor) -> torch.Tensor:
    """:func:`labels_to_classes` with ``boundary_width=1`` for a batch of 2D label images, in torch.

    Gives exactly ``labels_to_classes(labels[i])`` for every sample ``i``, on the
    device of ``labels``, without a Python loop over objects and without
    synchronising the device (no data-dependent shapes), so a training loop on
    a GPU can build its targets where its augmented labels already are.

    With a boundary of width 1 the tiny-object rule of :func:`labels_to_classes`
    simplifies: every pixel of an object without interior is a boundary pixel,
    so it has a 4-neighbour outside the object and its distance to the
    object's edge is 1, the object's largest.  All its pixels are therefore
    its "most central" ones, and the whole object becomes interior.  What is
    left to compute is, per sample and id, whether the id has any interior
    pixel: ids are grouped by sorting each sample's pixels (ids of any size,
    also disconnected pieces of one id, need no relabelling).

    Parameters
    ----------
    labels : tensor (N, Y, X) of int or bool
        Instance labels (0 = background, ids >= 0; not checked, to keep the
        device unsynchronised) of ``N`` 2D images.  Only ``boundary_width=1``
        and 2D images are supported; use :func:`labels_to_classes` for others.

    Returns
    -------
    tensor (N, Y, X) of int64
        0 background, 1 interior, 2 boundary, on the device of ``labels``.

    """
    import torch

    if labels.ndim != 3:
        raise UserInputError(f"labels must be a (N, Y, X) batch of 2D label images, got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise UserInputError(f"labels must hold integer instance ids, got dtype {labels.dtype}")
    if labels.dtype not in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        labels = labels.to(torch.int64)  # bool, and the unsigned types torch supports only partly
    count, height, width = labels.shape
    # inner rim: a pixel with a 4-neighbour of another id (pixels beyond the image edge repeat it, as the
    # reflecting dilation and erosion of skimage's find_boundaries do)
    differs = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    vertical = labels[:, 1:] != labels[:, :-1]
    differs[:, 1:] |= vertical
    differs[:, :-1] |= vertical
    horizontal = labels[:, :, 1:] != labels[:, :, :-1]
    differs[:, :, 1:] |= horizontal
    differs[:, :, :-1] |= horizontal
    foreground = labels > 0
    interior = (foreground & ~differs).reshape(count, -1)
    # which ids have an interior pixel: sort each sample's pixels by id, number the runs of equal ids
    # (one number per sample and id, below count * Y * X) and take the largest "interior" of each run
    values, order = torch.sort(labels.reshape(count, -1), dim=1)
    new_run = torch.ones(values.shape, dtype=torch.bool, device=labels.device)
    new_run[:, 1:] = values[:, 1:] != values[:, :-1]
    offsets = torch.arange(count, device=labels.device, dtype=torch.int64)[:, None] * (height * width)
    run = (torch.cumsum(new_run, dim=1) - 1 + offsets).reshape(-1)
    sorted_interior = torch.gather(interior, 1, order).reshape(-1).to(torch.int32)
    has_interior = torch.zeros(count * height * width, dtype=torch.int32, device=labels.device)
    has_interior.scatter_reduce_(0, run, sorted_interior, reduce="amax")
    keeps_rim = torch.empty_like(order, dtype=torch.bool).scatter_(1, order, (has_interior[run] > 0).reshape(count, -1))
    boundary = foreground & differs & keeps_rim.reshape(labels.shape)
    return foreground.to(torch.int64) + boundary.to(torch.int64)


def rasterize_rois(rois: Sequence[Roi], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise rectangles and polygons to a boolean mask.

    Parameters
    ----------
    rois : sequence
        Each item is a rectangle ``(y0, x0, y1, x1)`` (half-open, pixels) or a
        polygon: an ``(N, 2)`` array of ``(y, x)`` vertices with ``N >= 3``
        (napari Shapes data; a rectangle drawn in napari is a 4-vertex polygon).
    shape : (int, int)
        ``(Y, X)`` of the image.

    Returns
    -------
    array (Y, X) of bool
        True inside any ROI (clipped to the image).

    """
    mask = np.zeros(shape, dtype=bool)
    for index, roi in enumerate(rois):
        array = np.asarray(roi, dtype=float)
        if array.shape == (4,):
            y0, x0, y1, x1 = (int(v) for v in np.rint(array))
            mask[max(0, min(y0, y1)) : max(0, max(y0, y1)), max(0, min(x0, x1)) : max(0, max(x0, x1))] = True
        elif array.ndim == 2 and array.shape[1] == 2 and array.shape[0] >= 3:
            rows, cols = draw_polygon(array[:, 0], array[:, 1], shape=shape)
            mask[rows, cols] = True
        else:
            raise UserInputError(
                f"ROI {index} has shape {array.shape}; give rectangles as (y0, x0, y1, x1) "
                "or polygons as (N, 2) arrays of (y, x) vertices"
            )
    return mask


def changed_pixels(labels: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Pixels whose class (background / interior / boundary) differs from the previous prediction.

    Comparing classes rather than raw ids means renumbering an object is not a
    correction, while painting, erasing, merging and splitting are.

    Parameters
    ----------
    labels, previous : array (Y, X) of int
        Corrected labels and the prediction they were corrected from.

    Returns
    -------
    array (Y, X) of bool

    """
    return labels_to_classes(labels) != labels_to_classes(previous)


def loss_weights(
    labels: np.ndarray,
    mode: str = "full",
    rois: Sequence[Roi] | None = None,
    previous: np.ndarray | None = None,
    margin: int = 8,
    corrected_weight: float = 2.0,
) -> np.ndarray:
    """Per-pixel loss weights for one annotated image.

    Parameters
    ----------
    labels : array (Y, X) of int
        Corrected instance labels.
    mode : {"full", "rois", "changed"}
        Which pixels count (see the module docstring).
    rois : sequence, optional
        Rectangles / polygons for ``mode="rois"`` (see :func:`rasterize_rois`).
    previous : array (Y, X) of int, optional
        The prediction the user corrected; required for ``mode="changed"``.
        When given, corrected pixels get ``corrected_weight``.
    margin : int
        Pixels around corrected areas that also count in ``changed`` mode.
    corrected_weight : float
        Weight of corrected pixels (others that count weigh 1).

    Returns
    -------
    array (Y, X) of float32
        0 = ignored by the loss.

    Raises
    ------
    UserInputError
        Unknown mode, missing ``rois`` / ``previous``, shape mismatch, labels
        that are all one value (outside ``changed`` mode, where erasing every
        object is a real correction), or no pixel left to learn from.

    """
    labels = check_labels(labels)
    if mode not in ANNOTATION_MODES:
        raise UserInputError(f"unknown annotation mode {mode!r}; use one of {ANNOTATION_MODES}")
    corrected = None
    if previous is not None:
        previous = check_labels(previous, "previous prediction")
        if previous.shape != labels.shape:
            raise UserInputError(
                f"previous prediction has shape {previous.shape} but labels have shape {labels.shape}; "
                "pass the prediction of the same image"
            )
        corrected = changed_pixels(labels, previous)
    if mode != "changed":
        _check_not_uniform(labels)
    counted = _counted_pixels(labels, mode, rois, corrected, margin)
    if not counted.any():
        raise UserInputError(_nothing_counts_message(mode))
    weights = counted.astype(np.float32)
    if corrected is not None:
        weights[corrected & counted] = float(corrected_weight)
    return weights


def _check_not_uniform(labels: np.ndarray) -> None:
    if labels.size == 0 or labels.min() == labels.max():
        value = int(labels.flat[0]) if labels.size else 0
        raise UserInputError(
            f"the labels are all one value ({value}): label at least one nucleus (and leave background as 0)"
        )


def _counted_pixels(
    labels: np.ndarray,
    mode: str,
    rois: Sequence[Roi] | None,
    corrected: np.ndarray | None,
    margin: int,
) -> np.ndarray:
    if mode == "full":
        return np.ones(labels.shape, dtype=bool)
    if mode == "rois":
        if rois is None or len(rois) == 0:
            raise UserInputError("annotation mode 'rois' needs at least one ROI: draw a rectangle or polygon")
        return rasterize_rois(rois, labels.shape)
    if corrected is None:
        raise UserInputError(
            "annotation mode 'changed' needs the previous prediction to see what you corrected; "
            "pass it, or use mode 'full'"
        )
    if not corrected.any() or margin <= 0:
        return corrected
    return ndi.distance_transform_edt(~corrected) <= margin


def _nothing_counts_message(mode: str) -> str:
    if mode == "rois":
        return "no pixel lies inside the ROIs: draw the ROIs over the image you annotated"
    if mode == "changed":
        return "the labels do not differ from the previous prediction: correct some objects first, or use mode 'full'"
    return "the image is empty: nothing to learn from"

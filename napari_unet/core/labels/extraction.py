"""Network probabilities to instance labels for planes and stacks (2D and 3D prediction both use it)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from napari_unet.core.config import PostprocessConfig
from napari_unet.core.errors import UserInputError
from napari_unet.core.labels.chunked import labels_in_chunks
from napari_unet.core.labels.postprocess import link_slices, probabilities_to_labels, relabel_stack_unique
from napari_unet.core.progress import check_cancel

LINK_MIN_IOU = 0.3
"""IoU above which objects of consecutive z-slices are linked into one 3D object."""


LABEL_AXES = ("YX", "ZYX", "TYX")


def labels_from_probabilities(
    probabilities: np.ndarray,
    axes: str,
    postprocess: PostprocessConfig,
    cancel: Callable[[], bool] | None = None,
    volumetric: bool = False,
    workers: int = 0,
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
    workers : int
        Threads that post-process a large ``"YX"`` plane in chunks
        (:func:`~napari_unet.core.labels.chunked.labels_in_chunks`; 0: one per core).

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
        return labels_in_chunks(probabilities, postprocess, workers, cancel=cancel)
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

"""Preparing training data, the same for ``napari-unet train``, the Fine-tune panel and the Python API.

- :func:`rescale_training_data`: resize training pairs (and their ROIs) by a factor, as
  ``InferenceConfig.scale`` resizes images before the network;
- :func:`add_synthetic_images`: append synthetic images with exact labels (napari-unet's generator);
- :func:`record_training_diameters`: store the training nuclei's diameters in a model's metadata (what
  ``--scale auto`` and the Segment panel's Estimate aim for), unless the model inherited them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_unet.core.config import MAX_SCALE, MIN_SCALE
from napari_unet.core.errors import UserInputError

SYNTHETIC_SHAPE = (256, 256)
SYNTHETIC_NUCLEI = 30
SYNTHETIC_SEED = 10_000
"""Synthetic training images use seeds from here (benchmarks use lower ones, so they never train on them)."""


def rescale_training_data(
    images: Sequence[np.ndarray], labels: Sequence[np.ndarray], rois: Sequence[Any] | None, scale: float
) -> tuple[list[np.ndarray], list[np.ndarray], list[Any] | None]:
    """Resize 2D training pairs (and their ROIs) by ``scale``.

    Parameters
    ----------
    images : sequence of arrays (Y, X) or (Y, X, C)
        Training images.
    labels : sequence of int arrays (Y, X)
        Their instance labels.
    rois : sequence of ROI lists, optional
        Per image, its reviewed rectangles / polygons (resized with it).
    scale : float
        Factor, in ``[MIN_SCALE, MAX_SCALE]``.

    Returns
    -------
    images, labels, rois
        Resized (bilinear images, nearest-neighbour labels, mapped ROI vertices).

    Raises
    ------
    UserInputError
        For a factor out of range or labels that are not 2D.

    """
    from napari_unet.core.predict.object_size import rescale_training_plane

    if not MIN_SCALE <= scale <= MAX_SCALE:
        raise UserInputError(f"the scale must be in [{MIN_SCALE}, {MAX_SCALE}], got {scale}")
    if any(np.ndim(lab) != 2 for lab in labels):
        raise UserInputError("resizing training data needs 2D images: give one plane per image file")
    planes = [
        rescale_training_plane(image, lab, scale, rois=None if rois is None else rois[index])
        for index, (image, lab) in enumerate(zip(images, labels, strict=True))
    ]
    scaled_rois = None if rois is None else [plane[3] for plane in planes]
    return [plane[0] for plane in planes], [plane[1] for plane in planes], scaled_rois


def add_synthetic_images(
    images: list[np.ndarray], labels: list[np.ndarray], rois: list[Any] | None, count: int, seed: int = 0
) -> None:
    """Append ``count`` synthetic images (alternating fluorescence and H&E-like brightfield) with exact labels.

    With ROIs, each synthetic image gets one covering it whole (its labels are exact everywhere).
    The lists are extended in place.
    """
    from napari_unet.core.data.synthetic import synthetic_nuclei

    for index in range(count):
        kind = "fluorescence" if index % 2 == 0 else "brightfield"
        image, label = synthetic_nuclei(
            shape=SYNTHETIC_SHAPE, n_nuclei=SYNTHETIC_NUCLEI, seed=SYNTHETIC_SEED + seed * 1000 + index, kind=kind
        )
        images.append(image)
        labels.append(label)
        if rois is not None:
            rois.append([(0, 0, *label.shape)])


def record_training_diameters(bundle: Any, images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> None:
    """Store the training nuclei's diameters and how the model measures them in ``bundle.metadata``.

    Nothing happens when the model already has a record (a fine-tuned child inherits its parent's).
    Measuring costs a few quick passes per training image.
    """
    from napari_unet.core.predict.object_size import METADATA_KEY, DiameterRange, diameter_range_of, measurement_bias

    if METADATA_KEY in bundle.metadata:
        return
    record = diameter_range_of(labels)
    target = DiameterRange(record["low"], record["high"])
    record["measured_over_true"] = measurement_bias(bundle, list(images), list(labels), target)
    bundle.metadata[METADATA_KEY] = record

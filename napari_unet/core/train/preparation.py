"""Preparing training data, the same for ``napari-unet train``, the Fine-tune panel and the Python API.

- :func:`rescale_training_data`: resize training pairs (and their ROIs) by a factor, as
  ``InferenceConfig.scale`` resizes images before the network;
- :func:`add_synthetic_images`: append synthetic images with exact labels (napari-unet's generator);
- :func:`record_training_diameters`: store the training nuclei's diameters in a model's metadata (what
  ``--scale auto`` and the Segment panel's Estimate aim for), unless the model inherited them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def size_advice(
    metadata: Mapping[str, Any], labels: Sequence[np.ndarray], annotated: Sequence[np.ndarray]
) -> dict[str, float] | None:
    """Advise a resize when the corrected nuclei are larger or smaller than those the model learned.

    A model fine-tuned on nuclei far outside its training sizes learns little
    from them (nuclei wider than the training patches never fit one whole),
    and segmenting and fine-tuning at a scale that brings them into range
    does better (``benchmarks/results/size_advice.json``).  The corrected
    nuclei's true diameters are known, so no estimate is needed.

    Parameters
    ----------
    metadata : mapping
        The starting model's metadata; without a recorded training-diameter
        range (:data:`~napari_unet.core.predict.object_size.METADATA_KEY`) there is no advice.
    labels : sequence of int arrays (Y, X)
        Instance labels of the training images, at the size they are fine-tuned at.
    annotated : sequence of bool arrays (Y, X)
        Pixels that count in each image; a nucleus counts when mostly inside them.

    Returns
    -------
    dict or None
        ``diameter`` and ``nuclei`` (:func:`corrected_diameter`), the model's
        range ``low`` / ``high`` and ``factor``, the resize that brings the
        diameter into it (as the Segment panel's Estimate rounds it); None
        when the nuclei are within a factor 1.25 of the range, too few, or
        the model records no range.

    """
    from napari_unet.core.predict.object_size import METADATA_KEY, DiameterRange

    measured = corrected_diameter(labels, annotated) if METADATA_KEY in metadata else None
    if measured is None:
        return None
    diameter, nuclei = measured
    learned = DiameterRange.of_model(metadata)
    factor = learned.scale_for(diameter)
    if factor == 1.0:
        return None
    return {
        "diameter": round(diameter, 1),
        "nuclei": nuclei,
        "low": learned.low,
        "high": learned.high,
        "factor": factor,
    }


def corrected_diameter(labels: Sequence[np.ndarray], annotated: Sequence[np.ndarray]) -> tuple[float, int] | None:
    """Median diameter (pixels) of the counted nuclei of all images, and how many were counted.

    Parameters
    ----------
    labels : sequence of int arrays (Y, X)
        Instance labels.
    annotated : sequence of bool arrays (Y, X)
        Pixels that count in each image; a nucleus counts when mostly inside them.

    Returns
    -------
    (float, int) or None
        The median equivalent-circle diameter of the counted nuclei not cut by
        an image border (of all counted ones when fewer than 3 are whole) and
        their number; None with fewer than 3.

    """
    from skimage.segmentation import clear_border

    from napari_unet.core.predict.object_size import MIN_OBJECTS, object_diameters
    from napari_unet.core.train.validation import keep_annotated

    counted = [keep_annotated(np.asarray(label), mask) for label, mask in zip(labels, annotated, strict=True)]
    diameters = np.concatenate([object_diameters(clear_border(label)) for label in counted])
    if diameters.size < MIN_OBJECTS:
        diameters = np.concatenate([object_diameters(label) for label in counted])
    if diameters.size < MIN_OBJECTS:
        return None
    return float(np.median(diameters)), int(diameters.size)


def size_advice_text(advice: Mapping[str, float]) -> str:
    """One sentence for the user from :func:`size_advice`'s record."""
    relation = "larger" if advice["factor"] < 1 else "smaller"
    return (
        f"the corrected nuclei are {advice['diameter']:.0f} px across (median of {advice['nuclei']:.0f}), "
        f"{relation} than the {advice['low']:.0f}-{advice['high']:.0f} px nuclei this model learned, so it learns "
        f"little from them at this size: segment and fine-tune with the images resized by {advice['factor']:g} "
        "(the Segment panel's Estimate; --scale for napari-unet train)"
    )

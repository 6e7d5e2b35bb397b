"""Object sizes: the nucleus diameters a model was trained on, and the resize factor that fits an image to them.

A UNet segments nuclei well only near the sizes it was trained on: much
smaller nuclei merge or vanish, much larger ones break into fragments.
``InferenceConfig.scale`` resizes an image before the network to fix that.
This module chooses the factor:

- :class:`DiameterRange` is the span of typical nucleus diameters (pixels) in
  a model's training images, kept in ``model.json`` as
  ``metadata["object_diameter"]`` (:func:`diameter_range_of`).  Models without
  it get :data:`DEFAULT_DIAMETER_RANGE`.
- :meth:`DiameterRange.scale_for` turns a nucleus diameter the user knows
  into a factor: 1 inside the range, else the factor that brings the diameter
  to its nearest end.
- :func:`estimate_scale` measures the diameter itself (Cellpose's automatic
  diameter, done with the segmentation model): it segments a central window
  of the image at half size, where large nuclei are whole, and again at the
  suggested size when the nuclei turned out small, then applies ``scale_for``
  to the median diameter found.

Diameters are those of the circle with an object's area.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from skimage.segmentation import clear_border

from napari_unet.core.config import InferenceConfig, PostprocessConfig
from napari_unet.core.data.normalize import infer_axes
from napari_unet.core.errors import UserInputError

METADATA_KEY = "object_diameter"
"""Key of the training diameters in a model's metadata."""

DEFAULT_DIAMETER_RANGE = (12.0, 40.0)
"""``(low, high)`` diameters (pixels) assumed for models that do not record theirs."""

MIN_AUTO_SCALE = 0.25
MAX_AUTO_SCALE = 4.0
"""Bounds of the factors :meth:`DiameterRange.scale_for` returns."""

KEEP_SCALE_WITHIN = 1.25
"""Factors between ``1 / KEEP_SCALE_WITHIN`` and ``KEEP_SCALE_WITHIN`` become 1 (not worth a resize)."""

FIRST_PASS_SCALE = 0.5
"""Size of the first estimation pass: large nuclei are whole there and it costs a quarter."""

WINDOW_PIXELS = 1024
"""Longest edge (network pixels) of the central window an estimation pass segments."""

MIN_OBJECTS = 3
"""Objects a pass must find for its median diameter to count."""

MAX_PASSES = 4
"""Segmentation passes :func:`estimate_scale` may run."""


@dataclass(frozen=True)
class DiameterRange:
    """Typical nucleus diameters (pixels) of a model's training images.

    Attributes
    ----------
    low, high : float
        Ends of the range (e.g. the 10th and 90th percentiles of the training
        images' median diameters); ``0 < low <= high``.
    measured_over_true : float
        How much larger :func:`estimate_scale` measures nuclei than they are
        annotated (median over the training images; predicted outlines are a
        little wider than drawn ones).  Measurements are divided by it.

    """

    low: float
    high: float
    measured_over_true: float = 1.0

    def __post_init__(self) -> None:
        if not (0 < self.low <= self.high) or not math.isfinite(self.high):
            raise UserInputError(f"diameter range must satisfy 0 < low <= high; got {self.low}, {self.high}")
        if not 0.5 <= self.measured_over_true <= 2.0:
            raise UserInputError(f"measured_over_true must be in [0.5, 2], got {self.measured_over_true}")

    @classmethod
    def of_model(cls, metadata: Mapping[str, Any]) -> DiameterRange:
        """Return the range recorded in a model's ``metadata``, else :data:`DEFAULT_DIAMETER_RANGE`."""
        recorded = metadata.get(METADATA_KEY)
        if isinstance(recorded, Mapping) and {"low", "high"} <= recorded.keys():
            bias = float(recorded.get("measured_over_true", 1.0))
            return cls(float(recorded["low"]), float(recorded["high"]), bias)
        return cls(*DEFAULT_DIAMETER_RANGE)

    def scale_for(self, diameter: float) -> float:
        """Resize factor that brings nuclei of ``diameter`` pixels into the range.

        Parameters
        ----------
        diameter : float
            Typical nucleus diameter in the image (pixels, > 0).

        Returns
        -------
        float
            1 inside the range; ``low / diameter`` below it, ``high / diameter``
            above it; clipped to [:data:`MIN_AUTO_SCALE`, :data:`MAX_AUTO_SCALE`]
            and rounded to 2 decimals, and 1 when within a factor of
            :data:`KEEP_SCALE_WITHIN` of 1.

        """
        if not diameter > 0:
            raise UserInputError(f"the nucleus diameter must be a positive number of pixels, got {diameter}")
        scale = 1.0
        if diameter < self.low:
            scale = self.low / diameter
        elif diameter > self.high:
            scale = self.high / diameter
        return settled_scale(scale)


def settled_scale(scale: float) -> float:
    """Return a resize factor as Estimate gives it.

    Parameters
    ----------
    scale : float
        Any positive factor.

    Returns
    -------
    float
        1 within a factor of :data:`KEEP_SCALE_WITHIN` of 1 (not worth a resize); else ``scale``
        clipped to [:data:`MIN_AUTO_SCALE`, :data:`MAX_AUTO_SCALE`] and rounded to 2 decimals.

    """
    if 1 / KEEP_SCALE_WITHIN < scale < KEEP_SCALE_WITHIN:
        return 1.0
    return round(min(MAX_AUTO_SCALE, max(MIN_AUTO_SCALE, scale)), 2)


def object_diameters(labels: np.ndarray) -> np.ndarray:
    """Equivalent-circle diameters of the objects of a label image.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer instance labels of any shape (0 is background).

    Returns
    -------
    numpy.ndarray
        float64 ``(N,)``, one diameter (pixels) per present object.

    """
    areas = np.bincount(np.asarray(labels).ravel().astype(np.int64, copy=False))[1:]
    return np.sqrt(areas[areas > 0] * (4.0 / np.pi))


def median_diameter(labels: np.ndarray, min_objects: int = MIN_OBJECTS) -> float | None:
    """Median equivalent-circle diameter (pixels) of the objects of ``labels (Y, X)``.

    Objects cut by the image border are left out when at least ``min_objects``
    others remain.  Returns ``None`` with fewer than ``min_objects`` objects.
    """
    inner = clear_border(np.asarray(labels))
    diameters = object_diameters(inner)
    if len(diameters) < min_objects:
        diameters = object_diameters(labels)
    if len(diameters) < min_objects:
        return None
    return float(np.median(diameters))


def diameter_range_of(
    label_images: Iterable[np.ndarray], low_percentile: float = 10, high_percentile: float = 90
) -> dict[str, float | int]:
    """Training-diameter record for a model's metadata (see :data:`METADATA_KEY`).

    Parameters
    ----------
    label_images : iterable of numpy.ndarray
        Training labels, each ``(Y, X)`` (stacks count plane by plane).
    low_percentile, high_percentile : float
        Percentiles of the per-image median diameters that become the ends.

    Returns
    -------
    dict
        ``{"low", "median", "high", "images"}`` (pixels, rounded to 0.1).

    Raises
    ------
    UserInputError
        If no image holds an object.

    """
    medians = []
    for labels in label_images:
        planes = np.asarray(labels).reshape(-1, *np.shape(labels)[-2:])
        medians.extend(d for d in (median_diameter(plane, min_objects=1) for plane in planes) if d is not None)
    if not medians:
        raise UserInputError("the training labels hold no object, so their nucleus diameters are unknown")
    low, median, high = (round(float(v), 1) for v in np.percentile(medians, [low_percentile, 50, high_percentile]))
    return {"low": low, "median": median, "high": high, "images": len(medians)}


def measurement_bias(
    bundle: Any, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], target: DiameterRange
) -> float:
    """Median ratio of the diameter :func:`estimate_scale` measures to the annotated one, over training pairs.

    Parameters
    ----------
    bundle : ModelBundle
        The trained model.
    images, labels : sequences of numpy.ndarray
        Training pairs: ``(Y, X)`` or ``(Y, X, C)`` images and ``(Y, X)`` labels.
    target : DiameterRange
        The training range (its own ``measured_over_true`` is ignored).

    Returns
    -------
    float
        The ratio, clipped to [0.8, 1.25]; 1 when no pair gives both diameters.

    """
    raw = DiameterRange(target.low, target.high)
    ratios = []
    for image, truth in zip(images, labels, strict=True):
        true_diameter = median_diameter(np.asarray(truth)) if np.ndim(truth) == 2 else None
        if true_diameter is None:
            continue
        measured = estimate_scale(image, bundle, "YXC" if np.ndim(image) == 3 else "YX", target=raw).diameter
        if measured is not None:
            ratios.append(measured / true_diameter)
    return round(float(np.clip(np.median(ratios), 0.8, 1.25)), 3) if ratios else 1.0


@dataclass(frozen=True)
class SizeEstimate:
    """Result of :func:`estimate_scale`.

    Attributes
    ----------
    scale : float
        Factor for ``InferenceConfig.scale``.
    diameter : float or None
        Median nucleus diameter measured (image pixels); ``None`` when no pass
        found :data:`MIN_OBJECTS` nuclei (``scale`` is then 1).
    passes : tuple of (float, float or None)
        ``(scale, diameter)`` of every segmentation pass, in order.

    """

    scale: float
    diameter: float | None
    passes: tuple[tuple[float, float | None], ...]

    def describe(self) -> str:
        """One line for the user, e.g. ``nucleus diameter about 8.2 px -> scale 1.46``."""
        if self.diameter is None:
            return "found too few nuclei to measure their size; scale 1"
        return f"nucleus diameter about {self.diameter:.1f} px -> scale {self.scale:g}"


def estimate_scale(
    image: Any,
    bundle: Any,
    axes: str | None = None,
    inference: InferenceConfig | None = None,
    postprocess: PostprocessConfig | None = None,
    cancel: Callable[[], bool] | None = None,
    target: DiameterRange | None = None,
) -> SizeEstimate:
    """Measure the nuclei of ``image`` with the model and choose ``InferenceConfig.scale``.

    Parameters
    ----------
    image : array-like
        An image :func:`~napari_unet.core.predict.segment.predict` accepts; NumPy,
        dask and zarr arrays are read only in the central window (of the
        middle plane of a stack).
    bundle : ModelBundle
        The model; its ``metadata["object_diameter"]`` gives the target range.
    axes : str, optional
        Axis order of ``image`` (guessed when omitted).
    inference : InferenceConfig, optional
        Device and tiling of the passes (its ``scale`` and augmentations are ignored).
    postprocess : PostprocessConfig, optional
        Label extraction of the passes (``bundle.postprocess`` when omitted).
    cancel : callable, optional
        Checked between tiles; raises :class:`~napari_unet.core.errors.Cancelled`.
    target : DiameterRange, optional
        Range and measurement bias to use instead of the model's.

    Returns
    -------
    SizeEstimate
        Diameters divided by ``target.measured_over_true``.

    Notes
    -----
    Pass 1 segments at :data:`FIRST_PASS_SCALE`.  When it finds nuclei that
    are large there (at least ``low`` network pixels across), their size is
    trusted.  Otherwise small nuclei may have merged or vanished at half size,
    so the next pass segments at the factor pass 1 suggests (at least 1).
    Small nuclei look larger than they are when blurred together, so passes
    go on at larger factors while the factor suggested grows by more than
    :data:`KEEP_SCALE_WITHIN` (doubling while nothing is found), up to
    :data:`MAX_PASSES` passes and :data:`MAX_AUTO_SCALE`.  Growing factors
    only: a pass at a larger size than needed breaks large nuclei into pieces
    that look small, which would feed on itself.

    """
    from napari_unet.core.predict.segment import predict

    target = target or DiameterRange.of_model(bundle.metadata)
    plane, plane_axes = _middle_plane(image, axes)
    base = replace(inference or InferenceConfig(), tta=False, multiscale=False)

    def measure(scale: float) -> float | None:
        window = _central_window(plane, plane_axes, round(WINDOW_PIXELS / scale))
        settings = replace(base, scale=scale)
        labels = predict(window, bundle, plane_axes, settings, postprocess, cancel).labels
        measured = median_diameter(labels)
        return None if measured is None else measured / target.measured_over_true

    scale = FIRST_PASS_SCALE
    diameter = measure(scale)
    passes = [(scale, diameter)]
    if diameter is None or diameter * scale < target.low:
        scale = 1.0 if diameter is None else max(1.0, target.scale_for(diameter))
        while len(passes) < MAX_PASSES:
            diameter = measure(scale)
            passes.append((scale, diameter))
            wanted = min(MAX_AUTO_SCALE, 2 * scale) if diameter is None else target.scale_for(diameter)
            if wanted < scale * KEEP_SCALE_WITHIN or scale >= MAX_AUTO_SCALE:
                break
            scale = wanted
    chosen = 1.0 if diameter is None else target.scale_for(diameter)
    return SizeEstimate(chosen, diameter, tuple(passes))


def _middle_plane(image: Any, axes: str | None) -> tuple[Any, str]:
    """Return the middle Z/T plane of ``image`` (a lazy slice) and its axes (``YX``, ``YXC`` or ``CYX``)."""
    image_axes = infer_axes(np.shape(image), axes)
    if image_axes[0] in "ZT":
        return image[np.shape(image)[0] // 2], image_axes[1:]
    return image, image_axes


def central_slices(shape_yx: tuple[int, ...], edge: int) -> tuple[slice, slice]:
    """Return the ``(y, x)`` slices of the central ``edge x edge`` window (or less) of a plane of ``shape_yx``."""
    starts = [max(0, (int(size) - edge) // 2) for size in shape_yx[:2]]
    return tuple(slice(start, start + edge) for start in starts)  # type: ignore[return-value]


def _central_window(plane: Any, axes: str, edge: int) -> np.ndarray:
    """Return the central ``edge x edge`` (at most) window of ``plane``, read into memory (``predict`` validates it)."""
    ys, xs = central_slices(tuple(n for n, a in zip(np.shape(plane), axes, strict=True) if a != "C"), edge)
    index = tuple({"Y": ys, "X": xs, "C": slice(None)}[axis] for axis in axes)
    return np.asarray(plane[index])


# --------------------------------------------------------------------------- training at a scale


def rescale_training_plane(
    image: np.ndarray,
    labels: np.ndarray,
    scale: float,
    previous: np.ndarray | None = None,
    rois: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[np.ndarray] | None]:
    """Resize one training plane the way prediction at ``InferenceConfig.scale`` resizes images.

    A model used at a scale should be fine-tuned at the same scale, so that it
    learns nuclei at the size it will see them.

    Parameters
    ----------
    image : numpy.ndarray
        ``(Y, X)`` or channels-last ``(Y, X, C)``, any numeric dtype.
    labels : numpy.ndarray
        ``(Y, X)`` instance labels.
    scale : float
        Resize factor (1 returns the inputs unchanged).
    previous : numpy.ndarray, optional
        ``(Y, X)`` labels the corrections started from.
    rois : list, optional
        Polygons (``(K, 2)`` arrays of ``(y, x)`` vertices) or rectangles
        ``(y0, x0, y1, x1)`` (half-open pixel edges), as :mod:`~napari_unet.core.train.pixel_classes` takes them.

    Returns
    -------
    image, labels, previous, rois
        ``image`` bilinear (float32, anti-aliased when shrinking), labels
        nearest-neighbour (ids kept), the vertices mapped to the new pixel grid.

    """
    from napari_unet.core.predict.planar import resize_plane, scaled_shape

    if scale == 1:
        return image, labels, previous, rois
    shape = scaled_shape(labels.shape, scale)
    channels_first = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
    resized = resize_plane(channels_first.astype(np.float32), shape)
    image_out = resized[0] if image.ndim == 2 else np.moveaxis(resized, 0, -1)
    factors = np.array(shape, dtype=np.float64) / np.array(labels.shape, dtype=np.float64)
    rois_out = None if rois is None else [_rescale_roi(roi, factors) for roi in rois]
    previous_out = None if previous is None else _resize_nearest(previous, shape)
    return image_out, _resize_nearest(labels, shape), previous_out, rois_out


def _rescale_roi(roi: Any, factors: np.ndarray) -> Any:
    """Map a rectangle's edges, or a polygon's vertices (pixel centres), onto a grid resized by ``factors (2,)``."""
    array = np.asarray(roi, dtype=np.float64)
    if array.shape == (4,):
        return tuple(array * np.tile(factors, 2))
    return (array + 0.5) * factors - 0.5


def _resize_nearest(labels: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of ``labels (Y, X)`` to ``shape_yx`` (pixel centres aligned; ids kept)."""
    rows, cols = (_nearest_indices(old, new) for old, new in zip(labels.shape, shape_yx, strict=True))
    return labels[np.ix_(rows, cols)]


def _nearest_indices(old_size: int, new_size: int) -> np.ndarray:
    """Source index of each of ``new_size`` pixels resampled from ``old_size`` (``(new_size,)`` intp)."""
    centres = (np.arange(new_size) + 0.5) * (old_size / new_size)
    return np.minimum(centres.astype(np.intp), old_size - 1)

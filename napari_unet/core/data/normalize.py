"""Input checks, axis handling and percentile normalisation.

The engine accepts napari layer data with these axes (napari letters):

========  =====================================================
``YX``    one grey image
``YXC``   one colour / multi-channel image (channels last, as napari RGB)
``CYX``   one multi-channel image, channels first (needs explicit axes)
``ZYX``   a z-stack, segmented slice by slice by a 2D model, as one volume by a 3D one
``TYX``   a time-lapse, segmented frame by frame (needs explicit axes)
``ZYXC``  a colour z-stack
``TYXC``  a colour time-lapse (needs explicit axes)
========  =====================================================

Dtypes: every integer type (``uint8`` ... ``uint64``, signed or not) and
``float16/32/64`` are accepted; they are converted to ``float32`` while
normalising (wide integers and ``float64`` are shifted by the low percentile
in ``float64`` first, so no precision is lost to large offsets).  ``bool``,
complex, object and string arrays are rejected, as are NaN/inf values, empty
and constant images.  RGBA images (4 channels) are accepted: the alpha
channel is dropped and the RGB channels are used, unless the model itself
reads 4 channels.

:func:`normalize_plane` measures a plane's own statistics and applies them.
For images normalised chunk by chunk, :func:`intensity_stats` measures the
statistics once (e.g. on a regular subsample of the whole image) and
:func:`apply_stats` applies that one :class:`IntensityStats` to every chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from napari_unet.core.config import NormalizeConfig
from napari_unet.core.errors import UserInputError

SUPPORTED_AXES = ("YX", "YXC", "CYX", "ZYX", "TYX", "ZYXC", "TYXC")
"""Axis orders the engine understands."""

LUMINANCE_WEIGHTS = (0.2125, 0.7154, 0.0721)
"""ITU-R BT.709 weights used to turn RGB into grey (as ``skimage.color.rgb2gray``)."""

_PERCENTILE_SAMPLE_PIXELS = 2**20
"""Planes with more pixels estimate percentiles on a regular sub-grid of about this many pixels."""

_INVERT_PERCENTILES = (1.0, 50.0, 99.5)
_INVERT_DECISION_FRACTION = 0.5
"""``auto`` inverts when the median sits above this fraction of the [p1, p99.5] brightness range."""


# --------------------------------------------------------------------------- validation


def validate_image(array: Any) -> np.ndarray:
    """Check that ``array`` is an image the engine can segment.

    Parameters
    ----------
    array : array-like
        Layer data with 2 to 4 axes (see the module docstring for the axis
        orders); any integer or float dtype.

    Returns
    -------
    numpy.ndarray
        ``array`` as a NumPy array, unchanged in dtype and shape (no copy when
        ``array`` already is one).

    Raises
    ------
    UserInputError
        For a wrong number of axes, an empty, constant, boolean, complex or
        non-numeric image, or one holding NaN / inf values.

    """
    image = np.asarray(array)
    _check_dtype(image.dtype)
    _check_ndim(image.shape)
    if image.size == 0:
        raise UserInputError(f"The image is empty (shape {image.shape}); open an image with pixels in it.")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise UserInputError(
            "The image contains NaN or infinite values; replace them (e.g. numpy.nan_to_num) before segmenting."
        )
    low, high = image.min(), image.max()
    if low == high and image.size < MIN_IMAGE_SIDE**2:
        raise UserInputError(
            f"The image has only {image.size} pixel(s) (shape {image.shape}); it is too small to hold a nucleus. "
            f"Segmentation needs at least {MIN_IMAGE_SIDE} x {MIN_IMAGE_SIDE} pixels: check the layer."
        )
    if low == high:
        raise UserInputError(
            f"The image is constant (every pixel is {low}); there is nothing to segment. "
            "Check the layer or the channel."
        )
    return image


def _check_dtype(dtype: np.dtype) -> None:
    if dtype.kind == "b":
        raise UserInputError(
            "The image is boolean (a mask?); segmentation needs intensities. "
            "Select the intensity image, or convert the mask with mask.astype('uint8')."
        )
    if dtype.kind == "c":
        raise UserInputError(
            "The image has complex values; pass a real image (e.g. numpy.abs(image) for a magnitude image)."
        )
    if dtype.kind not in "iuf":
        raise UserInputError(f"The image has dtype {dtype}, which is not numeric; pass an integer or float image.")


MIN_IMAGE_SIDE = 2
"""Images narrower than this (pixels, along Y or X) are refused as too small to hold a nucleus.

Larger small images are padded for the network (a 3 x 5 crop still gets labels)."""


def check_image_size(shape: tuple[int, ...], axes: str) -> None:
    """Refuse an image whose planes are smaller than :data:`MIN_IMAGE_SIDE` along Y or X.

    Raises
    ------
    UserInputError
        Saying how small the image is (e.g. a 1 x 1 layer), and what is needed.

    """
    y, x = spatial_shape(shape, axes)[-2:]
    if min(y, x) < MIN_IMAGE_SIDE:
        raise UserInputError(
            f"The image is only {y} x {x} pixels (shape {shape}, axes {axes}); it is too small to hold a nucleus. "
            f"Segmentation needs at least {MIN_IMAGE_SIDE} x {MIN_IMAGE_SIDE} pixels: check the layer (or its axes)."
        )


def _check_ndim(shape: tuple[int, ...]) -> None:
    if len(shape) < 2:
        raise UserInputError(
            f"The image has {len(shape)} axis (shape {shape}); a 2D image (YX) or a stack is needed. "
            "Reshape the data to (Y, X)."
        )
    if len(shape) > 4:
        raise UserInputError(
            f"The image has {len(shape)} axes (shape {shape}); at most 4 are supported ({', '.join(SUPPORTED_AXES)}). "
            "Select one channel, time point or z-slice range first (e.g. image[0])."
        )


# --------------------------------------------------------------------------- axes


def infer_axes(shape: tuple[int, ...], axes: str | None = None) -> str:
    """Return the axis order of an image of ``shape``.

    Parameters
    ----------
    shape : tuple of int
        Shape of the image.
    axes : str, optional
        Explicit axis order (e.g. ``"CYX"``, case-insensitive); it wins over
        guessing and is checked against ``shape``.

    Returns
    -------
    str
        One of :data:`SUPPORTED_AXES`.

    Notes
    -----
    Without ``axes``: 2D -> ``YX``; 3D whose last axis has 3 or 4 entries ->
    ``YXC`` (RGB/RGBA); any other 3D -> ``ZYX``; 4D whose last axis has 3 or
    4 entries -> ``ZYXC``.  Channels-first (``CYX``), time-lapses (``TYX``,
    ``TYXC``) and anything else need explicit ``axes``.

    Raises
    ------
    UserInputError
        If ``axes`` is not supported or does not match ``shape``, or if the
        axes of a 4D image cannot be guessed.

    """
    shape = tuple(int(s) for s in shape)
    _check_ndim(shape)
    if axes is not None:
        return _check_explicit_axes(shape, axes)
    ndim, last = len(shape), shape[-1]
    if ndim == 2:
        return "YX"
    if ndim == 3:
        return "YXC" if last in (3, 4) else "ZYX"
    if last in (3, 4):
        return "ZYXC"
    raise UserInputError(
        f"Cannot tell the axes of a 4D image of shape {shape}; pass them explicitly, "
        f"e.g. axes='ZYXC' or 'TYXC' (supported: {', '.join(SUPPORTED_AXES)})."
    )


def _check_explicit_axes(shape: tuple[int, ...], axes: str) -> str:
    normalized = str(axes).strip().upper()
    if normalized not in SUPPORTED_AXES:
        raise UserInputError(f"Axes {axes!r} are not supported; use one of {', '.join(SUPPORTED_AXES)}.")
    if len(normalized) != len(shape):
        raise UserInputError(
            f"Axes {axes!r} name {len(normalized)} axes but the image has {len(shape)} (shape {shape}); "
            "give one letter per axis."
        )
    return normalized


def spatial_shape(shape: tuple[int, ...], axes: str) -> tuple[int, ...]:
    """Shape of the labels of an image: ``shape`` without its channel axis.

    Parameters
    ----------
    shape : tuple of int
        Image shape.
    axes : str
        Its axes, one of :data:`SUPPORTED_AXES` (e.g. from :func:`infer_axes`).

    Returns
    -------
    tuple of int
        E.g. ``(Y, X)`` for ``YXC`` and ``CYX`` images, ``(Z, Y, X)`` for ``ZYXC``.

    """
    axes = _check_explicit_axes(tuple(shape), axes)
    return tuple(int(size) for size, axis in zip(shape, axes, strict=True) if axis != "C")


# --------------------------------------------------------------------------- planes


def to_planes(
    image: np.ndarray, axes: str, dtype: np.dtype | type | None = np.float32
) -> tuple[np.ndarray, str | None]:
    """Arrange an image as a stack of channels-last planes.

    Parameters
    ----------
    image : numpy.ndarray
        Image with axes ``axes``.
    axes : str
        One of :data:`SUPPORTED_AXES` (see :func:`infer_axes`).
    dtype : numpy dtype or None
        Output dtype (``float32`` by default); ``None`` keeps the input dtype
        and returns a view (no copy), which is what inference uses.

    Returns
    -------
    planes : numpy.ndarray
        ``(P, Y, X, C)``; ``P`` is 1 for single images, ``C`` is 1 for grey.
    plane_axis : str or None
        ``"Z"`` or ``"T"`` for stacks, ``None`` for single images.

    """
    axes = _check_explicit_axes(image.shape, axes)
    plane_axis = axes[0] if axes[0] in "ZT" else None
    view = image
    if "C" not in axes:
        view = view[..., np.newaxis]
    elif axes == "CYX":
        view = np.moveaxis(view, 0, -1)
    if plane_axis is None:
        view = view[np.newaxis]
    if dtype is not None:
        view = view.astype(dtype, copy=False)
    return view, plane_axis


# --------------------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class IntensityStats:
    """The intensity mapping of :func:`normalize_plane`: ``low`` -> 0, ``high`` -> 1, optionally inverted.

    Measure it once with :func:`intensity_stats` (on a whole plane, or on a
    subsample of an image too large to hold) and apply it to any part of the
    same image with :func:`apply_stats`, so that every chunk sees the same
    intensities.

    Attributes
    ----------
    low, high : float
        Intensities mapped to 0 and 1 (``high <= low``: no range, everything maps to 0).
    invert : bool
        Whether bright maps to 0 and dark to 1 (bright-background images).
    grey_rgb : bool
        Whether the image is an RGB picture of a grey image (see
        :func:`is_grey_rgb`): a 3-channel model then reads its luminance
        three times, exactly as a grey image, and a 1-channel model its
        luminance as always.

    """

    low: float
    high: float
    invert: bool
    grey_rgb: bool = False


def intensity_stats(image: np.ndarray, cfg: NormalizeConfig, in_channels: int) -> IntensityStats:
    """Measure the percentiles and the inversion decision :func:`normalize_plane` would use.

    Parameters
    ----------
    image : numpy.ndarray
        ``(Y, X)`` or ``(Y, X, C)`` intensities: a whole plane, or a regular
        subsample of a large one (e.g. ``image[::k, ::k]``).  Planes above
        about 2**20 pixels are measured on a regular sub-grid.
    cfg : NormalizeConfig
        Percentiles and inversion policy.
    in_channels : int
        Channels the model reads (decides how colour is mapped, see :func:`normalize_plane`).

    Returns
    -------
    IntensityStats

    Raises
    ------
    UserInputError
        If the channel count cannot be mapped onto ``in_channels``.

    """
    plane = _with_channel_axis(image)
    grey_rgb = _is_grey_rgb_plane(plane)
    stats = _channel_stats(_match_channels(plane, in_channels, grey_rgb), cfg, _brightness(plane, grey_rgb))
    return replace(stats, grey_rgb=grey_rgb)


def apply_stats(image: np.ndarray, stats: IntensityStats, in_channels: int) -> np.ndarray:
    """Normalise ``image`` with given statistics instead of its own.

    Parameters
    ----------
    image : numpy.ndarray
        ``(Y, X)`` or ``(Y, X, C)`` intensities (e.g. one chunk of a large image).
    stats : IntensityStats
        From :func:`intensity_stats`.
    in_channels : int
        Channels the model reads.

    Returns
    -------
    numpy.ndarray
        ``(in_channels, Y, X)`` float32, mapped as described in :func:`normalize_plane`.

    Raises
    ------
    UserInputError
        If the channel count cannot be mapped onto ``in_channels``.

    """
    return _scale(_match_channels(_with_channel_axis(image), in_channels, stats.grey_rgb), stats)


def normalize_plane(plane: np.ndarray, cfg: NormalizeConfig, in_channels: int) -> np.ndarray:
    """Convert one plane into the network's input.

    Parameters
    ----------
    plane : numpy.ndarray
        ``(Y, X, C)`` or ``(Y, X)`` intensities of any accepted dtype.
    cfg : NormalizeConfig
        Percentiles and inversion policy.
    in_channels : int
        Channels the model reads.

    Returns
    -------
    numpy.ndarray
        ``(in_channels, Y, X)`` float32, C-contiguous.  The ``low_percentile``
        maps to 0 and the ``high_percentile`` to 1 (values beyond are not
        clipped); with inversion, bright maps to 0 and dark to 1.

    Notes
    -----
    Channels: RGB(A) -> grey (BT.709 luminance) when the model reads 1
    channel; grey is repeated when the model reads 3; RGBA loses its alpha
    channel unless the model reads 4.  The percentiles are taken jointly over
    all channels, which keeps colour ratios.  ``invert="auto"`` inverts when
    the background is bright: the median brightness (most pixels are
    background) lies in the upper half of the 1st-99.5th percentile range.
    Brightness is the intensity of grey planes and the maximum over R, G, B of
    colour planes (HSV value), which sets pink H&E background apart from
    purple nuclei better than luminance does.  A plane with no
    intensity range (a blank slice of a stack) becomes all zeros.
    ``normalize_plane(p, cfg, n)`` equals
    ``apply_stats(p, intensity_stats(p, cfg, n), n)`` (computed in one pass).

    Raises
    ------
    UserInputError
        If the channel count cannot be mapped onto ``in_channels``.

    """
    plane = _with_channel_axis(plane)
    grey_rgb = _is_grey_rgb_plane(plane)
    channels = _match_channels(plane, in_channels, grey_rgb)
    return _scale(channels, _channel_stats(channels, cfg, _brightness(plane, grey_rgb)))


def normalize_volume(volume: np.ndarray, cfg: NormalizeConfig, in_channels: int) -> np.ndarray:
    """Convert a stack into the network's input, with one pair of percentiles for the whole stack.

    Parameters
    ----------
    volume : numpy.ndarray
        ``(Z, Y, X)`` or ``(Z, Y, X, C)`` intensities of any accepted dtype.
    cfg : NormalizeConfig
        Percentiles and inversion policy.
    in_channels : int
        Channels the model reads.

    Returns
    -------
    numpy.ndarray
        ``(in_channels, Z, Y, X)`` float32 (see
        :func:`~napari_unet.core.data.normalize.normalize_plane` for the mapping).

    """
    depth = volume.shape[0]
    as_plane = volume.reshape(depth * volume.shape[1], *volume.shape[2:])  # planes stacked along Y: same pixels
    stats = intensity_stats(as_plane, cfg, in_channels)
    flat = apply_stats(as_plane, stats, in_channels)
    return np.ascontiguousarray(flat.reshape(in_channels, depth, *volume.shape[1:3]))


def _with_channel_axis(image: np.ndarray) -> np.ndarray:
    return image[..., np.newaxis] if image.ndim == 2 else image


def _match_channels(plane: np.ndarray, in_channels: int, grey_rgb: bool = False) -> list[np.ndarray]:
    """Return ``in_channels`` (Y, X) arrays (views where possible) from a (Y, X, C) plane.

    A grey picture saved as RGB (``grey_rgb``) gives its luminance, repeated.
    """
    n = plane.shape[-1]
    if n == 4 and in_channels != 4:
        plane, n = plane[..., :3], 3
    if n == 3 and grey_rgb:
        return [_luminance(plane)] * in_channels
    if n == in_channels:
        return [plane[..., c] for c in range(n)]
    if n == 3 and in_channels == 1:
        return [_luminance(plane)]
    if n == 1:
        return [plane[..., 0]] * in_channels
    raise UserInputError(
        f"The image has {plane.shape[-1]} channels but the model reads {in_channels}; "
        "select the nuclear channel (e.g. image[..., k]) or use a model trained for this channel count."
    )


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.709 luminance ``(Y, X)`` of an RGB ``(Y, X, 3)`` plane (float32, float64 for wide dtypes)."""
    work = np.float64 if _needs_float64(rgb.dtype) else np.float32
    return rgb @ np.asarray(LUMINANCE_WEIGHTS, dtype=work)


def _needs_float64(dtype: np.dtype) -> bool:
    return dtype.itemsize > 4 or (dtype.kind in "iu" and dtype.itemsize > 2)


def _sample(channel: np.ndarray) -> np.ndarray:
    """Return a regular sub-grid view of ``channel`` small enough for fast percentiles."""
    step = math.ceil(math.sqrt(channel.size / _PERCENTILE_SAMPLE_PIXELS)) if channel.size else 1
    return channel[::step, ::step] if step > 1 else channel


def _channel_stats(
    channels: list[np.ndarray], cfg: NormalizeConfig, brightness: np.ndarray | None = None
) -> IntensityStats:
    """Return the statistics of the (model-mapped) channels of one plane.

    ``brightness`` is the (sampled) map the inversion is decided on; ``None``
    (grey planes) means the pooled channels themselves.
    """
    unique = list({id(c): c for c in channels}.values())
    pooled = np.concatenate([_sample(c).ravel() for c in unique]) if len(unique) > 1 else _sample(unique[0])
    decide = cfg.invert == "auto" or (cfg.invert == "auto_gray" and brightness is None)
    if cfg.invert == "auto_gray" and not decide:
        return _stats_without_inversion(pooled, cfg)
    q = [cfg.low_percentile, cfg.high_percentile]
    if decide and brightness is None:
        q += list(_INVERT_PERCENTILES)
    values = [float(v) for v in np.percentile(pooled, q)]
    low, high = values[:2]
    if high <= low:
        low, high = float(pooled.min()), float(pooled.max())
    if not decide:
        return IntensityStats(low, high, cfg.invert == "always")
    if brightness is None:
        return IntensityStats(low, high, _is_bright(*values[2:]))
    return IntensityStats(low, high, _is_bright(*(float(v) for v in np.percentile(brightness, _INVERT_PERCENTILES))))


def _stats_without_inversion(pooled: np.ndarray, cfg: NormalizeConfig) -> IntensityStats:
    low, high = (float(v) for v in np.percentile(pooled, [cfg.low_percentile, cfg.high_percentile]))
    if high <= low:
        low, high = float(pooled.min()), float(pooled.max())
    return IntensityStats(low, high, False)


def _is_bright(dark: float, median: float, bright: float) -> bool:
    return bright > dark and (median - dark) / (bright - dark) > _INVERT_DECISION_FRACTION


def _brightness(plane: np.ndarray, grey_rgb: bool) -> np.ndarray | None:
    """Return the sampled brightness of a (Y, X, C) colour plane (max over RGB, HSV value); None for grey ones."""
    if plane.shape[-1] < 3 or grey_rgb:
        return None
    return _sample(plane)[..., :3].max(axis=-1)


def _is_grey_rgb_plane(plane: np.ndarray) -> bool:
    """Whether a (Y, X, C) plane has 3 or 4 channels whose RGB is grey (see :func:`is_grey_rgb`)."""
    return plane.shape[-1] in (3, 4) and is_grey_rgb(_sample(plane)[..., :3])


GREY_RGB_TOLERANCE = 0.01
"""RGB planes whose channels differ by at most this fraction of their range, on average, count as grey."""


def is_grey_rgb(rgb: np.ndarray) -> bool:
    """Whether an RGB image ``(Y, X, 3)`` is a grey picture: its channels differ by under 1% of its range on average."""
    low, high = float(rgb.min()), float(rgb.max())
    if high <= low:
        return True
    work = rgb.astype(np.float32, copy=False)
    spread = np.abs(work[..., 0] - work[..., 1]).mean() + np.abs(work[..., 1] - work[..., 2]).mean()
    return bool(spread <= GREY_RGB_TOLERANCE * (high - low))


def _scale(channels: list[np.ndarray], stats: IntensityStats) -> np.ndarray:
    """Map ``low`` -> 0 and ``high`` -> 1 (swapped when ``invert``) into a new (C, Y, X) float32 array."""
    low, high = stats.low, stats.high
    out = np.empty((len(channels), *channels[0].shape), dtype=np.float32)
    if high <= low:
        out.fill(0.0)
        return out
    work = np.float64 if _needs_float64(channels[0].dtype) else np.float32
    low_w, high_w = work(low), work(high)  # numpy scalars fix the arithmetic precision (NEP 50)
    for index, channel in enumerate(channels):
        if stats.invert:
            np.subtract(high_w, channel, out=out[index], casting="same_kind")
        else:
            np.subtract(channel, low_w, out=out[index], casting="same_kind")
    out *= np.float32(1.0 / (high - low))
    return out


def is_bright_background(plane: np.ndarray) -> bool:
    """Whether ``normalize_plane`` with ``invert="auto"`` would invert ``plane``.

    Parameters
    ----------
    plane : numpy.ndarray
        ``(Y, X)`` or ``(Y, X, C)`` intensities.

    """
    plane = _with_channel_axis(plane)
    brightness = _brightness(plane, _is_grey_rgb_plane(plane))
    if brightness is None:
        brightness = _sample(plane).mean(axis=-1) if plane.shape[-1] > 1 else _sample(plane[..., 0])
    return _is_bright(*(float(v) for v in np.percentile(brightness, _INVERT_PERCENTILES)))

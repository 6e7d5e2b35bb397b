"""Classical nuclei segmentation baselines to compare the UNet against.

Every method reads the image the way the UNet does
(:mod:`napari_unet.core.data.normalize`): RGB becomes BT.709 luminance, bright
backgrounds (brightfield, H&E: dark nuclei on light) are inverted so nuclei are
bright, and intensities are scaled by percentiles in floating point (16-bit and
float images keep their full precision; nothing is cast to 8 bits).  Then:

``otsu`` / ``li`` / ``local``
    Gaussian smoothing -> global Otsu, global Li, or local (Gaussian-weighted
    mean + ``local_offset``) threshold -> fill holes -> drop objects smaller
    than ``min_size`` -> connected components (4-connectivity).
``watershed``
    The ``otsu`` foreground -> Euclidean distance transform -> one marker per
    distance peak at least ``min_distance`` px apart -> watershed on the negated
    distance inside the foreground: the classic separation of touching nuclei.

Stacks (``ZYX``, ``TYX`` and their colour variants) are segmented slice by
slice; labels are unique over the whole stack.  :func:`segment_volume_baseline`
segments a Z-stack as one volume instead (3D smoothing, threshold, components
and distance-transform watershed, with the Z step taken into account).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_li, threshold_local, threshold_otsu
from skimage.segmentation import relabel_sequential, watershed

from napari_unet.core.config import NormalizeConfig
from napari_unet.core.data.normalize import infer_axes, normalize_plane, normalize_volume, to_planes, validate_image
from napari_unet.core.errors import UserInputError

BASELINE_METHODS: tuple[str, ...] = ("otsu", "li", "local", "watershed")
"""Names accepted by :func:`segment_baseline`."""

VOLUME_BASELINE_METHODS: tuple[str, ...] = ("otsu", "li", "watershed")
"""Names accepted by :func:`segment_volume_baseline`."""

_INVERT_CHOICES = ("auto", "never", "always")
_OTSU_BINS = 1024  # histogram bins on the percentile-scaled float image


def segment_baseline(
    image: Any,
    method: str,
    axes: str | None = None,
    *,
    min_size: int = 15,
    invert: str | bool = "auto",
    block_size: int = 51,
    sigma: float = 1.0,
    local_offset: float = 0.05,
    min_distance: int = 5,
) -> np.ndarray:
    """Segment nuclei with a classical method.

    Parameters
    ----------
    image : array-like
        Layer data with axes ``YX``, ``YXC``, ``CYX``, ``ZYX``, ``TYX``,
        ``ZYXC`` or ``TYXC``; any integer or float dtype.
    method : str
        One of :data:`BASELINE_METHODS`.
    axes : str, optional
        Axis order when it cannot be guessed (see
        :func:`napari_unet.core.data.normalize.infer_axes`).
    min_size : int
        Objects with fewer pixels are removed.
    invert : {"auto", "never", "always"} or bool
        ``auto`` inverts bright-background images so nuclei are bright;
        ``True``/``False`` mean ``always``/``never``.
    block_size : int
        Neighbourhood (pixels, odd; an even value is rounded up) of the
        ``local`` threshold; about 2-3 nucleus diameters.
    sigma : float
        Gaussian smoothing (pixels) before thresholding; 0 disables it.
    local_offset : float
        The ``local`` threshold is the local mean plus this, in units of the
        percentile-scaled intensity (0 = 1st, 1 = 99.8th percentile); it keeps
        flat background from becoming foreground.
    min_distance : int
        ``watershed``: minimum distance (pixels) between two nucleus centres.

    Returns
    -------
    np.ndarray
        int32 instance labels of the spatial shape (``(Y, X)`` or ``(P, Y, X)``
        for stacks; channel axes dropped); 0 is background.

    Raises
    ------
    UserInputError
        For an unknown method, invalid parameters, or an empty, constant or
        non-numeric image.

    """
    method = _check_method(method)
    invert = _check_params(min_size, invert, block_size, sigma, min_distance)
    image = validate_image(image)
    planes, plane_axis = to_planes(image, infer_axes(image.shape, axes), dtype=None)
    normalize = NormalizeConfig(invert=invert)
    labels = np.zeros(planes.shape[:3], dtype=np.int32)
    next_label = 0
    for index, plane in enumerate(planes):
        grey = normalize_plane(plane, normalize, in_channels=1)[0]
        plane_labels = _segment_plane(grey, method, min_size, block_size | 1, sigma, local_offset, min_distance)
        labels[index] = np.where(plane_labels > 0, plane_labels + next_label, 0)
        next_label += int(plane_labels.max())
    return labels if plane_axis is not None else labels[0]


def segment_volume_baseline(
    volume: Any,
    method: str = "watershed",
    *,
    z_spacing: float = 1.0,
    min_size: int = 60,
    sigma: float = 1.0,
    min_distance: int = 5,
) -> np.ndarray:
    """Segment nuclei in a Z-stack as one volume with a classical method.

    Parameters
    ----------
    volume : array-like
        ``(Z, Y, X)`` intensities (bright nuclei; bright backgrounds are inverted as in 2D).
    method : str
        One of :data:`VOLUME_BASELINE_METHODS`: a global ``otsu`` or ``li``
        threshold and 3D connected components, or ``watershed`` (the ``otsu``
        foreground split at peaks of its 3D distance transform).
    z_spacing : float
        Z step in pixel sizes: smoothing and distances are physical.
    min_size : int
        Objects with fewer voxels are removed.
    sigma : float
        In-plane Gaussian smoothing (pixels); along Z it is ``sigma / z_spacing``.
    min_distance : int
        ``watershed``: minimum distance (voxels) between two nucleus centres.

    Returns
    -------
    np.ndarray
        ``(Z, Y, X)`` int32 3D instance labels; 0 is background.

    Raises
    ------
    UserInputError
        For an unknown method, invalid parameters, a non-3D or constant volume.

    """
    name = str(method).strip().lower()
    if name not in VOLUME_BASELINE_METHODS:
        raise UserInputError(f"Unknown 3D baseline {method!r}; choose one of {', '.join(VOLUME_BASELINE_METHODS)}.")
    _check_params(min_size, "auto", 3, sigma, min_distance)
    volume = validate_image(volume)
    if volume.ndim != 3:
        raise UserInputError(f"a 3D baseline needs a (Z, Y, X) stack, got shape {volume.shape}")
    if not z_spacing > 0:
        raise UserInputError(f"z_spacing must be a positive number of pixel sizes, got {z_spacing}")
    grey = normalize_volume(volume, NormalizeConfig(invert="auto"), in_channels=1)[0]
    if not grey.max() > grey.min():
        raise UserInputError("the stack has no intensity range (every voxel has the same value)")
    smooth = ndi.gaussian_filter(grey, (sigma / z_spacing, sigma, sigma)) if sigma > 0 else grey
    foreground = ndi.binary_fill_holes(_threshold(smooth, "li" if name == "li" else "otsu", 3, 0.0))
    components = _components(foreground, min_size)
    if name == "watershed":
        return _split_touching(components, min_distance, min_size, sampling=(z_spacing, 1.0, 1.0))
    return components


def _check_method(method: str) -> str:
    name = str(method).strip().lower()
    if name not in BASELINE_METHODS:
        raise UserInputError(f"Unknown baseline method {method!r}; choose one of {', '.join(BASELINE_METHODS)}.")
    return name


def _check_params(min_size: int, invert: str | bool, block_size: int, sigma: float, min_distance: int) -> str:
    """Validate the tuning parameters; return the invert policy as a NormalizeConfig choice."""
    if min_size < 0:
        raise UserInputError(f"min_size must be >= 0 pixels, got {min_size}.")
    if block_size < 3:
        raise UserInputError(f"block_size must be at least 3 pixels (odd), got {block_size}; try 51.")
    if sigma < 0:
        raise UserInputError(f"sigma must be >= 0 pixels (0 = no smoothing), got {sigma}.")
    if min_distance < 1:
        raise UserInputError(f"min_distance must be at least 1 pixel, got {min_distance}; try 5.")
    if isinstance(invert, bool | np.bool_):
        return "always" if invert else "never"
    if invert not in _INVERT_CHOICES:
        raise UserInputError(f"invert must be one of {', '.join(_INVERT_CHOICES)} (or True/False), got {invert!r}.")
    return str(invert)


def _segment_plane(
    grey: np.ndarray,
    method: str,
    min_size: int,
    block_size: int,
    sigma: float,
    local_offset: float,
    min_distance: int,
) -> np.ndarray:
    """Segment one percentile-scaled ``(Y, X)`` float plane into int32 labels."""
    if not grey.max() > grey.min():  # a blank slice of a stack
        return np.zeros(grey.shape, dtype=np.int32)
    smooth = ndi.gaussian_filter(grey, sigma) if sigma > 0 else grey
    foreground = ndi.binary_fill_holes(_threshold(smooth, method, block_size, local_offset))
    components = _components(foreground, min_size)
    if method == "watershed":
        return _split_touching(components, min_distance, min_size)
    return components


def _threshold(smooth: np.ndarray, method: str, block_size: int, local_offset: float) -> np.ndarray:
    """Boolean foreground of a smoothed float plane."""
    if method == "local":
        return smooth > threshold_local(smooth, block_size, method="gaussian", offset=-local_offset)
    if method == "li":
        return smooth > threshold_li(smooth)
    return smooth > threshold_otsu(smooth, nbins=_OTSU_BINS)


def _components(foreground: np.ndarray, min_size: int) -> np.ndarray:
    """Label the connected components with at least ``min_size`` pixels as 1..n (int32)."""
    labels, _ = ndi.label(foreground)
    return _drop_small(labels, min_size)


def _drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Remove labels with fewer than ``min_size`` pixels and relabel 1..n (int32)."""
    sizes = np.bincount(labels.ravel())
    too_small = sizes < min_size
    too_small[0] = True
    labels = np.where(too_small[labels], 0, labels)
    return relabel_sequential(labels)[0].astype(np.int32, copy=False)


def _split_touching(
    components: np.ndarray, min_distance: int, min_size: int, sampling: tuple[float, ...] | None = None
) -> np.ndarray:
    """Split touching objects: markers at distance-transform peaks, watershed on the negated distance."""
    foreground = components > 0
    distance = ndi.distance_transform_edt(foreground, sampling=sampling)
    markers = _peak_markers(distance, components, min_distance)
    labels = watershed(-distance, markers, mask=foreground)
    return _drop_small(labels, min_size)


def _peak_markers(distance: np.ndarray, components: np.ndarray, min_distance: int) -> np.ndarray:
    """One marker per distance peak; a component with no peak becomes one marker as a whole."""
    peaks = peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False)
    markers = np.zeros(components.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    has_peak = np.zeros(int(components.max()) + 1, dtype=bool)
    has_peak[components[tuple(peaks.T)]] = True
    has_peak[0] = True
    lacking = ~has_peak[components]
    markers[lacking] = len(peaks) + components[lacking]
    return markers

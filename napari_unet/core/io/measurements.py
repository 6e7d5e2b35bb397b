"""Per-object measurements (area, centroid, bounding box, shape, intensities) and CSV tables."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.errors import UserInputError
from napari_unet.core.io.atomic import atomic_write_path
from napari_unet.core.io.reading import as_label_array

PathLike = str | os.PathLike


def _default_axes(ndim: int) -> str:
    axes = {2: "YX", 3: "ZYX", 4: "TZYX"}.get(ndim)
    if axes is None:
        raise UserInputError(f"labels must be 2D (YX), 3D (ZYX/TYX) or 4D (TZYX), got {ndim}D")
    return axes


def _check_axes(axes: str | None, ndim: int) -> str:
    if axes is None:
        return _default_axes(ndim)
    axes = axes.upper()
    if len(axes) != ndim or set(axes) - set("TZYX") or len(set(axes)) != ndim or not axes.endswith("YX"):
        raise UserInputError(f"axes {axes!r} do not describe {ndim}D labels; use letters from TZYX ending in YX")
    return axes


def _intensity_image(image: np.ndarray, labels_shape: tuple[int, ...]) -> np.ndarray:
    """Return ``image`` as labels-shaped, or labels-shaped + trailing channel axis."""
    image = np.asarray(image)
    if image.shape == labels_shape or image.shape[:-1] == labels_shape:
        return image
    if image.ndim == len(labels_shape) + 1 and image.shape[1:] == labels_shape:
        return np.moveaxis(image, 0, -1)  # channels first -> last
    raise UserInputError(
        f"image shape {image.shape} does not match labels shape {labels_shape} "
        "(expected the same shape, optionally with a channel axis); pass the image the labels were made from"
    )


def _rename_column(name: str, axes: str, size: str = "area") -> str:
    base, _, index = name.partition("-")
    ndim = len(axes)
    if base == "centroid":
        return f"centroid_{axes[int(index)].lower()}"
    if base == "bbox":
        i = int(index)
        return f"bbox_{'min' if i < ndim else 'max'}_{axes[i % ndim].lower()}"
    if base.startswith("intensity_"):
        stat = base.removeprefix("intensity_")
        return f"{stat}_intensity" + (f"_c{index}" if index else "")
    return {"equivalent_diameter_area": "equivalent_diameter", "area": size}.get(base, base)


def measure_objects(labels: np.ndarray, image: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-object measurements of an instance-label image.

    Parameters
    ----------
    labels : ndarray, (Y, X) or (Z, Y, X)
        Instance labels, 0 = background.  3D labels are measured as volumes.
    image : ndarray, optional
        Intensities: the labels' shape, or with a channel axis last
        (``(Y, X, C)``) or first (``(C, Y, X)``) for per-channel statistics.

    Returns
    -------
    dict of str to ndarray
        One array per column, one row per object in increasing label order:
        ``label``, ``area`` (pixels; ``volume`` in voxels for 3D labels), ``centroid_<axis>``,
        ``bbox_min_<axis>``/``bbox_max_<axis>`` (max exclusive),
        ``equivalent_diameter`` and, for 2D, ``eccentricity``, ``solidity``,
        ``perimeter``; with an image ``mean_intensity``, ``max_intensity``,
        ``min_intensity`` (suffixed ``_c<k>`` per channel).

    """
    from skimage.measure import regionprops_table

    labels = as_label_array(labels)
    if labels.ndim not in (2, 3):
        raise UserInputError(f"measurements need 2D or 3D labels, got shape {labels.shape}; measure one frame")
    axes = "YX" if labels.ndim == 2 else "ZYX"
    properties = ["label", "area", "centroid", "bbox", "equivalent_diameter_area"]
    if labels.ndim == 2:
        properties += ["eccentricity", "solidity", "perimeter"]
    intensity = None
    if image is not None:
        intensity = _intensity_image(image, labels.shape)
        properties += ["intensity_mean", "intensity_max", "intensity_min"]
    table = regionprops_table(labels, intensity_image=intensity, properties=properties)
    size = "area" if labels.ndim == 2 else "volume"
    result = {_rename_column(name, axes, size): np.asarray(values) for name, values in table.items()}
    result[size] = result[size].astype(np.int64)
    return result


def write_csv(table: Mapping[str, Sequence[Any]], path: PathLike, overwrite: bool = False) -> Path:
    """Atomically write a column table (dict of equal-length columns) as CSV.

    Integers are written as integers and floats in shortest round-trip form.

    Raises
    ------
    UserInputError
        If the columns differ in length, or the target exists (see
        :func:`atomic_write_path`).

    """
    columns = {name: list(np.asarray(values).tolist()) for name, values in table.items()}
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise UserInputError(f"table columns have different lengths {sorted(lengths)}; cannot write CSV")
    rows = zip(*columns.values(), strict=True)
    with atomic_write_path(path, overwrite) as temp, open(temp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return Path(path)

"""Writing instance labels: ImageJ TIFF, 16-bit PNG, NumPy, OME-Zarr, ImageJ ROI zip and CSV, with provenance."""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.errors import UserInputError
from napari_unet.core.io.atomic import _check_target, atomic_write_dir, atomic_write_path, is_own_zarr, owner_attributes
from napari_unet.core.io.measurements import _check_axes, _intensity_image, measure_objects, write_csv
from napari_unet.core.io.provenance import provenance_path, write_provenance
from napari_unet.core.io.reading import as_label_array

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

EXPORT_FORMATS: dict[str, str] = {
    "tif": ".tif",
    "png": ".png",
    "npy": ".npy",
    "zarr": ".zarr",
    "roi": ".zip",
    "csv": ".csv",
}
_FORMAT_ALIASES = {"tiff": "tif", "zip": "roi", "rois": "roi", "ome-zarr": "zarr", "ome_zarr": "zarr"}
_SUFFIX_TO_FORMAT = {
    ".tif": "tif",
    ".tiff": "tif",
    ".png": "png",
    ".npy": "npy",
    ".zarr": "zarr",
    ".zip": "roi",
    ".csv": "csv",
}
NGFF_VERSION = "0.4"


def _resolve_format(path: Path, fmt: str | None) -> tuple[Path, str]:
    if fmt is None:
        suffix = path.suffix.lower()
        if suffix not in _SUFFIX_TO_FORMAT:
            raise UserInputError(
                f"{path}: cannot tell the export format from {suffix or 'no extension'!r}; "
                f"use one of {', '.join(sorted(_SUFFIX_TO_FORMAT))} or pass fmt"
            )
        return path, _SUFFIX_TO_FORMAT[suffix]
    fmt = _FORMAT_ALIASES.get(fmt.lower(), fmt.lower())
    if fmt not in EXPORT_FORMATS:
        raise UserInputError(f"unknown export format {fmt!r}; choose one of {sorted(EXPORT_FORMATS)}")
    if not path.suffix:
        path = path.with_name(path.name + EXPORT_FORMATS[fmt])
    return path, fmt


def _write_tif(labels: np.ndarray, path: Path, axes: str) -> None:
    import tifffile

    if labels.size == 0 or labels.max() < 2**16:
        tifffile.imwrite(path, labels.astype(np.uint16), imagej=True, metadata={"axes": axes})
        return
    logger.warning(
        "%s: labels exceed 65535, written as uint32 TIFF; ImageJ/Fiji open it through Bio-Formats only",
        path.name,
    )
    tifffile.imwrite(path, labels.astype(np.uint32), metadata={"axes": axes})


def _write_png(labels: np.ndarray, path: Path) -> None:
    import imagecodecs

    if labels.ndim != 2:
        raise UserInputError(f"PNG holds one 2D plane, labels have shape {labels.shape}; export to .tif or .zarr")
    largest = int(labels.max()) if labels.size else 0
    if largest > 65535:
        raise UserInputError(
            f"PNG labels are 16-bit (at most 65535 objects) but the largest label is {largest}; "
            "export to .tif or .zarr (or relabel sequentially)"
        )
    path.write_bytes(imagecodecs.png_encode(labels.astype(np.uint16)))


def _write_npy(labels: np.ndarray, path: Path) -> None:
    with open(path, "wb") as handle:
        np.save(handle, labels, allow_pickle=False)


def _pyramid(array: np.ndarray, max_edge: int = 1024) -> list[np.ndarray]:
    """Levels of ``array`` subsampled 2x in Y and X (nearest) until Y, X <= ``max_edge``."""
    levels = [array]
    while max(levels[-1].shape[-2:]) > max_edge:
        levels.append(levels[-1][..., ::2, ::2])
    return levels


def _ngff_axes(axes: str) -> list[dict[str, str]]:
    kinds = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
    return [{"name": a.lower(), "type": kinds[a]} for a in axes]


def _multiscales_attrs(name: str, axes: str, n_levels: int) -> dict[str, Any]:
    datasets = []
    for level in range(n_levels):
        scale = [float(2**level) if a in "YX" else 1.0 for a in axes]
        datasets.append({"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]})
    return {"multiscales": [{"version": NGFF_VERSION, "name": name, "axes": _ngff_axes(axes), "datasets": datasets}]}


def _zarr_major() -> int:
    import zarr

    return int(zarr.__version__.split(".")[0])


def _zarr_root(path: Path) -> Any:
    import zarr

    if _zarr_major() >= 3:
        root = zarr.open_group(str(path), mode="w", zarr_format=2)
    else:  # pragma: no cover - zarr 2
        root = zarr.open_group(str(path), mode="w")
    root.attrs.update(owner_attributes())
    return root


def _zarr_write_array(group: Any, name: str, data: np.ndarray) -> None:
    chunks = tuple([1] * (data.ndim - 2) + [min(s, 512) for s in data.shape[-2:]])
    chunks = tuple(max(c, 1) for c in chunks)
    if _zarr_major() >= 3:
        encoding = {"name": "v2", "separator": "/"}
        array = group.create_array(name, shape=data.shape, chunks=chunks, dtype=data.dtype, chunk_key_encoding=encoding)
    else:  # pragma: no cover - zarr 2
        array = group.create_dataset(name, shape=data.shape, chunks=chunks, dtype=data.dtype, dimension_separator="/")
    array[...] = data


def _write_multiscale(group: Any, data: np.ndarray, axes: str, name: str) -> None:
    levels = _pyramid(data)
    for index, level in enumerate(levels):
        _zarr_write_array(group, str(index), np.ascontiguousarray(level))
    group.attrs.update(_multiscales_attrs(name, axes, len(levels)))


def _image_for_zarr(image: np.ndarray, labels: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    image = _intensity_image(image, labels.shape)
    if image.shape == labels.shape:
        return image, axes
    position = 1 if axes.startswith("T") else 0  # NGFF order: t, c, then the spatial axes
    return np.moveaxis(image, -1, position), axes[:position] + "C" + axes[position:]


def _write_zarr(labels: np.ndarray, path: Path, axes: str, image: np.ndarray | None, label_name: str) -> None:
    if labels.size and int(labels.max()) >= 2**32:
        raise UserInputError("OME-Zarr labels are uint32; relabel sequentially (fewer than 2**32 objects)")
    root = _zarr_root(path)
    image_label: dict[str, Any] = {"version": NGFF_VERSION}
    if image is not None:
        image_data, image_axes = _image_for_zarr(image, labels, axes)
        _write_multiscale(root, image_data, image_axes, "image")
        image_label["source"] = {"image": "../../"}
    labels_group = root.require_group("labels")
    labels_group.attrs.update({"labels": [label_name]})
    label_group = labels_group.require_group(label_name)
    _write_multiscale(label_group, labels.astype(np.uint32), axes, label_name)
    label_group.attrs.update({"image-label": image_label})


def _plane_rois(plane: np.ndarray, position: int | None) -> list[Any]:
    from roifile import ROI_TYPE, ImagejRoi
    from scipy.ndimage import find_objects
    from skimage.measure import find_contours

    rois = []
    for index, bbox in enumerate(find_objects(plane)):
        if bbox is None:
            continue
        label = index + 1
        mask = np.pad(plane[bbox] == label, 1).astype(np.uint8)
        contour = max(find_contours(mask, 0.5), key=len)[:-1]  # (row, col) in padded crop; closed -> open
        # pixel (r, c) covers [c, c+1] x [r, r+1] in ImageJ, so contour midpoints shift by +0.5
        ys = contour[:, 0] + bbox[0].start - 0.5
        xs = contour[:, 1] + bbox[1].start - 0.5
        name = str(label) if position is None else f"{label}-z{position + 1}"
        roi = ImagejRoi.frompoints(np.stack([xs, ys], axis=1), name=name, position=position)
        roi.roitype = ROI_TYPE.POLYGON
        rois.append(roi)
    return rois


def _write_roi_zip(labels: np.ndarray, path: Path) -> None:
    if labels.ndim == 2:
        rois = _plane_rois(labels, None)
    elif labels.ndim == 3:
        rois = [roi for z, plane in enumerate(labels) for roi in _plane_rois(plane, z)]
    else:
        raise UserInputError(f"ROI export needs 2D or 3D labels, got shape {labels.shape}")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for roi in rois:
            archive.writestr(f"{roi.name}.roi", roi.tobytes())


def count_objects(labels: np.ndarray) -> int:
    """Count the distinct non-zero labels of ``labels`` (any shape)."""
    return int(np.count_nonzero(np.unique(labels))) if labels.size else 0


def export_labels(
    labels: np.ndarray,
    path: PathLike,
    fmt: str | None = None,
    overwrite: bool = False,
    image: np.ndarray | None = None,
    provenance: Mapping[str, Any] | None = None,
    *,
    axes: str | None = None,
    label_name: str = "nuclei",
) -> list[Path]:
    """Write instance labels (and optionally provenance) in a format other tools read.

    Parameters
    ----------
    labels : ndarray, (Y, X), (Z, Y, X), (T, Y, X) or (T, Z, Y, X)
        Instance labels, 0 = background.
    path : str or Path
        Output path; its suffix picks the format unless ``fmt`` is given
        (a suffix-less path then gets the format's suffix).
    fmt : str, optional
        ``tif`` (ImageJ TIFF: uint16, or uint32 non-ImageJ TIFF above 65535),
        ``png`` (16-bit, 2D only), ``npy``, ``zarr`` (OME-Zarr with the labels
        at ``labels/<label_name>``, uint32, chunked, NGFF 0.4), ``roi``
        (ImageJ ROI ``.zip``: one polygon per object and plane, named by label
        id) or ``csv`` (:func:`measure_objects` table).
    overwrite : bool
        Replace existing files (never done otherwise).
    image : ndarray, optional
        The intensity image: written as the OME-Zarr image (``zarr``) and
        used for intensity columns (``csv``); ignored by other formats.
    provenance : dict, optional
        Record from :func:`provenance`; written to ``<path>.provenance.json``
        with an ``output`` entry added.
    axes : str, optional
        Axis letters of ``labels`` (default ``YX``, ``ZYX``, ``TZYX`` by ndim).
    label_name : str
        Name of the label image inside an OME-Zarr store.

    Returns
    -------
    list of Path
        The written paths: the export, then the provenance file if any.

    Raises
    ------
    UserInputError
        For unknown formats, labels the format cannot hold, or existing
        outputs without ``overwrite``.

    """
    target, fmt = _resolve_format(Path(path), fmt)
    labels = as_label_array(labels)
    axes = _check_axes(axes, labels.ndim)
    outputs = [target] + ([provenance_path(target)] if provenance is not None else [])
    for output in outputs:
        is_store = fmt == "zarr" and output == target
        _check_target(output, overwrite, want_dir=is_store, replaceable=is_own_zarr if is_store else None)
    _write_export(labels, target, fmt, overwrite, image, axes, label_name)
    if provenance is not None:
        record = dict(provenance)
        record["output"] = {
            "path": str(target.resolve()),
            "format": fmt,
            "shape": list(labels.shape),
            "axes": axes,
            "objects": count_objects(labels),
        }
        write_provenance(outputs[1], record, overwrite=overwrite)
    return outputs


def _write_export(
    labels: np.ndarray,
    target: Path,
    fmt: str,
    overwrite: bool,
    image: np.ndarray | None,
    axes: str,
    label_name: str,
) -> None:
    if fmt == "csv":
        write_csv(measure_objects(labels, image), target, overwrite)
        return
    if fmt == "zarr":
        with atomic_write_dir(target, overwrite, replaceable=is_own_zarr) as temp:
            _write_zarr(labels, temp, axes, image, label_name)
        return
    writers = {
        "tif": lambda temp: _write_tif(labels, temp, axes),
        "png": lambda temp: _write_png(labels, temp),
        "npy": lambda temp: _write_npy(labels, temp),
        "roi": lambda temp: _write_roi_zip(labels, temp),
    }
    with atomic_write_path(target, overwrite) as temp:
        writers[fmt](temp)

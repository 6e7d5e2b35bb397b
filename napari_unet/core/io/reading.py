"""Reading images and labels: TIFF, PNG/JPEG/BMP, NumPy ``.npy`` and zarr / OME-Zarr; annotated folders."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.errors import UserInputError

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

TIFF_SUFFIXES = (".tif", ".tiff")
PLAIN_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, *PLAIN_IMAGE_SUFFIXES, ".npy", ".zarr")
_ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json")


def _is_zarr_path(path: Path) -> bool:
    if path.suffix.lower() == ".zarr":
        return True
    return path.is_dir() and any((path / marker).exists() for marker in _ZARR_MARKERS)


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise UserInputError(f"{path}: no such file or folder; check the path")


def read_image(path: PathLike) -> np.ndarray:
    """Read an image file into memory.

    Parameters
    ----------
    path : str or Path
        A ``.tif/.tiff`` (first series, full resolution), ``.png/.jpg/.jpeg/.bmp``,
        ``.npy`` file, or a zarr array / OME-Zarr group (first multiscale level
        of the image, or of the first label image when the group has no image).

    Returns
    -------
    numpy.ndarray
        The pixels with the axes as stored, e.g. ``(Y, X)``, ``(Y, X, C)`` or
        ``(Z, Y, X)``; dtype as stored.

    Raises
    ------
    UserInputError
        If the path does not exist, has an unsupported extension or cannot be
        decoded.

    """
    return _read_array(Path(path), prefer_labels=False)


def read_labels(path: PathLike) -> np.ndarray:
    """Read an instance-label image (0 = background, 1..N = objects).

    Like :func:`read_image`; an OME-Zarr group yields its first label image.
    Integer-valued float files are converted to ``uint32``; booleans to
    ``uint8``.

    Returns
    -------
    numpy.ndarray
        Non-negative integer labels with the axes as stored.

    Raises
    ------
    UserInputError
        If the file cannot be read, or holds non-integer or negative values.

    """
    array = _read_array(Path(path), prefer_labels=True)
    return as_label_array(array, source=str(path))


def read_annotated_folder(folder: PathLike, limit: int | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Read the ``<id>_image.tif`` files of a folder with their ``<id>_labels.tif`` (the DSB 2018 layout).

    Parameters
    ----------
    folder : path
        Folder holding the pairs; images without a labels file are skipped.
    limit : int, optional
        Read at most this many pairs (in name order; None: all).

    Returns
    -------
    list of (str, array (Y, X) or (Y, X, C), int array (Y, X))
        ``(id, image, labels)`` in name order.

    """
    pairs = []
    for image_path in sorted(Path(folder).glob("*_image.tif")):
        if limit is not None and len(pairs) >= limit:
            break
        labels_path = image_path.with_name(image_path.name.replace("_image.tif", "_labels.tif"))
        if labels_path.is_file():
            pairs.append((image_path.name.removesuffix("_image.tif"), read_image(image_path), read_labels(labels_path)))
    return pairs


def as_label_array(array: np.ndarray, source: str = "labels") -> np.ndarray:
    """Return ``array`` as a non-negative integer label array.

    Integer arrays are returned unchanged; booleans become ``uint8``; floats
    holding only whole numbers become ``uint32`` (or ``int64`` when larger).

    Raises
    ------
    UserInputError
        If ``array`` holds fractions, negative values or a non-numeric dtype.

    """
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.all(np.mod(array, 1) == 0):
            raise UserInputError(f"{source}: labels must be whole numbers, got fractional values; pick a label image")
        _check_non_negative(array, source)
        return array.astype(np.uint32 if array.size == 0 or array.max() < 2**32 else np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise UserInputError(f"{source}: labels must be integers, got dtype {array.dtype}; pick a label image")
    _check_non_negative(array, source)
    return array


def _check_non_negative(array: np.ndarray, source: str) -> None:
    signed = np.issubdtype(array.dtype, np.signedinteger) or np.issubdtype(array.dtype, np.floating)
    if array.size and signed and array.min() < 0:
        raise UserInputError(f"{source}: labels must be >= 0 (0 = background), found {array.min()}")


def _read_array(path: Path, prefer_labels: bool) -> np.ndarray:
    _check_exists(path)
    reader = _file_reader(path) if not _is_zarr_path(path) else None
    try:
        return reader() if reader is not None else _read_zarr(path, prefer_labels)
    except UserInputError:
        raise
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UserInputError(
            f"{path}: could not read the file ({type(exc).__name__}: {reason}); is it corrupt?"
        ) from exc


def _file_reader(path: Path) -> Any:
    if path.is_dir():
        raise UserInputError(f"{path} is a folder, not an image; pick an image file or a .zarr store")
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        import tifffile

        return lambda: tifffile.imread(path)
    if suffix in PLAIN_IMAGE_SUFFIXES:
        return lambda: _read_plain_image(path)
    if suffix == ".npy":
        return lambda: np.load(path, allow_pickle=False)
    raise UserInputError(
        f"{path}: unsupported file type {suffix!r}; supported: {', '.join(IMAGE_SUFFIXES)} (convert it to TIFF)"
    )


def _read_plain_image(path: Path) -> np.ndarray:
    try:
        import imagecodecs

        return np.asarray(imagecodecs.imread(str(path)))
    except ImportError:  # pragma: no cover - imagecodecs is a dependency
        from skimage.io import imread

        return np.asarray(imread(path))


def _ngff_attrs(node: Any) -> dict[str, Any]:
    attrs = dict(node.attrs)
    return dict(attrs.get("ome", attrs))  # NGFF 0.5 nests everything under "ome"


def _first_level(group: Any) -> Any:
    multiscales = _ngff_attrs(group).get("multiscales")
    if not multiscales:
        return None
    return group[multiscales[0]["datasets"][0]["path"]]


def _first_label_level(group: Any) -> Any:
    if "labels" not in group:
        return None
    labels_group = group["labels"]
    names = _ngff_attrs(labels_group).get("labels") or sorted(labels_group.group_keys())
    return _first_level(labels_group[names[0]]) if names else None


def _read_zarr(path: Path, prefer_labels: bool) -> np.ndarray:
    import zarr

    node = zarr.open(str(path), mode="r")
    if not isinstance(node, zarr.Group):
        return np.asarray(node[...])
    finders = (_first_label_level, _first_level) if prefer_labels else (_first_level, _first_label_level)
    for find in finders:
        level = find(node)
        if level is not None:
            return np.asarray(level[...])
    arrays = sorted(node.array_keys())
    if len(arrays) == 1:
        return np.asarray(node[arrays[0]][...])
    raise UserInputError(
        f"{path}: zarr group without OME-Zarr multiscales and with arrays {arrays}; "
        "pass the path of one array inside it (e.g. store.zarr/0)"
    )


def list_images(folder: PathLike, pattern: str = "*") -> list[Path]:
    """List readable images in ``folder`` (not recursive), sorted by name.

    Parameters
    ----------
    folder : str or Path
        Folder to scan.
    pattern : str
        Glob pattern the names must match, e.g. ``"*_image.tif"``.

    Returns
    -------
    list of Path
        Files (and ``.zarr`` folders) with a supported extension; hidden
        names (starting with ``.``) are skipped.

    Raises
    ------
    UserInputError
        If ``folder`` is not an existing folder.

    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserInputError(f"{folder}: not an existing folder; check the path")
    found = [
        path
        for path in folder.glob(pattern)
        if not path.name.startswith(".")
        and path.suffix.lower() in IMAGE_SUFFIXES
        and (path.is_file() or _is_zarr_path(path))
    ]
    return sorted(found, key=lambda p: p.name)

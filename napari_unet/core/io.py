"""Reading images and writing labels, measurements, ROIs and provenance.

Reading
-------
:func:`read_image` reads TIFF, PNG/JPEG/BMP, NumPy ``.npy`` and zarr (a zarr
array, or an OME-Zarr group, whose first multiscale level is returned).
:func:`read_labels` adds an integer check.  :func:`list_images` lists the
readable images of a folder.

Writing
-------
Every write is atomic: :func:`atomic_write_path` (files) and
:func:`atomic_write_dir` (folders such as zarr stores) hand the writer a
temporary path inside a hidden folder next to the target (same file system,
same file name, so writers that look at the suffix work) and move the result
into place only when the writer succeeds.  Existing targets are never
replaced unless ``overwrite=True``.

:func:`export_labels` writes instance labels as ImageJ TIFF, 16-bit PNG,
``.npy``, OME-Zarr labels, an ImageJ ROI zip or a CSV of measurements
(:func:`measure_objects`).  With ``provenance`` it also writes
``<path>.provenance.json`` *beside* the export (the full file name plus
``.provenance.json``, e.g. ``masks.tif.provenance.json``, so exports of one
result in several formats never collide).  :func:`provenance` builds that
record: model name and hash, settings, package versions, input hashes.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.errors import UserInputError

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

TIFF_SUFFIXES = (".tif", ".tiff")
PLAIN_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, *PLAIN_IMAGE_SUFFIXES, ".npy", ".zarr")

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

PROVENANCE_SUFFIX = ".provenance.json"
PROVENANCE_PACKAGES = ("numpy", "torch", "scikit-image", "scipy", "tifffile", "dask", "zarr")
NGFF_VERSION = "0.4"
_ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json")


# --------------------------------------------------------------------------- reading


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


# --------------------------------------------------------------------------- atomic writes


def _check_target(
    path: Path, overwrite: bool, want_dir: bool, replaceable: Callable[[Path], bool] | None = None
) -> Path:
    """Validate the parent folder and an existing target; return the parent.

    An existing folder is replaced only when ``replaceable(path)`` says
    napari-unet wrote it (never when ``replaceable`` is None).
    """
    parent = path.parent
    if not parent.exists():
        raise UserInputError(f"cannot write {path.name}: folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise UserInputError(f"cannot write {path.name}: {parent} is a file, not a folder; choose another folder")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise UserInputError(f"{path} exists; pass overwrite=True / --overwrite to replace it")
        if path.is_dir() and not want_dir:
            raise UserInputError(f"{path} is a folder; choose a file name")
        if path.is_dir() and not path.is_symlink() and (replaceable is None or not replaceable(path)):
            raise UserInputError(not_ours_message(path))
        if want_dir and not path.is_dir():
            raise UserInputError(f"{path} is a file; --overwrite replaces only a folder napari-unet wrote there")
    return parent


def not_ours_message(path: Path) -> str:
    """Why ``path`` (an existing file or folder napari-unet did not write) is not replaced."""
    entries = sorted(entry.name for entry in path.iterdir())[:3] if path.is_dir() else []
    listed = f" (it holds {', '.join(entries)}{', ...' if len(entries) == 3 else ''})" if entries else ""
    return (
        f"{path} is a {'folder' if path.is_dir() else 'file'} napari-unet did not write{listed}; --overwrite replaces "
        "only napari-unet's own model folders and label stores. Choose another name, or move it away yourself."
    )


OWNER_ATTRIBUTE = "napari_unet"
"""Root attribute of the zarr stores napari-unet writes; only such stores are replaced by ``overwrite``."""


def is_own_zarr(path: PathLike) -> bool:
    """Whether ``path`` is a zarr store napari-unet wrote (its root attributes hold :data:`OWNER_ATTRIBUTE`)."""
    path = Path(path)
    for name, key in ((".zattrs", None), ("zarr.json", "attributes")):
        try:
            document = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        attributes = document.get(key, {}) if key else document
        if isinstance(attributes, dict) and OWNER_ATTRIBUTE in attributes:
            return True
    return False


def owner_attributes() -> dict[str, Any]:
    """Root attributes marking a zarr store as written by napari-unet (see :func:`is_own_zarr`)."""
    return {OWNER_ATTRIBUTE: {"written_by": "napari-unet", "version": _package_version()}}


def _package_version() -> str:
    try:
        return _metadata.version("napari-unet")
    except _metadata.PackageNotFoundError:
        return "unknown"


def _make_temp_dir(parent: Path, name: str) -> Path:
    try:
        return Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent))
    except OSError as exc:
        raise UserInputError(f"cannot write to folder {parent} ({exc.strerror}); choose a writable folder") from exc


def _publish_new(temp: Path, target: Path) -> None:
    """Move ``temp`` to a ``target`` that must not exist (no silent clobbering)."""
    if temp.is_dir():
        if target.exists():
            raise UserInputError(f"{target} exists; pass overwrite=True / --overwrite to replace it")
        os.rename(temp, target)
        return
    try:
        os.link(temp, target)  # fails if the target appeared meanwhile
    except FileExistsError as exc:
        raise UserInputError(f"{target} exists; pass overwrite=True / --overwrite to replace it") from exc
    except OSError:  # file system without hard links
        if target.exists():
            raise UserInputError(f"{target} exists; pass overwrite=True / --overwrite to replace it") from None
        os.replace(temp, target)


def _publish_replace(temp: Path, target: Path, scratch: Path) -> None:
    """Move ``temp`` over ``target``; folders are swapped via ``scratch``."""
    if not (temp.is_dir() or target.is_dir()):
        os.replace(temp, target)
        return
    if not target.exists():
        os.rename(temp, target)
        return
    old = scratch / ".old"
    os.rename(target, old)
    try:
        os.rename(temp, target)
    except OSError:
        os.rename(old, target)
        raise


def apply_default_permissions(path: Path) -> None:
    """Give ``path`` (and everything under a folder) the permissions a plain ``open`` would (umask applied).

    Temporary files and folders are private (0600 / 0700); published results
    must be readable like any other file the user writes.
    """
    umask = os.umask(0)
    os.umask(umask)
    entries = [path, *path.rglob("*")] if path.is_dir() else [path]
    for entry in entries:
        entry.chmod((0o777 if entry.is_dir() else 0o666) & ~umask)


@contextlib.contextmanager
def _atomic(
    path: PathLike, overwrite: bool, want_dir: bool, replaceable: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    target = Path(path)
    parent = _check_target(target, overwrite, want_dir, replaceable)
    scratch = _make_temp_dir(parent, target.name)
    temp = scratch / target.name
    try:
        if want_dir:
            temp.mkdir()
        yield temp
        if not temp.exists():
            raise RuntimeError(f"the writer produced no output at {temp}")
        apply_default_permissions(temp)
        if overwrite:
            _publish_replace(temp, target, scratch)
        else:
            _publish_new(temp, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def atomic_write_path(path: PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary file path; move it to ``path`` when the block succeeds.

    The temporary path lives in a hidden folder next to ``path`` (same file
    system, so the final move is an atomic rename) and has the same file
    name, so writers that choose a format from the suffix work.  If the
    block raises, the temporary file is deleted and ``path`` is untouched.

    Parameters
    ----------
    path : str or Path
        Final file path.
    overwrite : bool
        Replace an existing file.

    Raises
    ------
    UserInputError
        If ``path`` exists and ``overwrite`` is False, if it is a folder, or
        if its folder is missing, not a folder or not writable.

    Examples
    --------
    >>> with atomic_write_path("out.csv") as tmp:  # doctest: +SKIP
    ...     tmp.write_text("a,b")

    """
    with _atomic(path, overwrite, want_dir=False) as temp:
        yield temp


@contextlib.contextmanager
def atomic_write_dir(
    path: PathLike, overwrite: bool = False, replaceable: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """Like :func:`atomic_write_path` for a folder (zarr store, model folder).

    Yields an existing, empty temporary folder with the target's name.  On
    success it is renamed to ``path``; with ``overwrite`` an existing target
    is first moved aside and deleted only after the new folder is in place,
    and only when ``replaceable(path)`` recognises it as napari-unet's own
    (a model folder, a store it wrote): any other folder is refused with a
    :class:`UserInputError` and left untouched.
    """
    with _atomic(path, overwrite, want_dir=True, replaceable=replaceable) as temp:
        yield temp


# --------------------------------------------------------------------------- JSON helpers


def json_default(obj: Any) -> Any:
    """``json.dump`` fallback for configs, paths, numpy values and arrays."""
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    if isinstance(obj, _dt.datetime | _dt.date):
        return obj.isoformat()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def to_jsonable(data: Any) -> Any:
    """Return ``data`` converted to plain JSON types (via :func:`json_default`)."""
    return json.loads(json.dumps(data, default=json_default))


def write_json(path: PathLike, data: Any, overwrite: bool = False) -> Path:
    """Atomically write ``data`` as indented JSON; return the path."""
    text = json.dumps(data, indent=2, default=json_default)
    with atomic_write_path(path, overwrite) as temp:
        temp.write_text(text + "\n", encoding="utf-8")
    return Path(path)


# --------------------------------------------------------------------------- provenance


def sha256_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes (of all files, by relative path, for a folder)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(chunk_size):
                digest.update(chunk)
    return digest.hexdigest()


def sha256_array(array: np.ndarray) -> str:
    """SHA-256 hex digest of an array's C-order bytes (shape and dtype not included)."""
    return hashlib.sha256(np.ascontiguousarray(array)).hexdigest()


def _package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = _metadata.version(name)
        except _metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _describe_input(item: Any) -> dict[str, Any]:
    if isinstance(item, str | os.PathLike):
        path = Path(item)
        _check_exists(path)
        return {"path": str(path.resolve()), "sha256": sha256_file(path)}
    array = np.asarray(item)
    return {"array": True, "shape": list(array.shape), "dtype": str(array.dtype), "sha256": sha256_array(array)}


def _describe_model(model: Any) -> dict[str, Any] | None:
    if model is None:
        return None
    if isinstance(model, str):
        return {"name": model}
    if isinstance(model, Mapping):
        return to_jsonable(dict(model))
    path = getattr(model, "path", None)
    return {
        "name": model.name,
        "version": getattr(model, "version", None),
        "sha256": model.sha256,
        "path": str(path) if path else None,
    }


def provenance(
    *,
    model: Any = None,
    settings: Mapping[str, Any] | None = None,
    inputs: Sequence[Any] = (),
    method: str = "unet",
) -> dict[str, Any]:
    """Build a provenance record for a result.

    Parameters
    ----------
    model : ModelBundle, str, dict or None
        The model that produced the result (for a bundle: name, version,
        weights sha256 and folder; a str is recorded as its name, a dict as
        is); ``None`` for classical baselines.
    settings : dict, optional
        Every parameter needed to replay the result (configs are converted
        with their ``to_dict``).
    inputs : sequence of paths or arrays
        Input files (their bytes are hashed; a folder's files are hashed in
        name order) or in-memory arrays (their C-order bytes are hashed and
        shape/dtype recorded).
    method : str
        What produced the result (``"unet"``, ``"otsu"``, ``"manual"``, ...).

    Returns
    -------
    dict
        JSON-serialisable: ``created`` (ISO time, UTC), ``method``,
        ``napari_unet_version``, ``packages``, ``platform``, ``model``,
        ``settings``, ``inputs``.

    """
    from napari_unet import __version__

    return {
        "provenance_format": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "method": method,
        "napari_unet_version": __version__,
        "packages": _package_versions(),
        "platform": platform.platform(),
        "command": list(sys.argv),
        "model": _describe_model(model),
        "settings": to_jsonable(dict(settings or {})),
        "inputs": [_describe_input(item) for item in inputs],
    }


def provenance_path(path: PathLike) -> Path:
    """Return the provenance file written beside an export: ``<path>.provenance.json``."""
    path = Path(path)
    return path.with_name(path.name + PROVENANCE_SUFFIX)


def write_provenance(path: PathLike, data: Mapping[str, Any], overwrite: bool = False) -> Path:
    """Atomically write a provenance dict as JSON to ``path``; return ``path``."""
    return write_json(path, dict(data), overwrite=overwrite)


# --------------------------------------------------------------------------- measurements


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


def _rename_column(name: str, axes: str) -> str:
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
    return {"equivalent_diameter_area": "equivalent_diameter"}.get(base, base)


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
        ``label``, ``area`` (pixels/voxels), ``centroid_<axis>``,
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
    result = {_rename_column(name, axes): np.asarray(values) for name, values in table.items()}
    result["area"] = result["area"].astype(np.int64)
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


# --------------------------------------------------------------------------- label writers


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


def _count_objects(labels: np.ndarray) -> int:
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
            "objects": _count_objects(labels),
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

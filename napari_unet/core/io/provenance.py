"""Provenance records written beside every export: model and hash, settings, package versions, input hashes."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.io.jsonio import to_jsonable, write_json
from napari_unet.core.io.reading import _check_exists

PathLike = str | os.PathLike

PROVENANCE_SUFFIX = ".provenance.json"
PROVENANCE_PACKAGES = ("numpy", "torch", "scikit-image", "scipy", "tifffile", "dask", "zarr")


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

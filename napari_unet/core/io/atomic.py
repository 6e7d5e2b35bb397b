"""Atomic writes: a temporary path beside the target, renamed into place on success (overwrite: only our own)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

from napari_unet.core.errors import UserInputError

PathLike = str | os.PathLike


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

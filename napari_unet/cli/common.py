"""Helpers shared by the ``napari-unet`` commands.

A terminal progress bar over the engine's generators, the expansion of files
and folders into image lists, the pairing of images with label files, and the
checks on output paths that every command makes before any work.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from napari_unet.core.errors import UserInputError
from napari_unet.core.progress import Progress, run_to_end

R = TypeVar("R")

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy", ".zarr")
"""File suffixes a folder given as input is searched for."""

METHOD_CHOICES = ("unet", "otsu", "li", "local", "watershed")
"""Segmentation methods of ``predict --method`` and ``evaluate --methods``."""


def progress_bar(gen: Generator[Progress, None, R], desc: str, quiet: bool = False) -> R:
    """Drain an engine generator while drawing a tqdm bar on stderr.

    Parameters
    ----------
    gen
        Generator yielding :class:`~napari_unet.core.progress.Progress` events.
    desc
        Label of the bar.
    quiet
        Draw nothing (``--quiet``).

    Returns
    -------
    R
        The generator's return value.

    """
    if quiet:
        return run_to_end(gen)
    from tqdm import tqdm

    with tqdm(desc=desc, unit="step", file=sys.stderr, leave=False, dynamic_ncols=True) as bar:

        def update(event: Progress) -> None:
            if event.total and bar.total != event.total:
                bar.total = event.total
            bar.n = event.done
            postfix = {k: f"{v:.3g}" for k, v in event.metrics.items() if isinstance(v, float)}
            if postfix:
                bar.set_postfix(postfix, refresh=False)
            bar.refresh()

        return run_to_end(gen, update)


def expand_inputs(paths: Sequence[str]) -> list[Path]:
    """Expand files and folders into a sorted list of image paths.

    Parameters
    ----------
    paths
        Files, folders, or ``.zarr`` stores (kept as one input each).

    Returns
    -------
    list of Path
        The files, with each folder replaced by its images in name order.

    Raises
    ------
    UserInputError
        If a path does not exist or a folder holds no image.

    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UserInputError(f"input {path} does not exist; check the path")
        if path.is_dir() and path.suffix != ".zarr":
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise UserInputError(f"folder {path} holds no image ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(images)
        else:
            found.append(path)
    return found


def pair_by_order(images: list[Path], labels: list[Path]) -> list[tuple[Path, Path]]:
    """Pair images with labels by order.

    Parameters
    ----------
    images, labels
        Image files and label files, in matching order.

    Returns
    -------
    list of (Path, Path)
        ``(image, labels)`` pairs.

    Raises
    ------
    UserInputError
        If the counts differ.

    """
    if len(images) != len(labels):
        raise UserInputError(
            f"got {len(images)} image(s) but {len(labels)} label file(s); they are paired by order, "
            "so give the same number of each"
        )
    return list(zip(images, labels, strict=True))


def is_labels_file(path: Path) -> bool:
    """Return True for files named like label images (``*_labels``, ``*_masks``, ``*_mask``)."""
    return path.stem.endswith(("_labels", "_masks", "_mask"))


def image_label_pairs(image_args: Sequence[str], label_args: Sequence[str]) -> list[tuple[Path, Path]]:
    """Pair images with labels by order; a folder given to both is split by ``*_labels`` names.

    Parameters
    ----------
    image_args, label_args
        The files or folders of ``--images`` and ``--labels``.

    Returns
    -------
    list of (Path, Path)
        ``(image, labels)`` pairs.

    """
    images = [p for p in expand_inputs(image_args) if not is_labels_file(p)]
    labels = expand_inputs(label_args)
    if any(is_labels_file(p) for p in labels):
        labels = [p for p in labels if is_labels_file(p)]
    return pair_by_order(images, labels)


def labels_output_path(outdir: Path, source: Path, suffix: str = ".tif") -> Path:
    """Return ``outdir/<stem>_labels<suffix>`` for an input image (``.ome`` dropped from the stem)."""
    stem = source.name[: -len(source.suffix)] if source.suffix else source.name
    stem = stem.removesuffix(".ome")
    return outdir / f"{stem}_labels{suffix}"


def parse_methods(text: str) -> list[str]:
    """Split a comma list of method names, checking each against :data:`METHOD_CHOICES`.

    Raises
    ------
    UserInputError
        If the list is empty or names an unknown method.

    """
    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHOD_CHOICES]
    if bad or not methods:
        raise UserInputError(f"unknown method(s) {bad}; choose from {', '.join(METHOD_CHOICES)}")
    return methods


def recorded_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Return the parsed flags to record in provenance (the command function left out)."""
    return {k: v for k, v in vars(args).items() if k not in ("func",) and not callable(v)}


def ensure_output_dir(outdir: Path) -> None:
    """Create the output folder, or explain why it cannot be one.

    Raises
    ------
    UserInputError
        If ``outdir`` is a file or cannot be created.

    """
    if outdir.exists() and not outdir.is_dir():
        raise UserInputError(f"output {outdir} is a file, not a folder; choose a folder with -o")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"cannot create output folder {outdir}: {exc.strerror}; choose another -o") from exc


def check_model_output(target: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output folder that exists without --overwrite or that is not a model folder.

    Raises
    ------
    UserInputError
        If ``target`` exists and may not be replaced.

    """
    from napari_unet.core.io import not_ours_message
    from napari_unet.core.models.bundle import is_model_folder

    if not target.exists():
        return
    if not overwrite:
        raise UserInputError(f"output {target} exists; pass --overwrite or choose another --output")
    if not target.is_dir() or not is_model_folder(target):
        raise UserInputError(not_ours_message(target))


def is_3d(reference: str) -> bool:
    """Return True when the model ``reference`` (name, name@vN or folder) is a 3D model."""
    from napari_unet.core.models.registry import is_3d_model

    return is_3d_model(reference)

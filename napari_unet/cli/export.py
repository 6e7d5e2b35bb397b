"""``napari-unet export``: convert label images to TIFF, PNG, NPY, OME-Zarr, ImageJ ROI zip or CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_unet.cli.common import ensure_output_dir, expand_inputs, recorded_settings
from napari_unet.core.errors import UserInputError


def cmd_export(args: argparse.Namespace) -> int:
    """Convert label images to other formats (TIFF, PNG, NPY, OME-Zarr, ROI zip, CSV).

    Parameters
    ----------
    args
        Parsed flags of ``export``.

    Returns
    -------
    int
        The exit code.

    """
    from napari_unet.core.io import export_labels, provenance, read_image, read_labels

    label_paths = expand_inputs(args.labels)
    image_paths = expand_inputs(args.image) if args.image else [None] * len(label_paths)
    if len(image_paths) != len(label_paths):
        raise UserInputError(f"got {len(label_paths)} label file(s) but {len(image_paths)} image(s) for --image")
    outdir = Path(args.output)
    ensure_output_dir(outdir)
    formats = [f.strip().lstrip(".") for f in args.format.split(",") if f.strip()]
    for label_path, image_path in zip(label_paths, image_paths, strict=True):
        labels = read_labels(label_path)
        image = read_image(image_path) if image_path is not None else None
        stem = label_path.name[: -len(label_path.suffix)] if label_path.suffix else label_path.name
        inputs = [label_path] + ([image_path] if image_path is not None else [])
        info = provenance(model=None, settings=recorded_settings(args), inputs=inputs, method="export")
        for fmt in formats:
            suffix = {"roi": ".zip", "zarr": ".zarr", "tiff": ".tif"}.get(fmt, "." + fmt)
            written = export_labels(
                labels, outdir / f"{stem}{suffix}", overwrite=args.overwrite, image=image, provenance=info
            )
            for path in written:
                print(f"wrote {path}")
    return 0

"""``napari-unet import-model``: add a bioimage.io package napari-unet exported as a user model."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_import_model(args: argparse.Namespace) -> int:
    """Add a package napari-unet exported (its weights, configs and lineage) as the next version of a user model.

    Parameters
    ----------
    args
        Parsed flags of ``import-model``.

    Returns
    -------
    int
        The exit code.

    """
    from napari_unet.core.models.bioimageio import import_bioimageio
    from napari_unet.core.models.registry import save_version

    bundle = import_bioimageio(Path(args.package))
    lineage = {**bundle.metadata.get("lineage", {}), "imported_from": str(Path(args.package).resolve())}
    info = save_version(bundle, args.name, lineage=lineage)
    print(f"imported {args.package} as {info.spec}")
    return 0

"""``napari-unet export-model``: write a model as a bioimage.io package other tools run."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_export_model(args: argparse.Namespace) -> int:
    """Write a model as a bioimage.io package; with ``--test``, run bioimageio.core's test on it.

    Parameters
    ----------
    args
        Parsed flags of ``export-model``.

    Returns
    -------
    int
        The exit code: 1 when ``--test`` ran and did not pass.

    """
    from napari_unet.core.models.bioimageio import export_bioimageio, run_package_test
    from napari_unet.core.models.registry import load_model

    bundle = load_model(args.model)
    path = export_bioimageio(
        bundle,
        Path(args.output),
        authors=args.author,
        license_id=args.license,
        cite=args.cite,
        name=args.name,
        overwrite=args.overwrite,
    )
    print(f"wrote {path}")
    if args.test:
        summary = run_package_test(path)
        print(f"bioimageio test: {summary.get('status')}")
        return 0 if summary.get("status") == "passed" else 1
    return 0

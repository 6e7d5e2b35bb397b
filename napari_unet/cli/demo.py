"""``napari-unet demo``: open napari with a sample and the widgets, or run the loop headless."""

from __future__ import annotations

import argparse


def cmd_demo(args: argparse.Namespace) -> int:
    """Open napari with a sample and the widgets, or run segment -> compare -> export headless.

    Parameters
    ----------
    args
        Parsed flags of ``demo``.

    Returns
    -------
    int
        The exit code.

    """
    from napari_unet.demo import run_demo

    return run_demo(headless_dir=args.headless, model=args.model, overwrite=args.overwrite)

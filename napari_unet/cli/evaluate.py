"""``napari-unet evaluate``: score segmentation methods against ground-truth labels, side by side."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from napari_unet.cli.common import image_label_pairs, parse_methods, progress_bar
from napari_unet.cli.inference import segmenter


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score every method against ground truth and print the table side by side.

    Parameters
    ----------
    args
        Parsed flags of ``evaluate``.

    Returns
    -------
    int
        The exit code.

    """
    from napari_unet.core.evaluate.methods import evaluate_methods, format_table

    pairs = image_label_pairs(args.images, args.labels or args.images)
    methods = parse_methods(args.methods)
    segmenters = {m: segmenter(m, args) for m in methods}
    gen = evaluate_methods(pairs, segmenters, axes=args.axes)
    report = progress_bar(gen, "evaluate", args.quiet)
    print(format_table(report))
    if args.json:
        from napari_unet.core.io import atomic_write_path

        with atomic_write_path(Path(args.json), overwrite=args.overwrite) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=2, default=float))
        print(f"wrote {args.json}")
    return 0

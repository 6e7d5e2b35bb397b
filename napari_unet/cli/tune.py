"""``napari-unet tune``: choose post-processing thresholds on annotated images and save the model with them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from napari_unet.cli.common import check_model_output, image_label_pairs, progress_bar
from napari_unet.cli.inference import inference_config, refuse_auto_scale


def cmd_tune(args: argparse.Namespace) -> int:
    """Pick post-processing thresholds on annotated images and save the model with them.

    Parameters
    ----------
    args
        Parsed flags of ``tune``.

    Returns
    -------
    int
        The exit code.

    """
    from dataclasses import replace

    from napari_unet.core.evaluate.tuning import iter_tune_postprocess
    from napari_unet.core.io import read_image, read_labels
    from napari_unet.core.models.bundle import save_model
    from napari_unet.core.models.registry import load_model
    from napari_unet.core.predict.runtime import FLIPS_METADATA_KEY, settings_for_model

    refuse_auto_scale(args, "in tune (all images share one scale)")
    pairs = image_label_pairs(args.images, args.labels or args.images)
    bundle = load_model(args.model)
    target = Path(args.output)
    check_model_output(target, args.overwrite)
    images = [read_image(image) for image, _ in pairs]
    labels = [read_labels(label) for _, label in pairs]
    inference = settings_for_model(inference_config(args, bundle), bundle)
    gen = iter_tune_postprocess(bundle, images, labels, inference=inference)
    result = progress_bar(gen, "tune", args.quiet)
    tuned = replace(
        bundle,
        postprocess=result.best,
        metadata={
            **bundle.metadata,
            FLIPS_METADATA_KEY: bool(inference.tta),
            "postprocess_tuning": {
                "images": [str(image) for image, _ in pairs],
                "before": result.baseline_scores,
                "after": result.best_scores,
            },
        },
    )
    saved = save_model(tuned, target, overwrite=args.overwrite)
    print(
        json.dumps(
            {
                "postprocess": result.best.to_dict(),
                "before": result.baseline_scores,
                "after": result.best_scores,
                "saved": str(saved),
            },
            indent=2,
        )
    )
    return 0

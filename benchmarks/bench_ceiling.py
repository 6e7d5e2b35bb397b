"""How far can thresholds alone take the bundled model, and how well does it fit its own training images?

Two numbers bound what post-processing can still add:

1. **Oracle thresholds on val**: for every validation image separately, the
   best AP@0.5 among the shipped settings and a grid of foreground / seed /
   split / relative size / confidence settings, chosen knowing that image's
   ground truth.  A mean far below the target says that no threshold setting
   near the tried ones closes the gap: the network's probabilities are what
   limit the score.
2. **AP@0.5 on the training images** with the shipped thresholds: how well
   the network fits the images it learned from.

Prints one JSON object (progress on stderr).

Usage::

    python -m benchmarks.bench_ceiling [--model default] [--data ../shared/data/dsb2018]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.config import PostprocessConfig
from napari_unet.core.evaluate.tuning import candidate_configs, iter_choose_postprocess
from napari_unet.core.io import read_annotated_folder
from napari_unet.core.models.bundle import ModelBundle
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.segment import predict
from napari_unet.core.progress import run_to_end
from training.splits import SHARED_DATA

DEFAULT_DATA = SHARED_DATA / "dsb2018"
ORACLE_GRID = {
    "foreground": (0.4, 0.5, 0.6, 0.7),
    "seeds": (0.7, 0.9, 0.95, 0.98),
    "split_distances": (0, 5),
    "min_relative_sizes": (0.0, 0.2, 0.3),
    "min_confidences": (0.0, 0.9),
}


def oracle_candidates(shipped: PostprocessConfig) -> list[PostprocessConfig]:
    """The shipped settings, then :data:`ORACLE_GRID` around them (their ``min_size`` kept)."""
    return [shipped, *candidate_configs(shipped, min_sizes=(shipped.min_size,), **ORACLE_GRID)]


def image_scores(bundle: ModelBundle, image: np.ndarray, truth: np.ndarray, oracle: bool) -> dict[str, Any]:
    """AP@0.5 of one image with the shipped thresholds and (``oracle``) with the best of :func:`oracle_candidates`."""
    probabilities = predict(image, bundle).probabilities
    candidates = oracle_candidates(bundle.postprocess) if oracle else [bundle.postprocess]
    result = run_to_end(iter_choose_postprocess([probabilities], [truth], candidates, bundle.postprocess))
    row = {"shipped": round(result.baseline_scores["AP@0.5"], 4)}
    if oracle:
        best = result.best
        row["oracle"] = round(result.best_scores["AP@0.5"], 4)
        row["oracle_settings"] = {
            "foreground_threshold": best.foreground_threshold,
            "seed_threshold": best.seed_threshold,
            "split_distance": best.split_distance,
            "min_relative_size": best.min_relative_size,
            "min_confidence": best.min_confidence,
        }
    return row


def split_scores(bundle: ModelBundle, folder: Path, oracle: bool) -> dict[str, Any]:
    """Per-image and mean scores of every annotated image in ``folder`` (``{"skipped": ...}`` when it has none)."""
    per_image = {}
    for name, image, truth in read_annotated_folder(folder):
        per_image[name] = image_scores(bundle, image, truth, oracle)
        print(f"{folder.name} {name[:12]}: {per_image[name]}", file=sys.stderr, flush=True)
    if not per_image:
        return {"skipped": f"no <id>_image.tif + <id>_labels.tif pairs in {folder}"}
    keys = ("shipped", "oracle") if oracle else ("shipped",)
    means = {f"{key}_mean_ap50": round(float(np.mean([r[key] for r in per_image.values()])), 4) for key in keys}
    return {"n_images": len(per_image), **means, "per_image": per_image}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding train/ and val/")
    args = parser.parse_args()
    if not (args.data / "val").is_dir():
        print(json.dumps({"skipped": f"no folder {args.data / 'val'}"}))
        return
    started = time.perf_counter()
    bundle = load_model(args.model)
    report = {
        "benchmark": "ceiling",
        "model": args.model,
        "oracle_grid": ORACLE_GRID,
        "oracle_candidates": len(oracle_candidates(bundle.postprocess)),
        "val": split_scores(bundle, args.data / "val", oracle=True),
        "train": split_scores(bundle, args.data / "train", oracle=False),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

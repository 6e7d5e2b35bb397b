"""Nuclei at sizes the model was not trained on: fixed scale vs measured scale vs known diameter.

The DSB 2018 validation images (``../shared/data/dsb2018/val``; the script
prints ``{"skipped": ...}`` when absent) are resized by each zoom factor
(bilinear for images, nearest for labels), which puts their nuclei inside or
far outside the model's training diameters.  Each zoomed set is segmented
three ways and scored (AP@0.5, stardist-style per-image mean):

* ``scale 1``: the image as it is (the default);
* ``auto``: ``--scale auto`` (:func:`napari_unet.core.predict.object_size.estimate_scale`);
* ``diameter``: ``--diameter`` given the true median nucleus diameter (what a
  user who measured one nucleus gets).

``seconds`` compares the time of the estimate with that of the prediction,
side by side in one run (a ratio, so CPU noise mostly cancels).

Usage: python -m benchmarks.bench_sizes [--model default] [--data DIR] [--zooms 0.4 1 2.5]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from skimage.transform import resize

from napari_unet.core.config import InferenceConfig
from napari_unet.core.evaluate.metrics import match_instances
from napari_unet.core.io import read_annotated_folder
from napari_unet.core.models.bundle import ModelBundle
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.object_size import DiameterRange, estimate_scale, median_diameter
from napari_unet.core.predict.segment import predict
from training.splits import SHARED_DATA

DEFAULT_DATA = SHARED_DATA / "dsb2018" / "val"


def zoomed(image: np.ndarray, labels: np.ndarray, zoom: float) -> tuple[np.ndarray, np.ndarray]:
    """``image (Y, X[, C])`` and ``labels (Y, X)`` resized by ``zoom``."""
    if zoom == 1:
        return image, labels
    shape_yx = (round(labels.shape[0] * zoom), round(labels.shape[1] * zoom))
    image = resize(image, shape_yx + image.shape[2:], order=1, preserve_range=True, anti_aliasing=zoom < 1)
    labels = resize(labels, shape_yx, order=0, preserve_range=True, anti_aliasing=False)
    return image.astype(np.float32), labels.astype(np.uint32)


def score_image(bundle: ModelBundle, target: DiameterRange, name: str, image: np.ndarray, labels: np.ndarray) -> dict:
    """AP@0.5 of the three ways for one image, with the scales chosen and the times."""
    start = time.perf_counter()
    estimate = estimate_scale(image, bundle)
    estimate_seconds = time.perf_counter() - start
    true_diameter = median_diameter(labels) or median_diameter(labels, min_objects=1)  # 1-2 nuclei: no median rule
    scales = {"scale 1": 1.0, "auto": estimate.scale, "diameter": target.scale_for(true_diameter)}
    row = {"image": name, "true_diameter": round(true_diameter, 1), "measured_diameter": estimate.diameter}
    for way, scale in scales.items():
        start = time.perf_counter()
        predicted = predict(image, bundle, inference=InferenceConfig(scale=scale)).labels
        seconds = time.perf_counter() - start
        row[way] = {"scale": scale, "AP@0.5": round(match_instances(labels, predicted, 0.5).accuracy, 4)}
        if way == "scale 1":
            row["estimate_over_predict_time"] = round(estimate_seconds / seconds, 2)
    return row


def summarize(rows: list[dict]) -> dict:
    """Mean AP@0.5 of each way and the median time ratio over ``rows``."""
    ways = ("scale 1", "auto", "diameter")
    return {
        "mean_AP@0.5": {way: round(float(np.mean([r[way]["AP@0.5"] for r in rows])), 4) for way in ways},
        "median_estimate_over_predict_time": float(np.median([r["estimate_over_predict_time"] for r in rows])),
        "images": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--zooms", type=float, nargs="+", default=[0.4, 1.0, 2.5])
    args = parser.parse_args()
    if not args.data.is_dir():
        print(json.dumps({"skipped": f"no validation data at {args.data}"}))
        return
    bundle = load_model(args.model)
    target = DiameterRange.of_model(bundle.metadata)
    pairs = [(name[:4], image, labels) for name, image, labels in read_annotated_folder(args.data)]
    results = {
        "model": args.model,
        "training_diameters": {"low": target.low, "high": target.high},
        "zooms": {},
    }
    for zoom in args.zooms:
        rows = [score_image(bundle, target, name, *zoomed(image, labels, zoom)) for name, image, labels in pairs]
        results["zooms"][str(zoom)] = summarize(rows)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""Draw a model's predictions over the ground truth of annotated images, worst images first.

Usage::

    python -m training.plot_val_errors [--model default] [--data ../shared/data/dsb2018/val] \
        [--count 4] [--output docs/images/val_errors.png]

Each row shows one image (its AP@0.5 in the title) and, beside it, the
annotated outlines in green and the predicted ones in magenta, so that the
kinds of error (missed, merged, split, or nuclei the annotators left out) can
be seen rather than guessed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from skimage.segmentation import find_boundaries

from napari_unet.core.data.normalize import normalize_plane
from napari_unet.core.evaluate.metrics import evaluate_image
from napari_unet.core.io import read_annotated_folder
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.segment import predict
from training.splits import SHARED_DATA

DEFAULT_DATA = SHARED_DATA / "dsb2018" / "val"
GREEN, MAGENTA = (0.1, 0.9, 0.1), (1.0, 0.1, 0.9)


def outline_overlay(grey: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Return ``(Y, X, 3)`` float RGB: ``grey (Y, X)`` in [0, 1] with truth outlines green, predicted magenta."""
    rgb = np.repeat(np.clip(grey, 0, 1)[..., None] * 0.7, 3, axis=-1)
    rgb[find_boundaries(truth, mode="inner")] = GREEN
    rgb[find_boundaries(predicted, mode="inner")] = MAGENTA
    return rgb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--count", type=int, default=4, help="how many of the worst images to draw")
    parser.add_argument("--output", type=Path, default=Path("docs/images/val_errors.png"))
    args = parser.parse_args()
    plt.switch_backend("Agg")
    bundle = load_model(args.model)
    rows = []
    for name, image, truth in read_annotated_folder(args.data):
        labels = predict(image, bundle).labels
        ap50 = evaluate_image(truth, labels)["per_threshold"][0]["accuracy"]
        rows.append((ap50, name, image, truth, labels))
    rows.sort(key=lambda row: row[0])
    figure, axes = plt.subplots(args.count, 2, figsize=(10, 4.2 * args.count), squeeze=False)
    for (ap50, name, image, truth, labels), (left, right) in zip(rows, axes, strict=False):
        left.imshow(image, cmap=None if image.ndim == 3 else "gray")
        left.set_title(f"{name[:12]}: AP@0.5 {ap50:.2f}")
        grey = normalize_plane(image, bundle.normalize, 1)[0]
        right.imshow(outline_overlay(grey, truth, labels))
        right.set_title("annotated (green) vs predicted (magenta)")
        for axis in (left, right):
            axis.axis("off")
    figure.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output, dpi=50)
    print(args.output)


if __name__ == "__main__":
    main()

"""Side-by-side evaluation of segmentation methods on annotated images.

Used by ``napari-unet evaluate``, the accuracy benchmark and the demo.  Each
method is a callable ``segment(image, axes) -> labels``; this module only
reads files, times the calls and scores them with :mod:`napari_unet.core.evaluate.metrics`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.errors import UserInputError
from napari_unet.core.evaluate.metrics import evaluate_dataset, summary_row
from napari_unet.core.progress import Progress

Segmenter = Callable[[np.ndarray, str | None], np.ndarray]

TABLE_COLUMNS = ("AP@0.5", "AP@0.75", "F1@0.5", "PQ@0.5", "Dice", "DSB", "n_pred", "seconds")


def evaluate_methods(
    pairs: Sequence[tuple[Path, Path]],
    segmenters: Mapping[str, Segmenter],
    axes: str | None = None,
) -> Generator[Progress, None, dict[str, Any]]:
    """Segment every image with every method and score it against its labels.

    Parameters
    ----------
    pairs : sequence of (image path, labels path)
        Images (any supported layout) and instance labels of the same spatial shape.
    segmenters : mapping of method name -> callable
        ``segment(image, axes) -> labels`` with labels of the image's spatial shape.
    axes : str, optional
        Axes of the images when they cannot be inferred.

    Yields
    ------
    Progress
        One event per (image, method) pair.

    Returns
    -------
    dict
        ``{"methods": {name: {"summary": row, "per_image": [...], "seconds": s}}, "images": [names], "n_true": int}``.

    """
    from napari_unet.core.io import read_image, read_labels

    if not pairs:
        raise UserInputError("no image/label pairs to evaluate; give --images and --labels")
    ground_truth = []
    predictions: dict[str, list[np.ndarray]] = {name: [] for name in segmenters}
    seconds = dict.fromkeys(segmenters, 0.0)
    total = len(pairs) * len(segmenters)
    done = 0
    for image_path, labels_path in pairs:
        image, labels = read_image(image_path), read_labels(labels_path)
        ground_truth.append(labels)
        for name, segment in segmenters.items():
            start = time.perf_counter()
            prediction = segment(image, axes)
            seconds[name] += time.perf_counter() - start
            if prediction.shape != labels.shape:
                raise UserInputError(
                    f"{labels_path.name}: labels shape {labels.shape} differs from the {name} result "
                    f"{prediction.shape} for {image_path.name}; pair each image with its own labels"
                )
            predictions[name].append(prediction)
            done += 1
            yield Progress("evaluate", done, total, f"{image_path.name}: {name}")
    return _report(pairs, ground_truth, predictions, seconds)


def _report(
    pairs: Sequence[tuple[Path, Path]],
    ground_truth: list[np.ndarray],
    predictions: dict[str, list[np.ndarray]],
    seconds: dict[str, float],
) -> dict[str, Any]:
    methods = {}
    for name, preds in predictions.items():
        result = evaluate_dataset(ground_truth, preds)
        row = dict(summary_row(result))
        row["seconds"] = seconds[name]
        per_image = [
            {"image": pair[0].name, **summary_row(image_result)}
            for pair, image_result in zip(pairs, result["per_image"], strict=True)
        ]
        methods[name] = {"summary": row, "per_image": per_image}
    return {
        "images": [str(p[0]) for p in pairs],
        "n_true": int(sum(np.count_nonzero(np.unique(g)) for g in ground_truth)),
        "methods": methods,
    }


def format_table(report: Mapping[str, Any], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """Return the per-method summary as an aligned text table."""
    header = ["method", *columns]
    rows = [header]
    for name, data in report["methods"].items():
        summary = data["summary"]
        rows.append([name, *(_fmt(summary.get(col)) for col in columns)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)

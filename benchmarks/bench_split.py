"""Split at two clicks: how often the pieces match the true nuclei, on real touching nuclei.

Every pair of touching nuclei in ``dsb2018/val`` (at most ``--pairs`` per
image, both at least ``--min-area`` pixels) is merged into one object and
split again with one click per nucleus: at its centroid, and at a point
jittered by 30% of its radius.  A split succeeds when each true nucleus has
a piece with IoU >= 0.8.  ``previous`` is the split before this benchmark
(a watershed on the distance map from single-pixel clicks); ``current`` is
:func:`napari_unet.core.labels.editing.split_label` with the image (and without it, as
when the labels' image is not open).

Prints one JSON object (also written to ``--json``).

Usage: python -m benchmarks.bench_split [--data ../shared/data/dsb2018/val] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from napari_unet.core.config import NormalizeConfig
from napari_unet.core.data.normalize import normalize_plane
from napari_unet.core.errors import UserInputError
from napari_unet.core.io import read_annotated_folder, write_json
from napari_unet.core.labels.editing import split_label
from training.splits import SHARED_DATA

DEFAULT_DATA = SHARED_DATA / "dsb2018" / "val"
Splitter = Callable[[np.ndarray, int, list[tuple[float, float]], np.ndarray], np.ndarray]


def touching_pairs(labels: np.ndarray, limit: int, min_area: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Up to ``limit`` random pairs of 4-adjacent objects both of at least ``min_area`` pixels."""
    areas = np.bincount(labels.ravel())
    pairs = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        touching = (a != b) & (a > 0) & (b > 0)
        pairs |= {(int(min(u, v)), int(max(u, v))) for u, v in zip(a[touching], b[touching], strict=True)}
    kept = sorted(p for p in pairs if min(areas[p[0]], areas[p[1]]) >= min_area)
    rng.shuffle(kept)
    return kept[:limit]


def click(mask: np.ndarray, jitter: float, rng: np.random.Generator) -> tuple[int, int]:
    """A click inside ``mask``: its centroid (or deepest pixel), moved by ``jitter`` x its radius when possible."""
    cy, cx = (round(c) for c in ndi.center_of_mass(mask))
    if not mask[cy, cx]:
        cy, cx = np.unravel_index(np.argmax(ndi.distance_transform_edt(mask)), mask.shape)
    radius = np.sqrt(mask.sum() / np.pi) * jitter
    for _ in range(20 if jitter else 0):
        y, x = (round(v) for v in np.array([cy, cx]) + rng.normal(0, radius, 2))
        if 0 <= y < mask.shape[0] and 0 <= x < mask.shape[1] and mask[y, x]:
            return y, x
    return int(cy), int(cx)


def previous_split(labels: np.ndarray, label_id: int, clicks: list[tuple[float, float]], _image: np.ndarray):
    """The split before this benchmark: watershed on -distance from single-pixel clicks."""
    mask = labels == label_id
    markers = np.zeros(labels.shape, np.int32)
    for number, point in enumerate(clicks, start=1):
        markers[tuple(round(c) for c in point)] = number
    pieces = watershed(-ndi.distance_transform_edt(mask), markers, mask=mask)
    out = labels.copy()
    out[pieces == 2] = labels.max() + 1
    return out


def current_split(labels: np.ndarray, label_id: int, clicks: list[tuple[float, float]], image: np.ndarray):
    return split_label(labels, label_id, seeds=clicks, image=image)


def current_split_without_image(labels: np.ndarray, label_id: int, clicks: list[tuple[float, float]], _image):
    return split_label(labels, label_id, seeds=clicks)


def score(split: Splitter, cases: list[tuple], jitter: float) -> dict[str, float]:
    """Share of splits where both nuclei get a piece with IoU >= 0.8, and the mean of the worse IoU."""
    rng = np.random.default_rng(1)
    worst = []
    for image, labels, first, second in cases:
        masks = [labels == first, labels == second]
        merged = np.where(masks[1], first, labels)
        clicks = [click(mask, jitter, rng) for mask in masks]
        try:
            out = split(merged, first, clicks, image)
        except UserInputError:
            worst.append(0.0)
            continue
        pieces = [out == value for value in np.unique(out[merged == first]) if value]
        worst.append(min(max(iou(piece, mask) for piece in pieces) for mask in masks))
    return {"success_rate": float(np.mean(np.array(worst) >= 0.8)), "mean_worse_iou": float(np.mean(worst))}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--min-area", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        sys.exit(f"bench_split: {args.data} not found (needs ../shared/data)")
    rng = np.random.default_rng(0)
    cases = []
    for _, image, labels in read_annotated_folder(args.data):
        plane = normalize_plane(image, NormalizeConfig(), 1)[0]  # nuclei bright, as the Correct widget passes it
        cases += [(plane, labels, a, b) for a, b in touching_pairs(labels, args.pairs, args.min_area, rng)]
    report = {"data": str(args.data), "pairs": len(cases), "min_area": args.min_area, "methods": {}}
    methods = (
        ("previous", previous_split),
        ("current", current_split),
        ("current_without_image", current_split_without_image),
    )
    for name, split in methods:
        report["methods"][name] = {f"jitter_{j}": score(split, cases, j) for j in (0.0, 0.3)}
    if args.json:
        write_json(args.json, report, overwrite=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""Many simulated users of one kind: each corrects a different K images, fine-tunes, segments the same other images.

``bench_hitl`` corrects the first K images of each kind, so its gain is that
of one choice of images (on DSB colour tissue: 2 images with 37 nuclei) scored
on 6 others; a training seed moves it by about 0.03. A user's "first 2
images" are any 2 of the experiment, so the number the fine-tuning promise is
about is the gain *expected* over the choice. This benchmark measures it on a
kind the parent never trained on (``--model``; the previous default model v1
has seen no DSB stage-1 image, ``benchmarks/unseen_kinds.sh`` builds it and
its replay set): every image of the kind in the shared data (all splits,
shuffled once with seed 0), the first ``--scored`` of them scored, the rest
cut into disjoint groups of K, each group one user's corrections. Each user
fine-tunes as ``bench_hitl`` does (the recipe, a step budget from
``--seconds`` x ``--steps-per-second``) and is scored on (a) the same
``--scored`` images, (b) ``bench_hitl``'s forgetting panel of the other kinds.

``--look`` keeps only the DSB colour tissue images of one :func:`stain_look`
(the kind mixes crops of several slides and stains), so users correct and
are scored on images that look alike, as one experiment's would.

Images that trained the model (their SHA-256 in the model's lineage) are left
out and listed in the report, so no score is on a training image and no user
corrects one.

Usage (from the repository root, after ``benchmarks/unseen_kinds.sh``)::

    nice .venv/bin/python -m benchmarks.bench_pairs --model out/v1_default --kind dsb_colour_tissue \\
        --users 16 --recipes shipped --steps-per-second 4.57 --json benchmarks/results/pairs_v1_colour.json
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.bench_hitl import (
    RECIPES,
    fine_tune,
    held_out_kinds,
    images_by_kind,
    recipe_config,
    score,
    validation_records,
)
from benchmarks.report import save
from napari_unet.core.io import read_image, read_labels
from napari_unet.core.models.registry import load_model
from napari_unet.core.train import loop as training_loop
from napari_unet.core.train.inputs import image_checksums
from training.splits import split_images

Pair = tuple[np.ndarray, np.ndarray]


@dataclass
class Scoring:
    """What every user is scored on, with the parent's AP@0.5 there.

    Attributes
    ----------
    kind : list of (image, labels)
        The kind's scored images (``(Y, X)`` or ``(Y, X, 3)``) and their ``(Y, X)`` labels.
    panel : dict
        Other kind -> its forgetting-panel pairs.
    kind_before : list of float
        The parent's AP@0.5 per scored image.
    panel_before : dict
        Other kind -> the parent's AP@0.5 per panel image.
    """

    kind: list[Pair]
    panel: dict[str, list[Pair]]
    kind_before: list[float]
    panel_before: dict[str, list[float]]


def kind_pairs(kind: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Every image of ``kind`` in the shared data, ``(key, image, labels)``, shuffled once (seed 0)."""
    items = images_by_kind(split_images()).get(kind)
    if not items:
        raise SystemExit(f"no images of kind {kind!r} in the shared data")
    order = np.random.default_rng(0).permutation(len(items))
    return [(items[i][0], read_image(items[i][1]), read_labels(items[i][2])) for i in order]


CROP_SHAPE = (256, 320)
"""The size of the DSB stage-1 colour tissue crops (107 of the kind's 114 images; the rest are larger fields)."""


def stain_look(image: np.ndarray) -> str:
    """The look of one DSB colour tissue image, a stand-in for the slide and stain it was cut from.

    The kind mixes crops of several slides (DSB stage-1 published no slide of
    origin), so crops are grouped by how they look, as a microscopist sorts
    slides: the thresholds split the channel means and spreads of the kind's
    crops where they cluster (``docs/benchmarks.md``).

    Parameters
    ----------
    image : np.ndarray
        ``(Y, X, 3)`` RGB, uint8.

    Returns
    -------
    str
        ``"other"`` (not a 256x320 crop), ``"pink"`` (blue mean < 190 and green mean < 125), ``"white"`` (green
        mean > 185), ``"pale"`` (green spread < 25: sparse, faint nuclei), ``"blue"`` (blue spread < 13: a
        blue-violet stain) or ``"purple"`` (the rest: dense, strongly stained).
    """
    if image.shape[:2] != CROP_SHAPE:
        return "other"
    pixels = image.reshape(-1, 3).astype(np.float64)
    (_, green, blue), (_, green_spread, blue_spread) = pixels.mean(axis=0), pixels.std(axis=0)
    if blue < 190 and green < 125:
        return "pink"
    if green > 185:
        return "white"
    if green_spread < 25:
        return "pale"
    return "blue" if blue_spread < 13 else "purple"


def of_look(
    found: list[tuple[str, np.ndarray, np.ndarray]], look: str | None
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The items of ``found`` whose image has :func:`stain_look` ``look`` (all of them for None), in order."""
    return [item for item in found if look is None or stain_look(item[1]) == look]


def trained_on(bundle: Any, found: list[tuple[str, np.ndarray, np.ndarray]]) -> list[str]:
    """Keys of the images in ``found`` whose pixels are among the model's training data (its lineage hashes)."""
    lineage = bundle.metadata.get("lineage", {})
    hashes = {row.get("image_sha256") for row in lineage.get("data", [])}
    return [key for key, image, labels in found if image_checksums(image, labels)["image_sha256"] in hashes]


def users_of(found: list[tuple[str, Any, Any]], scored: int, k: int, users: int) -> list[list[int]]:
    """Indices into ``found`` of each user's K corrected images: disjoint groups after the scored images."""
    pool = list(range(scored, len(found)))
    groups = [pool[i : i + k] for i in range(0, len(pool) - k + 1, k)]
    if len(groups) < users:
        raise SystemExit(f"only {len(groups)} groups of {k} images after the {scored} scored; lower --users")
    return groups[:users]


PANEL_AFTER = 2
"""The forgetting panel of a kind starts after its first 2 images, as ``bench_hitl``'s does at K = 2 (its default),
whatever K the users here correct: the other kinds are never corrected, so every K is scored on the same panel."""


def panel_items(other: str, items: list[Any], panel: int) -> list[Any]:
    """The ``panel`` items of kind ``other`` after its first :data:`PANEL_AFTER`; a kind with none left is an error."""
    chosen = items[PANEL_AFTER : PANEL_AFTER + panel]
    if not chosen:
        raise SystemExit(f"kind {other!r} has {len(items)} images: none left for its forgetting panel")
    return chosen


def forgetting_panel(kind: str, panel: int) -> dict[str, list[Pair]]:
    """``bench_hitl``'s K = 2 forgetting panel of every other kind: ``panel`` images after its first 2."""
    return {
        other: [(read_image(image), read_labels(labels)) for _, image, labels in panel_items(other, items, panel)]
        for other, items in held_out_kinds().items()
        if other != kind
    }


def nuclei(labels: np.ndarray) -> int:
    """Number of labelled nuclei in a ``(Y, X)`` label image."""
    return int(np.count_nonzero(np.unique(labels)))


def user_row(bundle: Any, cfg: Any, corrected: list[tuple[str, np.ndarray, np.ndarray]], scoring: Scoring) -> dict:
    """Fine-tune on one user's corrections; the kind's and the panel's AP@0.5 after, and what the run decided."""
    started = time.perf_counter()
    result = fine_tune(bundle, [image for _, image, _ in corrected], [labels for _, _, labels in corrected], cfg)
    seconds = time.perf_counter() - started
    after = score(result.bundle, scoring.kind)
    forgetting = {
        other: float(np.mean(score(result.bundle, pairs)) - np.mean(scoring.panel_before[other]))
        for other, pairs in scoring.panel.items()
    }
    return {
        "corrected": [key for key, _, _ in corrected],
        "nuclei": sum(nuclei(labels) for _, _, labels in corrected),
        "kind_after": after,
        "kind_gain": float(np.mean(after) - np.mean(scoring.kind_before)),
        "forgetting": forgetting,
        "forgetting_mean": float(np.mean(list(forgetting.values()))) if forgetting else 0.0,
        "steps": result.steps,
        "best_step": result.best_step,
        "kept_parent": result.kept_parent,
        "held_out_before": result.metrics_before,
        "held_out_after": result.metrics_after,
        "held_out_decision": result.lineage.get("held_out_decision"),
        "validations": validation_records(result),
        "seconds": seconds,
    }


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Over users: mean gain and its standard error, spread, counts, forgetting, gain by corrected-nuclei half.

    ``fewer_nuclei`` / ``more_nuclei``: mean gain of the users below / at or above the median number of
    corrected nuclei.
    """
    gains = np.array([row["kind_gain"] for row in rows])
    counts = np.array([row["nuclei"] for row in rows])
    median = float(np.median(counts))
    return {
        "users": len(rows),
        "mean_gain": float(gains.mean()),
        "standard_error": float(gains.std(ddof=1) / np.sqrt(len(gains))) if len(gains) > 1 else None,
        "min_gain": float(gains.min()),
        "max_gain": float(gains.max()),
        "users_gaining_0_10": int(np.sum(gains >= 0.10)),
        "users_worse_0_02": int(np.sum(gains < -0.02)),
        "parent_kept": int(sum(row["kept_parent"] for row in rows)),
        "mean_forgetting": float(np.mean([row["forgetting_mean"] for row in rows])),
        "worst_forgetting": float(min(min(row["forgetting"].values(), default=0.0) for row in rows)),
        "median_nuclei": median,
        "fewer_nuclei": float(gains[counts < median].mean()) if np.any(counts < median) else None,
        "more_nuclei": float(gains[counts >= median].mean()),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the parent model folder (with its replay set)")
    parser.add_argument("--kind", default="dsb_colour_tissue", help="a kind of bench_hitl.kind_of")
    parser.add_argument("--k", type=int, default=2, help="images each user corrects")
    parser.add_argument("--users", type=int, default=16, help="simulated users (disjoint corrected images)")
    parser.add_argument("--scored", type=int, default=40, help="images of the kind every user is scored on")
    parser.add_argument("--panel", type=int, default=2, help="images per other kind in the forgetting panel")
    parser.add_argument("--seconds", type=float, default=120.0, help="fine-tuning budget on 2 CPU cores")
    parser.add_argument("--steps-per-second", type=float, required=True, help="pace that turns seconds into steps")
    parser.add_argument("--recipes", default="shipped", help=f"comma-separated, of {sorted(RECIPES)}")
    parser.add_argument("--seed", type=int, default=0, help="training seed (the images do not depend on it)")
    parser.add_argument(
        "--keep-every-child", action="store_true", help="ablation: no held-out gain required (as bench_hitl)"
    )
    parser.add_argument(
        "--look",
        choices=("purple", "blue", "pale", "white", "pink", "other"),
        default=None,
        help="only the DSB colour tissue images of this stain_look (a stand-in for one slide)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (and optionally write) its JSON."""
    args = parse_args(argv)
    torch.set_num_threads(2)
    if args.look and args.kind != "dsb_colour_tissue":
        raise SystemExit("--look groups DSB colour tissue images only (--kind dsb_colour_tissue)")
    if args.keep_every_child:
        training_loop.required_held_out_gain = lambda nuclei: -1.0
    bundle = load_model(args.model)
    found = of_look(kind_pairs(args.kind), args.look)
    seen = trained_on(bundle, found)
    found = [item for item in found if item[0] not in seen]
    scored = [(image, labels) for _, image, labels in found[: args.scored]]
    groups = users_of(found, args.scored, args.k, args.users)
    panel = forgetting_panel(args.kind, args.panel)
    scoring = Scoring(scored, panel, score(bundle, scored), {other: score(bundle, p) for other, p in panel.items()})
    report = {
        "benchmark": "bench_pairs",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform()},
        "trained_on_excluded": seen,
        "scored": [key for key, _, _ in found[: args.scored]],
        "kind_before": scoring.kind_before,
        "panel_before": scoring.panel_before,
        "default_ap50": float(np.mean(scoring.kind_before)),
        "recipes": {},
    }
    for recipe in args.recipes.split(","):
        cfg = recipe_config(bundle, recipe, args.seconds * args.steps_per_second, args.seed)
        entry = report["recipes"].setdefault(recipe, {"users": []})
        for number, group in enumerate(groups):
            row = user_row(bundle, cfg, [found[i] for i in group], scoring)
            entry["users"].append(row)
            entry["summary"] = summary(entry["users"])
            save(report, args.json)
            print(f"[{recipe}] user {number}: {row['nuclei']} nuclei, gain {row['kind_gain']:+.3f}", file=sys.stderr)
    print(save(report, args.json))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

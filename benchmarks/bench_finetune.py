"""Human-in-the-loop fine-tuning: how much does a short fine-tune on corrected objects help?

Protocol, on the images of the DSB 2018 validation folder
(``../shared/data/dsb2018/val`` beside the checkout, or ``--data``):

1. predict with the starting model and score the RIGHT half of each image;
2. fine-tune on the LEFT halves (their ground truth stands in for the user's
   corrections: annotation mode ``rois`` with the left-half rectangle) for
   each time budget — by default ONE model on the left halves of all images
   together (what a user correcting several images does); ``--per-image``
   fine-tunes a separate model per image instead;
3. predict again and score the RIGHT halves (never seen in training).

Starting models: the bundled ``default`` model (or ``--model``) and/or a
freshly initialised network of the same architecture (``scratch``).  Scores
are AP@0.5, AP@0.75 (TP / (TP + FP + FN)) and F1@0.5 from
:mod:`napari_unet.core.evaluate.metrics`, per image and averaged over images.

Prints one JSON object (progress goes to stderr).  Budgets default to
30, 60, 120 s on the CPU and 5, 10 s on CUDA.

Usage::

    python -m benchmarks.bench_finetune [--budgets 30,60,120] [--from default|scratch|both]
        [--device auto|cpu|cuda] [--limit N] [--data DIR | --synthetic-brightfield N] [--model NAME_OR_PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_unet.core.config import InferenceConfig, TrainingConfig
from napari_unet.core.errors import UserInputError
from napari_unet.core.evaluate.metrics import evaluate_dataset, summary_row
from napari_unet.core.io import read_annotated_folder
from napari_unet.core.models.bundle import ModelBundle
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.runtime import resolve_device
from napari_unet.core.predict.segment import predict
from napari_unet.core.progress import run_to_end
from napari_unet.core.train.fine_tune import iter_train
from training.splits import SHARED_DATA

DEFAULT_DATA = SHARED_DATA / "dsb2018" / "val"
SCORE_KEYS = ("AP@0.5", "AP@0.75", "F1@0.5")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default=None, help="comma-separated seconds (default 30,60,120 CPU; 5,10 CUDA)")
    parser.add_argument("--from", dest="start", choices=("default", "scratch", "both"), default="both")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of <id>_image.tif + <id>_labels.tif")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--model", default="default", help="starting model for --from default")
    parser.add_argument("--lr-finetune", type=float, default=3e-4, help="peak learning rate from a trained model")
    parser.add_argument("--lr-scratch", type=float, default=1e-3, help="peak learning rate from scratch")
    parser.add_argument("--batch-size", type=int, default=TrainingConfig.batch_size)
    parser.add_argument("--patch-size", type=int, default=TrainingConfig.patch_size)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for training (0 = all cores)")
    parser.add_argument("--per-image", action="store_true", help="one fine-tune per image instead of one for all")
    parser.add_argument(
        "--synthetic-brightfield",
        type=int,
        default=0,
        metavar="N",
        help=f"use N synthetic H&E-like images (seeds {SYNTHETIC_SEED}+i, never used in training) instead of --data",
    )
    return parser.parse_args(argv)


SYNTHETIC_SEED = 5000
"""First seed of ``--synthetic-brightfield`` images (training's ``--synthetic`` uses 10000 and up)."""


def synthetic_brightfield_pairs(count: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``count`` (id, H&E-like RGB image (256, 256, 3), labels (256, 256)) from napari-unet's generator."""
    from napari_unet.core.data.synthetic import synthetic_nuclei

    pairs = []
    for index in range(count):
        image, labels = synthetic_nuclei((256, 256), 35, seed=SYNTHETIC_SEED + index, kind="brightfield")
        pairs.append((f"bf{index}", image, labels))
    return pairs


def right_half_scores(image: np.ndarray, labels: np.ndarray, bundle: ModelBundle, device: str) -> dict[str, float]:
    """Predict the whole image (so the right half has its real context) and score its right half."""
    predicted = predict(image, bundle, inference=InferenceConfig(device=device)).labels
    half = labels.shape[1] // 2
    row = summary_row(evaluate_dataset([labels[:, half:]], [predicted[:, half:]]))
    return {**{key: _finite(row[key]) for key in SCORE_KEYS}, "n_true": row["n_true"], "n_pred": row["n_pred"]}


def fine_tune(
    bundle: ModelBundle,
    images: list[np.ndarray],
    labels: list[np.ndarray],
    budget: float,
    lr: float,
    args: argparse.Namespace,
) -> tuple[ModelBundle, dict[str, Any]]:
    """Fine-tune on the left half of every image (annotation mode ``rois``)."""
    cfg = TrainingConfig(
        max_seconds=budget,
        annotation_mode="rois",
        learning_rate=lr,
        device=args.device,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        num_threads=args.threads,
    )
    rois = [[(0, 0, label.shape[0], label.shape[1] // 2)] for label in labels]
    result = run_to_end(iter_train(bundle, images, labels, cfg, rois=rois))
    info = {
        "steps": result.steps,
        "seconds": round(result.seconds, 2),
        "stopped_reason": result.stopped_reason,
        "best_step": result.best_step,
        "validation": result.lineage.get("validation"),
        "val_ap50_before": (result.metrics_before or {}).get("val_ap50"),
        "val_ap50_after": (result.metrics_after or {}).get("val_ap50"),
    }
    return result.bundle, info


def starting_bundles(args: argparse.Namespace) -> tuple[dict[str, ModelBundle], dict[str, str]]:
    bundles, skipped = {}, {}
    template = None
    if args.start in ("default", "both"):
        try:
            bundles["default"] = template = load_model(args.model)
        except UserInputError as exc:
            skipped["default"] = f"cannot load model {args.model!r}: {exc}"
    if args.start in ("scratch", "both"):
        config = template.config if template is not None else None
        normalize = template.normalize if template is not None else None
        postprocess = template.postprocess if template is not None else None
        bundles["scratch"] = ModelBundle.new(
            config, normalize=normalize, postprocess=postprocess, metadata={"name": "scratch"}, seed=0
        )
    return bundles, skipped


def run_group(
    group: list[tuple[str, np.ndarray, np.ndarray]],
    start: str,
    bundle: ModelBundle,
    budgets: list[float],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """Score, fine-tune on the left halves of ``group`` for every budget, score again; one row per image."""
    images, labels = [image for _, image, _ in group], [label for _, _, label in group]
    before = [right_half_scores(image, label, bundle, args.device) for image, label in zip(images, labels, strict=True)]
    lr = args.lr_scratch if start == "scratch" else args.lr_finetune
    rows = []
    for budget in budgets:
        tuned, info = fine_tune(bundle, images, labels, budget, lr, args)
        for (image_id, image, label), score_before in zip(group, before, strict=True):
            after = right_half_scores(image, label, tuned, args.device)
            rows.append(
                {"image": image_id, "shape": list(image.shape), "start": start, "budget_s": budget, "lr": lr}
                | info
                | {"before": score_before, "after": after}
            )
        mean_before = np.mean([r["before"]["AP@0.5"] for r in rows[-len(group) :]])
        mean_after = np.mean([r["after"]["AP@0.5"] for r in rows[-len(group) :]])
        print(
            f"{len(group)} image(s) {start} {budget:g}s: AP@0.5 {mean_before:.3f} -> {mean_after:.3f} "
            f"({info['steps']} steps)",
            file=sys.stderr,
            flush=True,
        )
    return rows


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for start in sorted({r["start"] for r in results}):
        for budget in sorted({r["budget_s"] for r in results if r["start"] == start}):
            rows = [r for r in results if r["start"] == start and r["budget_s"] == budget]
            entry = {"n_images": len(rows), "mean_steps": float(np.mean([r["steps"] for r in rows]))}
            for key in SCORE_KEYS:
                before = float(np.mean([r["before"][key] for r in rows]))
                after = float(np.mean([r["after"][key] for r in rows]))
                entry[key] = {"before": round(before, 4), "after": round(after, 4), "gain": round(after - before, 4)}
            summary.setdefault(start, {})[str(budget)] = entry
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.synthetic_brightfield:
        data = synthetic_brightfield_pairs(args.synthetic_brightfield)
        source = f"synthetic brightfield, seeds {SYNTHETIC_SEED}..{SYNTHETIC_SEED + len(data) - 1}"
    else:
        if not args.data.is_dir():
            return {"skipped": f"no data folder {args.data}"}
        data = read_annotated_folder(args.data, args.limit)
        if not data:
            return {"skipped": f"no <id>_image.tif + <id>_labels.tif pairs in {args.data}"}
        source = str(args.data)
    device = resolve_device(args.device)
    budgets = [float(b) for b in (args.budgets or ("5,10" if device.type == "cuda" else "30,60,120")).split(",")]
    bundles, skipped = starting_bundles(args)
    groups = [[item] for item in data] if args.per_image else [data]
    results = []
    for group in groups:
        for start, bundle in bundles.items():
            results += run_group(group, start, bundle, budgets, args)
    return {
        "benchmark": "finetune",
        "protocol": "fine-tune on the left half (rois), score the right half",
        "data": source,
        "mode": "per-image" if args.per_image else "joint",
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "budgets_s": budgets,
        "n_images": len(data),
        "skipped_starts": skipped,
        "summary": summarize(results),
        "results": results,
    }


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) else 0.0


if __name__ == "__main__":
    started = time.perf_counter()
    report = main()
    report["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))

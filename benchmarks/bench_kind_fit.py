"""How well the default model already fits each fine-tuning benchmark kind: its training images against the rest.

``bench_hitl`` fine-tunes on 2 corrected images of a kind and scores the
kind's other held-out images.  What fine-tuning can add depends on what the
default model has not yet learned about the kind: for a kind it trained on
many images of, a score on held-out images close to the score on its own
training images says that more images of that kind (2 corrected ones
included) have little left to teach a model of this size.

For every kind of :func:`benchmarks.bench_hitl.kind_of`, this scores the
default model (AP@0.5, its own test-time settings) on up to ``--per-kind``
of the kind's images in the ``train`` split of ``training/splits_v2.json``
(a fixed random sample) and on all of its held-out (``val`` and ``test``)
images, and counts the training images.  Prints one JSON object.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.bench_kind_fit --json benchmarks/results/kind_fit.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.bench_hitl import ap50, held_out_kinds, images_by_kind
from benchmarks.report import save
from napari_unet.core.io import read_image, read_labels
from napari_unet.core.models.registry import load_model
from training.splits import SHARED_DATA, split_images


def training_kinds() -> dict[str, list[tuple[str, Path, Path]]]:
    """Kind -> the default model's training images ``(key, image path, labels path)`` of that kind, in key order."""
    return images_by_kind(split_images(split="train"))


def sample(items: list[Any], count: int, seed: int = 0) -> list[Any]:
    """Up to ``count`` of ``items``, a fixed random choice in their original order."""
    if len(items) <= count:
        return list(items)
    chosen = np.sort(np.random.default_rng(seed).choice(len(items), size=count, replace=False))
    return [items[i] for i in chosen]


def scores(bundle: Any, items: list[tuple[str, Path, Path]]) -> list[float]:
    """AP@0.5 of ``bundle`` on every ``(key, image path, labels path)``."""
    return [ap50(bundle, read_image(image), read_labels(labels)) for _, image, labels in items]


def kind_row(bundle: Any, trained: list[Any], held_out: list[Any], per_kind: int) -> dict[str, Any]:
    """Training-image count and mean AP@0.5 on a sample of them and on the held-out images of one kind."""
    scored = sample(trained, per_kind)
    train_scores, held_out_scores = scores(bundle, scored), scores(bundle, held_out)
    row: dict[str, Any] = {
        "training_images": len(trained),
        "training_scored": len(scored),
        "training_ap50": float(np.mean(train_scores)) if train_scores else None,
        "held_out_images": len(held_out),
        "held_out_ap50": float(np.mean(held_out_scores)) if held_out_scores else None,
    }
    if train_scores and held_out_scores:
        row["gap"] = row["training_ap50"] - row["held_out_ap50"]
    return row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-kind", type=int, default=40, help="training images scored per kind (a fixed sample)")
    parser.add_argument("--kinds", default="", help="comma-separated kinds (default: every benchmark kind)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Score every kind and print (and optionally write) the JSON."""
    args = parse_args(argv)
    if not SHARED_DATA.is_dir():
        print(f"bench_kind_fit needs the shared data at {SHARED_DATA}", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    bundle = load_model("default")
    held_out, trained = held_out_kinds(), training_kinds()
    wanted = [kind for kind in args.kinds.split(",") if kind] or sorted(held_out)
    report: dict[str, Any] = {"benchmark": "bench_kind_fit", "model": "default", "per_kind": args.per_kind, "kinds": {}}
    for kind in wanted:
        print(f"{kind}: scoring", file=sys.stderr)
        report["kinds"][kind] = kind_row(bundle, trained.get(kind, []), held_out.get(kind, []), args.per_kind)
    print(save(report, args.json))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

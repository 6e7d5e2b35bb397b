"""Which replay crops should check a fine-tune for forgetting: every 4th crop (shipped), or the densest?

The other-kinds guard scores parent and child on the replay set's check
crops (every 4th crop, :func:`napari_unet.core.train.replay.split_replay_set`).
:func:`check_flags` is the alternative measured here: in each group, one
crop in 4, alternate crops down the group's ranking by nuclei (more nuclei
per check, S-BSST265 tumour crops included, dense crops left in rehearsal
too).  ``bench_hitl`` scores forgetting on a panel of 2 images per kind, and
the shared data hold only 2 held-out images of DSB stage-2 colour tissue, so
this fine-tunes the default model on 2 corrected synthetic H&E images
(``bench_hitl``'s synthetic kind and recipe, a step budget) once with each
choice (which also decides the rehearsed crops) and scores both, and the
default model (AP@0.5, mean per image), on the other 6 synthetic images, on
all held-out DSB colour tissue images and on the 2 DSB stage-2 colour images.

Usage (from the repository root, with ``../shared/data``)::

    .venv/bin/python -m benchmarks.bench_check_crops --json benchmarks/results/check_crops.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.bench_hitl import fine_tune, held_out_kinds, score, synthetic_kind
from benchmarks.report import save
from napari_unet.core.config import TrainingConfig
from napari_unet.core.io import read_image, read_labels
from napari_unet.core.models.registry import load_model
from napari_unet.core.train import fine_tune as fine_tuning
from napari_unet.core.train.fine_tune import fine_tune_recipe
from napari_unet.core.train.replay import CHECK_EVERY, load_replay_set
from training.splits import SHARED_DATA, split_images


def check_flags(labels: list[np.ndarray], groups: list[str], every: int = CHECK_EVERY) -> list[bool]:
    """Choose check crops by nuclei: in each group, one crop in ``every``, alternate crops down the ranking.

    Parameters
    ----------
    labels : list of numpy.ndarray
        ``(Y, X)`` labels of every crop, ids ``1..n``.
    groups : list of str
        Each crop's group.
    every : int
        One check crop per ``every`` crops of a group (rounded down).

    Returns
    -------
    list of bool
        Whether each crop checks (True) or is rehearsed (False).

    """
    flags = [False] * len(labels)
    for group in dict.fromkeys(groups):
        members = [i for i, name in enumerate(groups) if name == group]
        ranked = sorted(members, key=lambda i: -int(labels[i].max()))  # stable: ties keep the crop order
        for i in ranked[::2][: len(members) // every]:
            flags[i] = True
    return flags


def nuclei_ranked(path: Path, count: int) -> list[bool]:
    """:func:`check_flags` of the replay set at ``path`` (``count`` crops)."""
    crops = load_replay_set(path)
    if len(crops.images) != count:
        raise ValueError(f"{path} holds {len(crops.images)} crops, not {count}")
    return check_flags(crops.labels, crops.groups)


CHOICES: dict[str, Callable[[Path, int], list[bool]]] = {
    "every_fourth": fine_tuning.replay_check_flags,
    "nuclei_ranked": nuclei_ranked,
}
"""Check-crop choice -> the ``replay_check_flags`` a fine-tune uses (the shipped one first)."""

Pairs = list[tuple[np.ndarray, np.ndarray]]


def scored_sets() -> dict[str, Pairs]:
    """Name -> ``(image, labels)`` pairs scored after each fine-tune."""
    synthetic = [(image, labels) for _, image, labels in synthetic_kind()[2:]]
    tissue = [(read_image(image), read_labels(labels)) for _, image, labels in held_out_kinds()["dsb_colour_tissue"]]
    stage2 = split_images(split="test", source="dsb2018_val", group="colour")
    return {
        "synthetic_he": synthetic,
        "dsb_colour_tissue": tissue,
        "dsb_stage2_colour": [(read_image(item.image_path), read_labels(item.labels_path)) for item in stage2],
    }


def scores(bundle: Any, sets: dict[str, Pairs]) -> dict[str, Any]:
    """Mean AP@0.5 of ``bundle`` on every set (and per image, for the small stage-2 set)."""
    row: dict[str, Any] = {name: float(np.mean(score(bundle, pairs))) for name, pairs in sets.items()}
    row["dsb_stage2_colour_per_image"] = score(bundle, sets["dsb_stage2_colour"])
    return row


def run(steps: int) -> dict[str, Any]:
    """Fine-tune with each check-crop choice and score; return the report."""
    default = load_model("default")
    sets = scored_sets()
    corrected = synthetic_kind()[:2]
    cfg = replace(fine_tune_recipe(default, TrainingConfig()), max_seconds=None, max_steps=steps, seed=0)
    report: dict[str, Any] = {"benchmark": "bench_check_crops", "steps": steps, "default": scores(default, sets)}
    chosen = fine_tuning.replay_check_flags
    try:
        for name, choice in CHOICES.items():
            print(f"fine-tuning with the {name} check crops", file=sys.stderr)
            fine_tuning.replay_check_flags = choice
            result = fine_tune(default, [pair[1] for pair in corrected], [pair[2] for pair in corrected], cfg)
            report[name] = {**scores(result.bundle, sets), "other_kinds_check": result.replay_check}
    finally:
        fine_tuning.replay_check_flags = chosen
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print (and optionally write) its JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=548, help="step budget (bench_hitl's 120 s at 4.57 steps/s)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if not SHARED_DATA.is_dir():
        print(f"bench_check_crops needs the shared data at {SHARED_DATA}", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    print(save(run(args.steps), args.json))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

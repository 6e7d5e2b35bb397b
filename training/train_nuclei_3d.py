"""Train the bundled 3D nuclei model ``nuclei-3d`` on synthetic Z-stacks, with napari-unet's own 3D code.

Data: :func:`napari_unet.core.data.synthetic.random_zstack` stacks (each seed its own optics, anisotropy, nucleus
size, crowding and noise). Seeds 0.. train; seeds from 10_000 choose the checkpoint and the thresholds (their
``val`` AP is reported as such, never as accuracy); seeds from 20_000 are only ever scored by
``benchmarks/bench_3d.py``.

The run is resumable: ``--init`` starts from a saved model folder (e.g. the last run's ``OUT/model``).

Usage::

    OMP_NUM_THREADS=2 nice -n 19 python -m training.train_nuclei_3d --steps 1800 --out out/nuclei3d
    OMP_NUM_THREADS=2 nice -n 19 python -m training.train_nuclei_3d --steps 1500 --init napari_unet/weights/nuclei-3d \
        --out out/nuclei3d_r2                                       # continue from the bundled model
    python -m training.train_nuclei_3d --install out/nuclei3d/model     # copy into napari_unet/weights/nuclei-3d
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from napari_unet.core.config import InferenceConfig, ModelConfig, PostprocessConfig, TrainingConfig
from napari_unet.core.data.synthetic import random_zstack
from napari_unet.core.evaluate.metrics import evaluate_image, summary_row
from napari_unet.core.io import write_json
from napari_unet.core.models.bundle import ModelBundle, save_model
from napari_unet.core.models.registry import BUNDLED_3D_NAME, bundled_model_dir, load_model
from napari_unet.core.predict.volumetric import iter_predict_volume
from napari_unet.core.progress import run_to_end
from napari_unet.core.train.volumetric import iter_train_volume

TRAIN_SEED, VAL_SEED, TEST_SEED = 0, 10_000, 20_000
STACK_SHAPE = (32, 128, 128)
MODEL_CONFIG = ModelConfig(spatial_dims=3, depth=3, base_channels=16, xy_only_levels=1)
MODEL_Z_SPACING = 2.0  # middle of the training range (1-3): what --z-spacing resamples to
GRID = {
    "foreground_threshold": (0.4, 0.5, 0.6),
    "seed_threshold": (0.5, 0.6, 0.7, 0.8),
    "min_size": (20, 60, 150),
}


def stacks(first_seed: int, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``count`` random stacks from ``first_seed`` on: images and labels."""
    made = [random_zstack(seed, STACK_SHAPE)[:2] for seed in range(first_seed, first_seed + count)]
    return [image for image, _ in made], [labels for _, labels in made]


def new_model() -> ModelBundle:
    metadata = {
        "name": BUNDLED_3D_NAME,
        "description": "3D nuclei (fluorescence Z-stacks), trained on synthetic stacks by training/train_nuclei_3d.py",
        "z_spacing": MODEL_Z_SPACING,
        "object_diameter": {"low": 7.0, "high": 22.0},
    }
    return ModelBundle.new(MODEL_CONFIG, postprocess=PostprocessConfig(min_size=60), metadata=metadata, seed=0)


def val_probabilities(bundle: ModelBundle, images: list[np.ndarray]) -> list[np.ndarray]:
    inference = InferenceConfig(device="cpu")
    return [
        run_to_end(iter_predict_volume(image, "ZYX", bundle, inference, bundle.postprocess)).probabilities
        for image in images
    ]


def choose_thresholds(
    bundle: ModelBundle, probabilities: list[np.ndarray], labels: list[np.ndarray]
) -> tuple[PostprocessConfig, list[dict]]:
    """Grid-search the post-processing on the validation stacks; return the best config and every row."""
    from napari_unet.core.labels.extraction import labels_from_probabilities

    rows = []
    for values in itertools.product(*GRID.values()):
        cfg = replace(bundle.postprocess, **dict(zip(GRID, values, strict=True)))
        scores = [
            summary_row(evaluate_image(truth, labels_from_probabilities(p, "ZYX", cfg, volumetric=True), (0.5,)))
            for p, truth in zip(probabilities, labels, strict=True)
        ]
        rows.append({**dict(zip(GRID, values, strict=True)), "val_ap50": float(np.mean([s["AP@0.5"] for s in scores]))})
    best = max(rows, key=lambda row: row["val_ap50"])
    return replace(bundle.postprocess, **{key: best[key] for key in GRID}), rows


def train(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    images, labels = stacks(TRAIN_SEED, args.train_stacks)
    val_images, val_labels = stacks(VAL_SEED, args.val_stacks)
    bundle = load_model(args.init) if args.init else new_model()
    cfg = TrainingConfig(
        learning_rate=args.lr or (1e-3 if args.init else 2e-3),
        batch_size=args.batch,
        max_seconds=args.seconds,
        max_steps=args.steps,
        val_every=args.val_every,
        warmup_steps=50 if not args.init else 0,
        schedule="cosine" if args.steps else "constant",
        device="cpu",
        seed=args.seed,
    )
    result = None
    gen = iter_train_volume(
        bundle, images, labels, cfg, val_volumes=val_images, val_labels=val_labels, patch_zyx=tuple(args.patch)
    )
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        if "val_ap50" in event.metrics:
            print(json.dumps({"step": event.done, "val_ap50": event.metrics["val_ap50"]}), flush=True)
    model = result.bundle
    model.metadata["name"] = BUNDLED_3D_NAME
    chosen, grid = choose_thresholds(model, val_probabilities(model, val_images), val_labels)
    model.postprocess = chosen
    save_model(model, args.out / "model", overwrite=True)
    report = {
        "train_stacks": args.train_stacks,
        "val_stacks": args.val_stacks,
        "stack_shape": list(STACK_SHAPE),
        "steps": result.steps,
        "best_step": result.best_step,
        "val_ap50_checkpoint": result.best_score,
        "val_ap50_before": result.metrics_before,
        "postprocess": chosen.to_dict(),
        "threshold_grid": grid,
        "seconds": time.perf_counter() - started,
        "init": str(args.init) if args.init else None,
        "history": result.history,
    }
    write_json(args.out / "train.json", report, overwrite=True)
    print(json.dumps({k: report[k] for k in ("steps", "best_step", "val_ap50_checkpoint", "postprocess", "seconds")}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/nuclei3d"))
    parser.add_argument("--init", type=Path, default=None, help="continue from this model folder")
    parser.add_argument("--seconds", type=float, default=3600.0, help="time cap (the step budget usually ends first)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--train-stacks", type=int, default=48)
    parser.add_argument("--val-stacks", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--patch", type=int, nargs=3, default=[16, 96, 96])
    parser.add_argument("--lr", type=float, default=None, help="default 2e-3 from scratch, 1e-3 with --init")
    parser.add_argument("--val-every", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--install", type=Path, default=None, help="copy this model folder into the package")
    args = parser.parse_args(argv)
    if args.install:
        print(save_model(load_model(args.install), bundled_model_dir(BUNDLED_3D_NAME), overwrite=True))
        return
    train(args)


if __name__ == "__main__":
    main()

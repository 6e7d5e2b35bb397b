"""3D UNet against 2D slice-by-slice + linking and 3D classical baselines, on held-out synthetic Z-stacks.

Test stacks: :func:`napari_unet.core.data.synthetic.random_zstack` seeds from 20_000 on (never seen in training,
never used to choose a checkpoint or thresholds: ``training/train_nuclei_3d.py`` trains on seeds 0.. and
validates on seeds from 10_000). Every method segments every stack in the same run, one after the other;
scores are AP@0.5 and AP@0.75 over 3D IoU (mean per stack), and the seconds each method took per stack
(2 CPU cores unless stated; a ratio between methods is meaningful, an absolute time only on the stated machine).

Methods:

- ``nuclei-3d``: the bundled 3D model (or ``--model3d``), not told the Z step;
- ``nuclei-3d, Z step given``: the same, told each stack's true Z step (it resamples Z to its own);
- ``default 2D + linking``: the bundled 2D model on every plane, slices linked by IoU (today's Z-stack path);
- ``watershed 3D`` / ``otsu 3D``: :func:`napari_unet.core.evaluate.baselines.segment_volume_baseline`
  given the true Z step;
- ``watershed 2D + linking``: the classical watershed per plane, linked like the 2D model's.

Usage::

    python -m benchmarks.bench_3d --stacks 8 --json benchmarks/results/bench_3d.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch

from napari_unet.core.config import InferenceConfig
from napari_unet.core.data.synthetic import random_zstack
from napari_unet.core.evaluate.baselines import segment_baseline, segment_volume_baseline
from napari_unet.core.evaluate.metrics import evaluate_image, summary_row
from napari_unet.core.io import write_json
from napari_unet.core.labels.postprocess import link_slices
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.segment import predict

TEST_SEED = 20_000
STACK_SHAPE = (32, 128, 128)
Method = Callable[[np.ndarray, dict], np.ndarray]


def methods(model3d: str, model2d: str) -> dict[str, Method]:
    """Every method as ``f(stack, settings) -> labels (Z, Y, X)``."""
    bundle3d, bundle2d = load_model(model3d), load_model(model2d)
    cpu = InferenceConfig(device="cpu")
    return {
        "nuclei-3d": lambda image, _: predict(image, bundle3d, "ZYX", cpu).labels,
        "nuclei-3d, Z step given": lambda image, s: (
            predict(image, bundle3d, "ZYX", cpu, z_spacing=s["z_spacing"]).labels
        ),
        "default 2D + linking": lambda image, _: predict(image, bundle2d, "ZYX", cpu).labels,
        "watershed 3D": lambda image, s: segment_volume_baseline(image, "watershed", z_spacing=s["z_spacing"]),
        "otsu 3D": lambda image, s: segment_volume_baseline(image, "otsu", z_spacing=s["z_spacing"]),
        "watershed 2D + linking": lambda image, _: link_slices(segment_baseline(image, "watershed", "ZYX")),
    }


def run(n_stacks: int, model3d: str, model2d: str) -> dict:
    chosen = methods(model3d, model2d)
    per_method: dict[str, dict[str, list[float]]] = {name: {"AP@0.5": [], "AP@0.75": [], "s": []} for name in chosen}
    for seed in range(TEST_SEED, TEST_SEED + n_stacks):
        image, truth, settings = random_zstack(seed, STACK_SHAPE)
        for name, method in chosen.items():
            started = time.perf_counter()
            labels = method(image, settings)
            seconds = time.perf_counter() - started
            row = summary_row(evaluate_image(truth, labels, (0.5, 0.75)))
            for key in ("AP@0.5", "AP@0.75"):
                per_method[name][key].append(float(row[key]))
            per_method[name]["s"].append(seconds)
        print(json.dumps({"seed": seed, **{n: round(v["AP@0.5"][-1], 3) for n, v in per_method.items()}}), flush=True)
    summary = {
        name: {
            "AP@0.5": float(np.mean(v["AP@0.5"])),
            "AP@0.75": float(np.mean(v["AP@0.75"])),
            "seconds_per_stack": float(np.mean(v["s"])),
            "per_stack_AP@0.5": v["AP@0.5"],
        }
        for name, v in per_method.items()
    }
    return {
        "test_seeds": [TEST_SEED, TEST_SEED + n_stacks - 1],
        "stack_shape": list(STACK_SHAPE),
        "model3d": model3d,
        "model2d": model2d,
        "threads": torch.get_num_threads(),
        "methods": summary,
        "margin_3d_over_2d_linking_ap50": summary["nuclei-3d"]["AP@0.5"] - summary["default 2D + linking"]["AP@0.5"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=8)
    parser.add_argument("--model3d", default="nuclei-3d")
    parser.add_argument("--model2d", default="default")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    report = run(args.stacks, args.model3d, args.model2d)
    if args.json:
        write_json(args.json, report, overwrite=True)
    print(
        json.dumps(
            {k: v for k, v in report.items() if k != "methods"}
            | {
                "methods": {
                    n: {k: round(x, 3) for k, x in m.items() if k != "per_stack_AP@0.5"}
                    for n, m in report["methods"].items()
                }
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

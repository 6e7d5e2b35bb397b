"""Fine-tuning in float32 against bfloat16 on this CPU: steps per second side by side, and what the steps learn.

A fine-tune of the bundled default model as the CLI and the Fine-tune panel run
it (``fine_tune_recipe``), with ``TrainingConfig.amp`` off (float32) and on
(bfloat16 autocast, where the CPU computes it natively:
:func:`~napari_unet.core.predict.runtime.mixed_precision_on`), on two cases
made here (no ``../shared`` needed):

- ``panel``: the issue's Fine-tune panel case, one 1000x1000 synthetic
  brightfield (colour) image with 300 corrected nuclei;
- ``grey_pair``: two 256x320 synthetic fluorescence images (40 nuclei each),
  like two corrected DSB images.

Speed: each case is fine-tuned for ``--seconds`` of wall time in both
precisions, the two taking turns for ``--rounds`` rounds in this one process;
the result is steps per second (all of the run, validation included) and per
second of training (validation time taken out), their best over rounds, and
the ratio bfloat16 / float32 (a ratio measured side by side; absolute paces on
a shared CPU are not the result).

Learning: each case is fine-tuned for the same ``--steps`` in both precisions
(seed 0, no time limit) and scored: the held-out corrections' AP@0.5 before and
after (as the run reports them), whether the starting model was kept, and
AP@0.5 on an unseen image of the case's kind (another synthetic seed).

Usage (from the repository root, on an otherwise idle machine)::

    .venv/bin/python -m benchmarks.bench_train_precision --json benchmarks/results/train_precision.json
"""

from __future__ import annotations

import argparse
import platform
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.report import save
from napari_unet.core.config import TrainingConfig
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.evaluate.metrics import evaluate_image
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.runtime import cpu_has_native_bf16, mixed_precision_on
from napari_unet.core.predict.segment import predict
from napari_unet.core.progress import run_to_end
from napari_unet.core.train.fine_tune import fine_tune_recipe, iter_fine_tune

PRECISIONS = {"float32": False, "bfloat16": True}
"""Name -> ``TrainingConfig.amp``."""


def cases() -> dict[str, dict[str, Any]]:
    """Each case's corrected images ``(Y, X)`` or ``(Y, X, 3)``, their labels, and an unseen image with its labels."""
    panel_image, panel_labels = synthetic_nuclei((1000, 1000), 300, seed=7101, kind="brightfield")
    panel_unseen = synthetic_nuclei((256, 256), 35, seed=7102, kind="brightfield")
    grey = [synthetic_nuclei((256, 320), 40, seed=seed, kind="fluorescence") for seed in (811, 812)]
    return {
        "panel": {"images": [panel_image], "labels": [panel_labels], "unseen": panel_unseen},
        "grey_pair": {
            "images": [image for image, _ in grey],
            "labels": [labels for _, labels in grey],
            "unseen": synthetic_nuclei((256, 320), 40, seed=813, kind="fluorescence"),
        },
    }


def fine_tune(bundle: Any, case: dict[str, Any], cfg: TrainingConfig) -> Any:
    """Fine-tune ``bundle`` on the case's corrections with ``cfg``; the TrainResult."""
    return run_to_end(iter_fine_tune(bundle, case["images"], case["labels"], cfg))


def pace(result: Any) -> dict[str, float]:
    """Steps per second of a run: over all of it, and over its training time (validation taken out)."""
    validation = float(result.lineage.get("validation_seconds", 0.0))
    return {
        "steps": result.steps,
        "seconds": result.seconds,
        "validation_seconds": validation,
        "steps_per_second": result.steps / max(result.seconds, 1e-9),
        "steps_per_training_second": result.steps / max(result.seconds - validation, 1e-9),
    }


def speed(case: dict[str, Any], seconds: float, rounds: int) -> dict[str, Any]:
    """Both precisions fine-tune for ``seconds``, taking turns ``rounds`` times; best paces and their ratios."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in PRECISIONS}
    for _ in range(rounds):
        for name, amp in PRECISIONS.items():
            bundle = load_model("default")
            cfg = replace(fine_tune_recipe(bundle, TrainingConfig()), max_seconds=seconds, amp=amp)
            runs[name].append(pace(fine_tune(bundle, case, cfg)))
    best = {
        name: {key: max(run[key] for run in rows) for key in ("steps_per_second", "steps_per_training_second")}
        for name, rows in runs.items()
    }
    return {
        "runs": runs,
        "best": best,
        "ratio": best["bfloat16"]["steps_per_second"] / best["float32"]["steps_per_second"],
        "training_ratio": best["bfloat16"]["steps_per_training_second"] / best["float32"]["steps_per_training_second"],
    }


def ap50(bundle: Any, image: np.ndarray, labels: np.ndarray) -> float:
    """AP@0.5 of ``bundle`` on one image, segmented with its own settings."""
    return float(evaluate_image(labels, predict(image, bundle).labels)["per_threshold"][0]["accuracy"])


def learning(case: dict[str, Any], steps: int) -> dict[str, Any]:
    """Both precisions fine-tune for ``steps`` (seed 0): held-out AP@0.5 before and after, kept, unseen-image AP@0.5."""
    unseen_image, unseen_labels = case["unseen"]
    rows = {}
    for name, amp in PRECISIONS.items():
        bundle = load_model("default")
        cfg = replace(fine_tune_recipe(bundle, TrainingConfig()), max_seconds=None, max_steps=steps, amp=amp, seed=0)
        result = fine_tune(bundle, case, cfg)
        rows[name] = {
            "steps": result.steps,
            "best_step": result.best_step,
            "kept_parent": result.kept_parent,
            "held_out_before": (result.metrics_before or {}).get("val_ap50"),
            "held_out_after": (result.metrics_after or {}).get("val_ap50"),
            "unseen_before": ap50(bundle, unseen_image, unseen_labels),
            "unseen_after": ap50(result.bundle, unseen_image, unseen_labels),
        }
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="wall-time budget of each timed fine-tune")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per precision and case, taking turns")
    parser.add_argument("--steps", type=int, default=150, help="step budget of the learning comparison")
    parser.add_argument("--cases", default="panel,grey_pair", help="comma-separated, of panel, grey_pair")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (and optionally write) its JSON."""
    args = parse_args(argv)
    torch.set_num_threads(2)
    cpu = torch.device("cpu")
    if not mixed_precision_on(cpu):
        print("this CPU has no native bfloat16: both runs would train in float32", file=sys.stderr)
        return 1
    report: dict[str, Any] = {
        "benchmark": "bench_train_precision",
        "settings": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        "machine": {
            "cpu_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "processor": platform.processor(),
            "native_bfloat16": cpu_has_native_bf16(),
        },
        "cases": {},
    }
    made = cases()
    for name in args.cases.split(","):
        entry = report["cases"].setdefault(name, {})
        entry["speed"] = speed(made[name], args.seconds, args.rounds)
        save(report, args.json)
        entry["learning"] = learning(made[name], args.steps)
        save(report, args.json)
        print(f"{name}: bfloat16 / float32 steps per second {entry['speed']['ratio']:.2f}", file=sys.stderr)
    print(save(report, args.json))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A short 3D fine-tune of ``nuclei-3d`` without validation stacks: its last weights against their average with it.

For every test "microscope and sample" (:func:`napari_unet.core.data.synthetic.random_zstack` seeds from 20_000 on,
never seen in training or validation of ``nuclei-3d``): fine-tune on one stack for ``--steps`` steps (all of it
annotated, Z step given, no validation stacks: what the Fine-tune panel does), then score on a second stack with
the same settings but other nuclei (AP@0.5 and AP@0.75 over 3D IoU):

- ``parent``: the bundled model before fine-tuning;
- ``last``: the last fine-tuned weights (what a run without validation returned before the guard);
- ``averaged``: :func:`napari_unet.core.train.outcome.average_with_parent`, the last weights averaged with the parent's
  (what it returns now for a trained starting model).

With ``--radius-factor 2`` the nuclei are twice as large as the kind's (beyond the 3.5-12 px radii
``nuclei-3d`` learned): a kind the model does not know, where fine-tuning has more to teach.

With ``--compare-precision`` every stack is fine-tuned twice, side by side in one run (the order alternating from
stack to stack): as the product trains (bfloat16 on a CPU that computes it natively) and in float32
(``TrainingConfig.amp`` off); the results hold both and the ratio of their training seconds.

Usage::

    python -m benchmarks.bench_finetune_3d --stacks 6 --steps 120 --json benchmarks/results/finetune_3d.json
    python -m benchmarks.bench_finetune_3d --stacks 6 --steps 120 --radius-factor 2 \
        --json benchmarks/results/finetune_3d_large_nuclei.json
    python -m benchmarks.bench_finetune_3d --stacks 6 --steps 120 --compare-precision \
        --json benchmarks/results/finetune_3d_precision.json
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import replace

import numpy as np
import torch

from napari_unet.core.config import InferenceConfig, TrainingConfig
from napari_unet.core.data.synthetic import random_zstack, synthetic_zstack
from napari_unet.core.evaluate.metrics import evaluate_image, summary_row
from napari_unet.core.io import write_json
from napari_unet.core.models.bundle import ModelBundle
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.runtime import mixed_precision_on
from napari_unet.core.predict.segment import predict
from napari_unet.core.progress import run_to_end
from napari_unet.core.train.outcome import average_with_parent
from napari_unet.core.train.volumetric import VOLUME_BATCH_SIZE, iter_train_volume

TEST_SEED = 20_000
OTHER_NUCLEI = 50_000
"""Added to a test seed for the scoring stack: same settings, other nuclei."""
STACK_SHAPE = (32, 128, 128)


def score(bundle: ModelBundle, image: np.ndarray, truth: np.ndarray, z_spacing: float) -> dict[str, float]:
    """AP@0.5 and AP@0.75 of ``bundle`` on one ``(Z, Y, X)`` stack whose Z step is given."""
    labels = predict(image, bundle, "ZYX", InferenceConfig(device="cpu"), z_spacing=z_spacing).labels
    row = summary_row(evaluate_image(truth, labels, (0.5, 0.75)))
    return {"AP@0.5": row["AP@0.5"], "AP@0.75": row["AP@0.75"]}


def with_state(bundle: ModelBundle, state: dict[str, torch.Tensor]) -> ModelBundle:
    """A copy of ``bundle`` whose network holds ``state``."""
    network = copy.deepcopy(bundle.network)
    network.load_state_dict(state)
    return replace(bundle, network=network.eval())


def test_settings(seed: int, radius_factor: float) -> dict:
    """The settings of test kind ``seed``: :func:`random_zstack`'s, with nuclei ``radius_factor`` times as large
    (and as many fewer as keeps the crowding) for a kind unlike any the model learned from."""
    _, _, settings = random_zstack(seed, STACK_SHAPE)
    low, high = settings["radius_range"]
    settings["radius_range"] = (low * radius_factor, high * radius_factor)
    settings["n_nuclei"] = max(1, round(settings["n_nuclei"] / radius_factor**3))
    return settings


def run_stack(parent: ModelBundle, seed: int, steps: int, radius_factor: float = 1.0, amp: bool = True) -> dict:
    """Fine-tune ``parent`` on stack ``seed`` and score parent, last and averaged weights on its sibling stack.

    ``amp``: the network in mixed precision where the device computes it natively (as the product trains).
    """
    settings = test_settings(seed, radius_factor)
    image, truth = synthetic_zstack(STACK_SHAPE, seed=seed, **settings)
    test_image, test_truth = synthetic_zstack(STACK_SHAPE, seed=seed + OTHER_NUCLEI, **settings)
    z_spacing = settings["z_spacing"]
    cfg = TrainingConfig(
        max_steps=steps, max_seconds=None, batch_size=VOLUME_BATCH_SIZE, device="cpu", seed=seed, amp=amp
    )
    untrained_view = replace(parent, metadata={})  # same weights, no training record: the run returns its last weights
    result = run_to_end(iter_train_volume(untrained_view, [image], [truth], cfg, z_spacings=[z_spacing]))
    last = result.bundle.network.state_dict()
    averaged = average_with_parent(parent, parent.network.state_dict(), last)
    candidates = {"parent": parent, "last": with_state(parent, last), "averaged": with_state(parent, averaged)}
    scores = {name: score(bundle, test_image, test_truth, z_spacing) for name, bundle in candidates.items()}
    return {"seed": seed, "z_spacing": round(z_spacing, 3), "train_seconds": round(result.seconds, 1), **scores}


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean AP@0.5 / AP@0.75 of each candidate over the stacks."""
    names = ("parent", "last", "averaged")
    return {name: {m: float(np.mean([row[name][m] for row in rows])) for m in ("AP@0.5", "AP@0.75")} for name in names}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="nuclei-3d")
    parser.add_argument("--stacks", type=int, default=6)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument(
        "--radius-factor", type=float, default=1.0, help="nuclei this many times larger than the kind's (unseen sizes)"
    )
    parser.add_argument(
        "--compare-precision", action="store_true", help="each stack also in float32, side by side (see above)"
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    parent = load_model(args.model)
    results = {
        "model": args.model,
        "model_sha256": parent.sha256,
        "stack_shape": list(STACK_SHAPE),
        "steps": args.steps,
        "radius_factor": args.radius_factor,
        "batch": VOLUME_BATCH_SIZE,
    }
    seeds = range(TEST_SEED, TEST_SEED + args.stacks)
    if args.compare_precision:
        results.update(compare_precisions(parent, seeds, args.steps, args.radius_factor))
    else:
        rows = [run_and_print(parent, seed, args.steps, args.radius_factor) for seed in seeds]
        results.update({"stacks": rows, "mean": summarise(rows)})
        print(json.dumps(results["mean"], indent=2))
    if args.json:
        write_json(args.json, results, overwrite=True)


def run_and_print(parent: ModelBundle, seed: int, steps: int, radius_factor: float, amp: bool = True) -> dict:
    """:func:`run_stack`, its row printed as one JSON line."""
    row = run_stack(parent, seed, steps, radius_factor, amp)
    print(json.dumps({"amp": amp, **row}), flush=True)
    return row


def compare_precisions(parent: ModelBundle, seeds: range, steps: int, radius_factor: float) -> dict:
    """Every stack fine-tuned as the product trains and in float32, the order alternating; both summarised.

    Returns ``{"precision": ..., "precisions": {name: {"stacks", "mean", "train_seconds"}},
    "float32_over_mixed_seconds": ratio}``; ``precision`` names what the product's setting ran in on this CPU.
    """
    rows: dict[bool, list[dict]] = {True: [], False: []}
    for index, seed in enumerate(seeds):
        for amp in (True, False) if index % 2 == 0 else (False, True):
            rows[amp].append(run_and_print(parent, seed, steps, radius_factor, amp))
    mixed = "bfloat16" if mixed_precision_on(torch.device("cpu")) else "float32 (this CPU has no native bfloat16)"
    seconds = {amp: float(sum(row["train_seconds"] for row in rows[amp])) for amp in rows}
    summary = {
        "precision": mixed,
        "precisions": {
            name: {"stacks": rows[amp], "mean": summarise(rows[amp]), "train_seconds": round(seconds[amp], 1)}
            for name, amp in (("mixed", True), ("float32", False))
        },
        "float32_over_mixed_seconds": round(seconds[False] / seconds[True], 3),
    }
    print(json.dumps({name: part["mean"] for name, part in summary["precisions"].items()}, indent=2))
    return summary


if __name__ == "__main__":
    main()

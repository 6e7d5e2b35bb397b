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

Usage::

    python -m benchmarks.bench_finetune_3d --stacks 6 --steps 120 --json benchmarks/results/finetune_3d.json
    python -m benchmarks.bench_finetune_3d --stacks 6 --steps 120 --radius-factor 2 \
        --json benchmarks/results/finetune_3d_large_nuclei.json
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


def run_stack(parent: ModelBundle, seed: int, steps: int, radius_factor: float = 1.0) -> dict:
    """Fine-tune ``parent`` on stack ``seed`` and score parent, last and averaged weights on its sibling stack."""
    settings = test_settings(seed, radius_factor)
    image, truth = synthetic_zstack(STACK_SHAPE, seed=seed, **settings)
    test_image, test_truth = synthetic_zstack(STACK_SHAPE, seed=seed + OTHER_NUCLEI, **settings)
    z_spacing = settings["z_spacing"]
    cfg = TrainingConfig(max_steps=steps, max_seconds=None, batch_size=VOLUME_BATCH_SIZE, device="cpu", seed=seed)
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
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    parent = load_model(args.model)
    rows = []
    for seed in range(TEST_SEED, TEST_SEED + args.stacks):
        rows.append(run_stack(parent, seed, args.steps, args.radius_factor))
        print(json.dumps(rows[-1]), flush=True)
    results = {
        "model": args.model,
        "model_sha256": parent.sha256,
        "stack_shape": list(STACK_SHAPE),
        "steps": args.steps,
        "radius_factor": args.radius_factor,
        "batch": VOLUME_BATCH_SIZE,
        "stacks": rows,
        "mean": summarise(rows),
    }
    print(json.dumps(results["mean"], indent=2))
    if args.json:
        write_json(args.json, results, overwrite=True)


if __name__ == "__main__":
    main()

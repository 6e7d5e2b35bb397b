"""Write MODEL_CARD.md and model_card.json for the bundled 3D model ``nuclei-3d`` from its results files.

Every number comes from a file a script wrote:

- ``--train``: ``training/train_nuclei_3d.py``'s ``train.json`` (steps, time, validation AP that chose the
  checkpoint and thresholds);
- ``--bench``: ``benchmarks/bench_3d.py`` (held-out test stacks: the model against 2D + linking and the
  classical baselines, AP@0.5 / AP@0.75 over 3D IoU and seconds per stack).

Usage::

    python -m training.make_model_card_3d napari_unet/weights/nuclei-3d \\
        --train benchmarks/results/nuclei_3d_training.json [LATER_RUN.json ...] \\
        --bench benchmarks/results/bench_3d.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from napari_unet.core.io import write_json
from napari_unet.core.models.network import count_parameters
from napari_unet.core.models.registry import load_model

TRAIN_COMMAND = "OMP_NUM_THREADS=2 nice -n 19 python -m training.train_nuclei_3d --steps {steps}{extra} --out OUT"
BENCH_COMMAND = "python -m benchmarks.bench_3d --stacks {stacks} --json benchmarks/results/bench_3d.json"


def merged_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The last run's report with the steps and seconds of all runs (each later run continued the one before)."""
    commands = []
    for run in runs:
        extra = f" --init {run['init']}" if run.get("init") else ""
        commands.append(TRAIN_COMMAND.format(steps=run["steps"], extra=extra))
    steps, seconds = sum(run["steps"] for run in runs), sum(run["seconds"] for run in runs)
    return {**runs[-1], "steps": steps, "seconds": seconds, "runs": commands}


def card_json(folder: Path, train: dict[str, Any], bench: dict[str, Any]) -> dict[str, Any]:
    bundle = load_model(folder)
    return {
        "architecture": bundle.config.to_dict(),
        "postprocess": bundle.postprocess.to_dict(),
        "parameters": count_parameters(bundle.network),
        "z_spacing": bundle.metadata.get("z_spacing"),
        "training": {key: train[key] for key in ("train_stacks", "val_stacks", "stack_shape", "steps", "seconds")},
        "validation_ap50": train["val_ap50_checkpoint"],
        "test": {
            "seeds": bench["test_seeds"],
            "stack_shape": bench["stack_shape"],
            "methods": {
                name: {k: v for k, v in m.items() if k != "per_stack_AP@0.5"} for name, m in bench["methods"].items()
            },
        },
    }


def markdown(card: dict[str, Any], train: dict[str, Any], bench: dict[str, Any]) -> str:
    methods = card["test"]["methods"]
    ours = methods["nuclei-3d"]
    first, last = bench["test_seeds"]
    n_stacks = last - first + 1
    size = " x ".join(map(str, bench["stack_shape"]))
    n_train, val_ap = train["train_stacks"], train["val_ap50_checkpoint"]
    tuned = max(row["val_ap50"] for row in train["threshold_grid"])
    rows = "\n".join(
        f"| {name} | {m['AP@0.5']:.3f} | {m['AP@0.75']:.3f} | {m['seconds_per_stack']:.2f} |"
        for name, m in methods.items()
    )
    arch = card["architecture"]
    return f"""# napari-unet 3D nuclei model (`nuclei-3d`)

A 3D UNet for nuclei in fluorescence Z-stacks: 3D convolutions, pooling and up-sampling over Z, Y and X
(the first down-sampling keeps Z, for stacks whose Z step is larger than their pixel size), three classes
(background, interior, boundary) and a 3D seeded watershed. It segments a stack as one volume: every object
is 3D from the start.

## Use

- napari: Segment panel, choose `nuclei-3d`, a Z-stack layer (ZYX). A layer `scale` of `(z, y, x)` tells the
  model the Z step; it resamples Z to the step it was trained at ({card["z_spacing"]:g} pixel sizes) and back.
- command line: `napari-unet predict stack.tif --model nuclei-3d --axes ZYX -o out/ [--z-spacing 2.5]`.
- fine-tune on your stacks: Fine-tune panel with `nuclei-3d` as the start model, or
  `napari-unet train --from nuclei-3d --images ... --labels ... [--planes 4,12,20]` (only the labelled planes count).

## Accuracy on held-out stacks

**{ours["AP@0.5"]:.3f}** mean AP@0.5 (3D IoU) on {n_stacks} synthetic
test stacks of {size} voxels (seeds {first}-{last}
of `random_zstack`: every stack its own optics, Z step 1-3, nucleus size, crowding, depth attenuation and noise),
which chose neither the checkpoint nor the thresholds. Measured by `{BENCH_COMMAND.format(stacks=n_stacks)}`
(2 CPU cores, one method after the other on each stack):

| method | AP@0.5 | AP@0.75 | seconds per stack |
|---|---|---|---|
{rows}

"Z step given" passes each stack's true Z step (as a napari layer scale would); "2D + linking" is today's
Z-stack path with the bundled 2D model (each plane alone, objects joined across planes by IoU).

## Training

- Data: {n_train} synthetic stacks (`napari_unet.core.data.synthetic.random_zstack`, seeds 0-{n_train - 1});
  {train["val_stacks"]} more (seeds from 10000) chose the checkpoint (validation AP@0.5 {val_ap:.3f} at the starting
  thresholds) and the thresholds (validation AP@0.5 {tuned:.3f} with them). No real annotated 3D
  data: the synthetic stacks vary every setting widely so that the model does not learn one
  simulator's look.
- Recipe: `napari_unet.core.train.volumetric.iter_train_volume` (3D patches, flips along Z/Y/X, quarter turns in
  YX, intensity and noise, masked cross-entropy + Dice), {train["steps"]} steps in {train["seconds"] / 60:.0f} min on
  2 CPU cores, in {len(train["runs"])} run(s): {"; then ".join(f"`{run}`" for run in train["runs"])}.
- Architecture: depth {arch["depth"]}, base {arch["base_channels"]} channels, {arch["norm"]} norm,
  {arch["xy_only_levels"]} YX-only level; {card["parameters"]:,} parameters.
- Thresholds: foreground {card["postprocess"]["foreground_threshold"]}, seed {card["postprocess"]["seed_threshold"]},
  minimum size {card["postprocess"]["min_size"]} voxels.

## Limits

- Trained on synthetic stacks only; real stacks with other textures, strong scattering or cytoplasmic staining
  may need a short fine-tune on a few corrected planes.
- Grey (one-channel) fluorescence stacks; colour stacks are converted to grey.
- Trained on nuclei about 7 to 29 pixels across in Y and X; for larger or smaller ones set the Scale.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--train", type=Path, nargs="+", required=True, help="train.json of each run, in order")
    parser.add_argument("--bench", type=Path, required=True)
    args = parser.parse_args(argv)
    train, bench = (
        merged_runs([json.loads(path.read_text()) for path in args.train]),
        json.loads(args.bench.read_text()),
    )
    card = card_json(args.folder, train, bench)
    write_json(args.folder / "model_card.json", card, overwrite=True)
    (args.folder / "MODEL_CARD.md").write_text(markdown(card, train, bench))
    print(args.folder / "MODEL_CARD.md")


if __name__ == "__main__":
    main()

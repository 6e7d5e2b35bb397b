"""Assemble the bundled default model v2 from a grey and a colour network trained by ``gpu_train.py``.

The result is one model folder (``model.json`` + ``model.safetensors``) with
``branches="gray_colour"`` (:class:`napari_unet.core.models.network.GreyColourUNet`):
grey images go to the grey network, colour images to the colour one.  It
records where its weights came from (the GPU training logs), the training
nuclei's diameters for ``--scale auto`` (measured on the training split of
the data pack) and the post-processing thresholds given (chosen on the
validation split by ``benchmarks/bench_sources.py``).

Usage::

    python -m training.assemble_default_v2 --grey GREY.safetensors --colour COLOUR.safetensors \
        --logs train_log.json [train_log2.json] [--postprocess thresholds.json] --out out/default_v2
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file

from napari_unet.core.config import ModelConfig, NormalizeConfig, PostprocessConfig
from napari_unet.core.models.bundle import ModelBundle, save_model
from training.data_pack import load_pack
from training.splits import SPLITS_FILE

DIAMETER_IMAGES = 120
"""Training images (every k-th of the pack's training split) on which the model's size measurement bias is measured."""


def branch_state(path: Path, prefix: str) -> tuple[dict, dict]:
    """The float32 state of one gpu_train network, keys prefixed ``prefix.``; and its safetensors metadata."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    state = {f"{prefix}.{k}": v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    return state, metadata


def training_record(logs: list[Path], weights: dict[str, Path]) -> dict:
    """What the weights' training was: per branch, the runs (steps, samples, seconds, device) that made them."""
    runs = [json.loads(path.read_text()) for path in logs]
    record = {}
    for branch, path in weights.items():
        name = path.stem.removesuffix("_mid")
        record[branch] = {
            "weights_file": path.name,
            "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "runs": [
                {k: run[name].get(k) for k in ("steps", "samples", "train_s", "device", "train_images", "args")}
                for run in runs
                if name in run
            ],
        }
    return record


def diameters(bundle: ModelBundle, pack: Path) -> dict:
    """``metadata.object_diameter`` for ``--scale auto``: training diameters and the model's measurement bias."""
    from napari_unet.core.predict.object_size import DiameterRange, diameter_range_of, measurement_bias

    train = load_pack(pack, ("train",))
    record = diameter_range_of([item.labels for item in train])
    subset = train[:: max(1, len(train) // DIAMETER_IMAGES)]
    images = [item.image[..., 0] if item.image.shape[-1] == 1 else item.image for item in subset]
    target = DiameterRange(record["low"], record["high"])
    record["measured_over_true"] = measurement_bias(bundle, images, [item.labels for item in subset], target)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gray", type=Path, required=True)
    parser.add_argument("--colour", type=Path, required=True)
    parser.add_argument("--logs", type=Path, nargs="+", required=True, help="train_log.json of the runs, oldest first")
    parser.add_argument("--postprocess", type=Path, default=None, help="JSON PostprocessConfig (default: defaults)")
    parser.add_argument("--pack", type=Path, default=Path("data_pack/nuclei_v2.npz"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    grey_state, grey_meta = branch_state(args.gray, "gray")
    colour_state, _ = branch_state(args.colour, "colour")
    branch_config = ModelConfig.from_dict(json.loads(grey_meta["model_config"]))
    config = ModelConfig(
        in_channels=3, depth=branch_config.depth, base_channels=branch_config.base_channels, branches="gray_colour"
    )
    postprocess = PostprocessConfig.from_json(args.postprocess.read_text()) if args.postprocess else PostprocessConfig()
    bundle = ModelBundle.new(config, normalize=NormalizeConfig(invert="auto_gray"), postprocess=postprocess)
    bundle.network.load_state_dict({**grey_state, **colour_state}, strict=True)
    bundle.network.eval()
    bundle.metadata.update(
        name="default",
        description=(
            "napari-unet default model v2: a grey and a colour UNet (base 16, depth 4) trained on 670 annotated "
            "images (DSB 2018 stage-1 train and test-stage images, S-BSST265 tissue sections); see MODEL_CARD.md"
        ),
        training={
            "recipe": "training/gpu_train.sh (PLAN=survey, then PLAN=refine)",
            "split_file": SPLITS_FILE.name,
            "split_sha256": hashlib.sha256(SPLITS_FILE.read_bytes()).hexdigest(),
            "branches": training_record(args.logs, {"gray": args.gray, "colour": args.colour}),
        },
    )
    bundle.metadata["object_diameter"] = diameters(bundle, args.pack)
    print(save_model(bundle, args.out, overwrite=True))


if __name__ == "__main__":
    main()

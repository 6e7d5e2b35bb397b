"""Turn weights written by ``training/gpu_train.py`` into napari-unet model folders.

Each ``NAME.safetensors`` carries its model config and head in its metadata;
this writes ``OUT/NAME/model.json`` + ``model.safetensors`` (float32) with the
normalisation the weights were trained with (``auto_gray`` for 3-channel
models: grey images inverted when their background is bright, colour never;
``auto`` for 1-channel ones) and the bundled model's post-processing as a
starting point for tuning.

Usage::

    python -m training.import_gpu_weights out/gpu_run1/*.safetensors --out out/v2
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file

from napari_unet.core.config import ModelConfig, NormalizeConfig
from napari_unet.core.models.bundle import ModelBundle, save_model
from napari_unet.core.models.registry import load_model


def import_weights(path: Path, out: Path, description: str = "") -> Path:
    """Write the model folder ``out / <stem>`` for the gpu_train weights at ``path``; return it."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    config_dict = json.loads(metadata["model_config"])
    config_dict["head"] = metadata.get("head", config_dict.get("head", "bg_interior_boundary"))
    config = ModelConfig.from_dict(config_dict)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    normalize = NormalizeConfig(invert="auto_gray" if config.in_channels == 3 else "auto")
    shipped = load_model("default")
    postprocess = replace(shipped.postprocess)
    bundle = ModelBundle.new(config, normalize=normalize, postprocess=postprocess, metadata={"name": path.stem})
    bundle.network.load_state_dict(state, strict=True)
    bundle.metadata["description"] = description or f"gpu_train.py run, {metadata.get('steps', '?')} steps"
    bundle.metadata["training_steps"] = int(metadata.get("steps", 0))
    return save_model(bundle, out / path.stem, overwrite=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    for path in args.weights:
        print(import_weights(path, args.out))


if __name__ == "__main__":
    main()

"""Install a default model into ``napari_unet/weights/default`` with the thresholds chosen on validation.

Usage::

    python -m training.install_default_v2 MODEL SOURCES_JSON [--entry "default (tta)"]

``SOURCES_JSON`` is ``benchmarks/bench_sources.py`` output that scored
``MODEL``; its entry (``--entry``, default ``MODEL``) gives the thresholds
chosen on the validation split and the test-time settings they were chosen
with.  An entry scored with flips (``tta``) makes the model run with flips by
default (``metadata["tuned_with_flips"]``); entries that measure each image's
size (``auto``) or average sizes (``multiscale``) cannot be a default and are
refused.  The weights are unchanged; the folder is rewritten, so run
``training/make_model_card.py`` afterwards for its card.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from napari_unet.core.config import PostprocessConfig
from napari_unet.core.models.bundle import save_model
from napari_unet.core.models.registry import bundled_model_dir, load_model
from napari_unet.core.predict.runtime import FLIPS_METADATA_KEY

DEFAULT_MODES = {"plain": False, "tta": True}
"""Test-time settings a default model may be installed with -> whether it runs with flips."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model name or folder (e.g. out/default_v2, or default to retune in place)")
    parser.add_argument("sources", type=Path, help="bench_sources.py JSON that scored the model")
    parser.add_argument("--entry", default=None, help="key of the model's entry in the JSON (default: MODEL)")
    args = parser.parse_args(argv)
    entry = json.loads(args.sources.read_text())["models"][args.entry or args.model]
    mode = entry.get("inference", "plain")
    if mode not in DEFAULT_MODES:
        raise SystemExit(f"install_default_v2: {mode!r} thresholds cannot be a default (choose one of {DEFAULT_MODES})")
    bundle = load_model(args.model)
    bundle.postprocess = PostprocessConfig.from_dict(entry["postprocess"])
    bundle.metadata = {**bundle.metadata, FLIPS_METADATA_KEY: DEFAULT_MODES[mode]}
    print(save_model(bundle, bundled_model_dir(), overwrite=True))


if __name__ == "__main__":
    main()

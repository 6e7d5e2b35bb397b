"""Install an assembled default model into ``napari_unet/weights/default`` with the thresholds chosen on validation.

Usage: python training/install_default_v2.py MODEL_DIR SOURCES_JSON

``SOURCES_JSON`` is ``benchmarks/bench_sources.py`` output that scored ``MODEL_DIR`` (its ``postprocess``
entry, chosen on the validation split, becomes the model's thresholds).  The weights are unchanged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from napari_unet.core.config import PostprocessConfig
from napari_unet.core.store import bundled_model_dir, load_model, save_model


def main(argv: list[str] | None = None) -> None:
    model_dir, sources = (Path(a) for a in (argv or sys.argv[1:]))
    chosen = json.loads(sources.read_text())["models"][str(model_dir)]["postprocess"]
    bundle = load_model(model_dir)
    bundle.postprocess = PostprocessConfig.from_dict(chosen)
    print(save_model(bundle, bundled_model_dir(), overwrite=True))


if __name__ == "__main__":
    main()

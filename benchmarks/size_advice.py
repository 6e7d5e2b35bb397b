"""Where does fine-tuning's size advice fire, and did the resize it advises pay in the measured runs?

Fine-tuning tells the user to resize when the corrected nuclei are far from
the sizes the model learned (:func:`napari_unet.core.train.preparation.size_advice`,
from the corrected labels' true diameters).  For each ``bench_hitl`` kind,
this computes that advice on the kind's 2 corrected images (the first 2, as
``bench_hitl --k 2`` corrects them) for a model's recorded diameter range,
and puts beside it what ``bench_hitl`` measured at scale 1 and at the
Segment panel's Estimate (``--scale estimate``): the model's AP@0.5 on the
kind and the fine-tuning gain, and the same at the advised resize
(``--scale advice``, run on the three kinds with the largest nuclei).  Models and their runs:

* ``default``: the bundled model; ``hitl.json``, ``hitl_estimated_scale.json``, ``hitl_advised_scale.json``;
* ``v1``: the previous default model (commit 64630bf, ``benchmarks/unseen_kinds.sh``);
  ``hitl_unseen_v1.json``, ``hitl_unseen_v1_estimated_scale.json``, ``hitl_unseen_v1_advised_scale.json``.

Usage (from the repository root, with ``../shared/data`` and git history)::

    .venv/bin/python -m benchmarks.size_advice --json benchmarks/results/size_advice.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_hitl import SYNTHETIC_KIND, held_out_kinds, synthetic_kind
from benchmarks.report import save
from napari_unet.core.io import read_labels
from napari_unet.core.predict.object_size import median_diameter
from napari_unet.core.train.preparation import corrected_diameter, size_advice

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODEL_JSON = "napari_unet/weights/default/model.json"
MODELS = {
    "default": (None, "hitl.json", "hitl_estimated_scale.json", "hitl_advised_scale.json"),
    "v1": (
        "64630bf",
        "hitl_unseen_v1.json",
        "hitl_unseen_v1_estimated_scale.json",
        "hitl_unseen_v1_advised_scale.json",
    ),
}
"""Model -> (the commit its model.json is read from (None: the checkout), its scale-1, estimated and advised runs)."""
RUNS = ("scale_1", "estimated", "advised")
CORRECTED = 2


def model_metadata(commit: str | None) -> dict[str, Any]:
    """The ``metadata`` of the default model's model.json in the checkout (``None``) or at a commit."""
    if commit is None:
        text = (ROOT / MODEL_JSON).read_text()
    else:
        command = ["git", "show", f"{commit}:{MODEL_JSON}"]
        text = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(text)["metadata"]


def corrected_labels() -> dict[str, dict[str, np.ndarray]]:
    """Kind -> image key -> the ``(Y, X)`` labels of its first :data:`CORRECTED` images, in bench_hitl's order."""
    kinds = {
        kind: {key: read_labels(path) for key, _, path in items[:CORRECTED]} for kind, items in held_out_kinds().items()
    }
    kinds[SYNTHETIC_KIND] = {key: labels for key, _, labels in synthetic_kind()[:CORRECTED]}
    return kinds


def measured(run: str, kind: str) -> dict[str, Any] | None:
    """The kind's scale, start, fine-tuning gain and forgetting (shipped recipe) in one bench_hitl results file."""
    report = json.loads((RESULTS / run).read_text())
    if kind not in report["kinds"]:
        return None
    row, settings = report["recipes"]["shipped"][kind], report["kinds"][kind]
    return {
        "corrected": settings.get("corrected"),
        "scale": settings.get("scale", 1.0),
        "start": settings["default_ap50"],
        "gain": row["kind_gain"],
        "forgetting": row["forgetting_mean"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    kinds = corrected_labels()
    report: dict[str, Any] = {"benchmark": "size_advice", "corrected": CORRECTED, "models": {}}
    for name, (commit, *runs) in MODELS.items():
        metadata = model_metadata(commit)
        rows = {}
        for kind, images in kinds.items():
            labels = list(images.values())
            everywhere = [np.ones(label.shape, bool) for label in labels]
            rows[kind] = {
                "images": list(images),
                "diameter": corrected_diameter(labels, everywhere),
                "image_diameters": [median_diameter(label) for label in labels],
                "advice": size_advice(metadata, labels, everywhere),
                **{how: measured(run, kind) for how, run in zip(RUNS, runs, strict=True)},
            }
        report["models"][name] = {"diameter_range": metadata["object_diameter"], "kinds": rows}
    print(save(report, args.json))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

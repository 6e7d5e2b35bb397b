"""Do the speed settings change the labels?  Mixed precision against float32, on real annotated images.

For every image of the v2 validation and test splits (``training/splits_v2.json``, read from
``../shared/data``) the bundled model predicts twice: with the default ``InferenceConfig`` (bfloat16 on a CPU
that computes it natively, float16 on CUDA) and with ``amp=False`` (float32).  Reported: the AP@0.5 of one
label set against the other (1.0 = the same objects), and each one's AP@0.5 against the ground truth.

Prints one JSON object (also written to ``--json``).

Usage: python -m benchmarks.bench_consistency [--model default] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.bench_sources import read_split
from napari_unet.core.config import InferenceConfig
from napari_unet.core.evaluate.metrics import evaluate_image, summary_row
from napari_unet.core.io import write_json
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.runtime import cpu_has_native_bf16
from napari_unet.core.predict.segment import predict
from training.splits import SHARED_DATA


def ap50(truth: np.ndarray, labels: np.ndarray) -> float:
    return float(summary_row(evaluate_image(truth, labels, (0.5,)))["AP@0.5"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        sys.exit(f"bench_consistency: {args.data} not found (needs ../shared/data)")
    bundle = load_model(args.model)
    fast = InferenceConfig(device=args.device)
    exact = replace(fast, amp=False)
    rows = []
    for item in read_split(args.data, "val") + read_split(args.data, "test"):
        labels_fast = predict(item["image"], bundle, inference=fast).labels
        labels_exact = predict(item["image"], bundle, inference=exact).labels
        rows.append(
            {
                "key": item["key"],
                "fast_vs_float32": ap50(labels_exact, labels_fast),
                "fast_vs_truth": ap50(item["labels"], labels_fast),
                "float32_vs_truth": ap50(item["labels"], labels_exact),
            }
        )
    report = {
        "model": args.model,
        "device": args.device,
        "cpu_native_bf16": cpu_has_native_bf16(),
        "images": len(rows),
        **{key: float(np.mean([row[key] for row in rows])) for key in rows[0] if key != "key"},
        "worst_fast_vs_float32": min(row["fast_vs_float32"] for row in rows),
        "per_image": rows,
    }
    if args.json:
        write_json(args.json, report, overwrite=True)
    print(json.dumps({k: v for k, v in report.items() if k != "per_image"}, indent=2))


if __name__ == "__main__":
    main()

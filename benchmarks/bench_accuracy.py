"""Accuracy of the UNet and every classical baseline, per modality and overall.

Prints one JSON object with AP@0.5, AP@0.75, F1@0.5, PQ@0.5 (stardist-style
per-image means; AP = TP / (TP + FP + FN)) for:

* the DSB 2018 validation images in ``../shared/data/dsb2018/val`` (skipped
  when absent), split by modality: ``fluorescence`` (dark background) and
  ``brightfield`` (bright background, e.g. H&E);
* synthetic samples made by :mod:`napari_unet.core.data.synthetic` (fluorescence
  and brightfield), which need no external data.

The UNet is also scored with test-time augmentation: ``unet+tta`` (4 flips),
``unet+multiscale`` (0.71x, 1x, 1.41x) and ``unet+tta+multiscale``; ``seconds``
gives what each costs on this machine.

Usage: python -m benchmarks.bench_accuracy [--model default] [--data DIR] [--synthetic 6] [--no-augmented]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from napari_unet.core.config import InferenceConfig
from napari_unet.core.data.normalize import is_bright_background
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.evaluate.baselines import BASELINE_METHODS, segment_baseline
from napari_unet.core.evaluate.metrics import error_maps, evaluate_dataset, summary_row
from napari_unet.core.io import read_annotated_folder
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.segment import predict
from training.splits import SHARED_DATA

DEFAULT_DATA = SHARED_DATA / "dsb2018" / "val"
KEYS = ("AP@0.5", "AP@0.75", "F1@0.5", "PQ@0.5", "Dice")
UNET_VARIANTS = {
    "unet": InferenceConfig(tta=False),
    "unet+tta": InferenceConfig(tta=True),
    "unet+multiscale": InferenceConfig(tta=False, multiscale=True),
    "unet+tta+multiscale": InferenceConfig(tta=True, multiscale=True),
}


def synthetic_pairs(count: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    pairs = []
    for index in range(count):
        kind = "fluorescence" if index % 2 == 0 else "brightfield"
        image, labels = synthetic_nuclei(shape=(256, 256), n_nuclei=35, seed=900 + index, kind=kind)
        pairs.append((f"synthetic-{kind}-{index}", image, labels))
    return pairs


def modality(image: np.ndarray) -> str:
    plane = image if image.ndim == 2 else image[..., :3]
    return "brightfield" if is_bright_background(plane) else "fluorescence"


def segment_all(pairs, bundle, augmented: bool) -> tuple[dict[str, list[np.ndarray]], dict[str, float]]:
    variants = UNET_VARIANTS if augmented else {"unet": UNET_VARIANTS["unet"]}
    methods = {
        name: (lambda image, config=config: predict(image, bundle, inference=config).labels)
        for name, config in variants.items()
    }
    methods.update({m: (lambda image, m=m: segment_baseline(image, m)) for m in BASELINE_METHODS})
    results: dict[str, list[np.ndarray]] = {}
    seconds: dict[str, float] = {}
    for name, segment in methods.items():
        start = time.perf_counter()
        results[name] = [segment(image) for _, image, _ in pairs]
        seconds[name] = time.perf_counter() - start
    return results, seconds


def score(pairs, predictions: dict[str, list[np.ndarray]], keep) -> dict[str, dict[str, float]]:
    index = [i for i, pair in enumerate(pairs) if keep(pair)]
    if not index:
        return {}
    table = {}
    for name, preds in predictions.items():
        row = summary_row(evaluate_dataset([pairs[i][2] for i in index], [preds[i] for i in index]))
        table[name] = {k: round(float(row[k]), 4) for k in KEYS}
    table["n_images"] = len(index)
    return table


def error_counts(gt: np.ndarray, pred: np.ndarray) -> dict[str, int]:
    """Count the UNet's errors at IoU 0.5 on one image by kind.

    ``false_positive_on_background``: predictions with no annotated pixel
    under them (debris, or nuclei the annotators left out).
    """
    maps = error_maps(gt, pred)
    counts = {key: int(np.count_nonzero(np.bincount(maps[key].ravel())[1:])) for key in maps}
    unmatched = np.unique(maps["false_positive"])[1:]
    annotated = np.bincount(maps["false_positive"][gt > 0].ravel(), minlength=int(pred.max()) + 1)
    counts["false_positive_on_background"] = int(np.count_nonzero(annotated[unmatched] == 0))
    return counts


def report_for(pairs, bundle, augmented: bool) -> dict:
    predictions, seconds = segment_all(pairs, bundle, augmented)
    report = {"overall": score(pairs, predictions, lambda pair: True)}
    for kind in ("fluorescence", "brightfield"):
        report[kind] = score(pairs, predictions, lambda pair, kind=kind: modality(pair[1]) == kind)
    unet = evaluate_dataset([gt for _, _, gt in pairs], predictions["unet"])
    report["per_image_unet_ap50"] = {
        name: round(float(summary_row(image_result)["AP@0.5"]), 3)
        for (name, _, _), image_result in zip(pairs, unet["per_image"], strict=True)
    }
    report["unet_errors_at_iou_0.5"] = {
        name: error_counts(gt, pred) for (name, _, gt), pred in zip(pairs, predictions["unet"], strict=True)
    }
    best_baseline = max(report["overall"][m]["AP@0.5"] for m in BASELINE_METHODS)
    report["unet_minus_best_baseline_ap50"] = round(report["overall"]["unet"]["AP@0.5"] - best_baseline, 4)
    report["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--synthetic", type=int, default=6, help="number of synthetic samples (0 to skip)")
    parser.add_argument("--no-augmented", dest="augmented", action="store_false", help="skip the TTA variants")
    args = parser.parse_args()
    bundle = load_model(args.model)
    output = {"model": bundle.name, "model_sha256": bundle.sha256, "postprocess": bundle.postprocess.to_dict()}
    if args.data.is_dir():
        output["dsb2018_val"] = report_for(read_annotated_folder(args.data), bundle, args.augmented)
    else:
        output["dsb2018_val"] = {"skipped": f"{args.data} not found (needs ../shared/data)"}
    if args.synthetic:
        output["synthetic"] = report_for(synthetic_pairs(args.synthetic), bundle, args.augmented)
    print(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()

"""Accuracy per image source on the v2 splits, with thresholds chosen on the validation split only.

The split (``training/splits_v2.json``) holds out, from ``../shared/data``:
validation images (``val``: 5% of ``dsb2018_stage1_train`` per group and 4
``s_bsst265`` images) that choose checkpoints and thresholds, and test
images (``test``: another 5% of ``dsb2018_stage1_train``, 6 ``s_bsst265``
images and all 10 of ``dsb2018/val``) that only report.

For every model: the network runs once per image (probabilities cached under
``--cache``); thresholds are chosen on ``val`` to maximise the mean over the
three image families (grey DSB, colour DSB, s_bsst265 tissue) of the mean
per-image AP@0.5; then ``val`` and ``test`` are scored per subset
(``source:group``) and per family.  ``--route GREY+COLOUR`` also scores a
pair of models where each image goes to the grey or the colour model.
``--inference`` scores every model under each named test-time setting
(:data:`MODES`: one pass, flips, each image's size measured first, both,
averaged sizes), each with its own thresholds chosen on ``val``.

Prints one JSON object (also written to ``--json``).

Usage::

    python -m benchmarks.bench_sources --models default out/v2/rgb_b16 [--route out/v2/grey_b16+out/v2/colour_b16]
    python -m benchmarks.bench_sources --models default --inference plain tta auto tta+auto multiscale
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_unet.core.config import InferenceConfig, PostprocessConfig
from napari_unet.core.evaluate.baselines import segment_baseline
from napari_unet.core.evaluate.metrics import evaluate_image, summary_row
from napari_unet.core.io import read_image, read_labels, write_json
from napari_unet.core.labels.extraction import foreground_probability
from napari_unet.core.labels.postprocess import probabilities_to_labels, remove_unconfident_objects
from napari_unet.core.models.bundle import ModelBundle
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.object_size import estimate_scale
from napari_unet.core.predict.segment import predict
from training.splits import SHARED_DATA, SPLITS_FILE, split_images

FAMILIES = {"grey": ("fluorescence", "brightfield"), "colour": ("colour",), "tissue": ("tissue",)}
BASELINE_GRIDS = {
    "otsu": {"sigma": (0.0, 1.0, 2.0), "min_size": (15, 30)},
    "li": {"sigma": (0.0, 1.0, 2.0), "min_size": (15, 30)},
    "local": {"block_size": (25, 51, 101), "local_offset": (0.02, 0.05, 0.1), "min_size": (15, 30)},
    "watershed": {"min_distance": (3, 5, 8), "sigma": (1.0, 2.0), "min_size": (15, 30)},
}
"""Settings of each classical baseline tried on ``val`` (the best, by the same family score, is reported)."""
MODES: dict[str, tuple[InferenceConfig, bool]] = {
    "plain": (InferenceConfig(tta=False), False),
    "tta": (InferenceConfig(tta=True), False),
    "auto": (InferenceConfig(tta=False), True),
    "tta+auto": (InferenceConfig(tta=True), True),
    "multiscale": (InferenceConfig(tta=False, multiscale=True), False),
}
"""Test-time settings ``--inference`` may name: ``(settings, measure each image's scale first)``."""
TUNE_GRID = {
    "foreground_threshold": (0.4, 0.5, 0.6),
    "seed_threshold": (0.6, 0.7, 0.8, 0.9, 0.95),
    "min_relative_size": (0.0, 0.2),
    "min_confidence": (0.0, 0.85, 0.9),
}


def read_split(data: Path, split: str) -> list[dict]:
    """The images of ``split`` as dicts ``key, source, group, image, labels`` (lossless originals from ``data``)."""
    return [
        {
            "key": item.key,
            "source": item.source,
            "group": item.group,
            "image": read_image(item.image_path),
            "labels": read_labels(item.labels_path),
        }
        for item in split_images(data, split)
    ]


def family(group: str) -> str:
    """The family (``grey``, ``colour``, ``tissue``) an image group belongs to."""
    return next(name for name, members in FAMILIES.items() if group in members)


def probabilities(bundle: ModelBundle, items: list[dict], cache: Path, mode: str = "plain") -> list[np.ndarray]:
    """Network probabilities ``(K, Y, X)`` of every item under test-time settings ``mode``, from ``cache`` when present.

    With a mode that measures each image's scale first (:data:`MODES`,
    :func:`estimate_scale`) the chosen scale is stored in
    ``item["scales"][bundle.sha256]``.
    """
    settings, auto_scale = MODES[mode]
    folder = cache / (bundle.sha256[:16] + ("" if mode == "plain" else f"_{mode}"))
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for item in items:
        path = folder / (item["key"].replace("/", "__") + ".npy")
        scale_path = path.with_suffix(".scale.json")
        if path.is_file() and (not auto_scale or scale_path.is_file()):
            out.append(np.load(path).astype(np.float32))
            if auto_scale:
                item.setdefault("scales", {})[bundle.sha256] = json.loads(scale_path.read_text())
            continue
        chosen = settings
        if auto_scale:
            estimate = estimate_scale(item["image"], bundle, inference=settings)
            chosen = replace(settings, scale=estimate.scale)
            record = {"scale": estimate.scale, "diameter": estimate.diameter}
            scale_path.write_text(json.dumps(record))
            item.setdefault("scales", {})[bundle.sha256] = record
        result = predict(item["image"], bundle, inference=chosen).probabilities
        np.save(path, result.astype(np.float16))
        out.append(result)
    return out


def distance_as_interior(probs: np.ndarray) -> np.ndarray:
    """For a distance head ``(4, Y, X)``: seeds and watershed from the distance instead of P(interior).

    Returns ``(3, Y, X)``: background, distance, and the rest of the
    foreground, so the 3-class post-processing keeps the same foreground but
    takes its seeds (``seed_threshold``) and watershed surface from the
    predicted distance to the object edge.
    """
    distance = np.minimum(probs[3], 1.0 - probs[0])
    return np.stack([probs[0], distance, 1.0 - probs[0] - distance])


def per_image_ap(items: list[dict], labels: list[np.ndarray]) -> list[dict[str, float]]:
    """``summary_row`` of every image."""
    return [
        summary_row(evaluate_image(item["labels"], pred, (0.5, 0.75))) for item, pred in zip(items, labels, strict=True)
    ]


def family_score(items: list[dict], rows: list[dict[str, float]]) -> float:
    """Mean over families of the mean per-image AP@0.5 (families without images are skipped)."""
    means = []
    for name in FAMILIES:
        scores = [row["AP@0.5"] for item, row in zip(items, rows, strict=True) if family(item["group"]) == name]
        if scores:
            means.append(float(np.mean(scores)))
    return float(np.mean(means))


def choose_thresholds(
    start: PostprocessConfig, items: list[dict], probs: list[np.ndarray]
) -> tuple[PostprocessConfig, float]:
    """The ``TUNE_GRID`` setting with the best :func:`family_score` on ``items`` (ties: earlier); and that score."""
    best, best_score = start, -1.0
    foregrounds = [foreground_probability(p) for p in probs]
    for f in TUNE_GRID["foreground_threshold"]:
        for s in TUNE_GRID["seed_threshold"]:
            for r in TUNE_GRID["min_relative_size"]:
                base = replace(start, foreground_threshold=f, seed_threshold=s, min_relative_size=r, min_confidence=0.0)
                labels = [probabilities_to_labels(p, base) for p in probs]
                for c in TUNE_GRID["min_confidence"]:
                    kept = [remove_unconfident_objects(lab, fg, c) for lab, fg in zip(labels, foregrounds, strict=True)]
                    score = family_score(items, per_image_ap(items, kept))
                    if score > best_score:
                        best, best_score = replace(base, min_confidence=c), score
    return best, best_score


def report(items: list[dict], rows: list[dict[str, float]]) -> dict:
    """Mean scores per subset (``source:group``), per family and the family mean."""
    out: dict = {"family_mean_AP@0.5": family_score(items, rows), "subsets": {}, "families": {}}
    keys = {"subsets": lambda item: f"{item['source']}:{item['group']}", "families": lambda item: family(item["group"])}
    for section, key_of in keys.items():
        for key in sorted({key_of(item) for item in items}):
            chosen = [row for item, row in zip(items, rows, strict=True) if key_of(item) == key]
            out[section][key] = {
                "n_images": len(chosen),
                **{m: float(np.mean([row[m] for row in chosen])) for m in ("AP@0.5", "AP@0.75", "F1@0.5", "PQ@0.5")},
            }
    out["per_image_AP@0.5"] = {item["key"]: round(row["AP@0.5"], 4) for item, row in zip(items, rows, strict=True)}
    return out


def evaluate_model(
    spec: str,
    val: list[dict],
    test: list[dict],
    cache: Path,
    tune: bool,
    distance_seeds: bool = False,
    mode: str = "plain",
) -> dict:
    """Thresholds chosen on ``val`` (when ``tune``), then ``val`` and ``test`` scores of model ``spec``.

    With ``distance_seeds``, models with a distance output are post-processed
    with :func:`distance_as_interior`.  ``mode`` is a :data:`MODES` name: the
    test-time settings the network runs with.
    """
    bundle = load_model(spec)
    started = time.perf_counter()
    val_probs, test_probs = probabilities(bundle, val, cache, mode), probabilities(bundle, test, cache, mode)
    network_s = time.perf_counter() - started
    if distance_seeds and bundle.config.out_channels == 4:
        val_probs = [distance_as_interior(p) for p in val_probs]
        test_probs = [distance_as_interior(p) for p in test_probs]
    chosen, val_score = (
        choose_thresholds(bundle.postprocess, val, val_probs) if tune else (bundle.postprocess, float("nan"))
    )
    result = {"model": spec, "sha256": bundle.sha256, "postprocess": chosen.to_dict(), "tuned_val_score": val_score}
    for name, items, probs in (("val", val, val_probs), ("test", test, test_probs)):
        labels = [probabilities_to_labels(p, chosen) for p in probs]
        result[name] = report(items, per_image_ap(items, labels))
    result["shipped_thresholds_test"] = report(
        test, per_image_ap(test, [probabilities_to_labels(p, bundle.postprocess) for p in test_probs])
    )["family_mean_AP@0.5"]
    result["predict_seconds"] = network_s
    result["inference"] = mode
    if MODES[mode][1]:
        result["auto_scales"] = {item["key"]: item["scales"][bundle.sha256] for item in (*val, *test)}
    result["distance_seeds"] = distance_seeds and bundle.config.out_channels == 4
    return result


def evaluate_baseline(method: str, val: list[dict], test: list[dict]) -> dict:
    """Tune ``method`` over :data:`BASELINE_GRIDS` by the family score on ``val``; return its val and test scores."""
    grid = BASELINE_GRIDS[method]
    names = list(grid)
    best, best_score = {}, -1.0
    for values in itertools.product(*(grid[name] for name in names)):
        settings = dict(zip(names, values, strict=True))
        labels = [segment_baseline(item["image"], method, **settings) for item in val]
        score = family_score(val, per_image_ap(val, labels))
        if score > best_score:
            best, best_score = settings, score
    result = {"method": method, "settings": best, "tuned_val_score": best_score}
    for name, items in (("val", val), ("test", test)):
        labels = [segment_baseline(item["image"], method, **best) for item in items]
        result[name] = report(items, per_image_ap(items, labels))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["default"])
    parser.add_argument("--route", nargs="*", default=[], help="GREY+COLOUR model pairs (both also in --models)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--cache", type=Path, default=Path("out/cache/probabilities"))
    parser.add_argument("--no-tune", action="store_true", help="keep each model's own thresholds")
    parser.add_argument("--baselines", default="", help="comma-separated classical methods to tune and score too")
    parser.add_argument("--distance-seeds", action="store_true", help="seed distance-head models from their distance")
    parser.add_argument(
        "--inference", nargs="+", default=["plain"], choices=list(MODES), help="test-time settings, each scored"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        sys.exit(f"bench_sources: {args.data} not found (needs ../shared/data)")
    val, test = read_split(args.data, "val"), read_split(args.data, "test")
    results = {}
    for spec, mode in itertools.product(args.models, args.inference):
        key = spec if mode == "plain" else f"{spec} ({mode})"
        results[key] = evaluate_model(spec, val, test, args.cache, not args.no_tune, args.distance_seeds, mode)
        brief = {k: results[key][k] for k in ("tuned_val_score", "postprocess")}
        brief |= {name: results[key][name]["families"] for name in ("val", "test")}
        print(json.dumps({key: brief}), flush=True)
    baselines = {}
    for method in filter(None, args.baselines.split(",")):
        baselines[method] = evaluate_baseline(method, val, test)
        print(json.dumps({method: {k: baselines[method][k] for k in ("settings", "tuned_val_score")}}), flush=True)
    document = {
        "split_file": str(SPLITS_FILE.name),
        "n_val": len(val),
        "n_test": len(test),
        "tune_grid": TUNE_GRID,
        "models": results,
        "baselines": baselines,
        "baseline_grids": {m: BASELINE_GRIDS[m] for m in baselines},
    }
    for pair in args.route:
        document.setdefault("routed", {})[pair] = routed_from_reports(pair, results, val, test)
    if args.json:
        write_json(args.json, document)
    print(json.dumps(document, indent=1))


def routed_from_reports(pair: str, results: dict, val: list[dict], test: list[dict]) -> dict:
    """Like :func:`routed`, from the per-image AP@0.5 in the models' reports (AP@0.75 etc. not combined)."""
    grey, colour = pair.split("+")
    out: dict = {"models": [grey, colour]}
    for name, items in (("val", val), ("test", test)):
        rows = []
        for item in items:
            spec = colour if family(item["group"]) == "colour" else grey
            rows.append({"AP@0.5": results[spec][name]["per_image_AP@0.5"][item["key"]]})
        out[name] = {"family_mean_AP@0.5": family_score(items, rows)}
        for fam in FAMILIES:
            scores = [r["AP@0.5"] for item, r in zip(items, rows, strict=True) if family(item["group"]) == fam]
            out[name][fam] = float(np.mean(scores)) if scores else None
    return out


if __name__ == "__main__":
    main()

"""Side by side with Cellpose: same training images, same CPU budget, same validation images, same machine.

Both are trained from scratch on the training split of ``training/splits_v2.json`` (670 images from
``../shared/data``) for the same wall-clock budget on this machine's 2 CPU cores, one after the other:

- Cellpose 3 (classic network, ``cellpose==3.1.1.3``) with its own recipe, in its own environment
  (``benchmarks/peers/requirements.txt``; ``benchmarks/peers/cellpose_runner.py``);
- napari-unet's ``iter_train`` (what ``napari-unet train --from scratch`` runs) with its default CPU recipe
  and architecture (1-channel UNet, base 16, depth 4).

Then both segment ``dsb2018/val`` (10 images) and the 10 held-out S-BSST265 images (val and test splits),
scored with napari-unet's metrics (per-image mean AP = TP / (TP + FP + FN)), each with its default
thresholds, once at the model's own scale and once told each image's true median nucleus diameter (what
Cellpose's size model or napari-unet's ``--scale auto`` would estimate). Speed: both segment the same
2048² image in the same run.

Writes ``benchmarks/results/peers.json`` (``--json``).

Usage::

    python -m venv .venv-peers && .venv-peers/bin/pip install -r benchmarks/peers/requirements.txt
    python -m benchmarks.bench_peers --seconds 900 --peers-python .venv-peers/bin/python \
        --json benchmarks/results/peers.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import tifffile

from napari_unet.core.config import InferenceConfig, ModelConfig, TrainingConfig
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.evaluate.metrics import evaluate_image, summary_row
from napari_unet.core.io import write_json
from napari_unet.core.models.bundle import ModelBundle
from napari_unet.core.predict.object_size import DiameterRange, diameter_range_of, median_diameter
from napari_unet.core.predict.segment import predict
from napari_unet.core.progress import run_to_end
from napari_unet.core.train.fine_tune import iter_train
from training.splits import SHARED_DATA, split_images

RUNNER = Path(__file__).resolve().parent / "peers" / "cellpose_runner.py"


def split_files(data: Path) -> dict[str, list[tuple[Path, Path]]]:
    """``train``, ``dsb2018_val`` and ``s_bsst265_heldout`` lists of ``(image, labels)`` paths."""
    sets: dict[str, list[tuple[Path, Path]]] = {"train": [], "dsb2018_val": [], "s_bsst265_heldout": []}
    for item in split_images(data):
        pair = (item.image_path, item.labels_path)
        if item.split == "train":
            sets["train"].append(pair)
        elif item.source == "dsb2018_val":
            sets["dsb2018_val"].append(pair)
        elif item.source == "s_bsst265":
            sets["s_bsst265_heldout"].append(pair)
    return sets


def run_peer(python: str, *args: str) -> str:
    """Run the Cellpose runner in the peers environment; return its stdout."""
    done = subprocess.run([python, str(RUNNER), *map(str, args)], check=True, capture_output=True, text=True)
    return done.stdout


def train_cellpose(python: str, pairs: list[tuple[Path, Path]], seconds: float, work: Path) -> dict:
    listing = work / "train_pairs.json"
    listing.write_text(json.dumps([[str(i), str(lab)] for i, lab in pairs]))
    return json.loads(
        run_peer(python, "train", listing, "--seconds", seconds, "--out", work / "cellpose").splitlines()[-1]
    )


def cellpose_labels(python: str, model: str, pairs, work: Path, diameters: list[float] | None) -> list[np.ndarray]:
    name = "true_size" if diameters else "own_size"
    images, out = work / f"images_{len(pairs)}.json", work / f"cellpose_{name}_{len(pairs)}"
    images.write_text(json.dumps([str(i) for i, _ in pairs]))
    extra = []
    if diameters:
        (work / "diameters.json").write_text(json.dumps(diameters))
        extra = ["--diameters", work / "diameters.json"]
    run_peer(python, "predict", model, images, "--out", out, *extra)
    return [tifffile.imread(out / f"{index}.tif") for index in range(len(pairs))]


def train_unet(pairs: list[tuple[Path, Path]], seconds: float) -> tuple[ModelBundle, dict]:
    images = [tifffile.imread(i) for i, _ in pairs]
    labels = [tifffile.imread(lab) for _, lab in pairs]
    bundle = ModelBundle.new(ModelConfig(), metadata={"name": "scratch"}, seed=0)
    bundle.metadata["object_diameter"] = diameter_range_of(labels)  # as napari-unet train records it
    cfg = TrainingConfig(max_seconds=seconds, val_fraction=0.0, device="cpu")
    started = time.perf_counter()
    result = run_to_end(iter_train(bundle, images, labels, cfg))
    return result.bundle, {"steps": result.steps, "train_s": time.perf_counter() - started, "config": cfg.to_dict()}


def unet_labels(bundle: ModelBundle, pairs, diameters: list[float] | None) -> list[np.ndarray]:
    target = DiameterRange.of_model(bundle.metadata)
    out = []
    for index, (image_path, _) in enumerate(pairs):
        scale = target.scale_for(diameters[index]) if diameters else 1.0
        out.append(
            predict(tifffile.imread(image_path), bundle, inference=InferenceConfig(device="cpu", scale=scale)).labels
        )
    return out


def scores(pairs, predictions: list[np.ndarray]) -> dict[str, float]:
    rows = [
        summary_row(evaluate_image(tifffile.imread(lab), pred, (0.5, 0.75)))
        for (_, lab), pred in zip(pairs, predictions, strict=True)
    ]
    return {key: float(np.mean([row[key] for row in rows])) for key in ("AP@0.5", "AP@0.75", "F1@0.5")}


def true_diameters(pairs) -> list[float]:
    return [median_diameter(tifffile.imread(lab), min_objects=1) or 17.0 for _, lab in pairs]


def speed(python: str, cellpose_model: str, bundle: ModelBundle, work: Path, size: int = 2048) -> dict:
    """Seconds to segment the same ``size``² synthetic image, best of 2 after a warm-up, one after the other."""
    image, _ = synthetic_nuclei((size, size), n_nuclei=size * size // 2500, seed=1)
    path = work / "speed.tif"
    tifffile.imwrite(path, image)
    cellpose = json.loads(run_peer(python, "speed", cellpose_model, path).splitlines()[-1])
    times = []
    for _ in range(3):
        started = time.perf_counter()
        predict(image, bundle, inference=InferenceConfig(device="cpu"))
        times.append(time.perf_counter() - started)
    unet_s = min(times[1:])
    megapixels = size * size / 1e6
    return {
        "size": size,
        "cellpose_mpx_per_s": megapixels / cellpose["seconds"],
        "napari_unet_mpx_per_s": megapixels / unet_s,
        "napari_unet_over_cellpose_speed": cellpose["seconds"] / unet_s,
        "napari_unet_float32_mpx_per_s": megapixels / unet_float32_seconds(bundle, image),
    }


def unet_float32_seconds(bundle: ModelBundle, image: np.ndarray) -> float:
    """The same segmentation without bfloat16 (what CPUs lacking it run), best of 2."""
    cfg = replace(InferenceConfig(device="cpu"), amp=False)
    times = []
    for _ in range(2):
        started = time.perf_counter()
        predict(image, bundle, inference=cfg)
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=900.0, help="training budget of each tool (wall clock)")
    parser.add_argument("--peers-python", default=".venv-peers/bin/python")
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--limit", type=int, default=0, help="use only this many images per set (smoke tests)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        sys.exit(f"bench_peers: {args.data} not found (needs ../shared/data)")
    sets = split_files(args.data)
    if args.limit:
        sets = {name: pairs[:: max(1, len(pairs) // args.limit)][: args.limit] for name, pairs in sets.items()}
    report: dict = {"budget_s": args.seconds, "train_images": len(sets["train"]), "machine": "2 CPU cores"}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        report["cellpose_training"] = train_cellpose(args.peers_python, sets["train"], args.seconds, work)
        print(json.dumps({"cellpose_training": report["cellpose_training"]}), flush=True)
        bundle, report["napari_unet_training"] = train_unet(sets["train"], args.seconds)
        print(json.dumps({"napari_unet_training": report["napari_unet_training"]}), flush=True)
        model = report["cellpose_training"]["model"]
        for name in ("dsb2018_val", "s_bsst265_heldout"):
            pairs = sets[name]
            diameters = true_diameters(pairs)
            report[name] = {"n_images": len(pairs)}
            for label, sizes in (("own_scale", None), ("true_diameter", diameters)):
                report[name][label] = {
                    "cellpose": scores(pairs, cellpose_labels(args.peers_python, model, pairs, work, sizes)),
                    "napari_unet": scores(pairs, unet_labels(bundle, pairs, sizes)),
                }
            print(json.dumps({name: report[name]}), flush=True)
        report["speed_2048"] = speed(args.peers_python, model, bundle, work)
    if args.json:
        write_json(args.json, report, overwrite=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

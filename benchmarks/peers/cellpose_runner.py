"""Cellpose 3 (classic network) for benchmarks/bench_peers.py; runs in the peers environment, not napari-unet's.

Commands (paths are JSON lists of ``[image.tif, labels.tif]`` pairs or image paths):

- ``train PAIRS.json --seconds S --out DIR``: from scratch (no pretrained weights), its own recipe (AdamW,
  rotations and resizing to its mean diameter, flows as targets), as many epochs as fill the wall-clock budget:
  runs of 1 and 3 epochs measure the set-up and epoch times first (they, and the flows computed once
  beforehand, are reported apart); writes ``DIR/models/cellpose_scratch`` and ``DIR/train.json``.
- ``predict MODEL IMAGES.json --out DIR [--diameters D.json]``: labels TIFFs ``DIR/<n>.tif`` (``n`` = position),
  at the model's mean diameter, or at each image's given diameter.
- ``speed MODEL IMAGE.tif``: seconds of ``eval`` on that image (best of 2 after a warm-up), printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

torch.set_num_threads(2)

from cellpose import dynamics, models, train  # noqa: E402

NIMG_PER_EPOCH = 64
CHANNELS = [0, 0]  # greyscale (colour images are averaged), no second channel


def read_pairs(path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    pairs = json.loads(Path(path).read_text())
    return [tifffile.imread(i) for i, _ in pairs], [tifffile.imread(lab).astype(np.int32) for _, lab in pairs]


def _train(images, flows, epochs: int, save_path: Path, name: str) -> tuple[str, float]:
    """One ``train_seg`` call from scratch; its model path and wall-clock seconds."""
    model = models.CellposeModel(gpu=False, pretrained_model=False, model_type=None, diam_mean=17.0, nchan=2)
    save_path.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    path, _, _ = train.train_seg(
        model.net,
        images,
        flows,
        channels=CHANNELS,
        n_epochs=epochs,
        nimg_per_epoch=NIMG_PER_EPOCH,
        save_path=str(save_path),
        save_every=10**6,
        model_name=name,
        min_train_masks=1,
    )
    return str(path), time.perf_counter() - started


def train_for(seconds: float, images, flows, out: Path) -> dict:
    """Train as many epochs as fill ``seconds``: runs of 1 and 3 epochs measure the set-up and epoch times first.

    The calibration runs are not counted in the budget (reported as ``calibration_s``), like the flows.
    """
    _, one = _train(images, flows, 1, out / "calibration", "one")
    _, three = _train(images, flows, 3, out / "calibration", "three")
    per_epoch = max((three - one) / 2, 1e-3)
    setup = max(one - per_epoch, 0.0)
    epochs = max(3, round((seconds - setup) / per_epoch))
    path, train_s = _train(images, flows, epochs, out, "cellpose_scratch")
    return {
        "model": path,
        "epochs": epochs,
        "seconds_per_epoch": per_epoch,
        "patches": epochs * NIMG_PER_EPOCH,
        "train_s": train_s,
        "calibration_s": one + three,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train")
    p.add_argument("pairs", type=Path)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("predict")
    p.add_argument("model")
    p.add_argument("images", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--diameters", type=Path, default=None)
    p = sub.add_parser("speed")
    p.add_argument("model")
    p.add_argument("image", type=Path)
    args = parser.parse_args()
    if args.command == "train":
        images, labels = read_pairs(args.pairs)
        started = time.perf_counter()
        flows = dynamics.labels_to_flows(labels, device=torch.device("cpu"))
        flows_s = time.perf_counter() - started
        args.out.mkdir(parents=True, exist_ok=True)
        record = {**train_for(args.seconds, images, flows, args.out), "flows_s": flows_s, "images": len(images)}
        (args.out / "train.json").write_text(json.dumps(record, indent=1))
        print(json.dumps(record))
    elif args.command == "predict":
        model = models.CellposeModel(gpu=False, pretrained_model=args.model)
        diameters = json.loads(args.diameters.read_text()) if args.diameters else None
        args.out.mkdir(parents=True, exist_ok=True)
        for index, path in enumerate(json.loads(args.images.read_text())):
            diameter = diameters[index] if diameters else model.diam_mean
            masks = model.eval(tifffile.imread(path), channels=CHANNELS, diameter=diameter)[0]
            tifffile.imwrite(args.out / f"{index}.tif", masks.astype(np.uint32))
    else:
        model = models.CellposeModel(gpu=False, pretrained_model=args.model)
        image = tifffile.imread(args.image)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            model.eval(image, channels=CHANNELS, diameter=model.diam_mean)
            times.append(time.perf_counter() - started)
        print(json.dumps({"seconds": min(times[1:]), "all_seconds": times}))


if __name__ == "__main__":
    main()

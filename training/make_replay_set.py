"""Make the replay set shipped with the default model: annotated crops of its own training images.

Fine-tuning on a few corrected images of one kind wipes out what the model
knew about other kinds (a 2-image fine-tune took a held-out kind from 0.83 to
0.13 AP@0.5).  Mixing crops of the model's own training images into every
batch (rehearsal) keeps that knowledge.  This script picks ``--per-group``
crops from each image group of the default model's *training* split
(``training/splits_v2.json``: DSB stage-1 fluorescence, colour tissue,
brightfield, S-BSST265 tissue; all CC0), each ``--size`` pixels square and
centred on the densest window of a randomly chosen training image (skipped
when the default model's normalisation would invert the crop but not the
image, or the reverse: :func:`inverted_alike`; ``--sizes``
gives groups with large nuclei larger crops, so the check crops the
fine-tuning guard scores hold enough of them), and writes
them to ``napari_unet/weights/default/replay.npz`` (uint8 images, uint16
labels renumbered per crop) with ``replay.json`` (sources and licence).

Usage (from the repository root, with ``../shared/data``)::

    .venv/bin/python -m training.make_replay_set --per-group fluorescence=16,colour=8,brightfield=8,tissue=12 \\
        --sizes tissue=384

Another model's replay set (``bench_hitl --model``): ``--model`` names the
model whose normalisation decides the inversion check, ``--source`` keeps
the training images of one source (the previous default model trained on
``dsb2018_train`` alone), ``--output`` goes into that model's folder.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from skimage.segmentation import relabel_sequential

from napari_unet.core.data.normalize import intensity_stats
from napari_unet.core.io import atomic_write_path, read_image, read_labels, write_json
from napari_unet.core.models.bundle import ModelBundle
from napari_unet.core.models.registry import load_model
from training.splits import split_images

OUTPUT = Path(__file__).resolve().parents[1] / "napari_unet" / "weights" / "default" / "replay.npz"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-group", default="fluorescence=16,colour=8,brightfield=4,tissue=8")
    parser.add_argument("--size", type=int, default=192, help="crop side in pixels")
    parser.add_argument(
        "--sizes", default="", help="crop side per group where it differs, e.g. tissue=384 (large nuclei)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model", default="default", help="the model whose training images are cropped (its normalisation decides)"
    )
    parser.add_argument(
        "--source", default=None, help="only this source's training images, e.g. dsb2018_train (default: all)"
    )
    parser.add_argument("--output", type=Path, default=OUTPUT)
    return parser.parse_args(argv)


def densest_crop(labels: np.ndarray, size: int, rng: np.random.Generator) -> tuple[slice, slice]:
    """The ``size`` x ``size`` window (of 16 random ones) holding the most labelled pixels."""
    best, best_count = (slice(0, size), slice(0, size)), -1
    for _ in range(16):
        top = int(rng.integers(0, labels.shape[0] - size + 1))
        left = int(rng.integers(0, labels.shape[1] - size + 1))
        window = (slice(top, top + size), slice(left, left + size))
        count = int(np.count_nonzero(labels[window]))
        if count > best_count:
            best, best_count = window, count
    return best


def inverted_alike(crop: np.ndarray, image: np.ndarray, model: ModelBundle) -> bool:
    """Whether ``model``'s normalisation inverts the crop as it inverts the whole image (or neither).

    A crop packed with bright nuclei can look like a brightfield image to the
    ``auto`` inversion rule; the model would then see it inverted, learn from
    it upside down and fail on it as a check crop (S-BSST265 tissue crops:
    AP@0.5 0.0 alone, 1.0 when segmented within their image).
    """
    cfg, channels = model.normalize, model.config.in_channels
    return intensity_stats(crop, cfg, channels).invert == intensity_stats(image, cfg, channels).invert


def unstated(args: argparse.Namespace) -> set[str]:
    """Options left out of :func:`made_by`: the output, empty ones, and ``--model`` / ``--source`` at their defaults."""
    at_default = {key for key, default in (("model", "default"), ("source", None)) if getattr(args, key) == default}
    return {"output"} | at_default | {key for key, value in vars(args).items() if value == ""}


def made_by(args: argparse.Namespace) -> str:
    """The command that makes this replay set again (recorded in ``replay.json``)."""
    options = [f"--{key.replace('_', '-')} {value}" for key, value in vars(args).items() if key not in unstated(args)]
    return "python -m training.make_replay_set " + " ".join(options)


def main() -> None:
    """Pick the crops and write the replay set atomically."""
    args = parse_args()
    wanted = {group: int(n) for group, n in (item.split("=") for item in args.per_group.split(","))}
    sizes = {group: int(n) for group, n in (item.split("=") for item in args.sizes.split(",") if item)}
    rng = np.random.default_rng(args.seed)
    model = load_model(args.model)
    arrays: dict[str, np.ndarray] = {}
    sources = []
    for group, count in wanted.items():
        candidates = split_images(split="train", group=group, source=args.source)
        size = sizes.get(group, args.size)
        chosen = 0
        for index in rng.permutation(len(candidates)):
            item = candidates[int(index)]
            image, labels = read_image(item.image_path), read_labels(item.labels_path)
            if min(labels.shape) < size:
                continue
            window = densest_crop(labels, size, rng)
            crop_labels = relabel_sequential(labels[window].astype(np.uint32))[0].astype(np.uint16)
            if crop_labels.max() < 3 or not inverted_alike(image[window], image, model):
                continue
            index = len(sources)
            arrays[f"image_{index}"] = np.ascontiguousarray(image[window]).astype(np.uint8)
            arrays[f"labels_{index}"] = crop_labels
            sources.append({"key": item.key, "group": group, "window": [[w.start, w.stop] for w in window]})
            chosen += 1
            if chosen == count:
                break
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    with atomic_write_path(args.output, overwrite=True) as temp:
        Path(temp).write_bytes(buffer.getvalue())
    description = {
        "what": "annotated crops of the default model's training images, mixed into fine-tuning batches (rehearsal)",
        "licence": "CC0 (2018 Data Science Bowl / BBBC038; S-BSST265, Kromp et al. 2020)",
        "made_by": made_by(args),
        "crops": sources,
    }
    write_json(args.output.with_suffix(".json"), description, overwrite=True)
    print(json.dumps({"crops": len(sources), "bytes": args.output.stat().st_size}))


if __name__ == "__main__":
    main()

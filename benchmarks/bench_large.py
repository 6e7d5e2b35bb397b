"""Large-image prediction: peak memory and megapixels/s versus image size (CPU).

For every size a synthetic uint16 nuclei image is written chunk by chunk to a
zarr array (in its own process), then a fresh process runs
``napari_unet.core.predict.large_image.predict_large`` on it and reports its peak
resident memory (``resource.getrusage``), so peaks of different sizes never
mix.  A baseline process that only imports torch + napari-unet and loads the
model is measured first: ``above_baseline_mb`` is what prediction adds, which
should stay flat as the image grows (bounded by the chunk size).

Prints one JSON object.

Usage: python -m benchmarks.bench_large [--sizes 8192,16384] [--chunk 2048] [--halo 64] [--model default]
       python -m benchmarks.bench_large --sizes 1024 --chunk 512      (a quick check)
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TILE = 512
"""Edge of the synthetic tile repeated (with random flips) over the large image."""


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024


def load_bundle(spec: str):
    """The model to benchmark; the untrained default architecture when ``spec`` cannot be loaded."""
    from napari_unet.core.errors import UserInputError
    from napari_unet.core.models.bundle import placeholder_default
    from napari_unet.core.models.registry import load_model

    try:
        return load_model(spec), spec
    except UserInputError:
        return placeholder_default(), "placeholder-untrained"


def make_image(path: Path, size: int, chunk: int) -> None:
    """Write a ``size x size`` uint16 zarr image, one zarr chunk at a time (bounded memory)."""
    import zarr

    from napari_unet.core.data.synthetic import synthetic_nuclei

    tile, _ = synthetic_nuclei(shape=(TILE, TILE), n_nuclei=TILE * TILE // 2500, seed=1)
    tile = tile.astype(np.uint16)
    rng = np.random.default_rng(0)
    array = zarr.open_array(str(path), mode="w", shape=(size, size), chunks=(chunk, chunk), dtype="u2")
    for y in range(0, size, chunk):
        for x in range(0, size, chunk):
            h, w = min(chunk, size - y), min(chunk, size - x)
            block = np.empty((h, w), np.uint16)
            for ty in range(0, h, TILE):
                for tx in range(0, w, TILE):
                    flipped = tile[:: rng.choice([-1, 1]), :: rng.choice([-1, 1])]
                    block[ty : ty + TILE, tx : tx + TILE] = flipped[: h - ty, : w - tx]
            array[y : y + h, x : x + w] = block


def child_baseline(model: str) -> dict:
    import torch  # noqa: F401

    import napari_unet.core.predict.folder  # noqa: F401

    load_bundle(model)
    return {"peak_rss_mb": peak_rss_mb()}


def child_predict(image_path: str, out_path: str, model: str, chunk: int, halo: int, threads: int) -> dict:
    import torch

    from napari_unet.core.config import InferenceConfig
    from napari_unet.core.predict.large_image import predict_large
    from napari_unet.core.progress import run_to_end

    if threads:
        torch.set_num_threads(threads)
    bundle, name = load_bundle(model)
    start = time.perf_counter()
    run_to_end(
        predict_large(image_path, bundle, out_path, chunk=chunk, halo=halo, inference=InferenceConfig(device="cpu"))
    )
    seconds = time.perf_counter() - start
    import zarr

    labels = zarr.open_array(str(Path(out_path) / "labels" / "labels" / "0"), mode="r")
    n_objects = max(int(labels[y : y + chunk].max()) for y in range(0, labels.shape[0], chunk))
    return {
        "seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "n_objects": n_objects,
        "model": name,
        "torch_threads": torch.get_num_threads(),
    }


def run_child(*args: str) -> dict:
    """Run this script as a child process and return the JSON it prints."""
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {args[:2]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8192,16384", help="comma-separated image edges")
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--halo", type=int, default=64)
    parser.add_argument("--model", default="default")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--workdir", default=None, help="folder for the temporary zarr stores")
    parser.add_argument("--child", choices=["baseline", "make", "predict"], help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "baseline":
        print(json.dumps(child_baseline(args.model)))
        return
    if args.child == "make":
        make_image(Path(args.image), args.size, args.chunk)
        print(json.dumps({"made": args.image}))
        return
    if args.child == "predict":
        print(json.dumps(child_predict(args.image, args.out, args.model, args.chunk, args.halo, args.threads)))
        return

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    common = ["--model", args.model, "--chunk", str(args.chunk), "--halo", str(args.halo)]
    baseline = run_child("--child", "baseline", *common)["peak_rss_mb"]
    results = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for size in sizes:
            image = str(Path(tmp) / f"image_{size}.zarr")
            out = str(Path(tmp) / f"labels_{size}.zarr")
            run_child("--child", "make", "--image", image, "--size", str(size), *common)
            measured = run_child(
                "--child", "predict", "--image", image, "--out", out, "--threads", str(args.threads), *common
            )
            megapixels = size * size / 1e6
            results.append(
                {
                    "size": size,
                    "megapixels": megapixels,
                    "mpx_per_s": megapixels / measured["seconds"],
                    "above_baseline_mb": measured["peak_rss_mb"] - baseline,
                    "image_mb": size * size * 2 / 1024**2,
                    "labels_mb": size * size * 4 / 1024**2,
                    **measured,
                }
            )
    report = {
        "benchmark": "bench_large",
        "device": "cpu",
        "chunk": args.chunk,
        "halo": args.halo,
        "baseline_rss_mb": baseline,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

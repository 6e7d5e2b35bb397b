"""Folder prediction on a local dask cluster: throughput with 1 vs 2 (or N) workers, and identical results.

Writes a folder of synthetic nuclei images, segments it once in this process
(the reference, torch limited to 1 thread like a dask worker), then with
``napari_unet.core.predict.folder.predict_folder`` on a ``LocalCluster`` of each
requested size.  Reports cluster start-up time, images/s and megapixels/s
(start-up excluded), failures, and ``identical``: every output equals the
reference up to a renaming of label ids.

Prints one JSON object.

Usage: python -m benchmarks.bench_dask [--workers 1,2] [--n-images 16] [--size 1024] [--model default]
       python -m benchmarks.bench_dask --n-images 2 --size 128        (a quick check)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_unet.core.config import InferenceConfig
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.errors import UserInputError
from napari_unet.core.io import read_labels
from napari_unet.core.models.bundle import placeholder_default, save_model
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.folder import predict_folder
from napari_unet.core.progress import run_to_end


def model_spec(spec: str, folder: Path) -> tuple[str, str]:
    """A model name/folder workers can load; the untrained default saved to ``folder`` if ``spec`` is missing."""
    try:
        load_model(spec)
        return spec, spec
    except UserInputError:
        return str(save_model(placeholder_default(), folder / "placeholder")), "placeholder-untrained"


def make_images(folder: Path, n: int, size: int) -> list[Path]:
    folder.mkdir()
    paths = []
    for seed in range(n):
        image, _ = synthetic_nuclei(shape=(size, size), n_nuclei=max(4, size * size // 2500), seed=seed)
        path = folder / f"img_{seed:03d}.tif"
        tifffile.imwrite(path, image)
        paths.append(path)
    return paths


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``a`` and ``b`` are the same labelling up to a one-to-one renaming of ids."""
    if a.shape != b.shape or not np.array_equal(a == 0, b == 0):
        return False
    fg = a > 0
    pairs = np.unique(np.stack([a[fg], b[fg]]), axis=1)
    return pairs.shape[1] == len(np.unique(a[fg])) == len(np.unique(b[fg]))


def outputs_of(summary) -> dict[str, Path]:
    return {r.input: Path(r.outputs[0]) for r in summary.done}


def run(paths, out: Path, spec: str, scheduler) -> tuple[object, float]:
    out.mkdir()
    start = time.perf_counter()
    summary = run_to_end(predict_folder(paths, out, spec, scheduler=scheduler, inference=InferenceConfig(device="cpu")))
    return summary, time.perf_counter() - start


def bench_workers(n_workers: int, paths, tmp: Path, spec: str, reference: dict[str, Path], megapixels: float) -> dict:
    from distributed import Client, LocalCluster

    start = time.perf_counter()
    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(n_workers)
        startup = time.perf_counter() - start
        summary, seconds = run(paths, tmp / f"out_{n_workers}", spec, client)
    outputs = outputs_of(summary)
    identical = set(outputs) == set(reference) and all(
        same_partition(read_labels(outputs[k]), read_labels(reference[k])) for k in reference
    )
    return {
        "workers": n_workers,
        "startup_s": startup,
        "seconds": seconds,
        "images_per_s": len(summary.done) / seconds,
        "mpx_per_s": megapixels / seconds,
        "failed": [vars(f) for f in summary.failed],
        "identical": identical,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated cluster sizes")
    parser.add_argument("--n-images", type=int, default=16)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--model", default="default")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp_name:
        tmp = Path(tmp_name)
        spec, model_name = model_spec(args.model, tmp)
        paths = make_images(tmp / "images", args.n_images, args.size)
        megapixels = args.n_images * args.size**2 / 1e6
        torch.set_num_threads(1)
        reference_summary, reference_s = run(paths, tmp / "out_here", spec, None)
        reference = outputs_of(reference_summary)
        clusters = [
            bench_workers(int(n), paths, tmp, spec, reference, megapixels) for n in args.workers.split(",") if n.strip()
        ]
    report = {
        "benchmark": "bench_dask",
        "model": model_name,
        "n_images": args.n_images,
        "size": args.size,
        "cpu_count": os.cpu_count(),
        "in_process": {"seconds": reference_s, "mpx_per_s": megapixels / reference_s, "torch_threads": 1},
        "clusters": clusters,
        "identical": all(c["identical"] for c in clusters),
        "python": platform.python_version(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

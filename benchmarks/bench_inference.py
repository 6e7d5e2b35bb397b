"""Inference speed: network and end-to-end megapixels/s, FLOPs/pixel, matmul probe.

Prints one JSON object.  Everything is measured in the same run, so the
efficiency (achieved network FLOP/s over a dense matmul's FLOP/s on the same
cores) is a ratio that is comparable across machines.  Absolute times are only
meaningful on a quiet machine; on a GPU the same numbers are reported for CUDA.

Usage: python -m benchmarks.bench_inference [--sizes 512,2048] [--model default | --models A B ...]
       [--devices cpu] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from napari_unet.core.config import InferenceConfig
from napari_unet.core.data.normalize import normalize_plane
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.models.network import count_parameters, flops_per_pixel
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.planar import predict_probabilities
from napari_unet.core.predict.runtime import model_uses_flips
from napari_unet.core.predict.segment import predict


def matmul_gflops(device: torch.device, n: int = 1024, repeats: int = 5) -> float:
    """Dense float32 matmul throughput in GFLOP/s on ``device``."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, cudnn autotune)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


PLAIN_TILE = 512
"""Tile edge of the plain forward: the network as loaded, over non-overlapping tiles, nothing else."""


def plain_forward(bundle, plane: np.ndarray, device: str) -> None:
    """The bare network over ``PLAIN_TILE``² tiles of ``plane (C, Y, X)`` (no overlap, blending or post-processing)."""
    network = bundle.network.to(device).eval()
    source = torch.from_numpy(plane)
    with torch.inference_mode():
        for y in range(0, plane.shape[1], PLAIN_TILE):
            for x in range(0, plane.shape[2], PLAIN_TILE):
                network(source[None, :, y : y + PLAIN_TILE, x : x + PLAIN_TILE].to(device))
        _sync(torch.device(device))


def bench_size(bundle, size: int, device: str, repeats: int) -> dict:
    """MPx/s of the plain forward, of the network inside ``predict`` and of ``predict`` end to end, same run.

    The network and end-to-end rows run without test-time flips; when the model runs with flips by default
    (:func:`~napari_unet.core.predict.runtime.model_uses_flips`), ``predict`` with the model's own settings is timed
    too (``end_to_end_model_settings_*``).  ``size`` must be a multiple of :data:`PLAIN_TILE` for the plain
    forward to cover the image exactly.
    """
    image, _ = synthetic_nuclei(shape=(size, size), n_nuclei=max(8, size * size // 2500), seed=1)
    config = InferenceConfig(device=device, tta=False)
    plane = normalize_plane(image[..., None], bundle.normalize, bundle.config.in_channels)
    megapixels = size * size / 1e6
    plain_s = _best_seconds(lambda: plain_forward(bundle, plane, device), repeats)
    network_s = _best_seconds(lambda: predict_probabilities(bundle, plane, config), repeats)
    end_to_end_s = _best_seconds(lambda: predict(image, bundle, inference=config), repeats)
    row = {
        "size": size,
        "plain_forward_mpx_per_s": megapixels / plain_s,
        "network_mpx_per_s": megapixels / network_s,
        "end_to_end_mpx_per_s": megapixels / end_to_end_s,
        "plain_forward_s": plain_s,
        "network_s": network_s,
        "end_to_end_s": end_to_end_s,
        "end_to_end_over_plain_speed": plain_s / end_to_end_s,
        "network_over_plain_speed": plain_s / network_s,
        "model_settings_flips": model_uses_flips(bundle.metadata),
    }
    if row["model_settings_flips"]:
        own = InferenceConfig(device=device)
        own_s = _best_seconds(lambda: predict(image, bundle, inference=own), repeats)
        row |= {"end_to_end_model_settings_mpx_per_s": megapixels / own_s, "end_to_end_model_settings_s": own_s}
    return row


PLAIN_PROCESS = """
import sys, time, numpy as np, torch, tifffile
from napari_unet.core.models.registry import load_model
image = tifffile.imread(sys.argv[1])
bundle = load_model(sys.argv[2])
plane = np.repeat(((image - image.min()) / np.ptp(image)).astype(np.float32)[None], bundle.config.in_channels, 0)
network = bundle.network.eval()
with torch.inference_mode():
    for y in range(0, plane.shape[1], 512):
        for x in range(0, plane.shape[2], 512):
            network(torch.from_numpy(plane[None, :, y:y + 512, x:x + 512].copy()))
"""


def bench_processes(spec: str, size: int, repeats: int) -> dict:
    """Whole-process seconds, side by side: ``napari-unet predict`` on a ``size``² TIFF against a plain forward.

    The plain process imports torch, reads the TIFF, loads the same weights and runs the bare network over
    512² tiles; ``predict`` does everything a user's command does (normalise, tile, post-process, write the
    labels and their provenance), with ``--no-tta`` so that both run the network once per pixel.  The two
    alternate ``repeats`` times; the best of each is reported.
    """
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import tifffile

    image, _ = synthetic_nuclei(shape=(size, size), n_nuclei=max(8, size * size // 2500), seed=1)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "image.tif"
        tifffile.imwrite(source, image)
        commands = {
            "plain_forward": [sys.executable, "-c", PLAIN_PROCESS, str(source), spec],
            "predict": [
                sys.executable,
                "-m",
                "napari_unet.cli",
                "--quiet",
                "predict",
                str(source),
                "-o",
                str(Path(folder) / "out"),
                "--model",
                spec,
                "--no-tta",
                "--overwrite",
            ],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(repeats):
            for name, command in commands.items():
                start = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                times[name].append(time.perf_counter() - start)
    best = {name: min(values) for name, values in times.items()}
    return {
        "size": size,
        "seconds": best,
        "all_seconds": times,
        "predict_over_plain_speed": best["plain_forward"] / best["predict"],
    }


def bench_model(spec: str, sizes: list[int], devices: list[str], repeats: int) -> dict:
    """Speed of one model on every device and size (see :func:`bench_size`)."""
    bundle = load_model(spec)
    flops = flops_per_pixel(bundle.config)
    report = {
        "model": spec,
        "config": bundle.config.to_dict(),
        "parameters": count_parameters(bundle.network),
        "flops_per_pixel": flops,
        "devices": {},
    }
    for device in devices:
        probe = matmul_gflops(torch.device(device))
        rows = [bench_size(bundle, size, device, repeats) for size in sizes]
        for row in rows:
            row["network_gflops"] = row["network_mpx_per_s"] * 1e6 * flops / 1e9
            row["efficiency_vs_matmul"] = row["network_gflops"] / probe
        report["devices"][device] = {"matmul_gflops": probe, "sizes": rows}
        if device == "cuda":
            report["devices"][device]["name"] = torch.cuda.get_device_name()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512,2048")
    parser.add_argument("--model", default="default", help="a model name or folder")
    parser.add_argument("--models", nargs="*", default=None, help="several models, measured one after the other")
    parser.add_argument("--devices", default=None, help="e.g. cpu or cpu,cuda (default: cpu, plus cuda if present)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--processes", type=int, default=0, help="also time whole processes (predict vs plain) at this size"
    )
    args = parser.parse_args()
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    sizes = [int(s) for s in args.sizes.split(",")]
    reports = [bench_model(spec, sizes, devices, args.repeats) for spec in (args.models or [args.model])]
    common = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    if args.processes:
        common["processes"] = bench_processes(
            args.models[0] if args.models else args.model, args.processes, args.repeats
        )
    if args.models is None:  # one model: the flat layout earlier results use
        print(json.dumps({**reports[0], **common}, indent=2))
    else:
        print(json.dumps({**common, "models": reports}, indent=2))


if __name__ == "__main__":
    np.random.seed(0)
    main()

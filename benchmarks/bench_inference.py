"""Inference speed: network and end-to-end megapixels/s, FLOPs/pixel, matmul probe.

Prints one JSON object.  Everything is measured in the same run, so the
efficiency (achieved network FLOP/s over a dense matmul's FLOP/s on the same
cores) is a ratio that is comparable across machines.  Absolute times are only
meaningful on a quiet machine; on a GPU the same numbers are reported for CUDA.

Usage: python benchmarks/bench_inference.py [--sizes 512,2048] [--model default | --models A B ...]
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
from napari_unet.core.inference import predict, predict_probabilities
from napari_unet.core.model import count_parameters, flops_per_pixel
from napari_unet.core.normalize import normalize_plane
from napari_unet.core.store import load_model
from napari_unet.core.synthetic import synthetic_nuclei


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


def bench_size(bundle, size: int, device: str, repeats: int) -> dict:
    image, _ = synthetic_nuclei(shape=(size, size), n_nuclei=max(8, size * size // 2500), seed=1)
    config = InferenceConfig(device=device)
    plane = normalize_plane(image[..., None], bundle.normalize, bundle.config.in_channels)
    megapixels = size * size / 1e6
    network_s = _best_seconds(lambda: predict_probabilities(bundle, plane, config), repeats)
    end_to_end_s = _best_seconds(lambda: predict(image, bundle, inference=config), repeats)
    return {
        "size": size,
        "network_mpx_per_s": megapixels / network_s,
        "end_to_end_mpx_per_s": megapixels / end_to_end_s,
        "network_s": network_s,
        "end_to_end_s": end_to_end_s,
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
    args = parser.parse_args()
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    sizes = [int(s) for s in args.sizes.split(",")]
    reports = [bench_model(spec, sizes, devices, args.repeats) for spec in (args.models or [args.model])]
    common = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    if args.models is None:  # one model: the flat layout earlier results use
        print(json.dumps({**reports[0], **common}, indent=2))
    else:
        print(json.dumps({**common, "models": reports}, indent=2))


if __name__ == "__main__":
    np.random.seed(0)
    main()

"""GPU check: the bundled model's inference speed on CUDA and a 10 s fine-tune, as one JSON object.

Runs on a GPU machine with torch, numpy, scipy, scikit-image, tifffile and
safetensors (no napari needed).  Rows:

- ``inference``: network (``predict_probabilities``) and end-to-end
  (``predict``) megapixels/s on synthetic images of the given sizes;
- ``network_only``: ``predict_probabilities`` alone on larger sizes (their
  end-to-end time is CPU post-processing);
- ``batch_sizes``: ``predict_probabilities`` at the first size with 4, 8, 16
  and 32 tiles per forward pass;
- ``pipeline``: end to end at the first size with one-pass post-processing
  (``workers=1``) and with chunks labelled by every core while the network
  runs, the labels of one against the other, and CUDA labels against the
  CPU path's at 2048²;
- ``fine_tune``: steps done in 10 s on CUDA and whether the weights changed.

Usage: python -m benchmarks.gpu_check [--sizes 4096] [--network-sizes 16384] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_inference import bench_size, matmul_gflops
from napari_unet.core.config import InferenceConfig, TrainingConfig
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.models.network import flops_per_pixel
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.planar import predict_probabilities
from napari_unet.core.progress import run_to_end
from napari_unet.core.train.fine_tune import iter_train

BATCH_SIZES = (4, 8, 16, 32)
"""Tiles per forward pass the batch-size row tries (the automatic choice on a GPU is 8, fewer when
the memory estimate says fewer fit)."""


def network_only(bundle, size: int, batch_size: int = 0, device: str = "cuda") -> dict:
    """Seconds and megapixels/s of ``predict_probabilities`` on a random ``size``² plane (best of 2 after a warm-up).

    ``batch_size`` tiles per forward pass (0: the automatic choice, 8 on a GPU unless the memory
    estimate fits fewer; a pass that runs out of memory is halved).
    """
    plane = np.random.default_rng(0).random((bundle.config.in_channels, size, size), dtype=np.float32)
    config = InferenceConfig(device=device, batch_size=batch_size)
    times = []
    for _ in range(3):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        predict_probabilities(bundle, plane, config)
        times.append(time.perf_counter() - start)
    best = min(times[1:])
    return {
        "size": size,
        "batch_size": batch_size or "auto",
        "network_s": best,
        "network_mpx_per_s": size * size / 1e6 / best,
    }


def pipeline(bundle, size: int, cpu_size: int) -> dict:
    """End to end on CUDA at ``size``²: one-pass post-processing against chunks labelled by every core meanwhile.

    Also compares the pipelined CUDA labels with the CPU path's at ``cpu_size``² (AP@0.5 of one against the other).
    """
    from napari_unet.core.evaluate.metrics import evaluate_image, summary_row
    from napari_unet.core.labels.chunked import postprocess_workers
    from napari_unet.core.predict.segment import predict

    def ap50(reference: np.ndarray, labels: np.ndarray) -> float:
        return float(summary_row(evaluate_image(reference, labels, (0.5,)))["AP@0.5"])

    image, _ = synthetic_nuclei(shape=(size, size), n_nuclei=size * size // 4000, seed=5)
    rows: dict = {"size": size, "workers": postprocess_workers(0)}
    labels = {}
    for name, workers in (("previous", 1), ("pipelined", 0)):
        config = InferenceConfig(device="cuda", workers=workers)
        predict(image[:512, :512], bundle, inference=config)  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        labels[name] = predict(image, bundle, inference=config).labels
        seconds = time.perf_counter() - start
        rows[name] = {"seconds": seconds, "mpx_per_s": size * size / 1e6 / seconds}
    rows["labels_ap50_pipelined_vs_previous"] = ap50(labels["previous"], labels["pipelined"])
    crop = image[:cpu_size, :cpu_size]
    on_cpu = predict(crop, bundle, inference=InferenceConfig(device="cpu")).labels
    on_gpu = predict(crop, bundle, inference=InferenceConfig(device="cuda")).labels
    rows["labels_ap50_cuda_vs_cpu"] = {"size": cpu_size, "ap50": ap50(on_cpu, on_gpu)}
    return rows


def fine_tune(bundle, seconds: float) -> dict:
    """A ``seconds`` fine-tune on CUDA from ``bundle`` on one synthetic image."""
    image, labels = synthetic_nuclei(shape=(512, 512), n_nuclei=60, seed=3)
    cfg = TrainingConfig(max_seconds=seconds, device="cuda", val_fraction=0.0, batch_size=8, patch_size=256)
    before = {k: v.detach().clone() for k, v in bundle.network.state_dict().items()}
    result = run_to_end(iter_train(bundle, [image], [labels], cfg))
    after = result.bundle.network.state_dict()
    changed = max(
        float((after[k].float().cpu() - before[k].float().cpu()).abs().max())
        for k in before
        if before[k].is_floating_point()
    )
    steps = [r for r in result.history if "loss" in r]
    return {"seconds": seconds, "steps": len(steps), "max_weight_change": changed, "last_loss": steps[-1]["loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--sizes", default="4096")
    parser.add_argument("--network-sizes", default="16384")
    parser.add_argument("--fine-tune-seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device")
    bundle = load_model(args.model)
    report: dict = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "model": bundle.name,
        "flops_per_pixel": flops_per_pixel(bundle.config),
        "matmul_gflops_fp32": matmul_gflops(torch.device("cuda"), n=4096),
    }
    sections = {
        "inference": lambda: [bench_size(bundle, int(s), "cuda", 2) for s in args.sizes.split(",") if s],
        "network_only": lambda: [network_only(bundle, int(s)) for s in args.network_sizes.split(",") if s],
        "batch_sizes": lambda: [network_only(bundle, int(args.sizes.split(",")[0]), b) for b in BATCH_SIZES],
        "pipeline": lambda: pipeline(bundle, int(args.sizes.split(",")[0]), 2048),
        "fine_tune": lambda: fine_tune(bundle, args.fine_tune_seconds),
    }
    for name, run in sections.items():
        try:
            report[name] = run()
        except Exception as exc:  # a check reports every failure and goes on
            report[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps({name: report[name]}), flush=True)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

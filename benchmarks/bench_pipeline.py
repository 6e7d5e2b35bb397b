"""Everything but the network: today's one-pass post-processing against chunks labelled by worker threads.

One large plane (``--size``, a mosaic of synthetic fluorescence nuclei) is
segmented with the bundled default model through ``predict``:

- ``previous``: the path before chunked post-processing (``InferenceConfig(workers=1)``:
  the whole probability map labelled in one pass);
- ``workers_1`` / ``workers_2``: the new path with 1 and 2 worker threads: the
  plane is labelled chunk by chunk while the network still runs
  (``ChunkLabeller``), chunked as for 2 workers even with one, so the two
  differ only in threads;

first with the network replaced by a no-op (logits computed from the
normalised intensity, so the rest of the pipeline still sees nuclei-shaped
probabilities and is measured alone), then with the real network.  Each
timing is the best of ``--repeats`` runs, all measured side by side in this
one process, the paths taking turns round by round (ratios, not absolute
times, are the result on a shared CPU).
The CPU time of every timed run (all threads of the process) is recorded
too; it includes the time torch's OpenMP threads spin while waiting for
their next operation (``OMP_WAIT_POLICY``), on the cores the labelling
workers need.
Labels of the new path are compared with the previous path's (AP@0.5 of one
against the other) on the large plane with the real network and, when
``../shared/data/dsb2018/val`` exists, on those images chunked at 256 pixels
(they are smaller than one automatic chunk).

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.bench_pipeline --size 4096 --json benchmarks/results/pipeline.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.report import save
from napari_unet.core.config import InferenceConfig
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.evaluate.metrics import evaluate_image, summary_row
from napari_unet.core.io import read_image
from napari_unet.core.labels import chunked
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict import segment
from napari_unet.core.predict.memory import keep_freed_memory
from napari_unet.core.predict.segment import predict

VALIDATION_FOLDER = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018" / "val"


class IntensityLogits(nn.Module):
    """A no-op network: background / interior / boundary logits from the first input channel (no convolutions).

    Logits ``(-8, 8, 0) * (intensity - 0.4)``, written in one broadcast
    multiplication: built from three tensors and a concatenation they added
    work to what this benchmark means to measure (everything but the network).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("slopes", torch.tensor([-8.0, 8.0, 0.0]).view(1, 3, 1, 1), persistent=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(N, C, y, x)`` normalised tiles -> ``(N, 3, y, x)`` logits."""
        return (inputs[:, :1] - 0.4) * self.slopes


def mosaic(size: int, tile: int = 512, seed: int = 0) -> np.ndarray:
    """``(size, size)`` uint16 image: synthetic fluorescence tiles of 60 nuclei each, side by side."""
    rows = []
    for row in range(-(-size // tile)):
        tiles = [synthetic_nuclei((tile, tile), 60, seed=seed + row * 100 + col)[0] for col in range(-(-size // tile))]
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)[:size, :size]


def ap50(reference: np.ndarray, labels: np.ndarray) -> float:
    """AP@0.5 of ``labels`` against ``reference``."""
    return float(summary_row(evaluate_image(reference, labels, (0.5,)))["AP@0.5"])


def timed(run: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall seconds and CPU seconds (all threads of the process) of one ``run()``, and its result."""
    started, started_cpu = time.perf_counter(), time.process_time()
    result = run()
    return time.perf_counter() - started, time.process_time() - started_cpu, result


PATHS: dict[str, tuple[int, bool]] = {
    "previous": (1, False),
    "workers_1": (1, True),
    "workers_2": (2, False),
}
"""Path name -> (post-processing workers, chunk the plane as 2 workers would even with 1)."""


@contextlib.contextmanager
def chunked_as_for_two_workers() -> Iterator[None]:
    """Within the block, one worker chunks (and pipelines) a plane as two would: threads alone differ."""
    edge, decide, decide_here = chunked.chunk_edge, chunked.worth_chunking, segment.worth_chunking
    chunked.chunk_edge = lambda shape, workers: edge(shape, 2)
    chunked.worth_chunking = segment.worth_chunking = lambda shape, workers: True
    try:
        yield
    finally:
        chunked.chunk_edge, chunked.worth_chunking, segment.worth_chunking = edge, decide, decide_here


def run_paths(image: np.ndarray, bundle: Any, repeats: int) -> dict[str, dict[str, Any]]:
    """Time every path of :data:`PATHS` on ``image``; return seconds, CPU seconds, labels and object count per path.

    The paths take turns (one run of each per round, ``repeats`` rounds) so
    that a slow spell of a shared machine slows all of them alike; each keeps
    its fastest run.
    """
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in PATHS}
    results: dict[str, dict[str, Any]] = {}
    for _ in range(repeats):
        for name, (workers, force_chunks) in PATHS.items():
            inference = InferenceConfig(workers=workers, device="cpu")
            with chunked_as_for_two_workers() if force_chunks else contextlib.nullcontext():
                seconds, cpu_seconds, prediction = timed(functools.partial(predict, image, bundle, inference=inference))
            runs[name].append((seconds, cpu_seconds))
            results[name] = {"labels": prediction.labels, "objects": int(prediction.labels.max())}
    for name, timings in runs.items():
        results[name]["seconds"], results[name]["cpu_seconds"] = min(timings)
    return results


def with_no_op_network(run: Callable[[], Any]) -> Any:
    """Run ``run`` with every network replaced by :class:`IntensityLogits`."""
    original = segment.inference_network
    segment.inference_network = lambda network, device: IntensityLogits()
    try:
        return run()
    finally:
        segment.inference_network = original


def validation_agreement(bundle: Any) -> dict[str, Any] | None:
    """AP@0.5 of chunked (256 px, 2 workers) against one-pass labels on the ``dsb2018/val`` images, if present."""
    if not VALIDATION_FOLDER.is_dir():
        return None
    scores = []
    for path in sorted(VALIDATION_FOLDER.glob("*_image.tif")):
        prediction = predict(read_image(path), bundle, inference=InferenceConfig(workers=1, device="cpu"))
        tiled = chunked.labels_in_chunks(prediction.probabilities, bundle.postprocess, workers=2, chunk=256)
        scores.append(ap50(prediction.labels, tiled))
    return {"images": len(scores), "min_ap50": min(scores), "mean_ap50": float(np.mean(scores))} if scores else None


def summarise(no_op: dict[str, Any], real: dict[str, Any], validation: dict[str, Any] | None) -> dict[str, Any]:
    """The headline ratios and agreements from the timed paths."""
    agreement = ap50(real["previous"]["labels"], real["workers_2"]["labels"])
    floor = min(agreement, validation["min_ap50"]) if validation else agreement
    return {
        "non_network_speedup": no_op["previous"]["seconds"] / no_op["workers_2"]["seconds"],
        "parallel_speedup": no_op["workers_1"]["seconds"] / no_op["workers_2"]["seconds"],
        "end_to_end_speedup": real["previous"]["seconds"] / real["workers_2"]["seconds"],
        "labels_ap50_vs_previous": floor,
        "labels_ap50_vs_previous_large_plane": agreement,
        "labels_ap50_vs_previous_validation": validation,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096, help="edge of the square test plane (pixels)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing (the fastest counts)")
    parser.add_argument("--real-repeats", type=int, default=1, help="runs per timing with the real network")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc keeps freed memory for reuse (napari_unet.core.predict.memory.keep_freed_memory)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (and optionally write) its JSON."""
    args = parse_args(argv)
    torch.set_num_threads(2)
    kept = keep_freed_memory() if args.keep_freed_memory else False
    bundle = load_model("default")
    image = mosaic(args.size)
    no_op = with_no_op_network(lambda: run_paths(image, bundle, args.repeats))
    real = run_paths(image, bundle, args.real_repeats)
    report = {
        "benchmark": "bench_pipeline",
        "settings": {
            "size": args.size,
            "repeats": args.repeats,
            "real_repeats": args.real_repeats,
            "keep_freed_memory": kept,
        },
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform()},
        **summarise(no_op, real, validation_agreement(bundle)),
        "no_op_network_seconds": {name: row["seconds"] for name, row in no_op.items()},
        "no_op_network_cpu_seconds": {name: row["cpu_seconds"] for name, row in no_op.items()},
        "real_network_seconds": {name: row["seconds"] for name, row in real.items()},
        "objects": {name: row["objects"] for name, row in real.items()},
    }
    print(save(report, args.json))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does keeping freed memory in the process speed up post-processing? Side by side, in child processes.

``napari_unet.core.predict.memory.keep_freed_memory`` is a process-wide,
one-way setting, so it cannot be switched within one process: this script
runs ``bench_pipeline``'s no-op-network paths (everything but the network,
on one ``--size`` plane) in child processes, alternating with and without the
setting (``--rounds`` pairs), and reports per path the ratio of the best
times (default allocator over kept memory; above 1: keeping pays).  What
the setting costs is measured too: a simulated folder run (planes of mixed
sizes, ``--folder-edges``, two workers, no-op network) reports the resident
memory after each plane and the peak, with and without it.

Usage (from the repository root, on an otherwise idle machine)::

    .venv/bin/python -m benchmarks.bench_allocator --size 4096 --json benchmarks/results/allocator.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from napari_unet.core.io import write_json

CHILD = """
import json, sys, torch
from benchmarks.bench_pipeline import mosaic, run_paths, with_no_op_network
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.memory import keep_freed_memory

torch.set_num_threads(2)
kept = keep_freed_memory() if sys.argv[1] == "kept" else False
image, bundle = mosaic(int(sys.argv[2])), load_model("default")
paths = with_no_op_network(lambda: run_paths(image, bundle, int(sys.argv[3])))
print(json.dumps({"kept": kept, "seconds": {name: row["seconds"] for name, row in paths.items()}}))
"""


MEMORY_CHILD = """
import json, resource, sys, torch
from benchmarks.bench_pipeline import mosaic, with_no_op_network
from napari_unet.core.config import InferenceConfig
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.memory import keep_freed_memory
from napari_unet.core.predict.segment import predict

def rss_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20

torch.set_num_threads(2)
kept = keep_freed_memory() if sys.argv[1] == "kept" else False
bundle, after = load_model("default"), []
for edge in json.loads(sys.argv[2]):
    image = mosaic(edge, seed=edge)
    with_no_op_network(lambda: predict(image, bundle, inference=InferenceConfig(workers=2, device="cpu")))
    del image
    after.append(rss_mib())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"kept": kept, "rss_after_each_mib": after, "peak_rss_mib": peak}))
"""

FOLDER_EDGES = [4096, 1024, 3072, 512, 4096, 2048, 4096, 1536, 3584, 4096]
"""Plane edges of the simulated folder run: mixed sizes, so reuse and fragmentation both show."""


def memory_run(mode: str, edges: list[int]) -> dict[str, Any]:
    """Resident memory after each plane of a folder run and the peak, in a fresh process (``kept`` or ``default``)."""
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, mode, json.dumps(edges)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_run(mode: str, size: int, repeats: int) -> dict[str, Any]:
    """Seconds per path (best of ``repeats``) in a fresh process, memory ``kept`` or ``default``."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(size), str(repeats)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096, help="edge of the square test plane (pixels)")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of child processes (default, kept)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per path in each child (the fastest counts)")
    parser.add_argument(
        "--folder-edges",
        default=",".join(map(str, FOLDER_EDGES)),
        help="plane edges of the memory run (comma-separated; empty: skip it)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print (and optionally write) the JSON."""
    args = parse_args(argv)
    runs: dict[str, list[dict[str, float]]] = {"default": [], "kept": []}
    took = True
    for _ in range(args.rounds):
        for mode in ("default", "kept"):
            child = child_run(mode, args.size, args.repeats)
            runs[mode].append(child["seconds"])
            took = took and (child["kept"] or mode == "default")
    best = {mode: {path: min(run[path] for run in rows) for path in rows[0]} for mode, rows in runs.items()}
    edges = [int(edge) for edge in args.folder_edges.split(",") if edge]
    memory = {mode: memory_run(mode, edges) for mode in ("default", "kept")} if edges else None
    report = {
        "benchmark": "bench_allocator",
        "settings": {"size": args.size, "rounds": args.rounds, "repeats": args.repeats},
        "machine": {"platform": platform.platform()},
        "setting_took_effect": took,
        "speedup_from_kept_memory": {path: best["default"][path] / best["kept"][path] for path in best["kept"]},
        "best_seconds": best,
        "runs": runs,
        "folder_memory": None if memory is None else {"edges": edges, **memory},
    }
    print(json.dumps(report, indent=2))
    if args.json:
        write_json(args.json, report, overwrite=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

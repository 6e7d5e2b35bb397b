"""A candidate model: a copy of a grey + colour model with one branch's weights replaced.

Used to score a CPU continuation (``training/cpu_train.sh``) against the shipped
model with ``benchmarks/bench_sources.py`` before a full
``assemble_default_v2.py`` run.  The weights may be a ``gpu_train.py``
``.safetensors`` file or its resumable ``checkpoint.pt`` (the exponential
moving average is taken).

With ``--share S`` the branch becomes ``S * new + (1 - S) * base`` (a weight average of
two runs from the same start, "model soup"), which can beat both.

Usage::

    python -m training.swap_branch --base default --branch gray --weights out/cpu_grey/checkpoint.pt \
        --out out/candidates/grey_cpu [--share 0.5]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from napari_unet.core.models.bundle import save_model
from napari_unet.core.models.registry import load_model
from napari_unet.core.train.outcome import blend_states

BRANCHES = ("gray", "colour")


def branch_weights(path: Path) -> tuple[dict[str, torch.Tensor], int | None]:
    """Float32 state of one ``gpu_train.py`` network (EMA of a checkpoint) and its step when known."""
    if path.suffix == ".pt":
        state = torch.load(path, map_location="cpu", weights_only=False)
        weights, step = state["ema"], int(state["step"])
    else:
        weights, step = load_file(str(path)), None
    return {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="default", help="grey + colour model to copy (name or folder)")
    parser.add_argument("--branch", choices=BRANCHES, required=True)
    parser.add_argument("--weights", type=Path, required=True, help="gpu_train.py .safetensors or checkpoint.pt")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--share", type=float, default=1.0, help="weight of the new weights against the base's")
    args = parser.parse_args(argv)
    if not 0.0 < args.share <= 1.0:
        parser.error(f"--share must be in (0, 1], got {args.share}")
    bundle = load_model(args.base)
    weights, step = branch_weights(args.weights)
    branch = getattr(bundle.network, args.branch)
    branch.load_state_dict(blend_states(weights, branch.state_dict(), args.share))
    source = {"branch": args.branch, "weights": str(args.weights), "step": step, "base": args.base, "share": args.share}
    bundle = replace(bundle, metadata={**bundle.metadata, "swapped_branch": source})
    print(save_model(bundle, args.out, overwrite=True))


if __name__ == "__main__":
    main()

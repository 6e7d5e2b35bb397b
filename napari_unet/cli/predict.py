"""``napari-unet predict``: segment images and write ``OUTDIR/<stem>_labels.tif`` with provenance.

Large inputs (zarr stores, planes over 8192 x 8192, or ``--large``) stream
chunk by chunk into OME-Zarr; ``--dask-scheduler`` runs a folder on a cluster.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_unet.cli.common import (
    ensure_output_dir,
    expand_inputs,
    is_3d,
    is_labels_file,
    labels_output_path,
    progress_bar,
    recorded_settings,
)
from napari_unet.cli.inference import (
    fit_scale,
    inference_config,
    refuse_auto_scale,
    segmenter,
    wants_auto_scale,
)
from napari_unet.core.errors import UserInputError


def _prefetch_imports() -> None:
    """Import the post-processing libraries in a background thread while the main one imports torch.

    scikit-image's watershed and scipy take about 0.5 s to import; torch
    another 1.5 s: done side by side, a one-image ``predict`` starts sooner.
    """
    import threading

    def load() -> None:
        import napari_unet.core.labels.postprocess  # noqa: F401 - imported for its side effect (modules cached)

    threading.Thread(target=load, name="napari-unet-imports", daemon=True).start()


def cmd_predict(args: argparse.Namespace) -> int:
    """Segment every input and write ``OUTDIR/<stem>_labels.tif`` (``.zarr`` for large inputs) plus provenance.

    Parameters
    ----------
    args
        Parsed flags of ``predict``.

    Returns
    -------
    int
        The exit code.

    """
    _prefetch_imports()
    inputs = [p for p in expand_inputs(args.inputs) if not is_labels_file(p)]
    if not inputs:
        raise UserInputError("no image to segment: the inputs hold only *_labels files")
    outdir = Path(args.output)
    ensure_output_dir(outdir)
    large = [p for p in inputs if args.large or _is_large(p)]
    if args.method == "unet" and (args.dask_scheduler or large) and is_3d(args.model):
        raise UserInputError(
            "the 3D model segments whole stacks in memory, not chunk by chunk: drop --large / --dask-scheduler "
            "and give it stacks that fit in memory (zarr stores and planes over 8192 x 8192 are chunked)"
        )
    if args.dask_scheduler and not args.large:
        return _predict_distributed(args, inputs, outdir)
    targets = {p: labels_output_path(outdir, p, ".zarr" if p in large else ".tif") for p in inputs}
    if not args.overwrite:
        existing = [str(t) for t in targets.values() if t.exists()]
        if existing:
            raise UserInputError(f"output exists: {existing[0]} (and {len(existing) - 1} more); pass --overwrite")
    segment = segmenter(args.method, args)
    for source, target in targets.items():
        start = time.perf_counter()
        if source in large:
            _predict_large_file(args, source, target, segment)
            print(f"{source} -> {target}  ({time.perf_counter() - start:.1f} s)")
            continue
        n_objects = _predict_file(args, source, target, segment)
        print(f"{source} -> {target}  ({n_objects} objects, {time.perf_counter() - start:.1f} s)")
    return 0


def _is_large(path: Path) -> bool:
    """Return True for zarr stores and images with more than ``LARGE_IMAGE_PIXELS`` pixels per plane."""
    if path.suffix.lower() == ".zarr":
        return True
    if path.suffix.lower() not in (".tif", ".tiff"):
        return False
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            shape = tif.series[0].shape
    except Exception:  # unreadable files get read_image's clear error later
        return False
    from napari_unet.core.predict.large_image import LARGE_IMAGE_PIXELS

    return len(shape) >= 2 and int(shape[-1]) * int(shape[-2]) > LARGE_IMAGE_PIXELS


def _predict_file(args: argparse.Namespace, source: Path, target: Path, segment: Callable[..., Any]) -> int:
    """Segment one image held in memory and write its labels; return the number of objects."""
    from napari_unet.core.io import export_labels, provenance, read_image

    image = read_image(source)
    labels = segment(image, args.axes)
    model = getattr(segment, "bundle", None)
    settings = recorded_settings(args)
    if hasattr(segment, "scale_used"):
        settings["scale_used"] = segment.scale_used
    if hasattr(segment, "inference"):
        settings["tta_used"] = segment.inference.tta
    info = provenance(model=model, settings=settings, inputs=[source], method=args.method)
    export_labels(labels, target, overwrite=args.overwrite, provenance=info)
    return int(labels.max()) if labels.size else 0


def _predict_large_file(args: argparse.Namespace, source: Path, target: Path, segment: Callable[..., Any]) -> None:
    """Stream one large image chunk by chunk into an OME-Zarr ``target``."""
    from napari_unet.core.predict.large_image import predict_large

    bundle = getattr(segment, "bundle", None)
    if bundle is None:
        raise UserInputError(f"{source.name} is a large image: only --method unet streams it chunk by chunk")
    gen = predict_large(
        source,
        bundle,
        target,
        chunk=args.chunk,
        inference=_large_inference_config(args, bundle, source, segment.inference),
        axes=args.axes,
        overwrite=args.overwrite,
        scheduler=args.dask_scheduler,
        bundle_spec=args.model if args.dask_scheduler else None,
    )
    progress_bar(gen, f"predict {source.name} (chunked)", args.quiet)


def _large_inference_config(args: argparse.Namespace, bundle: Any, source: Path, inference: Any) -> Any:
    """``inference`` for a large file; ``--scale auto`` measures a central window read from disk."""
    from napari_unet.core.predict.large_image import open_large_image
    from napari_unet.core.predict.object_size import WINDOW_PIXELS, central_slices

    if not wants_auto_scale(args):
        return inference
    with open_large_image(source, args.axes) as large:
        window = large[central_slices(large.shape[:2], 2 * WINDOW_PIXELS)]
    return fit_scale(args, bundle, window, "YXC" if window.ndim == 3 else "YX", inference)


def _predict_distributed(args: argparse.Namespace, inputs: list[Path], outdir: Path) -> int:
    """Segment ``inputs`` on a dask cluster (``--dask-scheduler``); print the summary, return the exit code."""
    from napari_unet.core.predict.folder import predict_folder

    if args.method != "unet":
        raise UserInputError("--dask-scheduler runs the UNet; drop it to run classical methods")
    refuse_auto_scale(args, "with --dask-scheduler (each image would be measured on the cluster)")
    gen = predict_folder(
        inputs,
        outdir,
        args.model,
        scheduler=args.dask_scheduler,
        inference=inference_config(args),
        axes=args.axes,
        overwrite=args.overwrite,
    )
    summary = progress_bar(gen, "predict (dask)", args.quiet)
    print(json.dumps(summary.to_dict(), indent=2, default=str))
    for failure in summary.failed:
        print(f"error: {failure}", file=sys.stderr)
    return 0 if summary.ok else 1

"""The ``napari-unet`` command line: a thin layer over :mod:`napari_unet.core`.

Every sub-command parses its arguments, calls one engine function and reports
progress with a terminal progress bar.  Problems the user can fix are printed
as ``error: ...`` (exit code 2) without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from napari_unet import __version__
from napari_unet.core.errors import Cancelled, UserInputError
from napari_unet.core.progress import Progress, run_to_end

R = TypeVar("R")

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy", ".zarr")
METHOD_CHOICES = ("unet", "otsu", "li", "local", "watershed")


# ----------------------------------------------------------------------------- helpers


def _progress_bar(gen: Generator[Progress, None, R], desc: str, quiet: bool = False) -> R:
    """Drain ``gen`` while drawing a tqdm bar on stderr; return its result."""
    if quiet:
        return run_to_end(gen)
    from tqdm import tqdm

    with tqdm(desc=desc, unit="step", file=sys.stderr, leave=False, dynamic_ncols=True) as bar:

        def update(event: Progress) -> None:
            if event.total and bar.total != event.total:
                bar.total = event.total
            bar.n = event.done
            postfix = {k: f"{v:.3g}" for k, v in event.metrics.items() if isinstance(v, float)}
            if postfix:
                bar.set_postfix(postfix, refresh=False)
            bar.refresh()

        return run_to_end(gen, update)


def expand_inputs(paths: Sequence[str]) -> list[Path]:
    """Expand files and folders into a sorted list of image paths.

    Raises
    ------
    UserInputError
        If a path does not exist or a folder holds no image.

    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UserInputError(f"input {path} does not exist; check the path")
        if path.is_dir() and path.suffix != ".zarr":
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise UserInputError(f"folder {path} holds no image ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(images)
        else:
            found.append(path)
    return found


def _pair(images: list[Path], labels: list[Path]) -> list[tuple[Path, Path]]:
    """Pair images with labels by order, checking the counts agree."""
    if len(images) != len(labels):
        raise UserInputError(
            f"got {len(images)} image(s) but {len(labels)} label file(s); they are paired by order, "
            "so give the same number of each"
        )
    return list(zip(images, labels, strict=True))


def _labels_output_path(outdir: Path, source: Path, suffix: str = ".tif") -> Path:
    stem = source.name[: -len(source.suffix)] if source.suffix else source.name
    stem = stem.removesuffix(".ome")
    return outdir / f"{stem}_labels{suffix}"


def _parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHOD_CHOICES]
    if bad or not methods:
        raise UserInputError(f"unknown method(s) {bad}; choose from {', '.join(METHOD_CHOICES)}")
    return methods


AUTO_SCALE = "auto"
"""``--scale auto``: measure the nuclei of each image and choose its factor (:mod:`napari_unet.core.sizing`)."""


def _scale_arg(text: str) -> float | str:
    """``--scale`` value: a number, or ``auto``."""
    if text.strip().lower() == AUTO_SCALE:
        return AUTO_SCALE
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def _inference_config(args: argparse.Namespace, bundle: Any = None) -> Any:
    """Inference settings from the flags; ``--diameter`` needs the model (``bundle``, loaded when None).

    ``--scale auto`` leaves the scale at 1: the caller measures each image (:func:`_fit_scale`).
    """
    from napari_unet.core.config import InferenceConfig

    fields = {
        "device": args.device,
        "tile_size": args.tile,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "scale": args.scale if isinstance(args.scale, float) else None,
    }
    if getattr(args, "diameter", None) is not None:
        fields["scale"] = _scale_for_diameter(args, bundle)
    fields["tta"] = getattr(args, "tta", None)
    if getattr(args, "multiscale", False):
        fields["multiscale"] = True
    return InferenceConfig(**{k: v for k, v in fields.items() if v is not None})


def _scale_for_diameter(args: argparse.Namespace, bundle: Any) -> float:
    """Scale that fits ``--diameter`` to the model's training diameters (printed for the record)."""
    from napari_unet.core.sizing import DiameterRange

    if args.scale is not None:
        raise UserInputError("give --scale or --diameter, not both (--diameter chooses the scale)")
    if bundle is None:
        from napari_unet.core.store import load_model

        bundle = load_model(args.model)
    target = DiameterRange.of_model(bundle.metadata)
    scale = target.scale_for(args.diameter)
    if not args.quiet:
        print(
            f"nucleus diameter {args.diameter:g} px; the model was trained on {target.low:g}-{target.high:g} px "
            f"-> scale {scale:g}",
            file=sys.stderr,
        )
    return scale


def _wants_auto_scale(args: argparse.Namespace) -> bool:
    return getattr(args, "scale", None) == AUTO_SCALE


def _refuse_auto_scale(args: argparse.Namespace, why: str) -> None:
    if _wants_auto_scale(args):
        raise UserInputError(
            f"--scale auto is not available {why}; run 'napari-unet predict' with --scale auto on one typical "
            "image, then pass the factor it prints with --scale"
        )


def _fit_scale(args: argparse.Namespace, bundle: Any, image: Any, axes: str | None, inference: Any) -> Any:
    """``inference`` with the scale measured on ``image`` when ``--scale auto`` (else unchanged)."""
    from dataclasses import replace

    from napari_unet.core.sizing import estimate_scale

    if not _wants_auto_scale(args):
        return inference
    if bundle.config.spatial_dims == 3:
        raise UserInputError("--scale auto measures nuclei in 2D; with a 3D model pass --scale (and --z-spacing)")
    estimate = estimate_scale(image, bundle, axes, inference)
    if not args.quiet:
        print(f"  {estimate.describe()}", file=sys.stderr)
    return replace(inference, scale=estimate.scale)


def _segmenter(method: str, args: argparse.Namespace) -> Callable[[Any, str | None], Any]:
    """Return ``f(image, axes) -> labels`` for a method name."""
    if method == "unet":
        from napari_unet.core.inference import iter_predict, settings_for_model
        from napari_unet.core.store import load_model

        bundle = load_model(args.model)
        inference = settings_for_model(_inference_config(args, bundle), bundle)

        def run_unet(image: Any, axes: str | None) -> Any:
            fitted = _fit_scale(args, bundle, image, axes, inference)
            run_unet.scale_used = fitted.scale  # type: ignore[attr-defined]
            gen = iter_predict(image, bundle, axes=axes, inference=fitted, z_spacing=getattr(args, "z_spacing", None))
            return _progress_bar(gen, "unet", args.quiet).labels

        run_unet.bundle = bundle  # type: ignore[attr-defined]
        run_unet.inference = inference  # type: ignore[attr-defined]
        return run_unet

    from napari_unet.core.baselines import segment_baseline

    def run_baseline(image: Any, axes: str | None) -> Any:
        return segment_baseline(image, method, axes=axes)

    return run_baseline


# ----------------------------------------------------------------------------- predict


def _prefetch_imports() -> None:
    """Import the post-processing libraries in a background thread while the main one imports torch.

    scikit-image's watershed and scipy take about 0.5 s to import; torch
    another 1.5 s: done side by side, a one-image ``predict`` starts sooner.
    """
    import threading

    def load() -> None:
        import napari_unet.core.postprocess  # noqa: F401 - imported for its side effect (modules cached)

    threading.Thread(target=load, name="napari-unet-imports", daemon=True).start()


def cmd_predict(args: argparse.Namespace) -> int:
    """Segment every input and write ``OUTDIR/<stem>_labels.tif`` (``.zarr`` for large inputs) plus provenance."""
    _prefetch_imports()
    inputs = [p for p in expand_inputs(args.inputs) if not _is_labels_file(p)]
    if not inputs:
        raise UserInputError("no image to segment: the inputs hold only *_labels files")
    outdir = Path(args.output)
    _ensure_output_dir(outdir)
    large = [p for p in inputs if args.large or _is_large(p)]
    if args.method == "unet" and (args.dask_scheduler or large) and _is_3d(args.model):
        raise UserInputError(
            "the 3D model segments whole stacks in memory, not chunk by chunk: drop --large / --dask-scheduler "
            "and give it stacks that fit in memory (zarr stores and planes over 8192 x 8192 are chunked)"
        )
    if args.dask_scheduler and not args.large:
        return _predict_distributed(args, inputs, outdir)
    targets = {p: _labels_output_path(outdir, p, ".zarr" if p in large else ".tif") for p in inputs}
    if not args.overwrite:
        existing = [str(t) for t in targets.values() if t.exists()]
        if existing:
            raise UserInputError(f"output exists: {existing[0]} (and {len(existing) - 1} more); pass --overwrite")
    segment = _segmenter(args.method, args)
    for source, target in targets.items():
        start = time.perf_counter()
        if source in large:
            _predict_large_file(args, source, target, segment)
            print(f"{source} -> {target}  ({time.perf_counter() - start:.1f} s)")
            continue
        n_objects = _predict_file(args, source, target, segment)
        print(f"{source} -> {target}  ({n_objects} objects, {time.perf_counter() - start:.1f} s)")
    return 0


def _is_labels_file(path: Path) -> bool:
    return path.stem.endswith(("_labels", "_masks", "_mask"))


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
    from napari_unet.core.large_image import LARGE_IMAGE_PIXELS

    return len(shape) >= 2 and int(shape[-1]) * int(shape[-2]) > LARGE_IMAGE_PIXELS


def _predict_file(args: argparse.Namespace, source: Path, target: Path, segment: Callable[..., Any]) -> int:
    from napari_unet.core.io import export_labels, provenance, read_image

    image = read_image(source)
    labels = segment(image, args.axes)
    model = getattr(segment, "bundle", None)
    settings = _settings(args)
    if hasattr(segment, "scale_used"):
        settings["scale_used"] = segment.scale_used
    if hasattr(segment, "inference"):
        settings["tta_used"] = segment.inference.tta
    info = provenance(model=model, settings=settings, inputs=[source], method=args.method)
    export_labels(labels, target, overwrite=args.overwrite, provenance=info)
    return int(labels.max()) if labels.size else 0


def _predict_large_file(args: argparse.Namespace, source: Path, target: Path, segment: Callable[..., Any]) -> None:
    from napari_unet.core.large_image import predict_large

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
    _progress_bar(gen, f"predict {source.name} (chunked)", args.quiet)


def _large_inference_config(args: argparse.Namespace, bundle: Any, source: Path, inference: Any) -> Any:
    """``inference`` for a large file; ``--scale auto`` measures a central window read from disk."""
    from napari_unet.core.large_image import open_large_image
    from napari_unet.core.sizing import WINDOW_PIXELS, central_slices

    if not _wants_auto_scale(args):
        return inference
    with open_large_image(source, args.axes) as large:
        window = large[central_slices(large.shape[:2], 2 * WINDOW_PIXELS)]
    return _fit_scale(args, bundle, window, "YXC" if window.ndim == 3 else "YX", inference)


def _predict_distributed(args: argparse.Namespace, inputs: list[Path], outdir: Path) -> int:
    from napari_unet.core.distributed import predict_folder

    if args.method != "unet":
        raise UserInputError("--dask-scheduler runs the UNet; drop it to run classical methods")
    _refuse_auto_scale(args, "with --dask-scheduler (each image would be measured on the cluster)")
    gen = predict_folder(
        inputs,
        outdir,
        args.model,
        scheduler=args.dask_scheduler,
        inference=_inference_config(args),
        axes=args.axes,
        overwrite=args.overwrite,
    )
    summary = _progress_bar(gen, "predict (dask)", args.quiet)
    print(json.dumps(summary.to_dict(), indent=2, default=str))
    for failure in summary.failed:
        print(f"error: {failure}", file=sys.stderr)
    return 0 if summary.ok else 1


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k not in ("func",) and not callable(v)}


def _ensure_output_dir(outdir: Path) -> None:
    if outdir.exists() and not outdir.is_dir():
        raise UserInputError(f"output {outdir} is a file, not a folder; choose a folder with -o")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"cannot create output folder {outdir}: {exc.strerror}; choose another -o") from exc


# ----------------------------------------------------------------------------- evaluate


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score every method against ground truth and print the table side by side."""
    from napari_unet.core.evaluation import evaluate_methods, format_table

    pairs = _image_label_pairs(args.images, args.labels or args.images)
    methods = _parse_methods(args.methods)
    segmenters = {m: _segmenter(m, args) for m in methods}
    gen = evaluate_methods(pairs, segmenters, axes=args.axes)
    report = _progress_bar(gen, "evaluate", args.quiet)
    print(format_table(report))
    if args.json:
        from napari_unet.core.io import atomic_write_path

        with atomic_write_path(Path(args.json), overwrite=args.overwrite) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=2, default=float))
        print(f"wrote {args.json}")
    return 0


# ----------------------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    """Train or fine-tune a model and save it as a new model version or folder."""
    from napari_unet.core.io import read_image, read_labels
    from napari_unet.core.training import iter_train
    from napari_unet.core.training_data import add_synthetic_images, record_training_diameters, rescale_training_data

    pairs = _image_label_pairs(args.images, args.labels)
    images = [read_image(image) for image, _ in pairs]
    labels = [read_labels(label) for _, label in pairs]
    if args.start != "scratch" and _is_3d(args.start):
        return _train_3d(args, images, labels)
    if args.planes:
        raise UserInputError("--planes marks annotated Z planes of stacks; it needs a 3D model (--from nuclei-3d)")
    rois = [_read_rois(Path(p)) for p in args.rois] if args.rois else None
    if rois is not None and len(rois) != len(images):
        raise UserInputError(f"got {len(rois)} ROI file(s) for {len(images)} image(s); give one per image")
    if args.scale != 1:
        images, labels, rois = rescale_training_data(images, labels, rois, args.scale)
    if args.synthetic:  # made at the model's sizes, so after any resize
        add_synthetic_images(images, labels, rois, args.synthetic, args.seed or 0)
    val_images, val_labels = _validation_data(args)
    config = _training_config(args)
    bundle = _starting_bundle(args)
    _check_train_output(args)
    gen = iter_train(bundle, images, labels, config, rois=rois, val_images=val_images, val_labels=val_labels)
    result = _progress_bar(gen, "train", args.quiet)
    record_training_diameters(result.bundle, images, labels)
    saved = _save_trained(result.bundle, args)
    summary = {
        "saved": str(saved),
        "stopped": result.stopped_reason,
        "best_score": result.best_score,
        "steps": result.bundle.metadata.get("lineage", {}).get("steps"),
        "seconds": result.bundle.metadata.get("lineage", {}).get("seconds"),
    }
    print(json.dumps(summary, indent=2, default=str))
    print(f"use it with: napari-unet predict ... --model {saved}")
    return 0


def _is_3d(reference: str) -> bool:
    from napari_unet.core.store import is_3d_model

    return is_3d_model(reference)


def _validation_data(args: argparse.Namespace) -> tuple[list[Any] | None, list[Any] | None]:
    """``--val-images`` / ``--val-labels`` read as images and labels, or ``(None, None)`` when not given."""
    if not (args.val_images or args.val_labels):
        return None, None
    from napari_unet.core.io import read_image, read_labels

    pairs = _image_label_pairs(args.val_images or [], args.val_labels or [])
    return [read_image(image) for image, _ in pairs], [read_labels(label) for _, label in pairs]


def _train_3d(args: argparse.Namespace, images: list[Any], labels: list[Any]) -> int:
    """Run ``train --from <3D model>``: Z-stacks, :func:`~napari_unet.core.volume_training.iter_train_volume`."""
    from dataclasses import replace

    from napari_unet.core.synthetic import random_zstack
    from napari_unet.core.volume_training import VOLUME_BATCH_SIZE, iter_train_volume

    if args.rois or args.scale != 1 or args.annotation_mode not in (None, "full"):
        raise UserInputError("3D training takes whole stacks (use --planes for sparse annotation), no ROIs or --scale")
    planes = [int(v) for v in args.planes.split(",")] if args.planes else None
    annotated = [planes] * len(images)
    z_spacings = [args.z_spacing] * len(images)
    for seed in range(args.synthetic):
        image, label, settings = random_zstack((args.seed or 0) * 1000 + seed)
        images.append(image)
        labels.append(label)
        annotated.append(None)
        z_spacings.append(settings["z_spacing"])
    val_images, val_labels = _validation_data(args)
    _check_train_output(args)
    bundle = _starting_bundle(args)
    config = _training_config(args)
    if args.batch_size is None:  # 3D patches: a few at a time
        config = replace(config, batch_size=VOLUME_BATCH_SIZE)
    gen = iter_train_volume(
        bundle,
        images,
        labels,
        config,
        annotated=annotated,
        val_volumes=val_images,
        val_labels=val_labels,
        z_spacings=z_spacings,
    )
    result = _progress_bar(gen, "train", args.quiet)
    saved = _save_trained(result.bundle, args)
    summary = {"saved": str(saved), "stopped": result.stopped_reason, "best_score": result.best_score}
    print(json.dumps({**summary, "steps": result.steps, "seconds": round(result.seconds, 1)}, indent=2, default=str))
    print(f"use it with: napari-unet predict ... --axes ZYX --model {saved}")
    return 0


def _image_label_pairs(image_args: Sequence[str], label_args: Sequence[str]) -> list[tuple[Path, Path]]:
    """Pair images with labels by order; a folder given to both is split by ``*_labels`` names."""
    images = [p for p in expand_inputs(image_args) if not _is_labels_file(p)]
    labels = expand_inputs(label_args)
    if any(_is_labels_file(p) for p in labels):
        labels = [p for p in labels if _is_labels_file(p)]
    return _pair(images, labels)


def _read_rois(path: Path) -> list[Any]:
    """Read a JSON list of ROIs: ``[y0, x0, y1, x1]`` rectangles or ``[[y, x], ...]`` polygons."""
    import numpy as np

    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserInputError(f"cannot read ROI file {path}: {exc}") from exc
    if not isinstance(data, list) or not data:
        raise UserInputError(f"ROI file {path} must hold a non-empty JSON list of rectangles or polygons")
    return [tuple(roi) if np.ndim(roi) == 1 else np.asarray(roi, dtype=float) for roi in data]


def _training_config(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from napari_unet.core.config import TrainingConfig

    config = TrainingConfig.from_json(Path(args.config).read_text()) if args.config else TrainingConfig()
    overrides = {
        "learning_rate": args.lr,
        "patch_size": args.patch_size,
        "batch_size": args.batch_size,
        "annotation_mode": args.annotation_mode,
        "seed": args.seed,
        "device": args.device,
        "num_threads": args.threads,
    }
    if args.no_augment:
        overrides["augment"] = False
    if args.annotation_mode is None and args.rois:
        overrides["annotation_mode"] = "rois"
    if args.seconds is not None or args.steps is not None or args.epochs is not None:
        overrides.update(max_seconds=args.seconds, max_steps=args.steps, max_epochs=args.epochs)
    return replace(config, **{k: v for k, v in overrides.items() if v is not None or k.startswith("max_")})


def _starting_bundle(args: argparse.Namespace) -> Any:
    from napari_unet.core.config import ModelConfig
    from napari_unet.core.store import ModelBundle, load_model

    if args.start == "scratch":
        arch = {"depth": args.depth, "base_channels": args.base_channels}
        return ModelBundle.new(ModelConfig(**{k: v for k, v in arch.items() if v is not None}))
    if args.depth is not None or args.base_channels is not None:
        raise UserInputError("--depth/--base-channels only apply with --from scratch")
    return load_model(args.start)


def _is_folder_output(output: str) -> bool:
    return "/" in output or "\\" in output or output.startswith(".")


def _check_train_output(args: argparse.Namespace) -> None:
    """Fail before training, not after, when the output folder cannot be written."""
    if _is_folder_output(args.output):
        _check_model_output(Path(args.output), args.overwrite)
        if not Path(args.output).parent.is_dir():
            raise UserInputError(
                f"folder {Path(args.output).parent} does not exist; create it or choose another --output"
            )


def _check_model_output(target: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output folder that exists without --overwrite or that is not a model folder."""
    from napari_unet.core.io import not_ours_message
    from napari_unet.core.store import is_model_folder

    if not target.exists():
        return
    if not overwrite:
        raise UserInputError(f"output {target} exists; pass --overwrite or choose another --output")
    if not target.is_dir() or not is_model_folder(target):
        raise UserInputError(not_ours_message(target))


def _save_trained(bundle: Any, args: argparse.Namespace) -> str:
    from napari_unet.core.store import save_model, save_version

    if _is_folder_output(args.output):
        return str(save_model(bundle, Path(args.output), overwrite=args.overwrite))
    info = save_version(bundle, args.output, lineage=bundle.metadata.get("lineage", {}))
    return f"{info.name}@v{info.version}"


# ----------------------------------------------------------------------------- tune


def cmd_tune(args: argparse.Namespace) -> int:
    """Pick post-processing thresholds on annotated images and save the model with them."""
    from dataclasses import replace

    from napari_unet.core.inference import FLIPS_METADATA_KEY, settings_for_model
    from napari_unet.core.io import read_image, read_labels
    from napari_unet.core.store import load_model, save_model
    from napari_unet.core.tuning import iter_tune_postprocess

    _refuse_auto_scale(args, "in tune (all images share one scale)")
    pairs = _image_label_pairs(args.images, args.labels or args.images)
    bundle = load_model(args.model)
    target = Path(args.output)
    _check_model_output(target, args.overwrite)
    images = [read_image(image) for image, _ in pairs]
    labels = [read_labels(label) for _, label in pairs]
    inference = settings_for_model(_inference_config(args, bundle), bundle)
    gen = iter_tune_postprocess(bundle, images, labels, inference=inference)
    result = _progress_bar(gen, "tune", args.quiet)
    tuned = replace(
        bundle,
        postprocess=result.best,
        metadata={
            **bundle.metadata,
            FLIPS_METADATA_KEY: bool(inference.tta),
            "postprocess_tuning": {
                "images": [str(image) for image, _ in pairs],
                "before": result.baseline_scores,
                "after": result.best_scores,
            },
        },
    )
    saved = save_model(tuned, target, overwrite=args.overwrite)
    print(
        json.dumps(
            {
                "postprocess": result.best.to_dict(),
                "before": result.baseline_scores,
                "after": result.best_scores,
                "saved": str(saved),
            },
            indent=2,
        )
    )
    return 0


# ----------------------------------------------------------------------------- export


def cmd_export(args: argparse.Namespace) -> int:
    """Convert label images to other formats (TIFF, PNG, NPY, OME-Zarr, ROI zip, CSV)."""
    from napari_unet.core.io import export_labels, provenance, read_image, read_labels

    label_paths = expand_inputs(args.labels)
    image_paths = expand_inputs(args.image) if args.image else [None] * len(label_paths)
    if len(image_paths) != len(label_paths):
        raise UserInputError(f"got {len(label_paths)} label file(s) but {len(image_paths)} image(s) for --image")
    outdir = Path(args.output)
    _ensure_output_dir(outdir)
    formats = [f.strip().lstrip(".") for f in args.format.split(",") if f.strip()]
    for label_path, image_path in zip(label_paths, image_paths, strict=True):
        labels = read_labels(label_path)
        image = read_image(image_path) if image_path is not None else None
        stem = label_path.name[: -len(label_path.suffix)] if label_path.suffix else label_path.name
        inputs = [label_path] + ([image_path] if image_path is not None else [])
        info = provenance(model=None, settings=_settings(args), inputs=inputs, method="export")
        for fmt in formats:
            suffix = {"roi": ".zip", "zarr": ".zarr", "tiff": ".tif"}.get(fmt, "." + fmt)
            written = export_labels(
                labels, outdir / f"{stem}{suffix}", overwrite=args.overwrite, image=image, provenance=info
            )
            for path in written:
                print(f"wrote {path}")
    return 0


# ----------------------------------------------------------------------------- models / demo


def cmd_models(args: argparse.Namespace) -> int:
    """List the bundled and user models with their versions."""
    from napari_unet.core.store import list_models, user_model_dir

    infos = list_models()
    if args.json:
        print(json.dumps([_model_row(i) for i in infos], indent=2, default=str))
        return 0
    print(f"user model folder: {user_model_dir()}")
    for info in infos:
        row = _model_row(info)
        metrics = ", ".join(f"{k}={v:.3f}" for k, v in (row.get("metrics") or {}).items() if isinstance(v, float))
        version = f"@v{row['version']}" if row.get("version") is not None else ""
        print(f"  {row['name']}{version}  {row.get('created') or ''}  {metrics}")
    return 0


def cmd_export_model(args: argparse.Namespace) -> int:
    """Write a model as a bioimage.io package; with --test, run bioimageio.core's test on it."""
    from napari_unet.core.bioimageio import export_bioimageio, run_package_test
    from napari_unet.core.store import load_model

    bundle = load_model(args.model)
    path = export_bioimageio(
        bundle,
        Path(args.output),
        authors=args.author,
        license_id=args.license,
        cite=args.cite,
        name=args.name,
        overwrite=args.overwrite,
    )
    print(f"wrote {path}")
    if args.test:
        summary = run_package_test(path)
        print(f"bioimageio test: {summary.get('status')}")
        return 0 if summary.get("status") == "passed" else 1
    return 0


def cmd_import_model(args: argparse.Namespace) -> int:
    """Add a package napari-unet exported (its weights, configs and lineage) as the next version of a user model."""
    from napari_unet.core.bioimageio import import_bioimageio
    from napari_unet.core.store import save_version

    bundle = import_bioimageio(Path(args.package))
    lineage = {**bundle.metadata.get("lineage", {}), "imported_from": str(Path(args.package).resolve())}
    info = save_version(bundle, args.name, lineage=lineage)
    print(f"imported {args.package} as {info.spec}")
    return 0


def _model_row(info: Any) -> dict[str, Any]:
    keys = ("name", "version", "path", "created", "metrics", "parent")
    return {k: getattr(info, k, None) for k in keys}


def cmd_demo(args: argparse.Namespace) -> int:
    """Open napari with a sample and the widgets, or run the loop headless."""
    from napari_unet.demo import run_demo

    return run_demo(headless_dir=args.headless, model=args.model, overwrite=args.overwrite)


# ----------------------------------------------------------------------------- parser


def _add_inference_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="model name, name@vN, or folder (default: bundled)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default=None, help="compute device")
    parser.add_argument("--tile", type=int, default=None, help="tile edge in pixels (default 512)")
    parser.add_argument("--overlap", type=float, default=None, help="tile overlap fraction (default 0.25)")
    parser.add_argument("--batch-size", type=int, default=None, help="tiles per forward pass")
    parser.add_argument("--axes", default=None, help="axes of the inputs, e.g. YX, YXC, CYX, ZYX, TYX")
    parser.add_argument(
        "--z-spacing",
        type=float,
        default=None,
        help="Z step of Z-stacks in pixel sizes (e.g. 2.5 for 0.2 um pixels and 0.5 um steps); a 3D model "
        "resamples Z to the step it was trained at (default: the model's own)",
    )
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="test-time augmentation: average 4 flips (4x slower); default: as the model's thresholds were tuned "
        "(on for the bundled default model; --no-tta is 4x faster, slightly less accurate)",
    )
    parser.add_argument(
        "--multiscale",
        action="store_true",
        help="test-time augmentation over sizes (average 0.71x, 1x, 1.41x; about 3.5x slower)",
    )
    parser.add_argument(
        "--scale",
        type=_scale_arg,
        default=None,
        help="resize images by this factor before the network (>1 for nuclei smaller than the model's, <1 for "
        "larger), or 'auto' to measure the nuclei of each image first",
    )
    parser.add_argument(
        "--diameter",
        type=float,
        default=None,
        metavar="PX",
        help="typical nucleus diameter in pixels; sets the scale that fits it to the model's training sizes",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``napari-unet`` command."""
    parser = argparse.ArgumentParser(prog="napari-unet", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"napari-unet {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("predict", help="segment images; writes OUTDIR/<stem>_labels.tif")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    p.add_argument("--method", choices=METHOD_CHOICES, default="unet")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--dask-scheduler", default=None, help="local[:N] or tcp://HOST:PORT to run on a dask cluster")
    p.add_argument(
        "--large",
        action="store_true",
        help="stream inputs chunk by chunk into OME-Zarr (automatic for .zarr inputs and images over 8192x8192)",
    )
    p.add_argument("--chunk", type=int, default=2048, help="chunk edge for --large (pixels)")
    _add_inference_args(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="score methods against ground-truth labels")
    p.add_argument("--images", nargs="+", required=True, help="image files or a folder (with *_labels.* files)")
    p.add_argument("--labels", nargs="+", default=None, help="label files/folder, paired with --images by order")
    p.add_argument("--methods", default="unet,otsu,watershed", help=f"comma list of {', '.join(METHOD_CHOICES)}")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the full report as JSON")
    p.add_argument("--overwrite", action="store_true")
    _add_inference_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("train", help="train or fine-tune a model on images + labels")
    p.add_argument("--images", nargs="+", required=True)
    p.add_argument("--labels", nargs="+", required=True, help="paired with --images by order")
    p.add_argument("--rois", nargs="+", default=None, help="JSON files of ROI rectangles/polygons, one per image")
    p.add_argument("--from", dest="start", default="default", help="model to start from, or 'scratch'")
    p.add_argument("--output", required=True, help="user model name (saved as a new version) or a folder path")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=float, default=None)
    budget.add_argument("--steps", type=int, default=None)
    budget.add_argument("--epochs", type=int, default=None)
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument("--val-images", nargs="+", default=None)
    p.add_argument("--val-labels", nargs="+", default=None)
    p.add_argument("--config", default=None, help="TrainingConfig JSON file (flags override it)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--patch-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--annotation-mode", choices=("full", "rois", "changed"), default=None)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--depth", type=int, default=None, help="architecture when training from scratch")
    p.add_argument("--base-channels", type=int, default=None, help="architecture when training from scratch")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="add N synthetic images to the training data")
    p.add_argument(
        "--z-spacing",
        type=float,
        default=None,
        help="3D models: Z step of the training stacks in pixel sizes (resampled to the model's step)",
    )
    p.add_argument(
        "--planes",
        default=None,
        help="3D models: comma list of the Z planes you labelled in each stack (others do not count), e.g. 4,12,20",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="resize the training images (and labels, ROIs) by this factor: the --scale you predict with",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("tune", help="choose post-processing thresholds on annotated images")
    p.add_argument("--images", nargs="+", required=True, help="image files or a folder (with *_labels.* files)")
    p.add_argument("--labels", nargs="+", default=None, help="label files/folder, paired with --images by order")
    p.add_argument("--output", required=True, help="folder for the model with tuned thresholds")
    p.add_argument("--overwrite", action="store_true")
    _add_inference_args(p)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("export", help="convert label images to TIFF/PNG/NPY/OME-Zarr/ROI zip/CSV")
    p.add_argument("labels", nargs="+", metavar="LABELS", help="label files or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    p.add_argument("--format", default="tif,csv", help="comma list of tif,png,npy,zarr,roi,csv")
    p.add_argument("--image", nargs="+", default=None, help="intensity images for CSV measurements (by order)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("models", help="list bundled and user models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("export-model", help="write a model as a bioimage.io package (.zip) other tools run")
    p.add_argument("model", help="model name, name@vN, or folder (default: the bundled model)")
    p.add_argument("-o", "--output", required=True, help="the package, e.g. my-nuclei.zip")
    p.add_argument("--format", default="bioimageio", choices=("bioimageio",))
    p.add_argument("--author", action="append", default=[], help='"Name" or "Name <affiliation>"; repeatable')
    p.add_argument("--license", default="CC-BY-4.0", help="SPDX licence id of the weights (default CC-BY-4.0)")
    p.add_argument("--cite", action="append", default=[], help='"text" or "text|doi"; repeatable')
    p.add_argument("--name", default=None, help="the package's name (default from the model)")
    p.add_argument("--test", action="store_true", help="then run bioimageio.core's own test of the package")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export_model)

    p = sub.add_parser("import-model", help="add a bioimage.io package napari-unet exported as a user model")
    p.add_argument("package", help="the .zip")
    p.add_argument("--name", required=True, help="user model name to save it under (its next version)")
    p.set_defaults(func=cmd_import_model)

    p = sub.add_parser("demo", help="open napari with a sample and the widgets")
    p.add_argument("--headless", default=None, metavar="OUTDIR", help="run segment -> compare -> export without a GUI")
    p.add_argument("--model", default="default")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from napari_unet.core.config import ConfigError

    try:
        return int(args.func(args) or 0)
    except (UserInputError, ConfigError) as exc:  # ConfigError: an out-of-range flag such as --tile 5
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Cancelled:
        print("cancelled; nothing was written for the unfinished item", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``napari-unet train``: train or fine-tune a model on images and labels.

The result is saved as the next version of a user model, or into a folder when
``--output`` looks like a path.  Starting from a 3D model trains on Z-stacks,
where ``--annotated-planes`` marks the Z planes that were labelled.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from napari_unet.cli.common import check_model_output, image_label_pairs, is_3d, progress_bar
from napari_unet.core.errors import UserInputError


def cmd_train(args: argparse.Namespace) -> int:
    """Train or fine-tune a model and save it as a new model version or folder.

    Parameters
    ----------
    args
        Parsed flags of ``train``.

    Returns
    -------
    int
        The exit code.

    """
    from napari_unet.core.io import read_image, read_labels
    from napari_unet.core.train.fine_tune import fine_tune_recipe, iter_fine_tune
    from napari_unet.core.train.outcome import notice_of
    from napari_unet.core.train.preparation import (
        add_synthetic_images,
        record_training_diameters,
        rescale_training_data,
    )

    pairs = image_label_pairs(args.images, args.labels)
    images = [read_image(image) for image, _ in pairs]
    labels = [read_labels(label) for _, label in pairs]
    if args.start != "scratch" and is_3d(args.start):
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
    config = fine_tune_recipe(bundle, config, keep_learning_rate=args.lr is not None)  # what bench_hitl measured
    _check_train_output(args)
    gen = iter_fine_tune(bundle, images, labels, config, rois=rois, val_images=val_images, val_labels=val_labels)
    result = progress_bar(gen, "train", args.quiet)
    record_training_diameters(result.bundle, images, labels)
    saved = _save_if_new(result, bundle, args)
    refused = _save_refused(result, args)
    summary = {
        "saved": saved,
        "saved_refused": refused,
        "stopped": result.stopped_reason,
        "best_score": result.best_score,
        "steps": result.bundle.metadata.get("lineage", {}).get("steps"),
        "seconds": result.bundle.metadata.get("lineage", {}).get("seconds"),
        "kept_starting_model": result.kept_parent,
        "held_out_before": (result.metrics_before or {}).get("val_ap50"),
        "held_out_after": (result.metrics_after or {}).get("val_ap50"),
        "other_kinds": result.replay_check,
    }
    print(json.dumps(summary, indent=2, default=str))
    print(f"fine-tuning: {notice_of(result)}")
    _say_what_to_use(saved, args)
    if refused:
        print(f"the refused fine-tuned weights were saved as {refused}: compare them on your other images")
    elif result.refused is not None:
        print("the refused fine-tuned weights were not saved (to judge them yourself: --save-refused NAME)")
    return 0


def _save_if_new(result: Any, bundle: Any, args: argparse.Namespace) -> str | None:
    """Save the trained model unless it is its trained starting model kept as it was (then None: nothing new)."""
    from napari_unet.core.train.outcome import is_trained

    if result.kept_parent and is_trained(bundle):
        return None
    return _save_trained(result.bundle, args.output, args.overwrite)


def _save_refused(result: Any, args: argparse.Namespace) -> str | None:
    """Save the weights validation refused to ``--save-refused`` when asked and there are some; return where."""
    if not args.save_refused or result.refused is None:
        return None
    return _save_trained(result.refused, args.save_refused, args.overwrite)


def _say_what_to_use(saved: str | None, args: argparse.Namespace, axes: str = "") -> None:
    """Print the model to predict with: the new one, or the starting one when nothing was saved."""
    if saved is None:
        print(f"no new model saved: keep using --model {args.start}")
    else:
        print(f"use it with: napari-unet predict ...{axes} --model {saved}")


def _validation_data(args: argparse.Namespace) -> tuple[list[Any] | None, list[Any] | None]:
    """``--val-images`` / ``--val-labels`` read as images and labels, or ``(None, None)`` when not given."""
    if not (args.val_images or args.val_labels):
        return None, None
    from napari_unet.core.io import read_image, read_labels

    pairs = image_label_pairs(args.val_images or [], args.val_labels or [])
    return [read_image(image) for image, _ in pairs], [read_labels(label) for _, label in pairs]


def _train_3d(args: argparse.Namespace, images: list[Any], labels: list[Any]) -> int:
    """Run ``train --from <3D model>``: Z-stacks, :func:`~napari_unet.core.train.volumetric.iter_train_volume`."""
    from dataclasses import replace

    from napari_unet.core.data.synthetic import random_zstack
    from napari_unet.core.train.fine_tune import iter_fine_tune
    from napari_unet.core.train.volumetric import VOLUME_BATCH_SIZE

    if args.rois or args.scale != 1 or args.annotation_mode not in (None, "full"):
        raise UserInputError("3D training takes whole stacks (use --planes for sparse annotation), no ROIs or --scale")
    if args.save_refused:
        raise UserInputError("--save-refused is for 2D fine-tuning: a 3D fine-tune refuses no weights to save")
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
    gen = iter_fine_tune(
        bundle,
        images,
        labels,
        config,
        rois=annotated,
        val_images=val_images,
        val_labels=val_labels,
        z_spacings=z_spacings,
    )
    result = progress_bar(gen, "train", args.quiet)
    saved = _save_if_new(result, bundle, args)
    summary = {"saved": saved, "stopped": result.stopped_reason, "best_score": result.best_score}
    print(json.dumps({**summary, "steps": result.steps, "seconds": round(result.seconds, 1)}, indent=2, default=str))
    _say_what_to_use(saved, args, " --axes ZYX")
    return 0


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
    """Return the ``--config`` file's TrainingConfig (or the defaults) with the flags given on top."""
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
    """Return the model to start from: ``--start-model`` loaded, or a new one for ``scratch``."""
    from napari_unet.core.config import ModelConfig
    from napari_unet.core.models.bundle import ModelBundle
    from napari_unet.core.models.registry import load_model

    if args.start == "scratch":
        arch = {"depth": args.depth, "base_channels": args.base_channels}
        return ModelBundle.new(ModelConfig(**{k: v for k, v in arch.items() if v is not None}))
    if args.depth is not None or args.base_channels is not None:
        raise UserInputError("--depth/--base-channels only apply with --from scratch")
    return load_model(args.start)


def _is_folder_output(output: str) -> bool:
    """Return True when ``--output`` is a folder path rather than a user model name."""
    return "/" in output or "\\" in output or output.startswith(".")


def _check_train_output(args: argparse.Namespace) -> None:
    """Fail before training, not after, when an output folder cannot be written or the two outputs are one."""
    refused = args.save_refused
    if refused and refused == args.output:
        raise UserInputError("--save-refused must name another model or folder than --output")
    for flag, output in (("--output", args.output), ("--save-refused", refused)):
        if output and _is_folder_output(output):
            check_model_output(Path(output), args.overwrite)
            if not Path(output).parent.is_dir():
                raise UserInputError(f"folder {Path(output).parent} does not exist; create it or choose another {flag}")


def _save_trained(bundle: Any, output: str, overwrite: bool) -> str:
    """Save a trained model to the folder ``output`` or as the next version of user model ``output``; return where."""
    from napari_unet.core.models.bundle import save_model
    from napari_unet.core.models.registry import save_version

    if _is_folder_output(output):
        return str(save_model(bundle, Path(output), overwrite=overwrite))
    info = save_version(bundle, output, lineage=bundle.metadata.get("lineage", {}))
    return f"{info.name}@v{info.version}"

"""Inference flags shared by ``predict``, ``evaluate`` and ``tune``.

Turns ``--tile-size``, ``--overlap``, ``--scale``, ``--diameter``, ``--tta``
and the like into an :class:`~napari_unet.core.config.InferenceConfig`, and
builds the segmentation function of each method name.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from napari_unet.cli.common import progress_bar
from napari_unet.core.errors import UserInputError

AUTO_SCALE = "auto"
"""``--scale auto``: measure each image's nuclei and choose its factor (:mod:`napari_unet.core.predict.object_size`)."""


def scale_arg(text: str) -> float | str:
    """Parse a ``--scale`` value: a number, or ``auto``.

    Raises
    ------
    argparse.ArgumentTypeError
        If ``text`` is neither.

    """
    if text.strip().lower() == AUTO_SCALE:
        return AUTO_SCALE
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def inference_config(args: argparse.Namespace, bundle: Any = None) -> Any:
    """Inference settings from the flags.

    ``--scale auto`` leaves the scale at 1: the caller measures each image (:func:`fit_scale`).

    Parameters
    ----------
    args
        Parsed flags of a command that took the inference arguments.
    bundle
        The model, needed by ``--diameter``; loaded from ``--model`` when None.

    Returns
    -------
    InferenceConfig
        The flags given, the defaults for the rest.

    """
    from napari_unet.core.config import InferenceConfig

    fields = {
        "device": args.device,
        "tile_size": args.tile,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "workers": getattr(args, "workers", None),
        "scale": args.scale if isinstance(args.scale, float) else None,
    }
    if getattr(args, "diameter", None) is not None:
        fields["scale"] = scale_for_diameter(args, bundle)
    fields["tta"] = getattr(args, "tta", None)
    if getattr(args, "multiscale", False):
        fields["multiscale"] = True
    return InferenceConfig(**{k: v for k, v in fields.items() if v is not None})


def scale_for_diameter(args: argparse.Namespace, bundle: Any) -> float:
    """Scale that fits ``--diameter`` to the model's training diameters (printed for the record).

    Raises
    ------
    UserInputError
        If ``--scale`` was given too.

    """
    from napari_unet.core.predict.object_size import DiameterRange

    if args.scale is not None:
        raise UserInputError("give --scale or --diameter, not both (--diameter chooses the scale)")
    if bundle is None:
        from napari_unet.core.models.registry import load_model

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


def wants_auto_scale(args: argparse.Namespace) -> bool:
    """Return True when the command was given ``--scale auto``."""
    return getattr(args, "scale", None) == AUTO_SCALE


def refuse_auto_scale(args: argparse.Namespace, why: str) -> None:
    """Refuse ``--scale auto`` where it cannot work; ``why`` completes the message.

    Raises
    ------
    UserInputError
        If ``--scale auto`` was given.

    """
    if wants_auto_scale(args):
        raise UserInputError(
            f"--scale auto is not available {why}; run 'napari-unet predict' with --scale auto on one typical "
            "image, then pass the factor it prints with --scale"
        )


def fit_scale(args: argparse.Namespace, bundle: Any, image: Any, axes: str | None, inference: Any) -> Any:
    """Return ``inference`` with the scale measured on ``image`` when ``--scale auto`` (else unchanged).

    Raises
    ------
    UserInputError
        With ``--scale auto`` and a 3D model.

    """
    from dataclasses import replace

    from napari_unet.core.predict.object_size import estimate_scale

    if not wants_auto_scale(args):
        return inference
    if bundle.config.spatial_dims == 3:
        raise UserInputError("--scale auto measures nuclei in 2D; with a 3D model pass --scale (and --z-spacing)")
    estimate = estimate_scale(image, bundle, axes, inference)
    if not args.quiet:
        print(f"  {estimate.describe()}", file=sys.stderr)
    return replace(inference, scale=estimate.scale)


def segmenter(method: str, args: argparse.Namespace) -> Callable[[Any, str | None], Any]:
    """Return ``f(image, axes) -> labels`` for a method name.

    For ``unet`` the function also carries ``bundle`` and ``inference``, and
    ``scale_used`` once it ran, for provenance.

    Parameters
    ----------
    method
        One of :data:`~napari_unet.cli.common.METHOD_CHOICES`.
    args
        Parsed flags (``--model`` and the inference arguments).

    Returns
    -------
    callable
        The segmentation function.

    """
    if method == "unet":
        from napari_unet.core.models.registry import load_model
        from napari_unet.core.predict.runtime import settings_for_model
        from napari_unet.core.predict.segment import iter_predict

        bundle = load_model(args.model)
        inference = settings_for_model(inference_config(args, bundle), bundle)

        def run_unet(image: Any, axes: str | None) -> Any:
            fitted = fit_scale(args, bundle, image, axes, inference)
            run_unet.scale_used = fitted.scale  # type: ignore[attr-defined]
            gen = iter_predict(image, bundle, axes=axes, inference=fitted, z_spacing=getattr(args, "z_spacing", None))
            return progress_bar(gen, "unet", args.quiet).labels

        run_unet.bundle = bundle  # type: ignore[attr-defined]
        run_unet.inference = inference  # type: ignore[attr-defined]
        return run_unet

    from napari_unet.core.evaluate.baselines import segment_baseline

    def run_baseline(image: Any, axes: str | None) -> Any:
        return segment_baseline(image, method, axes=axes)

    return run_baseline

"""The Segment widget's engine calls: job builders run in a worker thread, their results and what they say.

Each builder returns ``job(cancel)``, a generator for :meth:`JobPanel.start
<napari_unet._widgets._jobs.JobPanel.start>` whose first step is
:func:`~napari_unet._widgets._jobs.load_model_step`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_unet._widgets._common import load_model_step, logger
from napari_unet._widgets._large_outputs import open_lazy_labels
from napari_unet.core.config import InferenceConfig, PostprocessConfig
from napari_unet.core.progress import Progress

if TYPE_CHECKING:
    from napari_unet.core.predict.object_size import SizeEstimate

LARGE_CHUNK = 2048
"""Chunk edge (pixels) for large images; memory grows with ``(LARGE_CHUNK + 2 * LARGE_HALO) ** 2``."""
LARGE_HALO = 64
"""Context around each chunk (pixels); at least the largest nucleus diameter."""


@dataclass
class SegmentResult:
    """What a segmentation run hands back to the GUI thread."""

    prediction: Any  # napari_unet.core.predict.runtime.Prediction
    model: str
    model_sha256: str
    settings: dict[str, Any]


@dataclass
class LargeSegmentResult:
    """What a chunked (large-image) segmentation hands back to the GUI thread."""

    store: Path
    labels: Any  # zarr array (Y, X) uint32, opened lazily from ``store``
    model: str
    model_sha256: str
    settings: dict[str, Any]


def segment_job(
    image: np.ndarray,
    axes: str,
    model: str,
    inference: InferenceConfig,
    postprocess: PostprocessConfig,
    z_spacing: float | None = None,
) -> Callable[[Callable[[], bool]], Generator[Progress, None, SegmentResult]]:
    """Build the generator the worker runs: load the model, then predict."""

    def job(cancel: Callable[[], bool]) -> Generator[Progress, None, SegmentResult]:
        from napari_unet.core.predict.segment import iter_predict

        bundle = yield from load_model_step(model)
        prediction = yield from iter_predict(image, bundle, axes, inference, postprocess, cancel, z_spacing)
        settings = {"axes": axes, "inference": inference.to_dict(), "postprocess": postprocess.to_dict()}
        if prediction.volumetric:
            settings["z_spacing"] = z_spacing
        return SegmentResult(prediction, pinned_reference(bundle, model), bundle.sha256, settings)

    return job


def estimate_job(
    source: Any, axes: str, model: str, inference: InferenceConfig, postprocess: PostprocessConfig
) -> Callable[[Callable[[], bool]], Generator[Progress, None, SizeEstimate]]:
    """Build the generator the worker runs: load the model, then measure the nuclei of ``source``."""

    def job(cancel: Callable[[], bool]) -> Generator[Progress, None, SizeEstimate]:
        from napari_unet.core.predict.object_size import estimate_scale

        bundle = yield from load_model_step(model)
        yield Progress("estimate", 0, 0, "Measuring the nuclei (passes on the image's centre)")
        return estimate_scale(source, bundle, axes, inference, postprocess, cancel)

    return job


def segment_large_job(
    source: Any, axes: str, model: str, inference: InferenceConfig, postprocess: PostprocessConfig, store: Path
) -> Callable[[Callable[[], bool]], Generator[Progress, None, LargeSegmentResult]]:
    """Build the generator the worker runs for a large image: load the model, then predict chunk by chunk.

    ``source`` (``YX``, ``YXC`` or ``CYX``; NumPy, dask or zarr) is only ever read one window at a time.
    """
    chunk, halo = LARGE_CHUNK, LARGE_HALO

    def job(cancel: Callable[[], bool]) -> Generator[Progress, None, LargeSegmentResult]:
        from napari_unet.core.predict.large_image import predict_large

        bundle = yield from load_model_step(model)
        path = yield from predict_large(
            source,
            bundle,
            store,
            chunk=chunk,
            halo=halo,
            inference=inference,
            postprocess=postprocess,
            axes=axes,
            cancel=cancel,
        )
        settings = {
            "axes": axes,
            "inference": inference.to_dict(),
            "postprocess": postprocess.to_dict(),
            "chunk": chunk,
            "halo": halo,
        }
        return LargeSegmentResult(
            path, open_lazy_labels(path), pinned_reference(bundle, model), bundle.sha256, settings
        )

    return job


def pinned_reference(bundle: Any, model: str) -> str:
    """``name@vN`` for store models (pins the exact version), else the reference as given."""
    return bundle.spec if bundle.version is not None else model


# ---------------------------------------------------------------------- what a result says (GUI thread)


def labels_metadata(image_name: str, result: SegmentResult | LargeSegmentResult, axes: str, **extra: Any) -> dict:
    """Provenance stored in the labels layer's metadata (model, its hash, settings, axes)."""
    return {
        "image": image_name,
        "method": "unet",
        "model": result.model,
        "model_sha256": result.model_sha256,
        "settings": result.settings,
        "axes": axes,
        **extra,
    }


def how_it_ran(model: str, prediction: Any) -> str:
    """One sentence on how a stack was segmented (empty for a single image)."""
    if prediction.axes == "YX":
        return ""
    planes = prediction.labels.shape[0]
    if prediction.volumetric:
        return f"The 3D model '{model}' segmented the {planes}-plane Z-stack as one volume (3D objects)."
    if prediction.axes == "ZYX":
        return f"The 2D model '{model}' segmented the {planes}-plane Z-stack slice by slice, linking objects across Z."
    return f"The 2D model '{model}' segmented the {planes}-frame time-lapse frame by frame."


def accuracy_note(model_sha256: str) -> str:
    """Return a sentence (with a leading space) giving the measured accuracy of a model, or ``""``.

    Parameters
    ----------
    model_sha256 : str
        Hash of the model's weights: the saved model with these weights is
        looked up, however the model was loaded.

    Notes
    -----
    The bundled model's accuracy comes from its model card (per image family,
    on test images); a trained model's from its validation data while it was trained.

    """
    from napari_unet.core.models.registry import list_models

    try:
        infos = list_models()
    except Exception:  # a broken store must not stop the result from being shown
        logger.warning("could not list models", exc_info=True)
        return ""
    metrics = next((info.metrics for info in infos if info.sha256 == model_sha256 and info.metrics), {})
    grey, colour, tissue = (metrics.get(f"test_ap50_{family}") for family in ("grey", "colour", "tissue"))
    if grey is not None and colour is not None and tissue is not None:
        return (
            f" Its measured AP@0.5 on held-out test images with its default settings: {grey:.2f} grey "
            f"(fluorescence, brightfield), {colour:.2f} colour (H&E-like), {tissue:.2f} tissue sections; images "
            "unlike these may score lower (its model card has the details)."
        )
    if isinstance(metrics.get("val_ap50"), float):
        return f" It scored AP@0.5 {metrics['val_ap50']:.2f} on its validation data when it was trained."
    return ""

"""Segment an image with a model bundle: the engine's one prediction entry point.

``iter_predict`` picks the path from the model: a 2D model runs plane by plane
(:mod:`~napari_unet.core.predict.planar`), a 3D model segments a Z-stack as one
volume (:mod:`~napari_unet.core.predict.volumetric`).  The widgets wrap it in a
thread worker, the CLI in a progress bar; ``predict`` drains it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from napari_unet.core.config import InferenceConfig, PostprocessConfig
from napari_unet.core.data.normalize import check_image_size, infer_axes, normalize_plane, to_planes, validate_image
from napari_unet.core.labels.chunked import ChunkLabeller, worth_chunking
from napari_unet.core.labels.extraction import labels_from_probabilities
from napari_unet.core.predict.planar import iter_scaled_plane_probabilities, plan_scales, rows_arrive_in_order
from napari_unet.core.predict.runtime import (
    BundleLike,
    Prediction,
    inference_network,
    resolve_device,
    settings_for_model,
)
from napari_unet.core.predict.volumetric import iter_predict_volume
from napari_unet.core.progress import Progress, check_cancel, run_to_end


def iter_predict(
    image: Any,
    bundle: BundleLike,
    axes: str | None = None,
    inference: InferenceConfig | None = None,
    postprocess: PostprocessConfig | None = None,
    cancel: Callable[[], bool] | None = None,
    z_spacing: float | None = None,
) -> Generator[Progress, None, Prediction]:
    """Segment an image, yielding progress after every batch of tiles.

    A 2D model segments every plane of a stack; a 3D model
    (``bundle.config.spatial_dims == 3``) segments a Z-stack as one volume
    (:func:`napari_unet.core.predict.volumetric.iter_predict_volume`).

    Parameters
    ----------
    image : array-like
        ``YX``, ``YXC``, ``CYX``, ``ZYX``, ``TYX``, ``ZYXC`` or ``TYXC`` data of
        any integer or float dtype (see :mod:`napari_unet.core.data.normalize`).
    bundle : ModelBundle
        Network, model config and its normalisation / post-processing configs.
    axes : str, optional
        Axis order of ``image``; guessed by
        :func:`~napari_unet.core.data.normalize.infer_axes` when omitted.
    inference : InferenceConfig, optional
        Tiling, batching, device, precision and test-time augmentation
        (defaults when omitted; ``tta=None``: the model's own, :func:`settings_for_model`).
    postprocess : PostprocessConfig, optional
        Label extraction settings; ``None`` uses ``bundle.postprocess``.
    cancel : callable, optional
        Checked between batches; when it returns True the generator raises
        :class:`~napari_unet.core.errors.Cancelled`.
    z_spacing : float, optional
        Z step of a stack in pixel sizes; used by 3D models (which resample
        Z to the step they were trained at), ignored by 2D ones.

    Yields
    ------
    Progress
        ``stage="predict"``, ``done``/``total`` counting tiles over all
        planes (a first event with ``done=0``).

    Returns
    -------
    Prediction
        Labels, probabilities and axes (via ``StopIteration.value``; use
        :func:`predict` or :func:`~napari_unet.core.progress.run_to_end`).

    Raises
    ------
    UserInputError
        For images the engine cannot read (see
        :func:`~napari_unet.core.data.normalize.validate_image`) or an unavailable device.

    """
    inference = settings_for_model(inference, bundle)
    postprocess = postprocess or bundle.postprocess
    image = validate_image(image)
    image_axes = infer_axes(image.shape, axes)
    check_image_size(image.shape, image_axes)
    if bundle.config.spatial_dims == 3:
        return (yield from iter_predict_volume(image, image_axes, bundle, inference, postprocess, cancel, z_spacing))
    planes, plane_axis = to_planes(image, image_axes, dtype=None)
    device = resolve_device(inference.device)
    network = inference_network(bundle.network, device)
    plans = plan_scales(planes.shape[1:3], bundle.config, inference)
    total = len(planes) * sum(plan.tiles_per_plane for _, plan in plans)
    yield Progress("predict", 0, total, f"Predicting {total} tile(s) on {device}", {"device": str(device)})
    shape_yx = (int(planes.shape[1]), int(planes.shape[2]))
    if plane_axis is None and rows_arrive_in_order(plans) and worth_chunking(shape_yx, inference.workers):
        with ChunkLabeller(shape_yx, postprocess, inference.workers) as labeller:
            network_input = normalize_plane(planes[0], bundle.normalize, bundle.config.in_channels)
            plane_gen = iter_scaled_plane_probabilities(
                network, network_input, plans, inference, device, cancel, labeller.add_rows
            )
            yield from _progress_of_plane(plane_gen, 0, 1, 0, total)  # the rows went to the labeller
            return Prediction(labeller.finish(cancel), labeller.probabilities, "YX", image_axes)
    stacked: np.ndarray | None = None
    for index, plane in enumerate(planes):
        check_cancel(cancel)
        network_input = normalize_plane(plane, bundle.normalize, bundle.config.in_channels)
        plane_gen = iter_scaled_plane_probabilities(network, network_input, plans, inference, device, cancel)
        before = index * (total // len(planes))
        plane_probabilities = yield from _progress_of_plane(plane_gen, index, len(planes), before, total)
        assert plane_probabilities is not None  # returned when no rows are handed on
        if stacked is None:
            stacked = np.empty((len(planes), *plane_probabilities.shape), dtype=np.float32)
        stacked[index] = plane_probabilities
    assert stacked is not None  # validate_image guarantees at least one plane
    labels_axes = "YX" if plane_axis is None else f"{plane_axis}YX"
    probabilities = stacked[0] if plane_axis is None else stacked
    labels = labels_from_probabilities(probabilities, labels_axes, postprocess, cancel, workers=inference.workers)
    return Prediction(labels, probabilities, labels_axes, image_axes)


def _progress_of_plane(
    plane_gen: Generator[int, None, np.ndarray | None], index: int, planes: int, done: int, total: int
) -> Generator[Progress, None, np.ndarray | None]:
    """Turn one plane's tile counts into progress events (``done`` tiles before it); return its probabilities."""
    while True:
        try:
            done += next(plane_gen)
        except StopIteration as stop:
            return stop.value
        yield Progress("predict", done, total, _message(index, planes, done, total), {"plane": index})


def _message(index: int, planes: int, done: int, total: int) -> str:
    prefix = f"plane {index + 1}/{planes}, " if planes > 1 else ""
    return f"Predicting: {prefix}tile {done}/{total}"


def predict(
    image: Any,
    bundle: BundleLike,
    axes: str | None = None,
    inference: InferenceConfig | None = None,
    postprocess: PostprocessConfig | None = None,
    cancel: Callable[[], bool] | None = None,
    z_spacing: float | None = None,
) -> Prediction:
    """Segment an image (see :func:`iter_predict`, whose progress this discards)."""
    return run_to_end(iter_predict(image, bundle, axes, inference, postprocess, cancel, z_spacing))

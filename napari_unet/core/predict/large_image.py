"""Images larger than memory, in this process: lazy opening, global normalisation, chunked prediction to zarr.

:func:`predict_large` segments a 2D image (``YX``, ``YXC`` or ``CYX``) that
need not fit in memory - a zarr array, an OME-Zarr image, a dask array, a
NumPy memory map or a TIFF read lazily (``tifffile.imread(..., aszarr=True)``)
- chunk by chunk into an OME-Zarr labels store (uint32).  Each chunk is read
with a halo of context, normalised with **global** percentiles (taken once on
a strided subsample of the whole image, the same sub-grid the in-memory path
uses, so both paths see the same intensities), run through the UNet, turned
into labels and cropped to its core; :mod:`napari_unet.core.predict.stitching` joins
objects across chunk borders and makes ids globally unique.  Memory is
bounded by the chunk size (plus one halo band per chunk column), never by the
image size.  Out-of-memory errors shrink the tiles, then fall back to the CPU
(:mod:`napari_unet.core.predict.memory`).  With a ``scheduler`` the chunks run as
dask tasks (:func:`segment_on_cluster`, over :mod:`napari_unet.core.predict.dask_cluster`); stitching stays here.

The Segment panel and the CLI use this module for images above
:data:`LARGE_IMAGE_PIXELS` per plane and for lazy data.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.config import InferenceConfig, NormalizeConfig, PostprocessConfig
from napari_unet.core.data.normalize import IntensityStats, apply_stats, intensity_stats
from napari_unet.core.errors import UserInputError
from napari_unet.core.predict.dask_cluster import cached_bundle, connect, worker_count
from napari_unet.core.predict.memory import OomGuard, as_torch_device
from napari_unet.core.predict.stitching import ChunkPlan, Stitcher, iter_relabel, plan_chunks
from napari_unet.core.progress import CancelFlag, Progress, check_cancel

PathLike = str | os.PathLike

LABEL_NAME = "labels"
"""Name of the label image inside the OME-Zarr store :func:`predict_large` writes."""

NGFF_VERSION = "0.4"
PERCENTILE_SAMPLE_PIXELS = 2**22
"""Global percentiles are taken on a regular sub-grid of about this many pixels (as the in-memory path does)."""

LARGE_IMAGE_PIXELS = 8192 * 8192
"""Planes with more pixels than this are segmented chunk by chunk into zarr, by ``napari-unet predict`` and by
the Segment panel alike (lazy data, such as dask, zarr or multiscale layers, always is)."""
LARGE_AXES = ("YX", "YXC", "CYX")
"""Axes a large image may have (2D, channels last or first)."""
_ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json")


# =========================================================================== lazy large images


class LargeImage:
    """A lazily read 2D image seen as ``(Y, X)`` or ``(Y, X, C)``.

    Slicing with a ``(y, x)`` pair of slices reads only that region and returns
    a NumPy array; nothing else is ever loaded.

    Parameters
    ----------
    array : array-like
        NumPy (or memory map), zarr, dask or any sliceable array.
    axes : str
        Axis letters of ``array`` (``Y``, ``X``, ``C``; other letters must have
        length 1 and are dropped).

    """

    def __init__(self, array: Any, axes: str, closer: Callable[[], None] | None = None) -> None:
        self.array = array
        self._closer = closer
        self.source_axes = axes
        kept = [a for a, n in zip(axes, array.shape, strict=True) if a in "YXC" or n != 1]
        self.axes = "".join(kept)
        if self.axes not in LARGE_AXES:
            raise UserInputError(
                f"large-image prediction handles 2D images (YX, YXC or CYX), got axes {axes} with shape "
                f"{tuple(array.shape)}; predict stacks plane by plane or select one plane first"
            )
        self._fixed = {i: 0 for i, a in enumerate(axes) if a not in "YXC"}
        sizes = dict(zip(axes, array.shape, strict=True))
        self.shape: tuple[int, ...] = (int(sizes["Y"]), int(sizes["X"]))
        if "C" in self.axes:
            self.shape = (*self.shape, int(sizes["C"]))
        self.dtype = np.dtype(array.dtype)

    def close(self) -> None:
        """Release the open file behind the array (TIFF stores); further reads are invalid."""
        if self._closer is not None:
            self._closer()
            self._closer = None

    def __enter__(self) -> LargeImage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def ndim(self) -> int:
        """2 for grey, 3 for channels-last."""
        return len(self.shape)

    def __getitem__(self, region: tuple[slice, slice]) -> np.ndarray:
        """Read ``region`` (a ``(y, x)`` pair of slices, steps allowed) as ``(y, x[, C])``."""
        wanted = {"Y": region[0], "X": region[1], "C": slice(None)}
        index = tuple(self._fixed[i] if i in self._fixed else wanted[a] for i, a in enumerate(self.source_axes))
        block = np.asarray(self.array[index])
        kept = "".join(a for i, a in enumerate(self.source_axes) if i not in self._fixed)
        if kept == "CYX":
            block = np.moveaxis(block, 0, -1)
        return block


def open_large_image(source: Any, axes: str | None = None) -> LargeImage:
    """Open ``source`` lazily as a :class:`LargeImage`.

    Parameters
    ----------
    source : path or array-like
        A zarr array or OME-Zarr group (first multiscale level), a TIFF (read
        through ``tifffile``'s zarr store), a ``.npy`` (memory-mapped), another
        image file (read into memory), or a NumPy / zarr / dask array.
    axes : str, optional
        Axis letters of the stored array (e.g. ``"CYX"``); read from OME-Zarr
        or TIFF metadata, else guessed (2D: ``YX``; 3D with 3-4 entries last:
        ``YXC``; 3D with at most 4 entries first: ``CYX``).

    Raises
    ------
    UserInputError
        Missing files, unsupported axes or non-numeric data.

    """
    if isinstance(source, LargeImage):
        return source
    found_axes, closer = None, None
    if isinstance(source, (str, os.PathLike)):
        source, found_axes, closer = _open_path(Path(source))
    if not hasattr(source, "shape") or not hasattr(source, "__getitem__"):
        raise UserInputError(f"cannot read an image from {type(source).__name__}; pass a path or an array")
    kind = np.dtype(source.dtype).kind
    if kind not in "iuf":
        raise UserInputError(f"the image has dtype {source.dtype}; pass an integer or float image")
    axes = (axes or found_axes or _guess_axes(tuple(source.shape))).upper().replace("S", "C")
    if len(axes) != len(source.shape):
        raise UserInputError(f"axes {axes!r} do not match the image's {len(source.shape)} dimensions {source.shape}")
    return LargeImage(source, axes, closer)


def _guess_axes(shape: tuple[int, ...]) -> str:
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3 and shape[-1] in (3, 4):
        return "YXC"
    if len(shape) == 3 and shape[0] <= 4:
        return "CYX"
    raise UserInputError(
        f"cannot tell the axes of an image of shape {shape}; pass them explicitly (YX, YXC or CYX) "
        "or select one plane of a stack"
    )


def _open_path(path: Path) -> tuple[Any, str | None, Callable[[], None] | None]:
    if not path.exists():
        raise UserInputError(f"{path}: no such file or folder; check the path")
    suffix = path.suffix.lower()
    if suffix == ".zarr" or (path.is_dir() and any((path / m).exists() for m in _ZARR_MARKERS)):
        return (*_open_zarr(path), None)
    if suffix in (".tif", ".tiff"):
        return _open_tiff(path)
    if suffix == ".npy":
        return np.load(path, mmap_mode="r"), None, None
    from napari_unet.core.io import read_image

    return read_image(path), None, None


def _open_zarr(path: Path) -> tuple[Any, str | None]:
    import zarr

    node = zarr.open(str(path), mode="r")
    if not isinstance(node, zarr.Group):
        return node, None
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if multiscales:
        first = multiscales[0]
        axes = "".join(str(a["name"] if isinstance(a, dict) else a)[0].upper() for a in first.get("axes", [])) or None
        return node[first["datasets"][0]["path"]], axes
    arrays = sorted(node.array_keys())
    if len(arrays) == 1:
        return node[arrays[0]], None
    raise UserInputError(
        f"{path}: zarr group without OME-Zarr multiscales and with arrays {arrays}; "
        "pass the path of one array inside it (e.g. store.zarr/0)"
    )


def _open_tiff(path: Path) -> tuple[Any, str | None, Callable[[], None]]:
    import tifffile
    import zarr

    with tifffile.TiffFile(path) as tif:
        axes = tif.series[0].axes
    store = tifffile.imread(path, aszarr=True)
    node = zarr.open(store, mode="r")
    if isinstance(node, zarr.Group):  # a pyramid: level 0 is full resolution
        node = node["0"]
    return node, axes, store.close


# =========================================================================== global normalisation


@dataclass(frozen=True)
class GlobalNormalizer:
    """Percentile normalisation with one intensity range for the whole image.

    Built by :meth:`from_image`; calling it on a window applies the same
    channel mapping and scaling as
    :func:`napari_unet.core.data.normalize.normalize_plane`, but with the global
    statistics (:class:`~napari_unet.core.data.normalize.IntensityStats`) instead
    of the window's own.

    Attributes
    ----------
    stats : IntensityStats
        ``low`` / ``high`` (intensities mapped to 0 and 1) and ``invert``
        (bright maps to 0, for bright-background images).
    in_channels : int
        Channels the model reads.

    """

    stats: IntensityStats
    in_channels: int

    @classmethod
    def from_image(
        cls, image: LargeImage, cfg: NormalizeConfig, in_channels: int, band: int = 2048
    ) -> GlobalNormalizer:
        """Measure the percentiles on a regular sub-grid of ``image``, reading one band of rows at a time."""
        return cls(intensity_stats(strided_sample(image, band=band), cfg, in_channels), in_channels)

    def __call__(self, window: np.ndarray) -> np.ndarray:
        """Normalise a ``(y, x)`` or ``(y, x, C)`` window into ``(in_channels, y, x)`` float32."""
        return apply_stats(window, self.stats, self.in_channels)


def sample_step(shape_yx: tuple[int, int], max_pixels: int = PERCENTILE_SAMPLE_PIXELS) -> int:
    """Stride of the regular sub-grid of at most about ``max_pixels`` pixels (1 for small images)."""
    size = int(shape_yx[0]) * int(shape_yx[1])
    return max(1, math.ceil(math.sqrt(size / max_pixels)))


def strided_sample(image: LargeImage, max_pixels: int = PERCENTILE_SAMPLE_PIXELS, band: int = 2048) -> np.ndarray:
    """Every ``step``-th row and column of the image, read in bands of about ``band`` rows.

    Returns
    -------
    np.ndarray
        ``(ceil(Y / step), ceil(X / step)[, C])`` in the image's dtype.

    """
    step = sample_step(image.shape[:2], max_pixels)
    rows_per_band = max(step, band // step * step)
    parts = [
        image[(slice(start, min(start + rows_per_band, image.shape[0]), step), slice(None, None, step))]
        for start in range(0, image.shape[0], rows_per_band)
    ]
    return np.concatenate(parts, axis=0)


# =========================================================================== large-image prediction


def unet_segmenter(
    bundle: Any,
    normalizer: GlobalNormalizer,
    inference: InferenceConfig,
    postprocess: PostprocessConfig,
    guard: OomGuard | None = None,
    cancel: CancelFlag = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """Build the per-window segmenter of :func:`predict_large`: normalise, UNet probabilities, labels.

    Returns
    -------
    callable
        ``segment(window (y, x[, C])) -> (y, x)`` int32 labels.

    """
    from napari_unet.core.labels.postprocess import probabilities_to_labels
    from napari_unet.core.predict.planar import predict_probabilities

    guard = guard or oom_guard_for(bundle, inference)

    def segment(window: np.ndarray) -> np.ndarray:
        plane = normalizer(window)

        def run(tile: int, device: Any) -> np.ndarray:
            cfg = replace(inference, tile_size=tile, device=device.type)
            return predict_probabilities(bundle, plane, cfg, cancel=cancel)

        return probabilities_to_labels(guard.run(run), postprocess)

    return segment


def oom_guard_for(bundle: Any, inference: InferenceConfig, on_message: Callable[[str], None] | None = None) -> OomGuard:
    """Make an :class:`OomGuard` starting from the inference tile size and device, tiles kept network-compatible."""
    multiple = bundle.config.size_multiple
    minimum = max(32, multiple)
    return OomGuard(
        inference.tile_size,
        as_torch_device(inference.device),
        min_tile_size=minimum,
        multiple=multiple,
        on_message=on_message,
    )


def predict_large(
    source: Any,
    bundle: Any,
    output_zarr_path: PathLike,
    *,
    chunk: int = 2048,
    halo: int = 64,
    inference: InferenceConfig | None = None,
    postprocess: PostprocessConfig | None = None,
    axes: str | None = None,
    overwrite: bool = False,
    scheduler: Any = None,
    bundle_spec: str | None = None,
    cancel: CancelFlag = None,
) -> Generator[Progress, None, Path]:
    """Segment a large 2D image chunk by chunk into an OME-Zarr labels store.

    Parameters
    ----------
    source : path or array-like
        ``YX``, ``YXC`` or ``CYX`` image (see :func:`open_large_image`).
    bundle : ModelBundle
        The model.
    output_zarr_path : str or Path
        Store to create (``.zarr``); labels land in ``labels/labels/0``
        (OME-Zarr 0.4, uint32, chunked like the cores) and
        :func:`napari_unet.core.io.read_labels` reads them back.
    chunk : int
        Core edge in pixels; memory scales with ``(chunk + 2 * halo) ** 2``.
    halo : int
        Context on every side of a chunk; at least the largest nucleus diameter.
    inference, postprocess : optional
        Settings (defaults / the bundle's post-processing when omitted).
    axes : str, optional
        Axes of ``source`` when they cannot be read or guessed.
    overwrite : bool
        Replace an existing store.
    scheduler : optional
        ``None`` runs here; otherwise a spec for :func:`parse_scheduler` - the
        chunks then run as dask tasks (``source`` must be a path and the model
        given by ``bundle_spec`` or a saved ``bundle.path``).
    bundle_spec : str, optional
        Model name or path the dask workers load (once per worker).
    cancel : callable, optional
        Checked before every chunk.

    Yields
    ------
    Progress
        ``stage="predict"``: one event for the statistics, one per chunk
        segmented and one per chunk relabelled.

    Returns
    -------
    Path
        ``output_zarr_path``.

    """
    from napari_unet.core.io import atomic_write_dir, is_own_zarr

    inference = inference or InferenceConfig()
    postprocess = postprocess or bundle.postprocess
    remote = None
    if scheduler is not None:
        remote = (source_ref(source), bundle_ref(bundle, bundle_spec))
    image = open_large_image(source, axes)
    try:
        plans = plan_chunks(image.shape[:2], chunk, halo)
        total = 1 + 2 * len(plans)
        yield Progress("predict", 0, total, f"Measuring intensities of a {image.shape[0]}x{image.shape[1]} image")
        normalizer = GlobalNormalizer.from_image(image, bundle.normalize, bundle.config.in_channels)
        yield Progress("predict", 1, total, f"Segmenting {len(plans)} chunk(s) of {chunk} px", _stats(normalizer))
        stitcher = Stitcher(image.shape[:2], chunk, halo)
        with atomic_write_dir(output_zarr_path, overwrite=overwrite, replaceable=is_own_zarr) as temp:
            labels = create_label_store(temp, image.shape[:2], chunk)
            if remote is None:
                windows = _segment_here(image, plans, bundle, normalizer, inference, postprocess, cancel)
            else:
                job = LargeJob(remote[0], axes, remote[1], normalizer, inference, postprocess)
                windows = segment_on_cluster(scheduler, job, plans, cancel)
            for done, (plan, window_labels) in enumerate(windows, start=2):
                labels[plan.core] = stitcher.add_chunk(plan, window_labels)
                yield Progress("predict", done, total, f"Segmented chunk {done - 1}/{len(plans)}")
            yield from iter_relabel(labels, stitcher, plans, cancel=cancel, done=1 + len(plans), total=total)
    finally:
        if image is not source:
            image.close()
    return Path(output_zarr_path)


def _stats(normalizer: GlobalNormalizer) -> dict[str, Any]:
    return asdict(normalizer.stats)


def _segment_here(
    image: LargeImage,
    plans: list[ChunkPlan],
    bundle: Any,
    normalizer: GlobalNormalizer,
    inference: InferenceConfig,
    postprocess: PostprocessConfig,
    cancel: CancelFlag,
) -> Iterator[tuple[ChunkPlan, np.ndarray]]:
    segment = unet_segmenter(bundle, normalizer, inference, postprocess, cancel=cancel)
    for plan in plans:
        check_cancel(cancel)
        yield plan, segment(image[plan.window])


def create_label_store(path: PathLike, shape_yx: tuple[int, ...], chunk: int) -> Any:
    """Create an OME-Zarr 0.4 labels store at ``path`` and return its writable uint32 ``(Y, X)`` array.

    The store holds a ``labels`` group listing one label image, ``labels``,
    whose single resolution level ``0`` is chunked ``(chunk, chunk)`` so each
    core is written whole.
    """
    import zarr

    from napari_unet.core.io import owner_attributes

    major = int(zarr.__version__.split(".")[0])
    root = zarr.open_group(str(path), mode="w", **({"zarr_format": 2} if major >= 3 else {}))
    root.attrs.update(owner_attributes())
    group = root.require_group("labels").require_group(LABEL_NAME)
    root["labels"].attrs.update({"labels": [LABEL_NAME]})
    chunks = (min(chunk, int(shape_yx[0])), min(chunk, int(shape_yx[1])))
    shape = (int(shape_yx[0]), int(shape_yx[1]))
    if major >= 3:
        encoding = {"name": "v2", "separator": "/"}
        array = group.create_array("0", shape=shape, chunks=chunks, dtype="u4", chunk_key_encoding=encoding)
    else:  # pragma: no cover - zarr 2
        array = group.create_dataset("0", shape=shape, chunks=chunks, dtype="u4", dimension_separator="/")
    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    scale = [{"type": "scale", "scale": [1.0, 1.0]}]
    multiscales = [
        {
            "version": NGFF_VERSION,
            "name": LABEL_NAME,
            "axes": axes,
            "datasets": [{"path": "0", "coordinateTransformations": scale}],
        }
    ]
    group.attrs.update({"multiscales": multiscales, "image-label": {"version": NGFF_VERSION}})
    return array


@dataclass(frozen=True)
class LargeJob:
    """Everything a worker needs to segment one window (all picklable)."""

    source: str
    axes: str | None
    bundle_ref: tuple[str, str]
    normalizer: GlobalNormalizer
    inference: InferenceConfig
    postprocess: PostprocessConfig


def source_ref(source: Any) -> str:
    """Return the absolute path a dask worker opens a large image by; a source that is not a path is refused."""
    if isinstance(source, (str, os.PathLike)):
        return str(Path(source).resolve())
    raise UserInputError("predicting a large image on a dask cluster needs the image as a path (zarr or TIFF)")


def bundle_ref(bundle: Any, spec: str | None) -> tuple[str, str]:
    """Return ``(model reference, weights hash)`` a dask worker loads the model by; an unsaved model is refused."""
    if spec is None and getattr(bundle, "path", None) is None:
        raise UserInputError("predicting on a dask cluster needs a saved model: pass its name or folder as bundle_spec")
    return (str(spec if spec is not None else bundle.path), bundle.sha256)


def _segment_window_task(job: LargeJob, window: tuple[slice, slice]) -> np.ndarray:
    """Worker side: read one window, segment it, return ``(y, x)`` uint32 local labels."""
    bundle = cached_bundle(*job.bundle_ref)
    with open_large_image(job.source, job.axes) as image:
        pixels = image[window]
    segment = unet_segmenter(bundle, job.normalizer, job.inference, job.postprocess)
    return segment(pixels).astype(np.uint32)


def segment_on_cluster(
    scheduler: Any, job: LargeJob, plans: list[ChunkPlan], cancel: CancelFlag
) -> Iterator[tuple[ChunkPlan, np.ndarray]]:
    """Run each chunk's window as a dask task; yield ``(plan, window labels)`` as they complete."""
    from distributed import as_completed

    with connect(scheduler) as client:
        in_flight = max(2, 2 * worker_count(client))
        remaining = list(plans)
        futures = {}

        def submit_next(queue: as_completed) -> None:
            plan = remaining.pop(0)
            future = client.submit(_segment_window_task, job, plan.window, retries=2, pure=False)
            futures[future.key] = plan
            queue.add(future)

        queue = as_completed()
        for _ in range(min(in_flight, len(remaining))):
            submit_next(queue)
        for future in queue:
            check_cancel(cancel)
            plan = futures.pop(future.key)
            result = future.result()
            future.release()
            if remaining:
                submit_next(queue)
            yield plan, result

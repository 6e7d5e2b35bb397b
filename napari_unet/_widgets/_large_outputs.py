"""Large or lazy images in the Segment widget: which images they are, where their labels go, and cleanup.

A layer whose data is not a NumPy array (dask, zarr, napari multiscale data:
its full-resolution level) or a NumPy image with more than
:data:`~napari_unet.core.predict.large_image.LARGE_IMAGE_PIXELS` pixels per plane is never copied into memory: the array
itself goes to :func:`napari_unet.core.predict.large_image.predict_large`, which
segments it chunk by chunk into an OME-Zarr store in the cache folder
(:func:`large_store_path`).  The Labels layer then shows that store, opened
lazily (edits are written back to it).  No probability map is kept for such
images, so "keep probability map" and "re-run post-processing" are skipped
with a notice.  Lazy stacks (ZYX/TYX) are refused with a notice; NumPy stacks
use the in-memory path as before.

A store is deleted only when the same layer is re-segmented into a new one
(:func:`delete_unused_store`); a removed layer's store is kept, since it may hold
edits nobody exported (:func:`removed_store_notice` says where it is).
"""

from __future__ import annotations

import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Layer

from napari_unet._widgets._common import META_KEY, cache_dir
from napari_unet.core.predict import large_image
from napari_unet.core.predict.large_image import LARGE_AXES

LAZY_STACK_MESSAGE = (
    "lazy stacks are not supported yet; load the stack into memory (or copy one plane into its own layer) "
    "and press Segment again, or segment the file with the CLI (napari-unet predict)"
)


def full_resolution(layer: Image) -> Any:
    """Return the layer's array as it is (level 0 of multiscale data), never copied or loaded."""
    return layer.data[0] if layer.multiscale else layer.data


def is_lazy(layer: Image) -> bool:
    """Return True for data that is not an in-memory NumPy array (dask, zarr, multiscale)."""
    return bool(layer.multiscale) or not isinstance(layer.data, np.ndarray)


def is_large(layer: Image, axes: str) -> bool:
    """Return True when ``layer`` goes chunk by chunk: lazy data, or a 2D NumPy image over ``LARGE_IMAGE_PIXELS``."""
    if is_lazy(layer):
        return True
    sizes = dict(zip(axes, layer.data.shape, strict=True))
    return axes in LARGE_AXES and sizes["Y"] * sizes["X"] > large_image.LARGE_IMAGE_PIXELS


def large_store_dir() -> Path:
    """Return the cache folder holding the labels of large images segmented in the viewer."""
    return cache_dir() / "large"


def large_store_path(image_name: str) -> Path:
    """Return a new ``.zarr`` path in :func:`large_store_dir` for a chunked segmentation of ``image_name``."""
    safe = re.sub(r"[^\w.-]+", "_", image_name).strip("._") or "image"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return large_store_dir() / f"{safe}-{stamp}.zarr"


def open_lazy_labels(store: Path) -> Any:
    """Open the labels :func:`~napari_unet.core.predict.large_image.predict_large` wrote, lazily and writable."""
    import zarr

    from napari_unet.core.predict.large_image import LABEL_NAME

    return zarr.open_array(str(Path(store) / "labels" / LABEL_NAME / "0"), mode="r+")


def layer_store(layer: Layer | None) -> str | None:
    """Return the labels store a layer shows (from its napari-unet metadata), or None."""
    return layer.metadata.get(META_KEY, {}).get("store") if layer is not None else None


def is_unused_cached_store(viewer: Any, store: Path) -> bool:
    """Return True when ``store`` is a labels store in the large-image cache that no layer of ``viewer`` shows."""
    in_use = {layer_store(layer) for layer in viewer.layers}
    return store.parent == large_store_dir() and str(store) not in in_use


def delete_unused_store(viewer: Any, store: Path) -> None:
    """Delete a cached labels store that no layer of the viewer shows any more (its layer was re-segmented)."""
    if is_unused_cached_store(viewer, store):
        shutil.rmtree(store, ignore_errors=True)


def removed_store_notice(viewer: Any, layer: Layer) -> str | None:
    """Say where the labels of a removed large-image layer stay on disk and how much space they take (else None).

    They are not deleted: they may hold edits the user has not exported.
    """
    store = layer_store(layer)
    if not store or not Path(store).is_dir() or not is_unused_cached_store(viewer, Path(store)):
        return None
    size = sum(path.stat().st_size for path in Path(store).rglob("*") if path.is_file())
    return (
        f"'{layer.name}' was removed; its labels stay on disk ({size / 2**20:.1f} MB) in the OME-Zarr "
        f"store {store}. Export them with 'napari-unet export {store} -o FOLDER', or delete the store to free "
        "the space."
    )

"""Layer glue: memory-checked copies, layer lookups and checks, and writing labels without losing edits."""

from __future__ import annotations

import hashlib
import weakref
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer

from napari_unet._widgets._notify import info
from napari_unet.core.errors import UserInputError

META_KEY = "napari_unet"


SNAPSHOT_MEMORY_FRACTION = 0.5
"""Largest share of the free RAM one layer copy may take (the rest is for the job working on it)."""


def snapshot(layer: Layer) -> np.ndarray:
    """Copy a layer's data into memory so the user may keep editing it meanwhile.

    Multiscale layers give their full-resolution level.

    Raises
    ------
    UserInputError
        If the copy would take more than :data:`SNAPSHOT_MEMORY_FRACTION` of
        the free memory (a lazy layer far larger than RAM would otherwise
        freeze the machine while it is read).

    """
    from napari_unet.core.predict.memory import system_available_bytes

    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    needed = int(np.prod(np.shape(data), dtype=np.int64)) * np.dtype(data.dtype).itemsize
    available = system_available_bytes()
    if needed > SNAPSHOT_MEMORY_FRACTION * available:
        raise UserInputError(
            f"'{layer.name}' needs {_size_text(needed)} in memory, more than half of the "
            f"{_size_text(available)} free; work on a cropped region instead (add a slice of the layer's data "
            "as a new layer, e.g. viewer.add_labels(layer.data[:4096, :4096]))"
        )
    return np.array(data, copy=True)


def _size_text(n_bytes: int) -> str:
    """``'67 MB'`` or ``'2.1 GB'``."""
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.0f} MB"


def get_layer(viewer: Any, name: str) -> Layer | None:
    """Return the viewer's layer called ``name``, or None."""
    return viewer.layers[name] if name in viewer.layers else None  # noqa: SIM401 (LayerList has no .get)


def layer_meta(layer: Layer) -> dict[str, Any]:
    """Return the napari-unet entry of ``layer.metadata`` (created when missing)."""
    return layer.metadata.setdefault(META_KEY, {})


def check_labels_layer(layer: Layer | None, what: str = "labels") -> Labels:
    """Return ``layer`` if it is a Labels layer, else raise a clear :class:`UserInputError`."""
    if layer is None:
        raise UserInputError(f"no {what} layer: add or choose a Labels layer first")
    if not isinstance(layer, Labels):
        kind = "an RGB image" if getattr(layer, "rgb", False) else f"a {type(layer).__name__} layer"
        raise UserInputError(f"'{layer.name}' is {kind}, not labels; choose a Labels layer for {what}")
    return layer


def check_image_layer(layer: Layer | None) -> Image:
    """Return ``layer`` if it is an Image layer, else raise a clear :class:`UserInputError`."""
    if layer is None:
        raise UserInputError("no image layer: open an image (or File > Open Sample > napari-unet) first")
    if not isinstance(layer, Image):
        raise UserInputError(f"'{layer.name}' is a {type(layer).__name__} layer; choose an Image layer")
    return layer


def image_axes_hint(layer: Image) -> str | None:
    """Axes napari already knows: ``YXC`` for RGB layers, else None (let the engine guess)."""
    return "YXC" if layer.rgb else None


def set_layer_data(viewer: Any, name: str, data: Any, kind: str, like: Layer | None = None, **kwargs: Any):
    """Update layer ``name`` in place, or add it (``kind`` ``"labels"`` or ``"image"``) aligned with ``like``.

    A Labels layer that holds edits (:func:`holds_edits`) is never overwritten:
    the data goes to a new layer (``name [2]``, ...), the edited layer is
    hidden (not blended under the new one) and a notice says where it is.
    Labels this function writes are remembered (:func:`mark_written`), so a
    later call replaces them as long as nobody edited them.

    Returns the layer.
    """
    existing = viewer.layers[name] if name in viewer.layers else None  # noqa: SIM401 (LayerList.get differs)
    if existing is not None and _kind_of(existing) == kind:
        if kind != "labels" or not holds_edits(existing):
            existing.data = data
            if kind == "labels":
                mark_written(existing)
            return existing
        existing.visible = False  # the new labels are not shown blended with the edited ones
        info(
            f"'{name}' holds your edits, so it was kept (hidden: tick its eye in the layer list to see it); "
            f"the new labels are in '{unique_name(viewer, name)}'."
        )
    if like is not None:
        kwargs.setdefault("scale", tuple(like.scale)[-data.ndim :])
        kwargs.setdefault("translate", tuple(like.translate)[-data.ndim :])
    adder = viewer.add_labels if kind == "labels" else viewer.add_image
    layer = adder(data, name=unique_name(viewer, name), **kwargs)
    if kind == "labels":
        mark_written(layer)
    return layer


WRITTEN_KEY = "written_digest"
"""``layer_meta`` key: digest of the labels napari-unet last wrote into the layer (``"lazy"`` for on-disk labels)."""
EDITED_KEY = "edited"
"""``layer_meta`` key: True once the layer was painted, filled or changed by a Correct helper."""


def labels_digest(data: Any) -> str:
    """Return a digest of in-memory labels (shape, dtype and bytes); ``"lazy"`` for arrays that are not NumPy."""
    if not isinstance(data, np.ndarray):
        return "lazy"
    digest = hashlib.blake2b(np.ascontiguousarray(data).view(np.uint8).ravel(), digest_size=16)
    return f"{data.shape}:{data.dtype}:{digest.hexdigest()}"


def mark_written(layer: Labels) -> None:
    """Remember that napari-unet wrote ``layer``'s current data, and watch it for edits from now on."""
    meta = layer_meta(layer)
    meta[WRITTEN_KEY] = labels_digest(layer.data)
    meta[EDITED_KEY] = False
    if layer not in _WATCHED:
        _WATCHED.add(layer)
        layer.events.paint.connect(_mark_edited)


_WATCHED: weakref.WeakSet[Labels] = weakref.WeakSet()
"""Labels layers whose paint events mark them edited."""


def _mark_edited(event: Any) -> None:
    layer_meta(event.source)[EDITED_KEY] = True


def ground_truth_rank(layer: Labels) -> int:
    """How likely ``layer`` is a ground truth: 2 napari-unet never wrote it, 1 a corrected prediction, 0 a raw one."""
    if layer.metadata.get(META_KEY, {}).get(WRITTEN_KEY) is None:
        return 2
    return 1 if holds_edits(layer) else 0


def holds_edits(layer: Labels) -> bool:
    """Whether ``layer`` holds labels napari-unet did not write: painted, corrected, or made by someone else.

    In-memory labels are compared with the digest of what napari-unet last
    wrote; on-disk (lazy) labels count as edited once a paint, fill or
    Correct helper touched them.
    """
    meta = layer.metadata.get(META_KEY, {})
    written = meta.get(WRITTEN_KEY)
    if written is None or meta.get(EDITED_KEY, False):
        return True
    return written != "lazy" and written != labels_digest(layer.data)


def _kind_of(layer: Layer) -> str:
    return "labels" if isinstance(layer, Labels) else "image" if isinstance(layer, Image) else "other"


def unique_name(viewer: Any, name: str) -> str:
    """``name``, or ``name [2]``, ``name [3]``... whichever is not yet a layer."""
    candidate, n = name, 1
    while candidate in viewer.layers:
        n += 1
        candidate = f"{name} [{n}]"
    return candidate


def layer_z_spacing(layer: Image, axes: str) -> float | None:
    """Return a Z-stack layer's Z step in pixel sizes (``scale[Z] / scale[X]``).

    None for layers that are not Z-stacks and for napari's default scale
    (all ones: nobody said what the voxels measure, so the model's own Z step is assumed).
    """
    if not axes.startswith("Z"):
        return None
    spatial = list(layer.scale)[-3:] if "C" not in axes or layer.rgb else list(layer.scale)[-4:-1]
    if len(spatial) < 3 or all(value == 1 for value in spatial):
        return None
    return float(spatial[0]) / float(spatial[-1])

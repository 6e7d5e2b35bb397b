"""Glue shared by the napari-unet widgets, one module per concern, all names importable from here.

- :mod:`._settings`: settings and cache folders;
- :mod:`._notify`: notifications;
- :mod:`._layers`: memory-checked layer copies, lookups, and writing labels without losing edits;
- :mod:`._pickers`: the scrolling panel layout, layer and model pickers, the model-saved bus;
- :mod:`._jobs`: the job panel (progress bar, status, Cancel) running engine generators in a thread,
  and ``load_model_step``, the first step of the jobs that run a model.

Nothing here computes on image data; it only moves data between napari layers,
Qt widgets and the engine in :mod:`napari_unet.core`.
"""

from __future__ import annotations

from napari_unet._widgets._jobs import (
    JobPanel,
    load_model_step,
)
from napari_unet._widgets._layers import (
    EDITED_KEY,
    META_KEY,
    SNAPSHOT_MEMORY_FRACTION,
    WRITTEN_KEY,
    check_image_layer,
    check_labels_layer,
    get_layer,
    ground_truth_rank,
    holds_edits,
    image_axes_hint,
    labels_digest,
    layer_meta,
    layer_z_spacing,
    mark_written,
    set_layer_data,
    snapshot,
    unique_name,
)
from napari_unet._widgets._notify import (
    error,
    info,
    notify_exception,
    warn,
)
from napari_unet._widgets._pickers import (
    FILE_ITEM,
    LayerCombo,
    ModelCombo,
    bus,
    fit_narrow,
    model_references,
    scroll_layout,
)
from napari_unet._widgets._settings import (
    CACHE_ENV,
    CONFIG_ENV,
    SETTINGS_FILE,
    cache_dir,
    config_dir,
    load_settings,
    logger,
    save_settings,
)

__all__ = [
    "CACHE_ENV",
    "CONFIG_ENV",
    "EDITED_KEY",
    "FILE_ITEM",
    "META_KEY",
    "SETTINGS_FILE",
    "SNAPSHOT_MEMORY_FRACTION",
    "WRITTEN_KEY",
    "JobPanel",
    "LayerCombo",
    "ModelCombo",
    "bus",
    "cache_dir",
    "check_image_layer",
    "check_labels_layer",
    "config_dir",
    "error",
    "fit_narrow",
    "get_layer",
    "ground_truth_rank",
    "holds_edits",
    "image_axes_hint",
    "info",
    "labels_digest",
    "layer_meta",
    "layer_z_spacing",
    "load_model_step",
    "load_settings",
    "logger",
    "mark_written",
    "model_references",
    "notify_exception",
    "save_settings",
    "scroll_layout",
    "set_layer_data",
    "snapshot",
    "unique_name",
    "warn",
]

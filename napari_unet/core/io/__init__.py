"""Reading images and writing labels, measurements, ROIs and provenance (one module per concern).

Reading
-------
:func:`read_image` reads TIFF, PNG/JPEG/BMP, NumPy ``.npy`` and zarr (a zarr
array, or an OME-Zarr group, whose first multiscale level is returned).
:func:`read_labels` adds an integer check.  :func:`list_images` lists the
readable images of a folder.

Writing
-------
Every write is atomic: :func:`atomic_write_path` (files) and
:func:`atomic_write_dir` (folders such as zarr stores) hand the writer a
temporary path inside a hidden folder next to the target (same file system,
same file name, so writers that look at the suffix work) and move the result
into place only when the writer succeeds.  Existing targets are never
replaced unless ``overwrite=True``.

:func:`export_labels` writes instance labels as ImageJ TIFF, 16-bit PNG,
``.npy``, OME-Zarr labels, an ImageJ ROI zip or a CSV of measurements
(:func:`measure_objects`).  With ``provenance`` it also writes
``<path>.provenance.json`` *beside* the export (the full file name plus
``.provenance.json``, e.g. ``masks.tif.provenance.json``, so exports of one
result in several formats never collide).  :func:`provenance` builds that
record: model name and hash, settings, package versions, input hashes.

Modules: :mod:`.reading`, :mod:`.atomic` (atomic writes and what ``overwrite``
may replace), :mod:`.jsonio`, :mod:`.provenance`, :mod:`.measurements`,
:mod:`.labels` (the label writers and :func:`export_labels`).  Every public
name is importable from ``napari_unet.core.io`` as before.
"""

from __future__ import annotations

from napari_unet.core.io.atomic import (
    OWNER_ATTRIBUTE,
    apply_default_permissions,
    atomic_write_dir,
    atomic_write_path,
    is_own_zarr,
    not_ours_message,
    owner_attributes,
)
from napari_unet.core.io.jsonio import (
    json_default,
    to_jsonable,
    write_json,
)
from napari_unet.core.io.labels import (
    EXPORT_FORMATS,
    NGFF_VERSION,
    export_labels,
)
from napari_unet.core.io.measurements import (
    measure_objects,
    write_csv,
)
from napari_unet.core.io.provenance import (
    PROVENANCE_PACKAGES,
    PROVENANCE_SUFFIX,
    provenance,
    provenance_path,
    sha256_array,
    sha256_file,
    write_provenance,
)
from napari_unet.core.io.reading import (
    IMAGE_SUFFIXES,
    PLAIN_IMAGE_SUFFIXES,
    TIFF_SUFFIXES,
    PathLike,
    as_label_array,
    list_images,
    read_annotated_folder,
    read_image,
    read_labels,
)

__all__ = [
    "EXPORT_FORMATS",
    "IMAGE_SUFFIXES",
    "NGFF_VERSION",
    "OWNER_ATTRIBUTE",
    "PLAIN_IMAGE_SUFFIXES",
    "PROVENANCE_PACKAGES",
    "PROVENANCE_SUFFIX",
    "TIFF_SUFFIXES",
    "PathLike",
    "apply_default_permissions",
    "as_label_array",
    "atomic_write_dir",
    "atomic_write_path",
    "export_labels",
    "is_own_zarr",
    "json_default",
    "list_images",
    "measure_objects",
    "not_ours_message",
    "owner_attributes",
    "provenance",
    "provenance_path",
    "read_annotated_folder",
    "read_image",
    "read_labels",
    "sha256_array",
    "sha256_file",
    "to_jsonable",
    "write_csv",
    "write_json",
    "write_provenance",
]

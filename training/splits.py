"""The fixed train / val / test split of the annotated nuclei data, read in one place.

``training/splits_v2.json`` (made once by :func:`training.data_pack.make_splits` and committed) gives every
image ``<source>/<id>`` of ``../shared/data`` its split (``train``, ``val``, ``test``) and its group
(``fluorescence``, ``brightfield``, ``colour``, ``tissue``).  Everything that selects images by split (the
benchmarks, the data pack, the model card) reads it through :func:`split_images`.

Only the standard library is imported, so this also loads on the GPU training machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SPLITS_FILE = Path(__file__).with_name("splits_v2.json")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""``../shared/data`` beside the checkout: the annotated originals (absent in a fresh clone)."""
SOURCES = {
    "dsb2018_train": "dsb2018/train",
    "dsb2018_val": "dsb2018/val",
    "dsb2018_stage1": "dsb2018_stage1_train",
    "s_bsst265": "s_bsst265/train",
}
"""Source name (the part of a key before ``/``) -> its folder under the data folder."""


@dataclass(frozen=True)
class SplitImage:
    """One annotated image of the split.

    Attributes
    ----------
    key : str
        ``<source>/<id>``.
    source, name : str
        The two parts of ``key``.
    group, split : str
        Image type and role (``train``, ``val`` or ``test``).
    image_path, labels_path : Path
        ``<data>/<source folder>/<id>_image.tif`` and ``..._labels.tif``.

    """

    key: str
    source: str
    name: str
    group: str
    split: str
    image_path: Path
    labels_path: Path


def split_images(
    data: Path = SHARED_DATA, split: str | None = None, source: str | None = None, group: str | None = None
) -> list[SplitImage]:
    """The images of ``training/splits_v2.json``, in key order, optionally of one split, source and/or group.

    Parameters
    ----------
    data : Path
        Folder holding the source folders of :data:`SOURCES` (only used to build the paths; nothing is read).
    split, source, group : str, optional
        Keep only images with this split, source and group.

    Returns
    -------
    list of SplitImage

    """
    document = json.loads(SPLITS_FILE.read_text(encoding="utf-8"))
    groups = document["groups"]
    images = []
    for key, role in sorted(document["splits"].items()):
        key_source, name = key.split("/", 1)
        if split not in (None, role) or source not in (None, key_source) or group not in (None, groups[key]):
            continue
        folder = Path(data) / SOURCES[key_source]
        images.append(
            SplitImage(
                key=key,
                source=key_source,
                name=name,
                group=groups[key],
                split=role,
                image_path=folder / f"{name}_image.tif",
                labels_path=folder / f"{name}_labels.tif",
            )
        )
    return images

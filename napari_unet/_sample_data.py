"""napari sample-data contributions: synthetic nuclei with ground truth, and a real download.

Each synthetic sample opens two layers, the image and its exact ground-truth labels.
In a source checkout they are read from the repository's ``sample_data/`` folder
(written by ``sample_data/make_samples.py``); a wheel install does not ship that
folder, so the same arrays are generated on the fly from the same seeds.

This module must import without a display: it needs neither napari nor Qt at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_unet.core.data.synthetic import synthetic_nuclei, synthetic_timelapse, synthetic_zstack
from napari_unet.core.errors import UserInputError

if TYPE_CHECKING:
    from napari.types import LayerDataTuple

SAMPLE_DATA_DIR = Path(__file__).resolve().parent.parent / "sample_data"

ZSTACK_Z_SPACING = 2.0


@dataclass(frozen=True)
class SampleSpec:
    """How one synthetic sample is made and shown.

    Attributes
    ----------
    key : str
        File stem: the files are ``<key>_image.tif`` and ``<key>_labels.tif``.
    title : str
        Image layer name; the labels layer is ``"<title> ground truth"``.
    make : callable
        Returns ``(image, labels)``; deterministic.
    layer_kwargs : dict
        Extra keyword arguments for both layers (e.g. ``scale``).
    rgb : bool
        Whether the image's last axis holds RGB colours.

    """

    key: str
    title: str
    make: Callable[[], tuple[np.ndarray, np.ndarray]]
    layer_kwargs: dict[str, Any] = field(default_factory=dict)
    rgb: bool = False

    @property
    def image_file(self) -> str:
        """File name of the image."""
        return f"{self.key}_image.tif"

    @property
    def labels_file(self) -> str:
        """File name of the ground-truth labels."""
        return f"{self.key}_labels.tif"


SAMPLES: dict[str, SampleSpec] = {
    spec.key: spec
    for spec in (
        SampleSpec(
            "fluorescence",
            "synthetic fluorescent nuclei",
            lambda: synthetic_nuclei((256, 256), n_nuclei=40, seed=0, kind="fluorescence"),
        ),
        SampleSpec(
            "brightfield",
            "synthetic brightfield nuclei",
            lambda: synthetic_nuclei((256, 256), n_nuclei=40, seed=1, kind="brightfield"),
            rgb=True,
        ),
        SampleSpec(
            "zstack",
            "synthetic nuclei z-stack",
            lambda: synthetic_zstack((16, 128, 128), n_nuclei=20, seed=2, z_spacing=ZSTACK_Z_SPACING),
            layer_kwargs={"scale": (ZSTACK_Z_SPACING, 1.0, 1.0)},
        ),
        SampleSpec(
            "timelapse",
            "synthetic nuclei time-lapse",
            lambda: synthetic_timelapse(n_frames=5, shape=(128, 128), n_nuclei=20, seed=3),
        ),
    )
}


def _spec(key: str) -> SampleSpec:
    if key not in SAMPLES:
        raise UserInputError(f"unknown sample {key!r}; pick one of {', '.join(SAMPLES)}.")
    return SAMPLES[key]


def generate_sample(key: str) -> tuple[np.ndarray, np.ndarray]:
    """Generate one synthetic sample from its fixed seed.

    Parameters
    ----------
    key : str
        One of :data:`SAMPLES` (``fluorescence``, ``brightfield``, ``zstack``, ``timelapse``).

    Returns
    -------
    image, labels : np.ndarray
        Image (``YX`` uint16, ``YXC`` uint8, ``ZYX`` or ``TYX`` uint16) and its uint16 labels.

    """
    return _spec(key).make()


def load_sample(key: str, folder: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a sample's packaged files, or generate it when they are absent.

    Parameters
    ----------
    key : str
        One of :data:`SAMPLES`.
    folder : Path, optional
        Folder holding the files; defaults to the repository's ``sample_data/``.

    Returns
    -------
    image, labels : np.ndarray
        As :func:`generate_sample` returns them.

    """
    spec = _spec(key)
    folder = SAMPLE_DATA_DIR if folder is None else Path(folder)
    image_path, labels_path = folder / spec.image_file, folder / spec.labels_file
    if image_path.is_file() and labels_path.is_file():
        import tifffile

        return tifffile.imread(image_path), tifffile.imread(labels_path)
    return generate_sample(key)


def _layer_data(key: str) -> list[LayerDataTuple]:
    """Image + ground-truth labels layers of one sample."""
    spec = SAMPLES[key]
    image, labels = load_sample(key)
    source = {"source": "napari_unet.core.data.synthetic", "sample": key}
    image_kwargs = {"name": spec.title, "metadata": source, **spec.layer_kwargs}
    if spec.rgb:
        image_kwargs["rgb"] = True
    labels_kwargs = {"name": f"{spec.title} ground truth", "metadata": dict(source), **spec.layer_kwargs}
    return [(image, image_kwargs, "image"), (labels, labels_kwargs, "labels")]


def sample_fluorescence() -> list[LayerDataTuple]:
    """Open synthetic fluorescent nuclei (256x256 uint16) with their ground truth."""
    return _layer_data("fluorescence")


def sample_brightfield() -> list[LayerDataTuple]:
    """Open synthetic H&E-like brightfield nuclei (256x256 RGB) with their ground truth."""
    return _layer_data("brightfield")


def sample_zstack() -> list[LayerDataTuple]:
    """Open a synthetic nuclei Z-stack (16x128x128, Z step 2 px) with 3D ground truth."""
    return _layer_data("zstack")


def sample_timelapse() -> list[LayerDataTuple]:
    """Open a synthetic time-lapse (5x128x128) of drifting nuclei with tracked ground truth."""
    return _layer_data("timelapse")


def sample_human_mitosis() -> list[LayerDataTuple]:
    """Download scikit-image's human mitosis image (512x512 uint8 fluorescence, no ground truth).

    Raises
    ------
    UserInputError
        When the download fails (offline, blocked, or ``pooch`` missing).

    """
    try:
        from skimage import data as skimage_data

        image = skimage_data.human_mitosis()
    except Exception as error:
        raise UserInputError(
            f"could not download scikit-image's human mitosis image ({type(error).__name__}: {error}); "
            "you are offline? use the synthetic samples (File > Open Sample > napari-unet) instead."
        ) from error
    return [(np.asarray(image), {"name": "human mitosis (scikit-image)"}, "image")]

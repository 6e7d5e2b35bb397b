"""Regenerate the synthetic sample images and their ground-truth labels.

Usage::

    python sample_data/make_samples.py            # rewrite the files beside this script
    python sample_data/make_samples.py OUT_FOLDER # write them somewhere else

The arrays come from ``napari_unet.core.data.synthetic`` with the fixed seeds listed in
``napari_unet._sample_data.SAMPLES``, so running this again gives the same arrays.
Files are zlib-compressed TIFFs written with tifffile.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tifffile

from napari_unet._sample_data import SAMPLES, generate_sample

HERE = Path(__file__).resolve().parent


def _axes(array: np.ndarray, key: str, rgb: bool) -> str:
    """Axis letters of a sample array (for the TIFF metadata)."""
    if rgb:
        return "YXS"
    return {"zstack": "ZYX", "timelapse": "TYX"}.get(key, "YX")[-array.ndim :]


def write_tiff(path: Path, array: np.ndarray, axes: str) -> Path:
    """Write one zlib-compressed TIFF, via a temporary file renamed on success.

    Parameters
    ----------
    path : Path
        Destination file.
    array : np.ndarray
        Image or labels.
    axes : str
        Axis letters stored in the TIFF description (``S`` = RGB samples).

    Returns
    -------
    Path
        ``path``.

    """
    temporary = path.with_name(path.name + ".tmp")
    photometric = "rgb" if axes.endswith("S") else "minisblack"
    tifffile.imwrite(
        temporary,
        array,
        photometric=photometric,
        compression="zlib",
        compressionargs={"level": 9},
        predictor=True,
        metadata={"axes": axes},
    )
    temporary.replace(path)
    return path


def write_samples(folder: Path) -> list[Path]:
    """Generate every sample and write ``<key>_image.tif`` + ``<key>_labels.tif`` into ``folder``.

    Parameters
    ----------
    folder : Path
        Output folder, created when missing.

    Returns
    -------
    list of Path
        The files written.

    """
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key, spec in SAMPLES.items():
        image, labels = generate_sample(key)
        written.append(write_tiff(folder / spec.image_file, image, _axes(image, key, spec.rgb)))
        written.append(write_tiff(folder / spec.labels_file, labels, _axes(labels, key, False)))
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "folder", nargs="?", type=Path, default=HERE, help="output folder (default: beside this script)"
    )
    args = parser.parse_args(argv)
    for path in write_samples(args.folder):
        print(f"{path}  {path.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A compact, self-contained pack of the annotated nuclei data, for training where ``../shared`` is absent.

The pack is one ``.npz`` file (at most 45 MiB) that travels with the checkout
to a GPU machine which has numpy, scipy, scikit-image, Pillow and torch but
neither ``../shared`` nor napari-unet's other dependencies.

What it holds, per image
------------------------
- the image as JPEG (quality 95, no chroma subsampling): the 165 megapixels of
  the data do not fit 45 MiB losslessly (WebP lossless needs about 68 MB);
  JPEG at quality 95 changes a pixel by about one grey level;
- its labels, re-coloured so that touching nuclei never share a value and
  stored as a lossless 8-bit PNG; :func:`load_pack` turns them back into
  instances (8-connected components of one value);
- the intensity mapping the product applies to it (``low``, ``high``,
  ``invert`` from :func:`napari_unet.core.data.normalize.intensity_stats`, measured
  on the lossless original), so training sees the same inputs as inference;
- its source, group (``fluorescence``, ``brightfield``, ``colour``,
  ``tissue``) and split (``train``, ``val``, ``test``).

The split is fixed by ``training/splits_v2.json`` (written by
:func:`make_splits` and committed): ``val`` images choose checkpoints and
thresholds, ``test`` images only report.  ``dsb2018/val`` is test as a whole:
it chose the previous model's checkpoint and thresholds, not this one's.

Usage (here, beside ``../shared``)::

    python -m training.data_pack build [--data ../shared/data] [--out data_pack/nuclei_v2.npz]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.splits import SHARED_DATA, SOURCES, SPLITS_FILE, split_images

PACK_FORMAT = "napari-unet-data-pack"
PACK_VERSION = 1
MAX_PACK_BYTES = 45 * 2**20
GROUPS = ("fluorescence", "brightfield", "colour", "tissue")
JPEG_QUALITY = 95


@dataclass
class PackedImage:
    """One decoded image of the pack.

    Attributes
    ----------
    key : str
        ``<source>/<id>``.
    image : array (Y, X, C) of uint8
        ``C`` is 1 (grey) or 3 (RGB).
    labels : array (Y, X) of int32
        Instance labels (0 = background).
    low, high : float
        Intensities the product maps to 0 and 1.
    invert : bool
        Whether the product inverts this image (bright background).
    group, split : str
        Image type and role (see the module docstring).

    """

    key: str
    image: np.ndarray
    labels: np.ndarray
    low: float
    high: float
    invert: bool
    group: str
    split: str

    def normalized(self) -> np.ndarray:
        """Return the network input ``(3, Y, X)`` float32 (grey repeated), mapped as the product maps it."""
        scaled = (self.image.astype(np.float32) - self.low) / max(self.high - self.low, 1e-6)
        if self.invert:
            scaled = 1.0 - scaled
        return np.ascontiguousarray(np.broadcast_to(np.moveaxis(scaled, -1, 0), (3, *scaled.shape[:2])))


# --------------------------------------------------------------------------- splits


def image_group(source: str, image: np.ndarray, invert: bool) -> str:
    """Return the sampling group of an image: tissue sections, colour, grey brightfield or fluorescence."""
    if source == "s_bsst265":
        return "tissue"
    if image.ndim == 3:
        return "colour"
    return "brightfield" if invert else "fluorescence"


def make_splits(entries: list[dict], seed: int = 2026) -> dict[str, str]:
    """Assign train / val / test to every image, stratified by source and group.

    Parameters
    ----------
    entries : list of dict
        ``{"key", "source", "group"}`` per image.
    seed : int
        Seed of the shuffle (the committed split used 2026).

    Returns
    -------
    dict
        ``key -> split``.  ``dsb2018_stage1``: 5% val and 5% test per group (at
        least one each); ``s_bsst265``: 4 val, 6 test; ``dsb2018_val``: all
        test; ``dsb2018_train``: all train.

    """
    rng = np.random.default_rng(seed)
    splits: dict[str, str] = {}
    strata: dict[tuple[str, str], list[str]] = {}
    for entry in entries:
        strata.setdefault((entry["source"], entry["group"]), []).append(entry["key"])
    for (source, _group), keys in sorted(strata.items()):
        keys = sorted(keys)
        rng.shuffle(keys)
        if source == "dsb2018_val":
            n_val, n_test = 0, len(keys)
        elif source == "dsb2018_train":
            n_val = n_test = 0
        elif source == "s_bsst265":
            n_val, n_test = 4, 6
        else:
            n_val = n_test = max(1, round(0.05 * len(keys)))
        for index, key in enumerate(keys):
            splits[key] = "val" if index < n_val else "test" if index < n_val + n_test else "train"
    return splits


# --------------------------------------------------------------------------- label colouring


def colour_labels(labels: np.ndarray) -> np.ndarray:
    """Re-colour instance labels with values 1..255 so that no two 8-adjacent objects share one.

    Parameters
    ----------
    labels : array (Y, X) of int
        Instance labels.

    Returns
    -------
    array (Y, X) of uint8
        Same objects, greedy graph colouring of their 8-adjacency.

    Raises
    ------
    ValueError
        If an object has 255 or more neighbours (never seen in nuclei data).

    """
    ids, inverse = np.unique(labels, return_inverse=True)
    dense = inverse.reshape(labels.shape)  # 0 = background when present
    if ids[0] != 0:
        dense = dense + 1
    neighbours = _adjacency(dense)
    colour = np.zeros(int(dense.max()) + 1, dtype=np.int64)
    for node in range(1, len(colour)):
        used = {int(colour[n]) for n in neighbours.get(node, ())}
        free = next(c for c in range(1, 256) if c not in used) if len(used) < 255 else None
        if free is None:
            raise ValueError(f"object {node} has {len(used)} neighbours; cannot colour with 255 values")
        colour[node] = free
    return colour[dense].astype(np.uint8)


def _adjacency(dense: np.ndarray) -> dict[int, set[int]]:
    """Return ``object -> 8-adjacent objects`` for dense labels ``(Y, X)`` (0 = background)."""
    height, width = dense.shape
    pairs = []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = dense[: height - dy, max(0, -dx) : width - max(0, dx)]
        b = dense[dy:, max(0, dx) : width + min(0, dx)]
        touching = (a != b) & (a > 0) & (b > 0)
        pairs.append(np.stack([a[touching], b[touching]], axis=1))
    neighbours: dict[int, set[int]] = {}
    for u, v in np.unique(np.concatenate(pairs), axis=0):
        neighbours.setdefault(int(u), set()).add(int(v))
        neighbours.setdefault(int(v), set()).add(int(u))
    return neighbours


def instances_from_colours(coloured: np.ndarray) -> np.ndarray:
    """Recover instance labels ``(Y, X)`` int32 from :func:`colour_labels` output (8-connected components per value)."""
    from skimage.measure import label

    return label(coloured, background=0, connectivity=2).astype(np.int32)


# --------------------------------------------------------------------------- encoding


def _encode_png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _encode_jpeg(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buffer.getvalue()


def _decode(blob: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as image:
        return np.asarray(image)


# --------------------------------------------------------------------------- build / load


def build_pack(data: Path, out: Path) -> dict:
    """Read ``data`` (the ``../shared/data`` layout), write the pack to ``out`` and the splits file.

    Returns
    -------
    dict
        Counts per source, group and split, and the pack size in bytes.

    Raises
    ------
    SystemExit
        If the pack would exceed :data:`MAX_PACK_BYTES`.

    """
    from napari_unet.core.config import NormalizeConfig
    from napari_unet.core.data.normalize import intensity_stats
    from napari_unet.core.io import read_annotated_folder

    entries, blobs = [], []
    for source, folder in SOURCES.items():
        for name, image, labels in read_annotated_folder(data / folder):
            grey = image.ndim == 2
            stats = intensity_stats(image, NormalizeConfig(invert="auto" if grey else "never"), 3)
            key = f"{source}/{name}"
            entries.append(
                {
                    "key": key,
                    "source": source,
                    "group": image_group(source, image, stats.invert),
                    "low": stats.low,
                    "high": stats.high,
                    "invert": stats.invert,
                    "shape": list(image.shape),
                    "objects": int(len(np.unique(labels)) - 1),
                }
            )
            blobs += [_encode_jpeg(image), _encode_png(colour_labels(labels))]
    splits = _load_or_make_splits(entries)
    for entry in entries:
        entry["split"] = splits[entry["key"]]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    payload = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    index = {"format": PACK_FORMAT, "version": PACK_VERSION, "jpeg_quality": JPEG_QUALITY, "images": entries}
    size = payload.nbytes + offsets.nbytes
    if size > MAX_PACK_BYTES:
        sys.exit(f"data pack would be {size / 2**20:.1f} MiB, over the {MAX_PACK_BYTES / 2**20:.0f} MiB limit")
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.name + ".partial.npz")
    np.savez(temporary, payload=payload, offsets=offsets, index=np.frombuffer(json.dumps(index).encode(), np.uint8))
    temporary.replace(out)
    return _summary(entries, size)


def _load_or_make_splits(entries: list[dict]) -> dict[str, str]:
    """The committed split (made once by :func:`make_splits`); records every image's group beside it."""
    document = json.loads(SPLITS_FILE.read_text()) if SPLITS_FILE.is_file() else None
    if document is None:
        document = {
            "seed": 2026,
            "rule": make_splits.__doc__.split("Returns")[0].strip(),
            "splits": make_splits(entries),
        }
    missing = [e["key"] for e in entries if e["key"] not in document["splits"]]
    if missing:
        sys.exit(f"{SPLITS_FILE.name} does not list {len(missing)} image(s), e.g. {missing[0]}; delete it to re-split")
    document["groups"] = {e["key"]: e["group"] for e in entries}
    SPLITS_FILE.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    return document["splits"]


def _summary(entries: list[dict], size: int) -> dict:
    counts: dict[str, int] = {}
    for entry in entries:
        for key in (f"{entry['source']}/{entry['split']}", f"{entry['group']}/{entry['split']}"):
            counts[key] = counts.get(key, 0) + 1
    return {"pack_bytes": size, "images": len(entries), "counts": dict(sorted(counts.items()))}


def load_pack(path: Path, splits: tuple[str, ...] = ("train", "val", "test")) -> list[PackedImage]:
    """Decode the images of the pack at ``path`` whose split is in ``splits``.

    Returns
    -------
    list of PackedImage
        In pack order.

    """
    with np.load(path) as archive:
        payload, offsets = archive["payload"], archive["offsets"]
        index = json.loads(archive["index"].tobytes())
    if index.get("format") != PACK_FORMAT:
        raise ValueError(f"{path} is not a napari-unet data pack")
    images = []
    for number, entry in enumerate(index["images"]):
        if entry["split"] not in splits:
            continue
        image = _decode(payload[offsets[2 * number] : offsets[2 * number + 1]].tobytes())
        coloured = _decode(payload[offsets[2 * number + 1] : offsets[2 * number + 2]].tobytes())
        images.append(
            PackedImage(
                key=entry["key"],
                image=image[..., np.newaxis] if image.ndim == 2 else image,
                labels=instances_from_colours(coloured),
                low=float(entry["low"]),
                high=float(entry["high"]),
                invert=bool(entry["invert"]),
                group=entry["group"],
                split=entry["split"],
            )
        )
    return images


def link_split_folder(
    data: Path, out: Path, split: str, source: str | None, group: str | None, every: int, limit: int | None
) -> list[str]:
    """Link originals of one split into ``out`` as ``<id>_image.tif`` / ``<id>_labels.tif`` (for folder benchmarks).

    Takes the images of ``split`` in ``training/splits_v2.json`` (optionally
    of one ``source`` and/or ``group``), every ``every``-th in key order, at
    most ``limit``; returns their keys.  Existing links are kept, so several
    calls fill one folder.
    """
    chosen = split_images(data, split, source, group)[::every][:limit]
    out.mkdir(parents=True, exist_ok=True)
    for item in chosen:
        for suffix, target in (("image", item.image_path), ("labels", item.labels_path)):
            link = out / f"{item.name}_{suffix}.tif"
            if not link.exists():
                link.symlink_to(target.resolve())
    return [item.key for item in chosen]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "folder"], help="build the pack, or link a split into a folder")
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--out", type=Path, default=None, help="pack file (build) or folder (folder)")
    parser.add_argument("--split", choices=["train", "val", "test"], default="test", help="folder: the split")
    parser.add_argument("--source", choices=list(SOURCES), default=None, help="folder: only this source")
    parser.add_argument("--group", default=None, help="folder: only this image group (e.g. colour)")
    parser.add_argument("--every", type=int, default=1, help="folder: every n-th image (key order)")
    parser.add_argument("--limit", type=int, default=None, help="folder: at most this many images")
    args = parser.parse_args(argv)
    if args.command == "folder":
        if args.out is None:
            parser.error("folder needs --out")
        keys = link_split_folder(args.data, args.out, args.split, args.source, args.group, args.every, args.limit)
        print(json.dumps({"folder": str(args.out), "linked": keys}, indent=1))
        return
    print(json.dumps(build_pack(args.data, args.out or Path("data_pack/nuclei_v2.npz")), indent=1))


if __name__ == "__main__":
    main()

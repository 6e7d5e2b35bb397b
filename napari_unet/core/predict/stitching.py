"""Chunked instance segmentation of images too large for memory, stitched without seams.

How it works
------------
The image is cut into a grid of square **cores** (``chunk`` pixels); each core
is segmented together with a **halo** of ``halo`` pixels of context on every
side (its **window**), and only the core is written.  So that every nucleus
keeps one label across core borders:

1. *Provisional ids.*  Each window's labels (``1..n`` per window) are shifted
   by a running offset, so all ids are globally unique; the core's part goes
   to the output array.
2. *Border reconciliation.*  Neighbouring windows (8-neighbourhood, so corners
   count too) overlap in a band of about ``2 * halo`` pixels where *both*
   segmentations exist; they are compared in its middle (both cores grown by
   ``halo // 2``), away from either window's outer edge, where nuclei cut
   by the edge leave slivers that the watershed gives to a neighbour.
   Labels ``a`` (one window) and ``b`` (the other) that cover the same pixels
   there - their shared area is at least ``min_overlap`` of the smaller of
   the two inside the band - are one object and are merged in a union-find.
   Two different nuclei that touch exactly on a core border barely overlap
   in the band, so they stay apart.  Only these bands are kept in memory
   (for a raster order: about two rows of bands, ``O(width * halo)``),
   never the image.
3. *Relabel pass.*  A lookup table maps every provisional id still present in
   the output to its union-find root and then to consecutive ids ``1..K``;
   the output is rewritten core by core through it.

We chose overlap matching over "keep the objects whose centroid lies in the
core" because it never writes outside a core (chunk writes stay aligned and
independent, as dask and zarr want) and it also joins objects larger than the
halo.  With ``halo`` at least the largest nucleus diameter, every object that
crosses a border lies wholly inside both windows and the result equals the
whole-image segmentation up to a permutation of ids (tested).

The per-window segmenter is a parameter (``segmenter(window) -> labels``), so
the same runner serves the UNet, the classical baselines and tests.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.core.errors import UserInputError
from napari_unet.core.progress import CancelFlag, Progress, check_cancel

Segmenter = Callable[[np.ndarray], np.ndarray]
Region = tuple[slice, slice]
ChunkIndex = tuple[int, int]

MAX_LABEL = np.iinfo(np.uint32).max


@dataclass(frozen=True)
class ChunkPlan:
    """One cell of the chunk grid.

    Attributes
    ----------
    index : tuple of int
        ``(row, column)`` in the grid.
    core : tuple of slice
        ``(y, x)`` region of the image this chunk writes.
    window : tuple of slice
        ``(y, x)`` region it reads: the core grown by the halo, clipped to the image.

    """

    index: ChunkIndex
    core: Region
    window: Region

    @property
    def core_in_window(self) -> Region:
        """The core as slices into the window array."""
        return _relative(self.core, self.window)


def validate_chunking(chunk: int, halo: int) -> None:
    """Raise :class:`UserInputError` for a chunk edge below 1 or a negative halo."""
    if int(chunk) < 1:
        raise UserInputError(f"chunk size must be a positive number of pixels, got {chunk}")
    if int(halo) < 0:
        raise UserInputError(f"halo must be 0 or more pixels (at least the largest nucleus diameter), got {halo}")


def grid_shape(shape_yx: tuple[int, int], chunk: int) -> tuple[int, int]:
    """Count the chunk rows and columns covering an image of ``shape_yx``."""
    return (-(-int(shape_yx[0]) // chunk), -(-int(shape_yx[1]) // chunk))


def plan_chunk(index: ChunkIndex, shape_yx: tuple[int, int], chunk: int, halo: int) -> ChunkPlan:
    """Return the :class:`ChunkPlan` of grid cell ``index``."""
    bounds = []
    for axis in range(2):
        start = index[axis] * chunk
        stop = min(start + chunk, int(shape_yx[axis]))
        bounds.append((slice(start, stop), slice(max(0, start - halo), min(int(shape_yx[axis]), stop + halo))))
    return ChunkPlan(index=index, core=(bounds[0][0], bounds[1][0]), window=(bounds[0][1], bounds[1][1]))


def plan_chunks(shape_yx: tuple[int, int], chunk: int, halo: int) -> list[ChunkPlan]:
    """All chunks of an image of ``shape_yx`` (Y, X) in raster order.

    Parameters
    ----------
    shape_yx : tuple of int
        Image height and width.
    chunk : int
        Core edge in pixels (the last row/column of cores may be smaller).
    halo : int
        Context added on every side of a core.

    """
    validate_chunking(chunk, halo)
    rows, cols = grid_shape(shape_yx, chunk)
    return [plan_chunk((r, c), shape_yx, chunk, halo) for r in range(rows) for c in range(cols)]


def neighbour_indices(index: ChunkIndex, grid: tuple[int, int]) -> Iterator[ChunkIndex]:
    """Yield the up to eight grid cells around ``index``."""
    row, col = index
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            r, c = row + dr, col + dc
            if (dr or dc) and 0 <= r < grid[0] and 0 <= c < grid[1]:
                yield (r, c)


def intersect(a: Region, b: Region) -> Region | None:
    """Intersection of two ``(y, x)`` regions, or None when they do not overlap."""
    parts = []
    for sa, sb in zip(a, b, strict=True):
        start, stop = max(sa.start, sb.start), min(sa.stop, sb.stop)
        if start >= stop:
            return None
        parts.append(slice(start, stop))
    return (parts[0], parts[1])


def match_labels(labels_a: np.ndarray, labels_b: np.ndarray, min_overlap: float = 0.5) -> list[tuple[int, int]]:
    """Pairs of labels that are the same object in two segmentations of one region.

    Parameters
    ----------
    labels_a, labels_b : np.ndarray
        ``(Y, X)`` integer labels of the same pixels (0 = background).
    min_overlap : float
        ``a`` and ``b`` match when their shared pixels are at least this
        fraction of the smaller of the two (areas measured in this region).

    Returns
    -------
    list of (int, int)
        ``(a, b)`` pairs, sorted.

    """
    a = np.asarray(labels_a, dtype=np.int64).ravel()
    b = np.asarray(labels_b, dtype=np.int64).ravel()
    both = (a > 0) & (b > 0)
    if not both.any():
        return []
    span = int(b.max()) + 1
    pair_keys, shared = np.unique(a[both] * span + b[both], return_counts=True)
    pair_a, pair_b = pair_keys // span, pair_keys % span
    area_a = np.bincount(a, minlength=int(a.max()) + 1)
    area_b = np.bincount(b, minlength=span)
    smaller = np.minimum(area_a[pair_a], area_b[pair_b])
    keep = shared >= min_overlap * smaller
    return [(int(x), int(y)) for x, y in zip(pair_a[keep], pair_b[keep], strict=True)]


class UnionFind:
    """Disjoint sets of integer ids; the smallest id of a set is its root."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, item: int) -> int:
        """Root of ``item`` (with path compression)."""
        root = item
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while item != root:
            self.parent[item], item = root, self.parent.get(item, item)
        return root

    def union(self, a: int, b: int) -> None:
        """Put ``a`` and ``b`` in one set."""
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            low, high = sorted((root_a, root_b))
            self.parent[high] = low
            self.parent.setdefault(low, low)


class Stitcher:
    """Collects chunk segmentations, reconciles borders and builds the final relabel table.

    Call :meth:`add_chunk` once per chunk, in any order (raster order keeps the
    fewest overlap bands in memory), write what it returns to the core of the
    output, then pass every core through :meth:`lookup_table`.

    Parameters
    ----------
    shape_yx : tuple of int
        Image height and width.
    chunk, halo : int
        Grid of :func:`plan_chunks`.
    min_overlap : float
        Matching threshold of :func:`match_labels`.

    """

    def __init__(self, shape_yx: tuple[int, int], chunk: int, halo: int, min_overlap: float = 0.5) -> None:
        validate_chunking(chunk, halo)
        if not 0.0 < min_overlap <= 1.0:
            raise UserInputError(f"min_overlap must be in (0, 1], got {min_overlap}")
        self.shape_yx = (int(shape_yx[0]), int(shape_yx[1]))
        self.chunk, self.halo, self.min_overlap = int(chunk), int(halo), float(min_overlap)
        self.grid = grid_shape(self.shape_yx, self.chunk)
        self.next_id = 1
        self.n_objects = 0
        self.union_find = UnionFind()
        self._done: set[ChunkIndex] = set()
        self._bands: dict[tuple[ChunkIndex, ChunkIndex], np.ndarray] = {}
        self._present: list[np.ndarray] = []

    def plan(self, index: ChunkIndex) -> ChunkPlan:
        """Return the :class:`ChunkPlan` of grid cell ``index``."""
        return plan_chunk(index, self.shape_yx, self.chunk, self.halo)

    def add_chunk(self, plan: ChunkPlan, window_labels: np.ndarray) -> np.ndarray:
        """Register one chunk's segmentation and return its core with provisional global ids.

        Parameters
        ----------
        plan : ChunkPlan
            The chunk.
        window_labels : np.ndarray
            ``(Y, X)`` integer labels of the chunk's whole window (0 = background).

        Returns
        -------
        np.ndarray
            ``(core Y, core X)`` uint32 labels to write at ``plan.core``.

        """
        if plan.index in self._done:
            raise ValueError(f"chunk {plan.index} was added twice")
        labels = self._provisional(plan, window_labels)
        for other in neighbour_indices(plan.index, self.grid):
            self._reconcile(plan, other, labels)
        self._done.add(plan.index)
        core = labels[plan.core_in_window].astype(np.uint32)
        ids = np.unique(core)
        self._present.append(ids[ids > 0])
        return core

    def lookup_table(self) -> np.ndarray:
        """``(n_provisional + 1,)`` uint32 table: provisional id -> final id (consecutive from 1; 0 stays 0)."""
        present = np.concatenate([np.zeros(0, np.int64), *[ids.astype(np.int64) for ids in self._present]])
        root_of = np.arange(self.next_id, dtype=np.int64)
        for item in list(self.union_find.parent):
            root_of[item] = self.union_find.find(item)
        unique_roots, final = np.unique(root_of[present], return_inverse=True)
        table = np.zeros(self.next_id, dtype=np.uint32)
        table[present] = final.astype(np.uint32) + 1
        self.n_objects = len(unique_roots)
        return table

    def _provisional(self, plan: ChunkPlan, window_labels: np.ndarray) -> np.ndarray:
        window_shape = tuple(s.stop - s.start for s in plan.window)
        labels = np.asarray(window_labels)
        if labels.shape != window_shape:
            raise ValueError(f"segmenter returned shape {labels.shape} for a window of shape {window_shape}")
        labels = labels.astype(np.int64)
        count = int(labels.max(initial=0))
        if self.next_id + count > MAX_LABEL:
            raise UserInputError("more than 4 billion objects: use a larger chunk size or split the image")
        labels[labels > 0] += self.next_id - 1
        self.next_id += count
        return labels

    def _reconcile(self, plan: ChunkPlan, other: ChunkIndex, labels: np.ndarray) -> None:
        region = self._match_region(plan, self.plan(other))
        if region is None:
            return
        mine = labels[_relative(region, plan.window)]
        if other not in self._done:
            self._bands[(plan.index, other)] = mine.copy()
            return
        theirs = self._bands.pop((other, plan.index))
        for a, b in match_labels(theirs, mine, self.min_overlap):
            self.union_find.union(a, b)

    def _match_region(self, first: ChunkPlan, second: ChunkPlan) -> Region | None:
        """Where two windows are compared: both cores grown by half the halo, intersected.

        There both windows have at least half the halo of context; nearer a
        window's outer edge, nuclei cut by that edge leave slivers too small to
        seed, which the watershed gives to a neighbour, and comparing them
        would join two nuclei.
        """
        reach = self.halo // 2
        grown = [
            tuple(
                slice(max(0, part.start - reach), min(size, part.stop + reach))
                for part, size in zip(core, self.shape_yx, strict=True)
            )
            for core in (first.core, second.core)
        ]
        return intersect(grown[0], grown[1])


def iter_segment_tiled(
    source: Any,
    segmenter: Segmenter,
    output: Any,
    *,
    chunk: int,
    halo: int,
    min_overlap: float = 0.5,
    cancel: CancelFlag = None,
    stage: str = "predict",
) -> Generator[Progress, None, int]:
    """Segment ``source`` chunk by chunk into ``output`` with stitched, globally unique ids.

    Parameters
    ----------
    source : array-like
        ``(Y, X)`` or ``(Y, X, C)``; anything sliceable that returns arrays
        (numpy, zarr, dask, a lazily read TIFF).  Only one window is read at a time.
    segmenter : callable
        ``segmenter(window (y, x[, C]) np.ndarray) -> (y, x)`` integer labels.
    output : array-like
        Writable ``(Y, X)`` array (uint32 zarr or numpy); receives the labels.
    chunk, halo : int
        Core edge and context width (``halo`` >= the largest object diameter).
    min_overlap : float
        Border matching threshold (see :func:`match_labels`).
    cancel : callable, optional
        Checked before every chunk; raises :class:`~napari_unet.core.errors.Cancelled`.
    stage : str
        Stage name of the progress events.

    Yields
    ------
    Progress
        One event per chunk segmented and per chunk relabelled.

    Returns
    -------
    int
        Number of objects.

    """
    shape_yx = tuple(int(n) for n in source.shape[:2])
    if tuple(output.shape) != shape_yx:
        raise ValueError(f"output shape {tuple(output.shape)} differs from the image's {shape_yx}")
    stitcher = Stitcher(shape_yx, chunk, halo, min_overlap)
    plans = plan_chunks(shape_yx, chunk, halo)
    total = 2 * len(plans)
    for done, plan in enumerate(plans, start=1):
        check_cancel(cancel)
        window = np.asarray(source[plan.window])
        output[plan.core] = stitcher.add_chunk(plan, segmenter(window))
        yield Progress(stage, done, total, f"segmented chunk {done}/{len(plans)}")
    yield from iter_relabel(output, stitcher, plans, cancel=cancel, stage=stage, done=len(plans), total=total)
    return stitcher.n_objects


def iter_relabel(
    output: Any,
    stitcher: Stitcher,
    plans: list[ChunkPlan],
    *,
    cancel: CancelFlag = None,
    stage: str = "predict",
    done: int = 0,
    total: int = 0,
) -> Generator[Progress, None, None]:
    """Rewrite every core of ``output`` through the stitcher's lookup table (the final pass)."""
    table = stitcher.lookup_table()
    for step, plan in enumerate(plans, start=1):
        check_cancel(cancel)
        output[plan.core] = table[np.asarray(output[plan.core])]
        yield Progress(stage, done + step, total or len(plans), f"relabelled chunk {step}/{len(plans)}")


def segment_tiled(
    image: np.ndarray, segmenter: Segmenter, *, chunk: int, halo: int, min_overlap: float = 0.5
) -> np.ndarray:
    """In-memory convenience wrapper of :func:`iter_segment_tiled`.

    Returns
    -------
    np.ndarray
        ``(Y, X)`` uint32 labels, consecutive from 1.

    """
    output = np.zeros(np.shape(image)[:2], dtype=np.uint32)
    gen = iter_segment_tiled(image, segmenter, output, chunk=chunk, halo=halo, min_overlap=min_overlap)
    for _event in gen:
        pass
    return output


def _relative(region: Region, window: Region) -> Region:
    return (
        slice(region[0].start - window[0].start, region[0].stop - window[0].start),
        slice(region[1].start - window[1].start, region[1].stop - window[1].start),
    )

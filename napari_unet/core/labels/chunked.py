"""Post-processing that scales with cores: the probability map labelled in chunks by a pool of workers.

A large plane's probabilities ``(3, Y, X)`` are cut into a grid of cores with
a halo of context (:func:`~napari_unet.core.predict.stitching.plan_chunks`),
each window is post-processed by
:func:`~napari_unet.core.labels.postprocess.probabilities_to_labels` in a
thread pool (its NumPy, SciPy and scikit-image steps release the GIL: two
threads label four 1024² maps 1.74x faster than one on 2 cores), and the
windows are stitched into one label image with globally consistent ids by
the same :class:`~napari_unet.core.predict.stitching.Stitcher` that segments
images too large for memory.

What differs from one pass over the whole plane, and why it is small:

- an object that crosses a core border is labelled in both windows with at
  least :data:`CHUNK_HALO` pixels of context and joined by overlap; a
  nucleus larger than the halo, or two that touch exactly on a border, can
  come out split or joined differently;
- ``min_relative_size`` compares objects with the median area of their
  window, not of the whole plane.

:class:`ChunkLabeller` does the same while the probabilities are still
being made: prediction hands it each band of rows as soon as no tile will
change them again, and a chunk is labelled as soon as its window's rows are
all there, so the workers post-process while the network runs
(:func:`~napari_unet.core.predict.segment.iter_predict`).  Both give the same
labels for the same chunking.

``benchmarks/bench_pipeline.py`` measures the agreement (AP@0.5 of one
against the other) and the speed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from napari_unet.core.config import PostprocessConfig
from napari_unet.core.labels.postprocess import probabilities_to_labels
from napari_unet.core.predict.stitching import ChunkPlan, Stitcher, plan_chunks
from napari_unet.core.progress import check_cancel

CHUNK_HALO = 96
"""Context (pixels) around every core: larger than the nuclei the models segment at their working scale."""

MIN_CHUNK = 1024
"""Smallest core edge: below it the halo's extra work outweighs what another worker gains."""

MIN_PARALLEL_PIXELS = 2 * MIN_CHUNK * MIN_CHUNK
"""Planes with fewer pixels are post-processed in one pass (chunking would not pay)."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the platform reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def postprocess_workers(requested: int = 0) -> int:
    """Worker threads for post-processing: ``requested``, or for 0 one per usable core."""
    return max(1, int(requested)) if requested else usable_cores()


def chunk_edge(shape_yx: tuple[int, int], workers: int) -> int:
    """Core edge giving every worker about two chunks (at least :data:`MIN_CHUNK`).

    Parameters
    ----------
    shape_yx : tuple of int
        Plane height and width.
    workers : int
        Worker threads.

    """
    cells = 2 * workers
    edge = math.ceil(math.sqrt(shape_yx[0] * shape_yx[1] / cells))
    return max(MIN_CHUNK, edge)


def labels_in_chunks(
    probabilities: np.ndarray,
    postprocess: PostprocessConfig,
    workers: int = 0,
    *,
    chunk: int | None = None,
    halo: int = CHUNK_HALO,
    cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Instance labels of one plane, post-processed in chunks by ``workers`` threads and stitched.

    Parameters
    ----------
    probabilities : numpy.ndarray
        ``(3, Y, X)`` float32 background / interior / boundary probabilities.
    postprocess : PostprocessConfig
        Thresholds and sizes, applied to every window.
    workers : int
        Threads (0: one per usable core).  With one, or a plane below
        :data:`MIN_PARALLEL_PIXELS` when ``chunk`` is not given, the plane is
        post-processed in one pass, exactly as
        :func:`~napari_unet.core.labels.postprocess.probabilities_to_labels`.
    chunk : int, optional
        Core edge; by default :func:`chunk_edge`.
    halo : int
        Context around every core (at least the largest nucleus diameter).
    cancel : callable, optional
        Checked between chunks; raises :class:`~napari_unet.core.errors.Cancelled`
        (chunks not started yet are dropped).

    Returns
    -------
    numpy.ndarray
        ``(Y, X)`` uint32 labels, consecutive from 1.

    """
    shape_yx = (int(probabilities.shape[-2]), int(probabilities.shape[-1]))
    workers = postprocess_workers(workers)
    if chunk is None and not worth_chunking(shape_yx, workers):
        return probabilities_to_labels(probabilities, postprocess).astype(np.uint32)
    labeller = ChunkLabeller(shape_yx, postprocess, workers, chunk=chunk, halo=halo, probabilities=probabilities)
    with labeller:
        return labeller.finish(cancel)


def worth_chunking(shape_yx: tuple[int, int], workers: int) -> bool:
    """Whether a plane of ``shape_yx`` is post-processed in chunks (several workers and a large plane)."""
    return postprocess_workers(workers) > 1 and shape_yx[0] * shape_yx[1] >= MIN_PARALLEL_PIXELS


class ChunkLabeller:
    """Label a plane chunk by chunk in a thread pool as its probability rows arrive, then stitch.

    Use as a context manager (leaving it drops the chunks not started); give
    rows with :meth:`add_rows` (or fill :attr:`probabilities` and call
    :meth:`rows_ready`), then call :meth:`finish`.

    Parameters
    ----------
    shape_yx : tuple of int
        Plane height and width.
    postprocess : PostprocessConfig
        Thresholds and sizes, applied to every window.
    workers : int
        Threads (0: one per usable core).
    chunk : int, optional
        Core edge; by default :func:`chunk_edge`.
    halo : int
        Context around every core.
    probabilities : numpy.ndarray, optional
        ``(3, Y, X)`` float32 array the rows are (or will be) in; a new one by default.

    """

    def __init__(
        self,
        shape_yx: tuple[int, int],
        postprocess: PostprocessConfig,
        workers: int = 0,
        *,
        chunk: int | None = None,
        halo: int = CHUNK_HALO,
        probabilities: np.ndarray | None = None,
    ) -> None:
        workers = postprocess_workers(workers)
        self.chunk = chunk or chunk_edge(shape_yx, workers)
        self.postprocess = postprocess
        self.probabilities = probabilities if probabilities is not None else np.empty((3, *shape_yx), dtype=np.float32)
        self.plans = plan_chunks(shape_yx, self.chunk, halo)
        self.stitcher = Stitcher(shape_yx, self.chunk, halo)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="napari-unet-labels")
        self.futures: list[Future[np.ndarray]] = []

    def __enter__(self) -> ChunkLabeller:
        return self

    def __exit__(self, *exc: object) -> None:
        _drop_pending(self.futures)
        self.pool.shutdown(wait=True)

    def add_rows(self, band: np.ndarray, start: int) -> None:
        """Copy final probability rows ``band`` ``(K, rows, X)`` in at row ``start``; label the chunks now complete."""
        stop = start + band.shape[1]
        self.probabilities[:, start:stop] = band[:3]
        self.rows_ready(stop)

    def rows_ready(self, stop: int) -> None:
        """Rows ``0..stop`` of :attr:`probabilities` are final: start every chunk whose window lies above ``stop``."""
        while len(self.futures) < len(self.plans) and self.plans[len(self.futures)].window[0].stop <= stop:
            plan = self.plans[len(self.futures)]
            self.futures.append(self.pool.submit(_label_window, self.probabilities, plan, self.postprocess))

    def finish(self, cancel: Callable[[], bool] | None = None) -> np.ndarray:
        """Wait for every chunk and stitch them: ``(Y, X)`` uint32 labels, consecutive from 1."""
        self.rows_ready(self.probabilities.shape[1])
        output = np.zeros(self.probabilities.shape[1:], dtype=np.uint32)
        for plan, future in zip(self.plans, self.futures, strict=True):
            check_cancel(cancel)
            output[plan.core] = self.stitcher.add_chunk(plan, future.result())
        return self.stitcher.lookup_table()[output]


def _label_window(probabilities: np.ndarray, plan: ChunkPlan, postprocess: PostprocessConfig) -> np.ndarray:
    """Labels ``(y, x)`` int32 of one chunk's window."""
    return probabilities_to_labels(probabilities[(slice(None), *plan.window)], postprocess)


def _drop_pending(futures: list[Future[np.ndarray]]) -> None:
    """Cancel the chunks no worker has started (after a cancel or an error)."""
    for future in futures:
        future.cancel()

"""Folders of images: one output file per input, in this process or one dask task per file.

:func:`predict_folder` segments many images, in this process or as one dask
task per file on a local or remote ``dask.distributed`` cluster
(:mod:`~napari_unet.core.predict.dask_cluster`).  Every worker loads the model
once and limits torch to one thread; failed files are retried twice and then
reported with their reason in the returned :class:`FolderSummary` - never
dropped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.config import InferenceConfig, PostprocessConfig
from napari_unet.core.errors import UserInputError
from napari_unet.core.predict.dask_cluster import cached_bundle, connect, parse_scheduler, remember_bundle
from napari_unet.core.progress import CancelFlag, Progress, check_cancel

PathLike = str | os.PathLike


# =========================================================================== folders


@dataclass(frozen=True)
class FileResult:
    """One segmented file: input, written outputs, object count, seconds."""

    input: str
    outputs: tuple[str, ...]
    n_objects: int
    seconds: float


@dataclass(frozen=True)
class FileFailure:
    """One file that could not be segmented, with the reason."""

    input: str
    reason: str


@dataclass(frozen=True)
class FolderSummary:
    """Outcome of :func:`predict_folder`.

    Attributes
    ----------
    done : tuple of FileResult
        Files written, in input order.
    failed : tuple of FileFailure
        Files that failed (after retries on a cluster), in input order.
    seconds : float
        Wall-clock time of the whole job.

    """

    done: tuple[FileResult, ...]
    failed: tuple[FileFailure, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        """True when no file failed."""
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "done": [vars(r) | {"outputs": list(r.outputs)} for r in self.done],
            "failed": [vars(f) for f in self.failed],
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class _FileJob:
    """A picklable description of one file to segment."""

    input: str
    output: str
    bundle_ref: tuple[str, str]
    inference: InferenceConfig
    postprocess: PostprocessConfig | None
    axes: str | None
    overwrite: bool


def output_path_for(input_path: PathLike, output_dir: PathLike, fmt: str = "tif") -> Path:
    """Where :func:`predict_folder` writes the labels of ``input_path``: ``<output_dir>/<stem>_labels.<fmt>``."""
    from napari_unet.core.io import EXPORT_FORMATS

    if fmt not in EXPORT_FORMATS or fmt == "csv":
        choices = ", ".join(f for f in EXPORT_FORMATS if f != "csv")
        raise UserInputError(f"unknown label format {fmt!r}; use one of {choices}")
    stem = Path(input_path).name
    for suffix in (".ome.zarr", ".ome.tiff", ".ome.tif"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    else:
        stem = Path(stem).stem
    return Path(output_dir) / f"{stem}_labels{EXPORT_FORMATS[fmt]}"


def predict_file(job: _FileJob) -> dict[str, Any]:
    """Segment one file and export its labels (runs in this process or on a dask worker).

    Returns a dict: ``input``, ``outputs``, ``n_objects``, ``seconds`` - or
    ``input`` and ``error`` for problems with the file itself (unreadable,
    unsupported), which retrying cannot fix.  Other exceptions propagate so a
    cluster retries the task.
    """
    from napari_unet.core.io import export_labels, provenance, read_image
    from napari_unet.core.predict.segment import predict

    start = time.perf_counter()
    bundle = cached_bundle(*job.bundle_ref, torch_threads=None if _in_main_process() else 1)
    try:
        image = read_image(job.input)
        result = predict(image, bundle, axes=job.axes, inference=job.inference, postprocess=job.postprocess)
        settings = {"inference": job.inference, "postprocess": job.postprocess or bundle.postprocess}
        record = provenance(model=bundle, settings=settings, inputs=[job.input])
        outputs = export_labels(result.labels, job.output, overwrite=job.overwrite, provenance=record)
    except UserInputError as exc:
        return {"input": job.input, "error": str(exc)}
    seconds = time.perf_counter() - start
    n_objects = len(np.unique(result.labels)) - int((result.labels == 0).any())
    return {"input": job.input, "outputs": [str(p) for p in outputs], "n_objects": n_objects, "seconds": seconds}


def _in_main_process() -> bool:
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return True
    return False


def predict_folder(
    inputs: Sequence[PathLike],
    output_dir: PathLike,
    bundle_spec: Any,
    *,
    scheduler: Any = None,
    inference: InferenceConfig | None = None,
    postprocess: PostprocessConfig | None = None,
    axes: str | None = None,
    fmt: str = "tif",
    overwrite: bool = False,
    retries: int = 2,
    cancel: CancelFlag = None,
) -> Generator[Progress, None, FolderSummary]:
    """Segment many images, here or as one dask task per file.

    Parameters
    ----------
    inputs : sequence of path
        Image files (anything :func:`napari_unet.core.io.read_image` reads).
    output_dir : str or Path
        Existing folder; each result goes to :func:`output_path_for` (plus a
        ``.provenance.json`` beside it).
    bundle_spec : str, Path or ModelBundle
        Model name or folder (each worker loads it once); a bundle works in
        this process, and on a cluster when it was loaded from / saved to a folder.
    scheduler : optional
        See :func:`parse_scheduler`; ``None`` runs in this process.
    inference, postprocess : optional
        Settings (``InferenceConfig()`` / the model's post-processing when omitted).
        On a cluster, ``inference.device="auto"`` lets each worker pick.
    axes : str, optional
        Axes of every image when they cannot be guessed.
    fmt : str
        Label format: ``tif``, ``png``, ``npy``, ``zarr`` or ``roi``.
    overwrite : bool
        Replace existing outputs (otherwise such files fail with that reason).
    retries : int
        Extra attempts for a task that crashed on a cluster.
    cancel : callable, optional
        Checked between files; pending tasks are cancelled.

    Yields
    ------
    Progress
        ``stage="predict"``, one event per finished file (``metrics`` has
        ``input`` and ``ok``).

    Returns
    -------
    FolderSummary
        Done and failed files, in input order.

    """
    start = time.perf_counter()
    paths = [str(Path(p)) for p in inputs]
    outputs = _check_outputs(paths, output_dir, fmt)
    inference = inference or InferenceConfig()
    bundle_ref = _folderbundle_ref(bundle_spec)
    jobs = [
        _FileJob(p, str(o), bundle_ref, inference, postprocess, axes, overwrite)
        for p, o in zip(paths, outputs, strict=True)
    ]
    results: dict[str, dict[str, Any]] = {}
    yield Progress("predict", 0, len(jobs), f"Segmenting {len(jobs)} image(s)")
    runner = (
        _run_here(jobs, cancel)
        if parse_scheduler(scheduler).kind == "inprocess"
        else _run_on_cluster(scheduler, jobs, retries, cancel)
    )
    for outcome in runner:
        results[outcome["input"]] = outcome
        ok = "error" not in outcome
        message = f"{Path(outcome['input']).name}: " + (f"{outcome['n_objects']} objects" if ok else outcome["error"])
        yield Progress("predict", len(results), len(jobs), message, {"input": outcome["input"], "ok": ok})
    return _summarise(paths, results, time.perf_counter() - start)


def _folderbundle_ref(bundle_spec: Any) -> tuple[str, str]:
    """Load (or take) the model here once, cache it, and return the ``(spec, sha256)`` workers load."""
    if isinstance(bundle_spec, (str, os.PathLike)):
        from napari_unet.core.models.registry import load_model

        spec = os.fspath(bundle_spec)
        bundle = load_model(spec)
    else:
        bundle = bundle_spec
        path = getattr(bundle, "path", None)
        spec = str(path) if path is not None else f"<in-memory model {id(bundle)}>"
    ref = (spec, bundle.sha256)
    remember_bundle(ref, bundle)
    return ref


def _check_outputs(paths: list[str], output_dir: PathLike, fmt: str) -> list[Path]:
    folder = Path(output_dir)
    if not folder.is_dir():
        raise UserInputError(f"output folder {folder} does not exist; create it first")
    if not paths:
        raise UserInputError("no input images given; pass image files or a folder holding some")
    outputs = [output_path_for(p, folder, fmt) for p in paths]
    seen: dict[Path, str] = {}
    for path, out in zip(paths, outputs, strict=True):
        if out in seen:
            raise UserInputError(f"{seen[out]} and {path} would both be written to {out}; rename one of them")
        seen[out] = path
    return outputs


def _run_here(jobs: list[_FileJob], cancel: CancelFlag) -> Iterator[dict[str, Any]]:
    for job in jobs:
        check_cancel(cancel)
        try:
            yield predict_file(job)
        except Exception as exc:
            yield {"input": job.input, "error": _reason(exc)}


def _run_on_cluster(scheduler: Any, jobs: list[_FileJob], retries: int, cancel: CancelFlag) -> Iterator[dict[str, Any]]:
    from distributed import as_completed

    with connect(scheduler) as client:
        futures = [
            client.submit(predict_file, job, retries=retries, pure=False, key=f"predict-file-{i}-{time.time_ns()}")
            for i, job in enumerate(jobs)
        ]
        inputs = {f.key: job.input for f, job in zip(futures, jobs, strict=True)}
        try:
            for future in as_completed(futures):
                check_cancel(cancel)
                try:
                    yield future.result()
                except Exception as exc:
                    yield {"input": inputs[future.key], "error": _reason(exc)}
        finally:
            client.cancel([f for f in futures if not f.done()])


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _summarise(paths: list[str], results: dict[str, dict[str, Any]], seconds: float) -> FolderSummary:
    done, failed = [], []
    for path in paths:
        outcome = results.get(path, {"input": path, "error": "not run (cancelled)"})
        if "error" in outcome:
            failed.append(FileFailure(path, outcome["error"]))
        else:
            done.append(
                FileResult(path, tuple(outcome["outputs"]), int(outcome["n_objects"]), float(outcome["seconds"]))
            )
    return FolderSummary(tuple(done), tuple(failed), seconds)

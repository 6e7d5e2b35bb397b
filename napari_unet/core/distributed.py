"""dask.distributed: folders of images on a local or remote cluster, and large images' chunks as dask tasks.

Large images in this process live in :mod:`napari_unet.core.large_image`
(its names are importable from here too); with a ``scheduler``,
:func:`~napari_unet.core.large_image.predict_large` sends each chunk here as
a dask task (:func:`segment_on_cluster`) and stitches the results itself.

Folders
-------
:func:`predict_folder` segments many images, in this process or as one dask
task per file on a local or remote ``dask.distributed`` cluster.  Every
worker loads the model once (a per-process cache keyed by model spec and
weights hash) and limits torch to one thread; failed files are retried twice
and then reported with their reason in the returned :class:`FolderSummary` -
never dropped.

Schedulers (:func:`parse_scheduler`): ``None`` (this process), ``"local"``
(a local cluster with one single-threaded worker process per core, at most
8), ``"local:N"`` (N workers), ``"tcp://host:port"`` (an existing
scheduler), or a ``distributed.Client``.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.config import InferenceConfig, PostprocessConfig
from napari_unet.core.errors import UserInputError
from napari_unet.core.large_image import (  # noqa: F401 - re-exported: they lived here before
    LABEL_NAME,
    LARGE_AXES,
    LARGE_IMAGE_PIXELS,
    NGFF_VERSION,
    PERCENTILE_SAMPLE_PIXELS,
    GlobalNormalizer,
    LargeImage,
    create_label_store,
    oom_guard_for,
    open_large_image,
    predict_large,
    sample_step,
    strided_sample,
    unet_segmenter,
)
from napari_unet.core.progress import CancelFlag, Progress, check_cancel
from napari_unet.core.stitching import ChunkPlan

PathLike = str | os.PathLike

MAX_LOCAL_WORKERS = 8
_ADDRESS_RE = re.compile(r"^(tcp|tls|ucx|inproc)://[^\s/:]+(:\d+)?$")

# ---------------------------------------------------------------------------- chunks as dask tasks


@dataclass(frozen=True)
class LargeJob:
    """Everything a worker needs to segment one window (all picklable)."""

    source: str
    axes: str | None
    bundle_ref: tuple[str, str]
    normalizer: GlobalNormalizer
    inference: InferenceConfig
    postprocess: PostprocessConfig


def source_ref(source: Any) -> str:
    """Return the absolute path a dask worker opens a large image by; a source that is not a path is refused."""
    if isinstance(source, (str, os.PathLike)):
        return str(Path(source).resolve())
    raise UserInputError("predicting a large image on a dask cluster needs the image as a path (zarr or TIFF)")


def bundle_ref(bundle: Any, spec: str | None) -> tuple[str, str]:
    """Return ``(model reference, weights hash)`` a dask worker loads the model by; an unsaved model is refused."""
    if spec is None and getattr(bundle, "path", None) is None:
        raise UserInputError("predicting on a dask cluster needs a saved model: pass its name or folder as bundle_spec")
    return (str(spec if spec is not None else bundle.path), bundle.sha256)


def _segment_window_task(job: LargeJob, window: tuple[slice, slice]) -> np.ndarray:
    """Worker side: read one window, segment it, return ``(y, x)`` uint32 local labels."""
    bundle = cached_bundle(*job.bundle_ref)
    with open_large_image(job.source, job.axes) as image:
        pixels = image[window]
    segment = unet_segmenter(bundle, job.normalizer, job.inference, job.postprocess)
    return segment(pixels).astype(np.uint32)


def segment_on_cluster(
    scheduler: Any, job: LargeJob, plans: list[ChunkPlan], cancel: CancelFlag
) -> Iterator[tuple[ChunkPlan, np.ndarray]]:
    """Run each chunk's window as a dask task; yield ``(plan, window labels)`` as they complete."""
    from distributed import as_completed

    with connect(scheduler) as client:
        in_flight = max(2, 2 * _worker_count(client))
        remaining = list(plans)
        futures = {}

        def submit_next(queue: as_completed) -> None:
            plan = remaining.pop(0)
            future = client.submit(_segment_window_task, job, plan.window, retries=2, pure=False)
            futures[future.key] = plan
            queue.add(future)

        queue = as_completed()
        for _ in range(min(in_flight, len(remaining))):
            submit_next(queue)
        for future in queue:
            check_cancel(cancel)
            plan = futures.pop(future.key)
            result = future.result()
            future.release()
            if remaining:
                submit_next(queue)
            yield plan, result


# =========================================================================== schedulers


@dataclass(frozen=True)
class SchedulerSpec:
    """A parsed ``--dask-scheduler`` value.

    Attributes
    ----------
    kind : str
        ``"inprocess"``, ``"local"``, ``"address"`` or ``"client"``.
    n_workers : int
        Workers of a local cluster (0 otherwise).
    address : str
        Scheduler address for ``"address"``.
    client : object
        The given ``distributed.Client`` for ``"client"``.

    """

    kind: str
    n_workers: int = 0
    address: str = ""
    client: Any = field(default=None, compare=False)


def parse_scheduler(spec: Any) -> SchedulerSpec:
    """Parse a scheduler spec: ``None``, ``"local"``, ``"local:N"``, ``"tcp://host:port"`` or a Client.

    Raises
    ------
    UserInputError
        For anything else (the message lists the accepted forms).

    """
    if spec is None:
        return SchedulerSpec("inprocess")
    if isinstance(spec, SchedulerSpec):
        return spec
    if not isinstance(spec, str):
        if hasattr(spec, "submit") and hasattr(spec, "scheduler_info"):
            return SchedulerSpec("client", client=spec)
        raise UserInputError(f"unknown dask scheduler {spec!r}; {_SCHEDULER_HELP}")
    text = spec.strip()
    if text.lower() == "local":
        return SchedulerSpec("local", n_workers=max(1, min(os.cpu_count() or 1, MAX_LOCAL_WORKERS)))
    if text.lower().startswith("local:"):
        count = text.split(":", 1)[1]
        if not count.isdigit() or int(count) < 1:
            raise UserInputError(f"bad worker count in dask scheduler {spec!r}; {_SCHEDULER_HELP}")
        return SchedulerSpec("local", n_workers=int(count))
    if _ADDRESS_RE.match(text):
        port = text.rsplit(":", 1)[-1]
        if port.isdigit() and not 0 < int(port) < 65536:
            raise UserInputError(f"bad port in dask scheduler {spec!r}; ports are 1-65535")
        return SchedulerSpec("address", address=text)
    raise UserInputError(f"unknown dask scheduler {spec!r}; {_SCHEDULER_HELP}")


_SCHEDULER_HELP = "use 'local', 'local:N' (N worker processes) or a scheduler address such as 'tcp://host:8786'"


@contextlib.contextmanager
def connect(spec: Any) -> Iterator[Any]:
    """Yield a ``distributed.Client`` for ``spec``; clusters and clients made here are closed on exit.

    ``None`` yields ``None`` (run in this process).
    """
    parsed = parse_scheduler(spec)
    if parsed.kind == "inprocess":
        yield None
        return
    if parsed.kind == "client":
        yield parsed.client
        return
    from distributed import Client, LocalCluster

    if parsed.kind == "local":
        with (
            LocalCluster(
                n_workers=parsed.n_workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = Client(parsed.address, timeout="20s")
    except OSError as exc:
        raise UserInputError(f"cannot reach the dask scheduler at {parsed.address} ({exc}); is it running?") from exc
    with client:
        yield client


def _worker_count(client: Any) -> int:
    return max(1, len(client.scheduler_info().get("workers", {})))


# =========================================================================== per-worker model cache

_BUNDLE_CACHE: dict[tuple[str, str], Any] = {}
_BUNDLE_CACHE_SIZE = 3


def cached_bundle(spec: str, sha256: str | None = None, torch_threads: int | None = 1) -> Any:
    """Load a model once per process (keyed by spec and weights hash) and cap torch's threads.

    Parameters
    ----------
    spec : str
        Model name or folder for :func:`napari_unet.core.store.load_model`.
    sha256 : str, optional
        Expected weights hash; a different model on disk raises (the model
        changed while the job ran).
    torch_threads : int, optional
        Threads torch may use in this process (1 on dask workers, so workers
        do not fight over cores); ``None`` leaves it.

    """
    key = (spec, sha256 or "")
    if key not in _BUNDLE_CACHE:
        from napari_unet.core.store import load_model

        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        bundle = load_model(spec)
        if sha256 is not None and bundle.sha256 != sha256:
            raise UserInputError(f"model {spec!r} changed on disk while predicting; start the job again")
        _remember_bundle(key, bundle)
    return _BUNDLE_CACHE[key]


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
    from napari_unet.core.inference import predict
    from napari_unet.core.io import export_labels, provenance, read_image

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


def _remember_bundle(key: tuple[str, str], bundle: Any) -> None:
    """Cache ``bundle``, keeping the newest few (a retrained model gets a new weights hash)."""
    while len(_BUNDLE_CACHE) >= _BUNDLE_CACHE_SIZE:
        _BUNDLE_CACHE.pop(next(iter(_BUNDLE_CACHE)))
    _BUNDLE_CACHE[key] = bundle


def _folderbundle_ref(bundle_spec: Any) -> tuple[str, str]:
    """Load (or take) the model here once, cache it, and return the ``(spec, sha256)`` workers load."""
    if isinstance(bundle_spec, (str, os.PathLike)):
        from napari_unet.core.store import load_model

        spec = os.fspath(bundle_spec)
        bundle = load_model(spec)
    else:
        bundle = bundle_spec
        path = getattr(bundle, "path", None)
        spec = str(path) if path is not None else f"<in-memory model {id(bundle)}>"
    ref = (spec, bundle.sha256)
    _remember_bundle(ref, bundle)
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

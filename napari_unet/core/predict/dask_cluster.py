"""dask.distributed plumbing shared by folders and large images: schedulers, clients, the per-worker model cache.

Schedulers (:func:`parse_scheduler`): ``None`` (this process), ``"local"``
(a local cluster with one single-threaded worker process per core, at most
8), ``"local:N"`` (N workers), ``"tcp://host:port"`` (an existing
scheduler), or a ``distributed.Client``.  Every worker loads a model once
(:func:`cached_bundle`, keyed by model spec and weights hash) and limits
torch to one thread.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from napari_unet.core.errors import UserInputError

MAX_LOCAL_WORKERS = 8


_ADDRESS_RE = re.compile(r"^(tcp|tls|ucx|inproc)://[^\s/:]+(:\d+)?$")


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


def worker_count(client: Any) -> int:
    """Workers the client's scheduler knows of (at least 1)."""
    return max(1, len(client.scheduler_info().get("workers", {})))


_BUNDLE_CACHE: dict[tuple[str, str], Any] = {}


_BUNDLE_CACHE_SIZE = 3


def cached_bundle(spec: str, sha256: str | None = None, torch_threads: int | None = 1) -> Any:
    """Load a model once per process (keyed by spec and weights hash) and cap torch's threads.

    Parameters
    ----------
    spec : str
        Model name or folder for :func:`napari_unet.core.models.registry.load_model`.
    sha256 : str, optional
        Expected weights hash; a different model on disk raises (the model
        changed while the job ran).
    torch_threads : int, optional
        Threads torch may use in this process (1 on dask workers, so workers
        do not fight over cores); ``None`` leaves it.

    """
    key = (spec, sha256 or "")
    if key not in _BUNDLE_CACHE:
        from napari_unet.core.models.registry import load_model

        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        bundle = load_model(spec)
        if sha256 is not None and bundle.sha256 != sha256:
            raise UserInputError(f"model {spec!r} changed on disk while predicting; start the job again")
        remember_bundle(key, bundle)
    return _BUNDLE_CACHE[key]


def remember_bundle(key: tuple[str, str], bundle: Any) -> None:
    """Cache ``bundle``, keeping the newest few (a retrained model gets a new weights hash)."""
    while len(_BUNDLE_CACHE) >= _BUNDLE_CACHE_SIZE:
        _BUNDLE_CACHE.pop(next(iter(_BUNDLE_CACHE)))
    _BUNDLE_CACHE[key] = bundle

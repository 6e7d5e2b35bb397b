"""Memory budgets: pick tile sizes from free memory and survive out-of-memory errors.

Three tools keep inference inside the memory a machine really has:

* :func:`choose_tile_size` turns the free memory of a device (CUDA:
  ``torch.cuda.mem_get_info``; CPU: ``psutil``, else ``/proc/meminfo``, else
  ``os.sysconf``) and a rough per-pixel cost of the UNet into the largest tile
  edge that fits a fraction of it.
* :func:`tiles_that_fit` turns the same estimate into how many tiles of a
  given size one GPU forward pass may take (the starting batch).
* :func:`run_with_oom_fallback` calls a function with a tile size and a device;
  when it runs out of memory it frees the cache and retries with half the tile
  edge, down to a minimum, then falls back to the CPU (with a warning) and, if
  even that fails, raises a :class:`~napari_unet.core.errors.UserInputError`
  that says what to do.  :class:`OomGuard` keeps the reduced settings between
  calls, so a chunked prediction does not hit the same error on every chunk.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import torch

from napari_unet.core.config import ModelConfig
from napari_unet.core.errors import UserInputError

T = TypeVar("T")

MessageCallback = Callable[[str], None] | None

_OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory")


def as_torch_device(device: str | torch.device) -> torch.device:
    """Return ``device`` as a :class:`torch.device`; ``"auto"`` picks CUDA when present, else the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise UserInputError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'mps'") from exc


def system_available_bytes() -> int:
    """Bytes of RAM available to new allocations (psutil, ``/proc/meminfo`` or ``os.sysconf``)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.virtual_memory().available)
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))


def available_memory_bytes(device: str | torch.device) -> int:
    """Memory on ``device`` a new allocation can use, in bytes (GPU memory for CUDA, system RAM otherwise).

    On CUDA: the device's free memory plus what PyTorch's caching allocator
    holds without using (``memory_reserved - memory_allocated``), which the
    device counts as taken but PyTorch hands out again; without it, a stack's
    later planes would see the earlier planes' freed tiles as taken.
    """
    dev = as_torch_device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(dev)
        cached_unused = torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
        return int(free + max(0, cached_unused))
    return system_available_bytes()


def inference_bytes_per_pixel(model_config: ModelConfig, amp: bool = False, safety: float = 2.0) -> float:
    """Rough peak bytes one input pixel costs during a forward pass (no gradients).

    Counts the skip connections kept for the decoder (``base * 2**l`` channels
    at ``1 / 4**l`` of the pixels, every level) plus the widest working set at
    full resolution (input, concatenation, two conv outputs, logits), times
    ``safety`` for allocator slack and convolution workspaces.
    """
    base = model_config.base_channels
    skips = sum(base * 2**level / 4**level for level in range(model_config.depth))
    working = 5 * base + model_config.in_channels + 2 * model_config.out_channels
    bytes_per_value = 2 if amp else 4
    return (skips + working) * bytes_per_value * safety


def tiles_that_fit(
    model_config: ModelConfig,
    tile_pixels: int,
    *,
    free_bytes: int,
    amp: bool = False,
    memory_fraction: float = 0.5,
) -> int:
    """How many tiles of ``tile_pixels`` pixels one forward pass can take in a share of ``free_bytes``.

    The estimate of :func:`inference_bytes_per_pixel` per tile; at least 1
    (a tile that does not fit is the out-of-memory handler's to report).
    """
    per_tile = tile_pixels * inference_bytes_per_pixel(model_config, amp=amp)
    return max(1, int(free_bytes * memory_fraction // per_tile))


def choose_tile_size(
    device: str | torch.device,
    model_config: ModelConfig,
    *,
    batch_size: int = 1,
    amp: bool = False,
    memory_fraction: float = 0.5,
    min_tile: int = 64,
    max_tile: int = 2048,
    free_bytes: int | None = None,
) -> int:
    """Largest square tile edge whose forward pass fits in a fraction of the free memory.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    model_config : ModelConfig
        The network; the tile edge is a multiple of ``model_config.size_multiple``.
    batch_size : int
        Tiles per forward pass.
    amp : bool
        Half-precision activations (CUDA mixed precision).
    memory_fraction : float
        Share of the free memory the tiles may use.
    min_tile, max_tile : int
        Bounds of the answer (``min_tile`` is returned even when memory is short;
        :func:`run_with_oom_fallback` handles what follows).
    free_bytes : int, optional
        Free memory to assume instead of asking the device.

    Returns
    -------
    int
        Tile edge in pixels.

    """
    if batch_size < 1:
        raise UserInputError(f"batch_size must be at least 1, got {batch_size}")
    if not 0.0 < memory_fraction <= 1.0:
        raise UserInputError(f"memory_fraction must be in (0, 1], got {memory_fraction}")
    free = available_memory_bytes(device) if free_bytes is None else int(free_bytes)
    multiple = model_config.size_multiple
    budget_pixels = free * memory_fraction / (batch_size * inference_bytes_per_pixel(model_config, amp=amp))
    edge = int(budget_pixels**0.5) // multiple * multiple
    low = _round_up(min_tile, multiple)
    high = max(low, max_tile // multiple * multiple)
    return int(min(max(edge, low), high))


def is_out_of_memory(exc: BaseException) -> bool:
    """Tell whether ``exc`` reports an exhausted allocator (CUDA or CPU)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc).lower() for text in _OOM_MESSAGES)


def release_cached_memory(device: torch.device) -> None:
    """On CUDA, collect Python garbage and free the caching allocator's unused blocks."""
    if device.type == "cuda" and torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
"""glibc ``mallopt`` parameters (``malloc.h``)."""


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory in the process for reuse instead of handing it back to the system.

    Post-processing a large plane allocates and frees gigabytes of
    temporaries; by default every array over 32 MiB is a fresh ``mmap`` whose
    pages the kernel must fault in (and zero) again.  Where that is slow (a
    virtual machine returning freed memory to its host), reusing the memory
    pays; the price is that the process keeps its peak memory until it
    exits, so this is for one-shot processes (the command line, benchmarks),
    never the napari session.

    Returns
    -------
    bool
        True when the setting took effect (Linux with glibc), else False.

    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


@dataclass(frozen=True)
class FallbackResult(Generic[T]):
    """What :func:`run_with_oom_fallback` ran with.

    Attributes
    ----------
    value : object
        The function's return value.
    tile_size : int
        The tile edge of the successful call.
    device : torch.device
        The device of the successful call.

    """

    value: T
    tile_size: int
    device: torch.device


def run_with_oom_fallback(
    fn: Callable[[int, torch.device], T],
    tile_size: int,
    device: str | torch.device,
    *,
    min_tile_size: int = 64,
    multiple: int = 16,
    on_message: MessageCallback = None,
) -> FallbackResult[T]:
    """Call ``fn(tile_size, device)``, shrinking tiles and then leaving the GPU when memory runs out.

    On an out-of-memory error (``torch.OutOfMemoryError``, ``MemoryError`` or a
    ``RuntimeError`` whose message says so) the tile edge is halved (rounded
    down to ``multiple``) and the call repeated while it stays at or above
    ``min_tile_size``.  Below that, a non-CPU device gives way to the CPU with
    the original tile size and a ``UserWarning``.  Other errors propagate.

    Parameters
    ----------
    fn : callable
        ``fn(tile_size: int, device: torch.device) -> T``.
    tile_size : int
        First tile edge to try.
    device : str or torch.device
        First device to try.
    min_tile_size : int
        Smallest tile edge worth trying.
    multiple : int
        Tile edges stay multiples of this (the network's ``size_multiple``).
    on_message : callable, optional
        Receives a line for every retry (e.g. to yield it as a Progress message).

    Returns
    -------
    FallbackResult
        ``fn``'s value and the tile size and device that produced it.

    Raises
    ------
    UserInputError
        If even the CPU with the smallest tiles runs out of memory.

    """
    dev = as_torch_device(device)
    tile = int(tile_size)
    while True:
        try:
            return FallbackResult(fn(tile, dev), tile, dev)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            error = exc
        release_cached_memory(dev)
        smaller = _halve(tile, multiple)
        if smaller >= min_tile_size and smaller < tile:
            _notify(on_message, f"out of memory on {dev} with {tile} px tiles; retrying with {smaller} px tiles")
            tile = smaller
            continue
        if dev.type != "cpu":
            message = f"out of memory on {dev} even with {tile} px tiles; falling back to the CPU (slower)"
            _notify(on_message, message)
            warnings.warn(message, UserWarning, stacklevel=2)
            dev, tile = torch.device("cpu"), int(tile_size)
            continue
        raise UserInputError(
            f"not enough memory even on the CPU with {tile} px tiles ({error}): close other programs, "
            "or predict large images chunk by chunk with a smaller chunk size"
        ) from error


class OomGuard:
    """Runs calls through :func:`run_with_oom_fallback` and remembers the settings that worked.

    Parameters
    ----------
    tile_size : int
        Starting tile edge.
    device : str or torch.device
        Starting device.
    min_tile_size, multiple : int
        See :func:`run_with_oom_fallback`.
    on_message : callable, optional
        Receives a line for every retry.

    """

    def __init__(
        self,
        tile_size: int,
        device: str | torch.device,
        *,
        min_tile_size: int = 64,
        multiple: int = 16,
        on_message: MessageCallback = None,
    ) -> None:
        self.tile_size = int(tile_size)
        self.device = as_torch_device(device)
        self.min_tile_size = min_tile_size
        self.multiple = multiple
        self.on_message = on_message

    def run(self, fn: Callable[[int, torch.device], T]) -> T:
        """Call ``fn(tile_size, device)`` and keep any reduced tile size or device for the next call."""
        result = run_with_oom_fallback(
            fn,
            self.tile_size,
            self.device,
            min_tile_size=self.min_tile_size,
            multiple=self.multiple,
            on_message=self.on_message,
        )
        self.tile_size, self.device = result.tile_size, result.device
        return result.value


def _halve(tile: int, multiple: int) -> int:
    return max(multiple, tile // 2 // multiple * multiple)


def _round_up(value: int, multiple: int) -> int:
    return -(-int(value) // multiple) * multiple


def _notify(callback: MessageCallback, message: str) -> None:
    if callback is not None:
        callback(message)

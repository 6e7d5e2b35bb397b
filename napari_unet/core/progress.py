"""Progress events yielded by long-running engine generators."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from napari_unet.core.errors import Cancelled

R = TypeVar("R")

CancelFlag = Callable[[], bool] | None


@dataclass(frozen=True)
class Progress:
    """One progress report.

    Attributes
    ----------
    stage : str
        What is running (``"predict"``, ``"train"``, ``"validate"``, ...).
    done, total : int
        Units finished and units planned (``total`` 0 when unknown).
    message : str
        Human-readable status line.
    metrics : dict
        Numbers worth plotting or logging (loss, learning rate, scores, ETA).

    """

    stage: str
    done: int
    total: int
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Completed fraction in [0, 1] (0 when the total is unknown)."""
        return min(1.0, self.done / self.total) if self.total else 0.0


def check_cancel(cancel: CancelFlag) -> None:
    """Raise :class:`Cancelled` if ``cancel`` is given and returns True."""
    if cancel is not None and cancel():
        raise Cancelled("cancelled by the user")


def run_to_end(gen: Generator[Progress, None, R], on_progress: Callable[[Progress], None] | None = None) -> R:
    """Drain a progress generator and return its result.

    Parameters
    ----------
    gen : generator
        A generator yielding :class:`Progress` and returning a result.
    on_progress : callable, optional
        Called with every event (e.g. to update a progress bar).

    """
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(event)

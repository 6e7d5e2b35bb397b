"""The job panel (a progress bar, status line and Cancel button running one engine generator in a thread).

Also :func:`load_model_step`, the "load the model" first step of the jobs that run one.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from napari.qt.threading import create_worker
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_unet._widgets._notify import info, notify_exception
from napari_unet.core.errors import Cancelled, UserInputError
from napari_unet.core.progress import Progress

if TYPE_CHECKING:
    from napari_unet.core.models.bundle import ModelBundle


def load_model_step(reference: str) -> Generator[Progress, None, ModelBundle]:
    """Report the "load" stage, load the model ``reference`` and return its bundle (worker thread).

    The first step of every job that runs a model: ``bundle = yield from load_model_step(model)``.
    :func:`napari_unet.core.models.registry.load_model` is looked up at each call (tests replace it).
    """
    from napari_unet.core.models.registry import load_model

    yield Progress("load", 0, 0, f"Loading model {reference}")
    return load_model(reference)


class _JobState:
    """Plain-Python record of the running worker.

    Kept apart from the Qt widget so the worker's ``finished`` signal still
    clears it when the widget was deleted first (viewer closed mid-run).
    """

    def __init__(self) -> None:
        self.worker: Any = None
        self.cancel = threading.Event()

    def finished(self) -> None:
        """Forget the worker (connected to its ``finished`` signal)."""
        self.worker = None

    def cancel_requested(self) -> bool:
        """Return True once Cancel was pressed or napari asked the worker to quit (e.g. the viewer closed)."""
        worker = self.worker
        return self.cancel.is_set() or (worker is not None and worker.abort_requested)


class JobPanel(QWidget):
    """Progress bar, status line and Cancel button running one engine generator at a time.

    The engine generator receives ``cancel`` (a callable returning True once
    Cancel was pressed or the viewer closed) and yields
    :class:`~napari_unet.core.progress.Progress`; its return value goes to
    ``on_done``.  Errors become notifications.
    """

    progressed = Signal(object)  # every Progress event
    finished = Signal()  # after each job's last signal, once the panel is free for the next job

    def __init__(self, action: str) -> None:
        super().__init__()
        self.action = action
        self.job_action = action  # the running (or last) job's name: ``action`` unless start() named it
        self._state = _JobState()
        self._on_done: Callable[[Any], None] = lambda _result: None
        self._on_failed: Callable[[BaseException], None] | None = None
        self._keep_result_if_cancelled = False
        self._unshown: deque[Progress] = deque()  # events that arrived while an earlier one was being shown
        self._showing = False
        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout()
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.status)

    @property
    def busy(self) -> bool:
        """True while a job runs."""
        return self._state.worker is not None

    @property
    def state(self) -> _JobState:
        """The plain-Python job record (outlives the widget)."""
        return self._state

    @property
    def worker(self) -> Any:
        """The running napari worker, or None."""
        return self._state.worker

    def start(
        self,
        make_generator: Callable[[Callable[[], bool]], Generator[Progress, None, Any]],
        on_done: Callable[[Any], None],
        on_failed: Callable[[BaseException], None] | None = None,
        keep_result_if_cancelled: bool = False,
        action: str | None = None,
    ) -> Any:
        """Run ``make_generator(cancel)`` in a napari thread worker and return the worker.

        ``action`` names this job in the status line and notices (default:
        the panel's action); ``on_failed``, when given, also tells the user
        about a cancel (the panel then adds no notice of its own).

        A result that arrives after Cancel was pressed (the job finished
        before it checked) is discarded and the job reported as cancelled,
        unless ``keep_result_if_cancelled`` (jobs whose result is already on
        disk, such as a saved model or written files, report it anyway).

        Raises
        ------
        UserInputError
            If a job of this panel is already running.

        """
        if self.busy:
            raise UserInputError(f"{self.job_action} is already running; wait for it or press Cancel")
        self.job_action = action or self.action
        state = self._state
        state.cancel.clear()
        self._on_done, self._on_failed = on_done, on_failed
        self._keep_result_if_cancelled = keep_result_if_cancelled

        def job() -> Generator[Progress, None, Any]:
            return (yield from make_generator(state.cancel_requested))

        worker = create_worker(job, _progress={"desc": self.job_action}, _ignore_errors=True)
        # bound methods only: Qt drops them if this widget is deleted (viewer closed) before the worker ends
        worker.yielded.connect(self._handle_progress)
        worker.returned.connect(self._handle_result)
        worker.errored.connect(self._handle_error)
        worker.aborted.connect(self._handle_abort)
        worker.finished.connect(self._state.finished)  # a plain-Python slot: runs even after the panel is deleted
        worker.finished.connect(self._handle_finished)
        self._state.worker = worker
        self.bar.setRange(0, 0)
        self.status.setText(f"{self.job_action}: starting...")
        self.cancel_button.setEnabled(True)
        worker.start()
        return worker

    def cancel_requested(self) -> bool:
        """Return True once Cancel was pressed or napari asked the worker to quit."""
        return self._state.cancel_requested()

    def cancel(self) -> None:
        """Ask the running job to stop at its next check."""
        if self._state.worker is not None:
            self._state.cancel.set()
            self.status.setText(f"{self.job_action}: cancelling...")

    def _handle_progress(self, event: Progress) -> None:
        """Show ``event`` and pass it on, strictly in the order the job yielded its events.

        Showing an event can run a nested Qt event loop (napari's progress
        bar), which delivers the job's next event before this one was passed
        on; that one waits in a queue, so listeners never see progress go back.
        """
        self._unshown.append(event)
        if self._showing:
            return
        self._showing = True
        try:
            while self._unshown:
                self._show_progress(self._unshown.popleft())
        finally:
            self._showing = False

    def _show_progress(self, event: Progress) -> None:
        if event.total:
            self.bar.setRange(0, event.total)
            self.bar.setValue(min(event.done, event.total))
        if not self._state.cancel.is_set():  # after Cancel the status says so until the job ends
            self.status.setText(event.message or f"{event.stage} {event.done}/{event.total}")
        self._update_napari_progress(event)
        self.progressed.emit(event)

    def _update_napari_progress(self, event: Progress) -> None:
        pbar = getattr(self.worker, "pbar", None)
        if pbar is None or not event.total:
            return
        if pbar.total != event.total:
            pbar.total = event.total
        pbar.update(max(0, min(event.done, event.total) - pbar.n))
        if event.message:
            pbar.set_description(event.message)

    def _handle_result(self, result: Any) -> None:
        action = self.job_action
        if self._state.cancel.is_set() and not self._keep_result_if_cancelled:
            self.status.setText(f"{action}: cancelled")
            info(f"{action} cancelled: its result was discarded, nothing was changed.")
            return
        self.status.setText(f"{action}: done")
        try:
            self._on_done(result)
        except Exception as exc:  # turning results into layers must not crash napari
            notify_exception(exc, action)

    def _handle_error(self, exc: BaseException) -> None:
        action = self.job_action
        if not (isinstance(exc, Cancelled) and self._on_failed is not None):  # on_failed says it once
            notify_exception(exc, action)
        self.status.setText(f"{action}: cancelled" if isinstance(exc, Cancelled) else f"{action}: failed")
        if self._on_failed is not None:
            self._on_failed(exc)

    def _handle_abort(self) -> None:
        self.status.setText(f"{self.job_action}: stopped")

    def _handle_finished(self) -> None:
        self.cancel_button.setEnabled(False)
        self.bar.setRange(0, 1)
        self.bar.setValue(0 if self._state.cancel.is_set() else 1)
        self.finished.emit()
